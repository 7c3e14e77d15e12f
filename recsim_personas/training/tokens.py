"""Training rows as token ids: the prompt tokenized as the scorer does, then the answer tokens.

The prompt (``prefix + suffix``) goes through :class:`~recsim_personas.agents.tokenization.PromptTokenizer`,
the tokenizer every scorer uses, so a row trains on exactly the ids the
:class:`~recsim_personas.agents.scoring.RatingScorer` feeds the model at inference (BOS rule, prefix
and suffix tokenized apart, the seam check). The answer is the target text and the chat
template's end-of-turn text, tokenized after the suffix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recsim_personas.agents.prompts import RatingPrompt
from recsim_personas.agents.tokenization import PromptTokenizer
from recsim_personas.errors import ModelError

__all__ = ["TrainRow", "TrainTokenizer", "end_of_turn_text"]


def end_of_turn_text(tokenizer: Any) -> str:
    """The text the chat template puts after an assistant message (``"<|im_end|>"`` for ChatML).

    Found by rendering a one-message conversation; without a chat template (or when it cannot be
    found) the EOS token, or ``""`` when the tokenizer has none.
    """
    marker = "XQZ7"
    template = getattr(tokenizer, "chat_template", None)
    if template:
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}],
                tokenize=False,
            )
            if isinstance(text, str) and marker in text:
                tail = text[text.rindex(marker) + len(marker):].strip()
                if tail:
                    return tail
        except Exception:  # any template failure: fall back to EOS
            pass
    return tokenizer.eos_token or ""


@dataclass
class TrainRow:
    """One training row as ids: a shareable prefix and a body that ends with the answer.

    Attributes:
        prefix_key: The prefix text (rows with the same key share one prefix pass); ``""`` without one.
        prefix: BOS + prefix tokens (empty when the prompt is not splittable).
        body: Suffix tokens + answer tokens.
        n_answer: Answer tokens at the end of ``body`` (the loss is on these only).
    """

    prefix_key: str
    prefix: list[int]
    body: list[int]
    n_answer: int

    @property
    def length(self) -> int:
        """Tokens of the whole row."""
        return len(self.prefix) + len(self.body)

    def unshared(self) -> TrainRow:
        """The same tokens as one piece, without a shareable prefix."""
        return TrainRow("", [], self.prefix + self.body, self.n_answer)


class TrainTokenizer:
    """Tokenizes (prefix, suffix, target) rows into :class:`TrainRow` the way the scorer tokenizes prompts."""

    def __init__(self, tokenizer: Any) -> None:
        self.prompts = PromptTokenizer(tokenizer)
        self.eot = end_of_turn_text(tokenizer)

    def answer_ids(self, suffix: str, target: str) -> list[int]:
        """Ids of ``target`` and the end of turn after ``suffix``.

        Raises:
            ModelError: The target merges with the end of the prompt when tokenized.
        """
        suffix_ids = self.prompts.encode(suffix)
        full = self.prompts.encode(suffix + target + self.eot)
        if full[: len(suffix_ids)] != suffix_ids or len(full) == len(suffix_ids):
            raise ModelError(
                f"the target {target!r} merges with the end of the prompt ({suffix[-20:]!r}) when "
                "tokenized; prompts must end with a newline or a special token (chat templates do)"
            )
        return full[len(suffix_ids):]

    def row(self, prefix: str, suffix: str, target: str) -> TrainRow:
        """The :class:`TrainRow` of one (prefix, suffix, target)."""
        return self.rows([prefix], [suffix], [target])[0]

    def rows(self, prefixes: Sequence[str], suffixes: Sequence[str], targets: Sequence[str]) -> list[TrainRow]:
        """One :class:`TrainRow` per (prefix, suffix, target); a prompt that does not tokenize the
        same apart as together trains as one piece (no prefix sharing)."""
        prompts = [RatingPrompt(p, s) for p, s in zip(prefixes, suffixes, strict=True)]
        ids, _ = self.prompts.rows(prompts)
        out = []
        for row, suffix, target in zip(ids, suffixes, targets, strict=True):
            answer = self.answer_ids(suffix, target)
            out.append(TrainRow(row.prefix, row.prefix_ids, row.suffix_ids + answer, len(answer)))
        return out
