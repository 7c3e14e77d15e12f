"""Prompt templates of the simulated user: the rating prompt and the leave-or-stay prompt.

All prompt text lives here, in versioned :class:`PromptTemplate` presets:

``paper`` (version ``paper-1``)
    The two rating prompts of Appendix C of Thakur, Agrawal and Mukund (2025), "Personas within
    Parameters: Fine-Tuning Small Language Models with Low-Rank Adapters to Mimic User Behaviors"
    (CC BY 4.0): the M_s-only prompt (PERSONA, TASK, MOVIE, SUMMARY, RATING) and the M_s + M_l prompt
    (PERSONA, the memory instructions, YOUR MEMORIES with one MOVIE / MY MEMORY entry per retrieved
    memory, then TASK, MOVIE, SUMMARY, RATING). The task sentence is adapted to the dataset's scale
    (the paper's text is the 1-5 case); sections without data (no summary) are left out.
``compact`` (version ``compact-1``)
    The same information with shorter instructions, the task placed *before* the memories (so it is
    part of the cached user prefix in M_s + M_l mode too) and shorter item lines: fewer tokens per
    rating, hence faster. Not the paper's wording; use it when throughput matters more than
    faithfulness to the paper's prompt.

The exit prompt (leave or stay, used by :meth:`LMUserAgent.leave_probability`) is ours: the paper does
not publish one.

Chat format:
    The model's chat template applies (``system`` = the PERSONA paragraph, ``user`` = the task,
    memories and item, then the generation prompt), so the answer token follows the assistant header.
    Without a tokenizer, or when the tokenizer has no chat template, a plain-text layout is used:
    system text, a blank line, the user text, a newline.

Prefix / suffix split:
    :class:`RatingPrompt` splits the text where the user-only part ends: ``prefix`` is the system
    message plus the start of the user turn (it depends on the user only, so its key/value cache can be
    reused across that user's items), ``suffix`` is the rest, ending where the rating goes. The split
    point is placed after the last text that is the same for every item (``"...\\n\\nMOVIE: The
    movie"``), right before a space-led word (``" Big Lebowski"``), so that for byte-level BPE
    tokenizers ``tokenize(prefix) + tokenize(suffix) == tokenize(prefix + suffix)`` (checked in the
    tests for SmolLM2, and for every prompt at scoring time by
    :class:`~recsim_personas.agents.scoring.RatingScorer`, which scores a prompt that fails it from its
    full text). Without such a word the split falls before the blank line that starts the item part.

Context length:
    With ``tokenizer`` and ``max_tokens`` given, a prompt that does not fit is shortened with a
    :class:`PromptTruncatedWarning`: first the least similar memories are dropped (one at a time, last
    first), then the item summary is shortened; if the user prefix alone is too long, a ``ModelError``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal

from recsim_personas.agents.prompt_template import PROMPT_PRESETS, PromptTemplate, get_template
from recsim_personas.agents.prompt_text import (
    ItemLike,
    PromptMemory,
    format_levels,
    memory_items,
    movie_text,
    numbers_text,
    summary_text,
    task_text,
)
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError, ModelError, RecsimWarning, did_you_mean

if TYPE_CHECKING:
    from recsim_personas.memory.cue import CueNumbers

__all__ = [
    "EXIT_OPTIONS",
    "PROMPT_PRESETS",
    "MemoryMode",
    "PromptMemory",
    "PromptTemplate",
    "PromptTruncatedWarning",
    "RatingPrompt",
    "build_exit_prompt",
    "build_rating_prompt",
    "format_levels",
    "get_template",
    "render_chat",
]

MemoryMode = Literal["ms", "msml"]

#: Answer options of the exit prompt: index 0 = stay, index 1 = leave (single tokens for SmolLM2).
EXIT_OPTIONS: tuple[str, str] = ("A", "B")

_SEP = "\n\n"


class PromptTruncatedWarning(RecsimWarning):
    """A prompt did not fit the model's context and was shortened (memories first, then summary)."""


