"""Prompt tokenization for scoring: the BOS rule, the prefix/suffix seam check, level and option tokens.

Every scorer (in-process or served) turns prompts into token ids here, so both feed a model the
same ids: a :class:`~recsim_personas.agents.prompts.RatingPrompt`'s cacheable user prefix and its
item suffix are tokenized apart (the prefix once, memoised), and every prompt is checked to
tokenize the same apart as together; one that does not is scored from its full text (with a
warning, once). The level and option tokens after a prompt are read from the prompt's tail, so a
level that would merge with the end of the prompt is an error, not a silent mis-score.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ModelError, RecsimWarning

if TYPE_CHECKING:  # pragma: no cover
    from recsim_personas.agents.prompts import RatingPrompt

__all__ = ["PromptRow", "PromptTokenizer", "bos_ids", "encode_text", "prompt_tail", "with_bos"]

#: Characters of a prompt's end used to tokenize what follows it (levels, options).
_TAIL_CHARS = 32


class PromptRow(NamedTuple):
    """One prompt as token ids: the prefix text ("" when not cacheable), its ids, the suffix ids."""

    prefix: str
    prefix_ids: list[int]
    suffix_ids: list[int]

    @property
    def ids(self) -> list[int]:
        """The whole prompt's ids (prefix then suffix)."""
        return self.prefix_ids + self.suffix_ids


def prompt_tail(prompt: RatingPrompt | str) -> str:
    """The end of a prompt, from which the tokens of the answers after it are computed."""
    text = prompt if isinstance(prompt, str) else prompt.suffix
    return text[-_TAIL_CHARS:]


def bos_ids(tokenizer: Any) -> list[int]:
    """``[bos]`` when ``tokenizer`` puts a BOS token before a text it encodes, else ``[]``.

    The one BOS rule of the package: scoring (in process and served) and LoRA training
    (``training/lora.py`` may call it instead of its own copy) feed a model the same first token.
    """
    bos = tokenizer.bos_token_id
    probe = tokenizer("a")["input_ids"]
    return [int(bos)] if bos is not None and probe and probe[0] == bos else []


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text`` without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def with_bos(tokenizer: Any, bos: list[int], text: str, ids: list[int]) -> list[int]:
    """``ids`` of ``text`` with the ``bos`` of :func:`bos_ids` in front, unless ``text`` already
    starts with the BOS token's text."""
    if bos and not text.startswith(tokenizer.bos_token or "\0"):
        return bos + ids
    return ids


