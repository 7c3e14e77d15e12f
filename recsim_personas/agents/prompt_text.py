"""The sections of a prompt as text: the task sentence, an item's movie line and summary, memories.

Each function renders one section of :class:`~recsim_personas.agents.prompt_template.PromptTemplate`
from the data it shows (the rating scale, an item, retrieved memories); the prompt builders of
:mod:`recsim_personas.agents.prompts` assemble them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from recsim_personas.agents.prompt_template import PromptTemplate
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError

if TYPE_CHECKING:
    from recsim_personas.memory.cue import CueNumbers

__all__ = [
    "ItemLike",
    "PromptMemory",
    "anchor_text",
    "format_levels",
    "memory_items",
    "movie_text",
    "numbers_text",
    "summary_text",
    "task_text",
]


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
class PromptMemory:
    """One retrieved long-term memory as the prompt shows it: the item and the M_l text."""

    item: ItemLike
    text: str


def format_levels(scale: RatingScale) -> str:
    """``"1, 2, 3, 4 or 5"`` / ``"0.5, 1.0, ..., 4.5 or 5.0"``: every level as the prompt spells it."""
    texts = [scale.format(v) for v in scale.levels]
    return ", ".join(texts[:-1]) + " or " + texts[-1] if len(texts) > 1 else texts[0]


def anchor_text(template: PromptTemplate, scale: RatingScale) -> str:
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


def task_text(template: PromptTemplate, scale: RatingScale) -> str:
    return template.task.format(
        min=scale.format(scale.min),
        max=scale.format(scale.max),
        anchors=anchor_text(template, scale),
        levels=format_levels(scale),
    )


def movie_text(template: PromptTemplate, item: ItemLike) -> str:
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


def summary_text(
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


def numbers_text(template: PromptTemplate, numbers: CueNumbers | None) -> str:
    """The ``numbers`` section (the collaborative cue) from a
    :class:`~recsim_personas.memory.cue.CueNumbers`; ``""`` (section left out) for ``None``.

    Raises:
        ConfigError: the estimate is missing or not finite.
    """
    if numbers is None:
        return ""
    estimate = getattr(numbers, "estimate", None)
    if estimate is None or not math.isfinite(float(estimate)):
        raise ConfigError(f"cue numbers need a finite estimate, got {numbers!r}")

    def part(mean: Any, count: Any, form: str, missing: str) -> str:
        if mean is None or not math.isfinite(float(mean)) or int(count) < 1:
            return missing
        return form.format(mean=float(mean), count=int(count))

    return template.numbers.format(
        user=part(numbers.user_mean, numbers.user_count, template.numbers_user, template.numbers_no_user),
        item=part(numbers.item_mean, numbers.item_count, template.numbers_item, template.numbers_no_item),
        estimate=template.numbers_estimate.format(estimate=float(estimate)),
    )


def memory_items(
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
