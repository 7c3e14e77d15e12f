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

import difflib
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from types import SimpleNamespace
from typing import Any, Literal, Protocol

from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError, ModelError, RecsimWarning, unknown_keys

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


class ItemLike(Protocol):
    """What a prompt needs of an item (``recsim_personas.data.item_catalog.ItemInfo`` has it)."""

    item_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    avg_rating: float | None
    description: str | None
    cast: str | None


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


@dataclass(frozen=True)
class PromptMemory:
    """One retrieved long-term memory as the prompt shows it: the item and the M_l text."""

    item: ItemLike
    text: str


@dataclass(frozen=True)
class PromptTemplate:
    """The wording and layout of the rating and exit prompts (all text of the agent lives here).

    Layout: the user turn is ``head`` sections, a blank line, ``body`` sections (joined by blank lines;
    empty sections are skipped). ``head`` must not depend on the item (it is the cached prefix).
    Section names: ``task``, ``memory_intro``, ``memory_title``, ``memories``, ``movie``, ``summary``,
    ``cue``.

    Placeholders: ``task`` uses ``{min} {max} {anchors} {levels}``; ``anchor`` uses ``{level}
    {meaning}``; ``movie`` uses ``{title} {year_part} {genres} {avg_part}``; ``summary`` uses
    ``{description} {cast_part}`` (as does ``memory_summary``, the remembered item's summary, left
    out when empty); ``memory_entry`` uses ``{movie} {summary} {text}``; exit texts use
    ``{activity} {scale_min} {scale_max} {session} {stay} {leave}``.
    """

    name: str
    version: str
    attribution: str
    persona: str = "{profile}"
    task: str = (
        "TASK: Rate the movie given below on a likert scale from {min} to {max}, where {anchors}. "
        "Always respond with either one of {levels}. Do not output anything else."
    )
    anchors: tuple[str, ...] = (
        "{level} means you hated it",
        "{level} means you disliked it",
        "{level} means you are neutral about it",
        "{level} meaning you liked it",
        "{level} means you absolutely loved it",
    )
    anchor_join: tuple[str, str] = (", ", " and ")
    memory_intro: str = (
        "Given your persona and memory of some of movies you watched in the past, think carefully and "
        "rate the movie given in the end. Always use your memory at your own discretion as not "
        "everything is helpful. Also, historical average ratings of the movie mean an average rating "
        "of how other people have rated it, not you."
    )
    memory_title: str = "YOUR MEMORIES"
    memory_entry: str = "{movie}\n\nMY MEMORY: {summary}{text}"
    memory_summary: str = "{description}{cast_part}. "
    no_memories: str = "(no memories)"
    movie: str = "MOVIE: The movie {title}{year_part} is of {genres} genre{avg_part}."
    year_part: str = " was released in the year {year}"
    avg_part: str = " with historical average rating of {avg:.2f}"
    no_genres: str = "unknown"
    summary: str = "SUMMARY: {description}{cast_part}"
    cast_part: str = ". The cast of the movie is as follows: {cast}"
    max_cast: int | None = 15
    strip_period: bool = False
    cue: str = "RATING:"
    ms_head: tuple[str, ...] = ("task",)
    ms_body: tuple[str, ...] = ("movie", "summary", "cue")
    msml_head: tuple[str, ...] = ("memory_intro", "memory_title")
    msml_body: tuple[str, ...] = ("memories", "task", "movie", "summary", "cue")
    exit_head: str = (
        "TASK: You are browsing a movie recommendation system. After each recommendation you decide "
        "whether to stay for the next one or to leave the system. Your activity trait is described "
        "as: {activity}"
    )
    exit_body: str = (
        "SESSION: In this session you were recommended these movies and rated them from {scale_min} "
        "to {scale_max}:\n{session}\n\nQUESTION: Do you stay for the next recommendation or leave now? "
        "Answer {stay} to stay or {leave} to leave. Do not output anything else.\n\nANSWER:"
    )
    exit_empty_session: str = "(nothing yet)"
    exit_unrated: str = "not rated"

    _SECTIONS = ("task", "memory_intro", "memory_title", "memories", "movie", "summary", "cue")

    def __post_init__(self) -> None:
        errors: list[str] = []
        for name in ("name", "version", "attribution"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                errors.append(f"{name} must be a non-empty string")
        for layout in ("ms_head", "ms_body", "msml_head", "msml_body", "anchors", "anchor_join"):
            value = getattr(self, layout)
            if isinstance(value, list):
                object.__setattr__(self, layout, tuple(value))
        for layout in ("ms_head", "ms_body", "msml_head", "msml_body"):
            for section in getattr(self, layout):
                if section not in self._SECTIONS:
                    close = difflib.get_close_matches(section, self._SECTIONS, n=1)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    errors.append(f"{layout}: unknown section {section!r}.{hint}")
        for layout in ("ms_head", "msml_head"):
            item_sections = {"movie", "summary", "memories", "cue"} & set(getattr(self, layout))
            if item_sections:
                errors.append(
                    f"{layout} holds item-dependent sections {sorted(item_sections)}; the head is the "
                    "cached user prefix, move them to the body"
                )
        if "memories" not in self.msml_body:
            errors.append("msml_body must contain the 'memories' section")
        if len(self.anchor_join) != 2:
            errors.append("anchor_join must be (separator, last separator), e.g. (', ', ' and ')")
        if "{" in self.persona and "{profile}" not in self.persona:
            errors.append("persona must contain the {profile} placeholder")
        if self.max_cast is not None and (not isinstance(self.max_cast, int) or self.max_cast < 1):
            errors.append(f"max_cast must be an integer >= 1 or None, got {self.max_cast!r}")
        if errors:
            raise ConfigError(f"prompt template {self.name!r}: " + "; ".join(errors))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists); :meth:`from_dict` round-trips."""
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptTemplate:
        """Build from :meth:`to_dict` output; unknown keys raise ``ConfigError`` (did-you-mean)."""
        names = [f.name for f in fields(cls)]
        hints = unknown_keys(data, names)
        if hints:
            raise ConfigError(f"unknown prompt template field(s): {', '.join(hints)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)

    def replace(self, **changes: Any) -> PromptTemplate:
        """A copy with ``changes`` (validated)."""
        return self.from_dict({**self.to_dict(), **changes})


_PAPER_ATTRIBUTION = (
    "Appendix C of H. Thakur, E. Agrawal, S. Mukund (2025), 'Personas within Parameters: Fine-Tuning "
    "Small Language Models with Low-Rank Adapters to Mimic User Behaviors', CC BY 4.0; task sentence "
    "generalised to the dataset's rating scale."
)

#: Named presets; ``get_template(name)`` looks them up with a did-you-mean.
PROMPT_PRESETS: dict[str, PromptTemplate] = {
    "paper": PromptTemplate(name="paper", version="paper-1", attribution=_PAPER_ATTRIBUTION),
    "compact": PromptTemplate(
        name="compact",
        version="compact-1",
        attribution="recsim-personas; a shortened variant of the paper's prompt (Thakur et al. 2025)",
        task="Rate the movie below from {min} to {max} ({anchors}) as this user. Answer with one of "
        "{levels} only.",
        anchors=("{level} = hated", "", "", "", "{level} = loved"),
        anchor_join=(", ", ", "),
        memory_intro="",
        memory_title="Your past ratings:",
        memory_entry="- {movie} {text}",
        memory_summary="",
        max_cast=5,
        strip_period=True,
        no_memories="(none)",
        movie="Movie: {title}{year_part}; {genres}{avg_part}.",
        year_part=" ({year})",
        avg_part="; average {avg:.1f}",
        summary="{description}{cast_part}",
        cast_part=". Cast: {cast}",
        cue="Rating:",
        ms_head=("task",),
        ms_body=("movie", "summary", "cue"),
        msml_head=("task", "memory_title"),
        msml_body=("memories", "movie", "summary", "cue"),
        exit_head="You are using a movie recommender. Activity: {activity}",
        exit_body="This session so far ({scale_min}-{scale_max}):\n{session}\n\nStay ({stay}) or "
        "leave ({leave})? Answer {stay} or {leave} only.",
    ),
}


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


def get_template(template: str | PromptTemplate) -> PromptTemplate:
    """The :class:`PromptTemplate` for a preset name (or the template itself).

    Raises:
        ConfigError: unknown preset name, with a did-you-mean.
    """
    if isinstance(template, PromptTemplate):
        return template
    if template not in PROMPT_PRESETS:
        close = difflib.get_close_matches(str(template), list(PROMPT_PRESETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown prompt template {template!r}; presets: {sorted(PROMPT_PRESETS)}.{hint}"
        )
    return PROMPT_PRESETS[template]


def format_levels(scale: RatingScale) -> str:
    """``"1, 2, 3, 4 or 5"`` / ``"0.5, 1.0, ..., 4.5 or 5.0"``: every level as the prompt spells it."""
    texts = [scale.format(v) for v in scale.levels]
    return ", ".join(texts[:-1]) + " or " + texts[-1] if len(texts) > 1 else texts[0]


def _anchor_text(template: PromptTemplate, scale: RatingScale) -> str:
    """Meaning of the levels: the paper's five anchors at 1..5 when the scale has them, else min/max."""
    levels = [float(v) for v in scale.levels]
    n = len(template.anchors)
    if n == 5 and all(any(abs(v - k) < 1e-9 for v in levels) for k in range(1, 6)):
        points = [float(k) for k in range(1, 6)]
    else:
        # Spread the anchors over the scale; with few levels use only the first and last anchor.
        points = [scale.min + (scale.max - scale.min) * i / (n - 1) for i in range(n)] if n > 1 else [scale.max]
        points = [float(scale.snap(p)) for p in points]
    parts = [a.format(level=scale.format(p)) for a, p in zip(template.anchors, points, strict=True) if a]
    if not parts:
        return ""
    sep, last = template.anchor_join
    return sep.join(parts[:-1]) + last + parts[-1] if len(parts) > 1 else parts[0]