@dataclass(frozen=True)
class RatingPrompt:
    """A chat-templated prompt split into a cacheable user prefix and a per-item suffix.

    Attributes:
        prefix: System message and start of the user turn; depends on the user only.
        suffix: The rest (memories, item, answer cue, assistant header); ``prefix + suffix`` is the full
            prompt, ending where the answer's first token goes.
        truncated: True when memories or the summary were cut to fit the model context.
    """

    prefix: str
    suffix: str
    truncated: bool = False

    @property
    def text(self) -> str:
        """The full prompt."""
        return self.prefix + self.suffix


#: An item that differs from any real item in every field (finds the item-independent text).
_PROBE = SimpleNamespace(
    item_id=-1, title="\0", year=0, genres=("\0",), avg_rating=-1.0, description="\0", cast="\0"
)


def _common_length(a: str, b: str) -> int:
    """Length of the longest common prefix of two strings."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def render_chat(tokenizer: Any | None, system: str, head: str, body: str) -> tuple[str, str]:
    """``(prefix, suffix)`` of a one-turn chat; the split is between ``head`` and ``body``.

    ``body`` should start with a blank line when ``head`` is not empty (the tokenizer-safe split).
    With a tokenizer that has a chat template the model's template is applied with the generation
    prompt; otherwise plain text (``system``, blank line, user text, newline).

    Raises:
        ModelError: the chat template changes the message text, so the split point cannot be found.
    """
    user = head + body
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if not template:
        prefix = (system + _SEP if system else "") + head
        return prefix, body + "\n"
    messages = [{"role": "user", "content": user}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    try:
        full = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # templates that reject a system role (e.g. Gemma's older ones)
        if not system:
            raise ModelError(f"the tokenizer's chat template failed: {exc}") from exc
        messages = [{"role": "user", "content": system + _SEP + user}]
        full = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        user = system + _SEP + user
        head = system + _SEP + head
    if not isinstance(full, str):  # some tokenizers return a list when batched
        full = full[0]
    start = full.rfind(user)
    if start < 0:
        raise ModelError(
            "the tokenizer's chat template changes the message text (e.g. strips or escapes it), so "
            "the prompt cannot be split into a cacheable user prefix and an item suffix; use a "
            "tokenizer without this behaviour or set tokenizer.chat_template = None for plain text"
        )
    split = start + len(head)
    return full[:split], full[split:]


def _count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def build_rating_prompt(
    template: str | PromptTemplate,
    profile_text: str,
    item: ItemLike,
    memories: Sequence[Any] = (),
    scale: RatingScale | None = None,
    *,
    memory_mode: MemoryMode | None = None,
    tokenizer: Any | None = None,
    max_tokens: int | None = None,
    catalog: Any | None = None,
    numbers: CueNumbers | None = None,
) -> RatingPrompt:
    """The rating prompt of one (user, item), split into cacheable prefix and item suffix.

    Args:
        template: Preset name (``"paper"``, ``"compact"``) or a :class:`PromptTemplate`.
        profile_text: The user's M_s, rendered as the PERSONA paragraph (the system message).
        item: The item to rate (``ItemInfo`` or anything with its fields).
        memories: Retrieved M_l entries, best first: :class:`PromptMemory` objects, or
            ``Memory(item_id, rating, text, similarity)`` objects together with ``catalog``.
        scale: The dataset's rating scale (required).
        memory_mode: ``"ms"`` (M_s only) or ``"msml"`` (M_s + M_l). Default: ``"msml"`` when
            ``memories`` is non-empty, else ``"ms"``.
        tokenizer: Applies the model's chat template and measures length; ``None`` = plain text.
        max_tokens: Longest allowed prompt in tokens (the model context minus room for the answer);
            needs ``tokenizer``.
        catalog: ``ItemCatalog`` to look up the remembered items of ``Memory`` objects.
        numbers: The collaborative cue (:class:`~recsim_personas.memory.cue.CueNumbers`: the user's
            and the item's mean rating and count, a bias model's estimate), stated in the
            ``numbers`` section before the answer cue; ``None`` (default): no such section, the
            prompt is the same as without the option. The caller makes the numbers leak-free
            (:meth:`~recsim_personas.memory.cue.CueStatistics.numbers` with the row's own rating
            for a training row).

    Returns:
        :class:`RatingPrompt`; ``truncated`` tells whether memories or the summary were cut.

    Raises:
        ConfigError: unknown template, missing scale, bad memory objects.
        ModelError: the user prefix alone exceeds ``max_tokens``.
    """
    tpl = get_template(template)
    if scale is None:
        raise ConfigError("build_rating_prompt needs the dataset's rating scale (scale=...)")
    mode = memory_mode or ("msml" if memories else "ms")
    if mode not in ("ms", "msml"):
        raise ConfigError(f"memory_mode must be 'ms' or 'msml', got {mode!r}.{did_you_mean(mode, ['ms', 'msml'])}")
    if max_tokens is not None and tokenizer is None:
        raise ConfigError("max_tokens needs tokenizer= to measure the prompt")
    cue_text = numbers_text(tpl, numbers)
    if cue_text and "numbers" not in (tpl.ms_body if mode == "ms" else tpl.msml_body):
        raise ConfigError(
            f"prompt template {tpl.name!r} has no 'numbers' section in its {mode} body layout, so the "
            "collaborative cue cannot be shown; add 'numbers' (before 'cue') to the layout"
        )
    entries = memory_items(memories, catalog) if mode == "msml" else []
    system = tpl.persona.format(profile=profile_text.strip())
    task = task_text(tpl, scale)
    head_layout, body_layout = (tpl.ms_head, tpl.ms_body) if mode == "ms" else (tpl.msml_head, tpl.msml_body)
    head_sections = {"task": task, "memory_intro": tpl.memory_intro, "memory_title": tpl.memory_title}
    head = _SEP.join(s for s in (head_sections[n] for n in head_layout) if s)

    def body_text(the_item: Any, memories_: Sequence[PromptMemory], summary_words: int | None) -> str:
        memory_text = _SEP.join(
            tpl.memory_entry.format(
                movie=movie_text(tpl, m.item),
                summary=summary_text(tpl, m.item, form=tpl.memory_summary) if tpl.memory_summary else "",
                text=m.text.strip(),
            )
            for m in memories_
        ) or tpl.no_memories
        sections = {
            "task": task,
            "memory_intro": tpl.memory_intro,
            "memory_title": tpl.memory_title,
            "memories": memory_text,
            "movie": movie_text(tpl, the_item),
            "summary": summary_text(tpl, the_item, summary_words),
            "numbers": cue_text,
            "cue": tpl.cue,
        }
        body = _SEP.join(s for s in (sections[n] for n in body_layout) if s)
        return (_SEP + body) if head else body

    def render(n_memories: int, summary_words: int | None) -> tuple[str, str]:
        shown = entries[:n_memories]
        body = body_text(item, shown, summary_words)
        # Text before the first item-dependent character is the same for every item of this user
        # ("\n\nMOVIE: The movie"): it joins the cached prefix. The probe differs from the item in
        # every field; the split backs off to a space, so the suffix starts with " <word>", a
        # boundary byte-level BPE never merges across (the scorer re-checks every prompt).
        # Probes with no and with one memory keep the prefix independent of how many memories an
        # item retrieved (M_s + M_l prompts then split before the memories).
        n_common = len(body)
        for n_probe in (0, 1):
            probe_body = body_text(_PROBE, [PromptMemory(_PROBE, "\0")] * n_probe, summary_words)
            n_common = min(n_common, _common_length(body, probe_body))
        common = body[:n_common]
        cut = common.rfind(" ")
        lead = common[:cut] if cut > 0 and common[:cut].strip() else ""
        return render_chat(tokenizer, system, head + lead, body[len(lead) :])

    prefix, suffix = render(len(entries), None)
    # A token spans at least one character, so a short text cannot exceed the budget: skip counting.
    if max_tokens is None or len(prefix) + len(suffix) <= max_tokens:
        return RatingPrompt(prefix, suffix)
    length = _count_tokens(tokenizer, prefix + suffix)
    if length <= max_tokens:
        return RatingPrompt(prefix, suffix)
    prefix_len = _count_tokens(tokenizer, prefix)
    n_mem = len(entries)
    while n_mem > 0 and length > max_tokens:
        n_mem -= 1
        prefix, suffix = render(n_mem, None)
        length = _count_tokens(tokenizer, prefix + suffix)
    summary_words: int | None = None
    if length > max_tokens:
        words = len(summary_text(tpl, item).split())
        summary_words = words
        while summary_words > 0 and length > max_tokens:
            summary_words = summary_words // 2
            prefix, suffix = render(n_mem, summary_words)
            length = _count_tokens(tokenizer, prefix + suffix)
    if length > max_tokens:
        raise ModelError(
            f"the rating prompt for item {getattr(item, 'item_id', '?')} needs {length} tokens even "
            f"without memories and summary (user prefix: {prefix_len} tokens), but the model context "
            f"allows {max_tokens}; shorten the profile text (M_s) or use a model with a longer context"
        )
    warnings.warn(
        f"rating prompt for item {getattr(item, 'item_id', '?')} exceeded {max_tokens} tokens: kept "
        f"{n_mem} of {len(entries)} memories"
        + (f" and cut the summary to {summary_words} words" if summary_words is not None else ""),
        PromptTruncatedWarning,
        stacklevel=2,
    )
    return RatingPrompt(prefix, suffix, truncated=True)


def build_exit_prompt(
    profile_text: str,
    activity_text: str,
    session: Sequence[tuple[str, float]],
    scale: RatingScale,
    *,
    template: str | PromptTemplate = "paper",
    tokenizer: Any | None = None,
    options: tuple[str, str] = EXIT_OPTIONS,
) -> RatingPrompt:
    """The leave-or-stay prompt after a session so far; answer ``options[0]`` = stay, ``[1]`` = leave.

    Args:
        profile_text: The user's PERSONA paragraph (system message).
        activity_text: The user's activity trait (how readily they leave), shown again in the task.
        session: ``(title, rating)`` of each item shown so far, oldest first (NaN or None: not rated).
        scale: The rating scale (to say what the ratings mean).
        template: Preset name or :class:`PromptTemplate`.
        tokenizer: Applies the chat template; ``None`` = plain text.
        options: The two answer strings (stay, leave); each should be one token.

    Returns:
        :class:`RatingPrompt` whose prefix depends on the user only.
    """
    tpl = get_template(template)
    if len(options) != 2 or options[0] == options[1]:
        raise ConfigError(f"options must be two different answers (stay, leave), got {options!r}")
    lines = "\n".join(
        f"- {title}: {tpl.exit_unrated if r is None or math.isnan(float(r)) else scale.format(float(scale.snap(r)))}"
        for title, r in session
    )
    values = {
        "activity": activity_text.strip(),
        "scale_min": scale.format(scale.min),
        "scale_max": scale.format(scale.max),
        "session": lines or tpl.exit_empty_session,
        "stay": options[0],
        "leave": options[1],
    }
    head = tpl.exit_head.format(**values)
    body = tpl.exit_body.format(**values)
    system = tpl.persona.format(profile=profile_text.strip())
    prefix, suffix = render_chat(tokenizer, system, head, _SEP + body)
    return RatingPrompt(prefix, suffix)

