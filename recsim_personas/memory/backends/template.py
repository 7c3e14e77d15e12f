"""The ``template`` backend: deterministic profile and explanation texts from rating statistics.

No model, no randomness: the same train split gives the same texts on every machine. It follows the
same batch protocol as the LLM backends, so a profile is refined batch by batch:

* ``update``: the taste description is rewritten from the statistics of all ratings seen so far
  (genre and decade leans, liked and disliked examples, rating habit), keeping the reflection notes
  that the evidence still supports;
* ``enrich``: each rating of the batch is explained from the item's genres and decade, the user's
  leans at that point, the user's mean rating and the item's train-average rating;
* ``reflect``: the batch is checked against the profile as it stood *before* the batch. A genre
  whose ratings in this batch sit at least :data:`NOTE_THRESHOLD` stars away from the user's mean,
  in a direction the earlier profile did not state, becomes a note ("However, I have realized that I
  also enjoy Horror movies, such as ..."). Notes are dropped once the cumulative evidence contradicts
  them or once the main text states the same lean; at most :data:`MAX_NOTES` are kept (newest).

Thresholds (stars, on the user's own scale): a genre or decade is a *like* when its shrunk lean is
at least :data:`LEAN_THRESHOLD` above the user's mean and a *dislike* when at least that far below
(see :mod:`recsim_personas.memory.statistics` for the shrinkage).
"""

from __future__ import annotations

from typing import Any

from recsim_personas.memory.backends.steps import (
    BatchRating,
    StepContext,
    StepRequest,
    StepResponse,
)
from recsim_personas.memory.statistics import Lean, UserStatistics

__all__ = [
    "LEAN_THRESHOLD",
    "MAX_NOTES",
    "NOTE_THRESHOLD",
    "TEMPLATE_VERSION",
    "TemplateBackend",
    "explain_rating",
    "taste_text",
]

#: Bump when the texts change (part of checkpoint keys).
TEMPLATE_VERSION = "2"  # 2: explanations quote leave-one-out averages
#: Shrunk lean (stars vs the user's mean) that makes a genre or decade a like / dislike.
LEAN_THRESHOLD = 0.15
#: Batch-level mean deviation (stars) that makes a reflection note.
NOTE_THRESHOLD = 1.0
#: Reflection notes kept in the taste description.
MAX_NOTES = 2
_MAX_GENRES = 3


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _likes(leans: tuple[Lean, ...]) -> list[Lean]:
    return [g for g in leans if g.deviation >= LEAN_THRESHOLD and g.count >= 2][:_MAX_GENRES]


def _dislikes(leans: tuple[Lean, ...]) -> list[Lean]:
    worst = sorted(leans, key=lambda g: (g.deviation, -g.count, g.name))
    return [g for g in worst if g.deviation <= -LEAN_THRESHOLD and g.count >= 2][:_MAX_GENRES]


def _stars(value: float) -> str:
    return f"{value:.1f}"


def _genre_sentence(leans: list[Lean], first_two: str, third: str, none: str) -> str:
    """``first_two`` naming the top two genres, ``third`` adding a third one; ``none`` when empty."""
    if not leans:
        return none
    sentence = first_two.format(_join([g.name for g in leans[:2]]))
    if len(leans) > 2:
        sentence += third.format(leans[2].name)
    return sentence + "."