def _task_text(template: PromptTemplate, scale: RatingScale) -> str:
    return template.task.format(
        min=scale.format(scale.min),
        max=scale.format(scale.max),
        anchors=_anchor_text(template, scale),
        levels=format_levels(scale),
    )


def _movie_text(template: PromptTemplate, item: ItemLike) -> str:
    year = getattr(item, "year", None)
    year_ok = year is not None and not (isinstance(year, float) and math.isnan(year))
    avg = getattr(item, "avg_rating", None)
    avg_ok = avg is not None and not (isinstance(avg, float) and math.isnan(avg))
    genres = tuple(getattr(item, "genres", ()) or ())
    genres = tuple(g for g in genres if g and g != "(no genres listed)")
    return template.movie.format(
        title=item.title,
        year_part=template.year_part.format(year=int(year)) if year_ok else "",
        genres=", ".join(genres) if genres else template.no_genres,
        avg_part=template.avg_part.format(avg=float(avg)) if avg_ok else "",
    )


def _clean(text: Any) -> str:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    return str(text).strip()


def _summary_text(
    template: PromptTemplate, item: ItemLike, max_words: int | None = None, *, form: str | None = None
) -> str:
    description = _clean(getattr(item, "description", None))
    if template.strip_period:
        description = description.rstrip(".")
    cast = _clean(getattr(item, "cast", None))
    if cast and template.max_cast is not None:
        cast = ", ".join(cast.split(", ")[: template.max_cast])
    if not description and not cast:
        return ""
    if max_words is not None:
        words = (description + " " + cast).split()
        if len(words) > max_words:
            n_desc = len(description.split())
            keep_desc = min(n_desc, max_words)
            description = " ".join(description.split()[:keep_desc]) + ("..." if keep_desc < n_desc else "")
            keep_cast = max(0, max_words - keep_desc)
            cast_words = cast.split()
            cast = " ".join(cast_words[:keep_cast]) + ("..." if 0 < keep_cast < len(cast_words) else "")
            if keep_cast == 0:
                cast = ""
    cast_part = template.cast_part.format(cast=cast) if cast else ""
    if not description:
        cast_part = cast_part.lstrip(". ")
    text = (template.summary if form is None else form).format(description=description, cast_part=cast_part)
    if form is None:
        return text.strip()
    # "Plot.. " (a description's own full stop plus the form's) reads as a typo; the paper's ".."
    # appears only before "The cast", which cast_part reproduces.
    return re.sub(r"\.\.(\s*)$", r".\1", text.lstrip())