class PromptTokenizer:
    """Token ids of prompts, levels and options for one tokenizer (memoised).

    Args:
        tokenizer: A Hugging Face tokenizer (a pad token is set to EOS when missing).
        split_prefix: Tokenize prefixes apart (for a prefix cache); False gives every row the
            whole prompt as its suffix.
        memo_entries: Most prefixes whose ids are memoised.
    """

    def __init__(self, tokenizer: Any, *, split_prefix: bool = True, memo_entries: int = 1024) -> None:
        self.tokenizer = tokenizer
        self.split_prefix = bool(split_prefix)
        self.memo_entries = int(memo_entries)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        #: ``[bos]`` when the tokenizer adds a BOS token to a prompt, else ``[]``.
        self.bos: list[int] = bos_ids(tokenizer)
        self._prefixes: OrderedDict[str, list[int]] = OrderedDict()
        self._levels: dict[tuple[str, tuple[float, ...]], tuple[list[list[int]], list[int]]] = {}
        self._warned_seam = False

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without special tokens."""
        return encode_text(self.tokenizer, text)

    def _with_bos(self, text: str, ids: list[int]) -> list[int]:
        return with_bos(self.tokenizer, self.bos, text, ids)

    def prefix_ids(self, prefix: str) -> list[int]:
        """Ids of a prompt prefix (with BOS where the tokenizer adds one), memoised."""
        ids = self._prefixes.get(prefix)
        if ids is None:
            ids = self._with_bos(prefix, self.encode(prefix))
            self._prefixes[prefix] = ids
            if len(self._prefixes) > self.memo_entries:
                self._prefixes.popitem(last=False)
        else:
            self._prefixes.move_to_end(prefix)
        return ids

    def rows(self, prompts: Sequence[RatingPrompt | str]) -> tuple[list[PromptRow], int]:
        """Per prompt a :class:`PromptRow`, and how many split prompts failed the seam check.

        Unsplittable prompts (plain strings, or all prompts when ``split_prefix`` is False) get no
        prefix; a prompt whose prefix and suffix tokenize differently apart than together is
        scored from its whole text (warned once per tokenizer).
        """
        rows: list[PromptRow] = []
        fallbacks = 0
        for p in prompts:
            prefix, suffix = ("", p) if isinstance(p, str) else (p.prefix, p.suffix)
            if not prefix or not self.split_prefix:
                rows.append(PromptRow("", [], self._with_bos(prefix + suffix, self.encode(prefix + suffix))))
                continue
            pids = self.prefix_ids(prefix)
            sids = self.encode(suffix)
            # Every prompt is checked (one extra tokenization, well under 1% of a forward pass).
            joint = self.encode(prefix + suffix)
            if joint != pids[len(self.bos) :] + sids:
                if not self._warned_seam:
                    warnings.warn(
                        "a prompt's prefix and suffix tokenize differently apart than together; such "
                        "prompts are scored from their full text, without the prefix cache (split "
                        "prompts before a space-led word or a blank line, as "
                        "recsim_personas.agents.prompts does)",
                        RecsimWarning,
                        stacklevel=4,
                    )
                    self._warned_seam = True
                fallbacks += 1
                rows.append(PromptRow("", [], pids[: len(self.bos)] + joint))
                continue
            rows.append(PromptRow(prefix, pids, sids))
        return rows, fallbacks

    def level_tokens(self, tail: str, scale: RatingScale) -> tuple[list[list[int]], list[int]]:
        """Token sequences of ``scale``'s levels after a prompt ending in ``tail``, and the distinct
        first tokens.

        A level that is a proper prefix of another (``"1"`` and ``"10"``) is closed with the end
        token, so that its probability is that of the answer ending there.

        Raises:
            ModelError: a level merges with the prompt's end, two levels tokenize alike, or a
                level prefixes another and the tokenizer has no end token.
        """
        key = (tail, tuple(float(v) for v in scale.levels))
        cached = self._levels.get(key)
        if cached is not None:
            return cached
        base = self.encode(tail)
        seqs = []
        texts = [scale.format(v) for v in scale.levels]
        for text in texts:
            ids = self.encode(tail + text)
            if ids[: len(base)] != base or len(ids) == len(base):
                raise ModelError(
                    f"level {text!r} merges with the end of the prompt ({tail[-20:]!r}) when tokenized; "
                    "end prompts with a newline or a special token (the chat templates do)"
                )
            seqs.append(ids[len(base) :])
        for i, a in enumerate(seqs):
            for j, b in enumerate(seqs):
                if i != j and a == b:
                    raise ModelError(
                        f"rating levels {texts[i]!r} and {texts[j]!r} tokenize identically; this "
                        "tokenizer cannot express the scale"
                    )
        end = self.tokenizer.eos_token_id
        closed = []
        for i, a in enumerate(seqs):
            if any(j != i and len(b) > len(a) and b[: len(a)] == a for j, b in enumerate(seqs)):
                if end is None:
                    raise ModelError(
                        f"level {texts[i]!r} is a prefix of another level and the tokenizer has no "
                        "end token to close it; this scale cannot be scored with this tokenizer"
                    )
                a = [*a, int(end)]
            closed.append(a)
        result = (closed, sorted({s[0] for s in closed}))
        self._levels[key] = result
        return result

    def option_tokens(self, tail: str, options: Sequence[str]) -> list[int]:
        """The first token of each option after a prompt ending in ``tail``.

        Raises:
            ModelError: an option merges with the prompt's end, or two options share a first token.
        """
        base = self.encode(tail)
        first = []
        for opt in options:
            ids = self.encode(tail + opt)
            if ids[: len(base)] != base or len(ids) == len(base):
                raise ModelError(f"option {opt!r} merges with the end of the prompt when tokenized")
            first.append(ids[len(base)])
        if len(set(first)) != len(first):
            raise ModelError(
                f"options {list(options)} share their first token; choose options that start "
                "with different single tokens (e.g. 'A' / 'B')"
            )
        return first