def _base_taste(stats: UserStatistics, scale_max: float) -> tuple[str, set[str], set[str]]:
    """The statistics part of the taste text, plus the genres it states as liked / disliked."""
    likes = _likes(stats.genre_leans)
    dislikes = _dislikes(stats.genre_leans)
    parts = [
        _genre_sentence(likes, "I especially enjoy {} movies", ", and I also like {} movies",
                        "No genre stands out as a clear favourite of mine."),
        _genre_sentence(dislikes, "I am not fond of {} movies", ", and I often rate {} movies low",
                        "I rarely dislike a whole genre."),
    ]
    best_decade = next((d for d in stats.decade_leans if d.deviation >= LEAN_THRESHOLD and d.count >= 2), None)
    worst_decade = next(
        (d for d in reversed(stats.decade_leans) if d.deviation <= -LEAN_THRESHOLD and d.count >= 2), None
    )
    if best_decade and worst_decade:
        parts.append(
            f"I lean towards films from the {best_decade.name} and care less for films from the "
            f"{worst_decade.name}."
        )
    elif best_decade:
        parts.append(f"I lean towards films from the {best_decade.name}.")
    elif worst_decade:
        parts.append(f"I care less for films from the {worst_decade.name}.")
    if stats.liked:
        verb = "loved" if all(e.rating >= scale_max for e in stats.liked) else "enjoyed"
        parts.append(f"Films I {verb} include {_join([e.label for e in stats.liked])}.")
    if stats.disliked:
        parts.append(f"Films I disliked include {_join([e.label for e in stats.disliked])}.")
    if stats.mean_item_offset >= 0.25:
        habit = "more generous than most viewers"
    elif stats.mean_item_offset <= -0.25:
        habit = "harsher than most viewers"
    else:
        habit = "close to what most viewers give"
    parts.append(
        f"I rate movies {_stars(stats.mean_rating)} out of {scale_max:g} on average, {habit}."
    )
    return " ".join(parts), {g.name for g in likes}, {g.name for g in dislikes}


def taste_text(stats: UserStatistics, scale_max: float, notes: dict[str, dict[str, Any]] | None = None) -> str:
    """First-person taste description from statistics plus the reflection notes still supported.

    Args:
        stats: The user's statistics over the ratings seen so far.
        scale_max: Top of the rating scale (for "out of 5").
        notes: Reflection notes by genre: ``{"sign": +1 | -1, "text": str, "batch": int}``.
    """
    base, liked, disliked = _base_taste(stats, scale_max)
    kept = []
    for genre, note in (notes or {}).items():
        lean = stats.genre(genre)
        current = lean.deviation if lean is not None else 0.0
        stated = genre in (liked if note["sign"] > 0 else disliked)
        if note["sign"] * current > 0 and not stated:
            kept.append(note)
    kept.sort(key=lambda n: n["batch"])
    notes_text = " ".join(n["text"] for n in kept[-MAX_NOTES:])
    return f"{base} {notes_text}".strip()


def explain_rating(rating: BatchRating, stats: UserStatistics, scale_format: Any = None) -> str:
    """The reason part of an M_l text ("... because <reason>") for one rating, from statistics."""
    fmt = scale_format or (lambda v: f"{v:g}")
    r, mean = rating.rating, stats.mean_rating
    leans = [lean for g in rating.item.genres if (lean := stats.genre(g)) is not None]
    direction = 1 if r >= mean + 0.5 else -1 if r <= mean - 0.5 else 0
    if direction > 0:
        aligned = [g.name for g in sorted(leans, key=lambda g: -g.deviation) if g.deviation >= 0.1]
        against = [g.name for g in sorted(leans, key=lambda g: g.deviation) if g.deviation <= -0.1]
        if aligned:
            genre_part = f"I usually like {_join(aligned[:2])} movies"
        elif against:
            genre_part = f"it won me over even though {_join(against[:2])} movies are rarely my favourites"
        else:
            genre_part = "it simply worked for me"
    elif direction < 0:
        aligned = [g.name for g in sorted(leans, key=lambda g: g.deviation) if g.deviation <= -0.1]
        against = [g.name for g in sorted(leans, key=lambda g: -g.deviation) if g.deviation >= 0.1]
        if aligned:
            genre_part = f"{_join(aligned[:2])} movies usually do not appeal to me"
        elif against:
            genre_part = f"it let me down even though I usually like {_join(against[:2])} movies"
        else:
            genre_part = "it did not hold my interest"
    else:
        names = [g.name for g in leans][:2]
        genre_part = (
            f"{_join(names)} movies are a middle-of-the-road choice for me" if names
            else "it was an ordinary watch for me"
        )
    year = rating.item.year
    decade_part = ""
    if year is not None:
        lean = stats.decade(f"{year // 10 * 10}s")
        if lean is not None and direction > 0 and lean.deviation >= LEAN_THRESHOLD:
            decade_part = f" and I tend to enjoy films from the {lean.name}"
        elif lean is not None and direction < 0 and lean.deviation <= -LEAN_THRESHOLD:
            decade_part = f" and films from the {lean.name} are rarely my favourites"
    own = "above" if direction > 0 else "below" if direction < 0 else "close to"
    avg = rating.item.avg_rating
    if avg is None:
        crowd = "no one else's rating to compare with"
    elif r - avg >= 0.5:
        crowd = f"above its {avg:.2f} historical average"
    elif r - avg <= -0.5:
        crowd = f"below its {avg:.2f} historical average"
    else:
        crowd = f"in line with its {avg:.2f} historical average"
    return f"{genre_part}{decade_part}; my {fmt(r)} is {own} my usual {mean:.1f} and {crowd}."