def _memory_items(
    memories: Sequence[Any], catalog: Any | None
) -> list[PromptMemory]:
    out = []
    for i, memory in enumerate(memories):
        if isinstance(memory, PromptMemory):
            out.append(memory)
            continue
        text = getattr(memory, "text", None)
        if text is None:
            raise ConfigError(f"memories[{i}] has no .text attribute: {memory!r}")
        item = getattr(memory, "item", None)
        if item is None:
            item_id = getattr(memory, "item_id", None)
            if item_id is None or catalog is None:
                raise ConfigError(
                    f"memories[{i}] carries only item_id={item_id!r}; pass catalog= (an ItemCatalog) "
                    "so the prompt can show the remembered movie, or PromptMemory(item, text) objects"
                )
            item = catalog.info(int(item_id))
        out.append(PromptMemory(item=item, text=str(text)))
    return out


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
        close = difflib.get_close_matches(str(mode), ["ms", "msml"], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"memory_mode must be 'ms' or 'msml', got {mode!r}.{hint}")
    if max_tokens is not None and tokenizer is None:
        raise ConfigError("max_tokens needs tokenizer= to measure the prompt")
    entries = _memory_items(memories, catalog) if mode == "msml" else []
    system = tpl.persona.format(profile=profile_text.strip())
    task = _task_text(tpl, scale)
    head_layout, body_layout = (tpl.ms_head, tpl.ms_body) if mode == "ms" else (tpl.msml_head, tpl.msml_body)
    head_sections = {"task": task, "memory_intro": tpl.memory_intro, "memory_title": tpl.memory_title}
    head = _SEP.join(s for s in (head_sections[n] for n in head_layout) if s)

    def body_text(the_item: Any, memories_: Sequence[PromptMemory], summary_words: int | None) -> str:
        memory_text = _SEP.join(
            tpl.memory_entry.format(
                movie=_movie_text(tpl, m.item),
                summary=_summary_text(tpl, m.item, form=tpl.memory_summary) if tpl.memory_summary else "",
                text=m.text.strip(),
            )
            for m in memories_
        ) or tpl.no_memories
        sections = {
            "task": task,
            "memory_intro": tpl.memory_intro,
            "memory_title": tpl.memory_title,
            "memories": memory_text,
            "movie": _movie_text(tpl, the_item),
            "summary": _summary_text(tpl, the_item, summary_words),
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
        words = len(_summary_text(tpl, item).split())
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