def _reflection_note(ctx: StepContext) -> tuple[str, dict[str, Any]] | None:
    """The strongest new lean this batch reveals that the earlier profile did not state."""
    prev = ctx.previous_stats
    if prev is None:
        return None
    mean = ctx.stats.mean_rating
    by_genre: dict[str, list[BatchRating]] = {}
    for br in ctx.ratings:
        for g in br.item.genres:
            by_genre.setdefault(g, []).append(br)
    prev_likes = {g.name for g in _likes(prev.genre_leans)}
    prev_dislikes = {g.name for g in _dislikes(prev.genre_leans)}
    best: tuple[float, str, int, BatchRating] | None = None
    for genre, rows in sorted(by_genre.items()):
        if len(rows) < 2:
            continue
        dev = sum(br.rating for br in rows) / len(rows) - mean
        if dev >= NOTE_THRESHOLD and genre not in prev_likes:
            sign, example = 1, max(rows, key=lambda br: (br.rating, -br.item_id))
        elif dev <= -NOTE_THRESHOLD and genre not in prev_dislikes:
            sign, example = -1, min(rows, key=lambda br: (br.rating, br.item_id))
        else:
            continue
        if best is None or abs(dev) > abs(best[0]):
            best = (dev, genre, sign, example)
    if best is None:
        return None
    _, genre, sign, example = best
    label = example.item_label
    if sign > 0:
        text = f"However, I have realized that I also enjoy {genre} movies, such as {label}."
    else:
        text = (
            f"However, I have realized that I am less fond of {genre} movies than I thought, "
            f"for example {label}."
        )
    return genre, {"sign": sign, "text": text, "batch": ctx.batch_index}


class TemplateBackend:
    """Deterministic texts from statistics (see the module docstring).

    Args:
        config: Accepted for a uniform :func:`~recsim_personas.memory.backends.make_backend`
            signature; the template backend has no options of its own.
    """

    name = "template"
    parallelism = 1

    def __init__(self, config: Any = None, **_: Any) -> None:
        self.config = config

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "version": TEMPLATE_VERSION}

    def usage(self) -> dict[str, Any]:
        return {}

    def run(self, requests: list[StepRequest]) -> list[StepResponse]:
        return [self.answer(req) for req in requests]

    def answer(self, req: StepRequest) -> StepResponse:
        """The template answer to one request (also the LLM backends' fallback)."""
        ctx = req.context
        notes: dict[str, dict[str, Any]] = ctx.memo.setdefault("template_notes", {})
        scale_max = float(ctx.scale.max)
        if req.kind == "enrich":
            reasons = {
                br.item_id: explain_rating(br, ctx.stats, ctx.scale.format) for br in ctx.ratings
            }
            return StepResponse(text=" ".join(reasons.values()), payload={"reasons": reasons})
        if req.kind == "reflect":
            note = _reflection_note(ctx)
            if note is not None:
                notes[note[0]] = note[1]
        taste = taste_text(ctx.stats, scale_max, notes)
        return StepResponse(text=taste, payload={"taste": taste})
