"""Prompts of the LLM distillation backends: one chat request per step and batch.

Three steps per chronological batch of a user's train ratings (hierarchical self-reflection, after
Thakur et al. 2025, section 3.2, who build on Persona-DB and Agent4Rec):

* ``update``: rewrite the first-person taste description so that it also covers the new batch;
* ``enrich``: explain each rating of the batch in the first person, grounded in the movie's facts
  and the profile; the stored M_l text is ``"I rated movie <title> (<year>) as <rating> because
  <reason>"`` (the format of the paper's Appendix C), so the rating in the memory is always the
  true one;
* ``reflect``: check the profile against the batch's ratings and reasons and revise it.

Every prompt asks for one JSON object (read by :mod:`recsim_personas.memory.step_output`). A retry
shows the model its rejected answer and the reason, so a retry is a different request, also for the
on-disk cache.
"""

from __future__ import annotations

import json
from typing import Any

from recsim_personas.memory.backends.steps import StepContext, StepRequest
from recsim_personas.memory.step_output import (
    extract_json as extract_json,  # compatibility re-export
)
from recsim_personas.memory.step_output import (
    parse_step_output as parse_step_output,  # compatibility
)

__all__ = ["PROMPT_VERSION", "SYSTEM_PROMPT", "build_messages"]

#: Bump when a prompt changes (part of checkpoint keys; cache keys change by themselves).
PROMPT_VERSION = "1"

SYSTEM_PROMPT = (
    "You distil a movie-recommendation user's rating history into text memories for a user "
    "simulator. You write in the first person, as the user. You only state what the ratings "
    "support. You always answer with exactly one JSON object and nothing else."
)
#: Longest item description quoted in a prompt (words); keeps batches of 10 within small contexts.
_MAX_DESCRIPTION_WORDS = 60
#: Longest rejected answer echoed back on a retry (characters).
_MAX_ECHO_CHARS = 1500


def _trim_words(text: str | None, limit: int) -> str | None:
    if not text:
        return None
    words = text.split()
    return " ".join(words[:limit]) + (" ..." if len(words) > limit else "")


def _ratings_json(ctx: StepContext, with_reasons: bool = False) -> str:
    rows = []
    for br in ctx.ratings:
        item = br.item
        row: dict[str, Any] = {
            "item_id": item.item_id,
            "title": item.title,
            "year": item.year,
            "genres": list(item.genres),
            "historical_average": None if item.avg_rating is None else round(item.avg_rating, 2),
            "my_rating": float(br.rating) if ctx.scale.step % 1 else round(br.rating),
        }
        if item.description:
            row["summary"] = _trim_words(item.description, _MAX_DESCRIPTION_WORDS)
        if item.director:
            row["director"] = item.director
        if item.cast:
            row["cast"] = _trim_words(item.cast, 12)
        if with_reasons and ctx.reasons is not None and item.item_id in ctx.reasons:
            row["my_reason"] = ctx.reasons[item.item_id]
        rows.append(row)
    return "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]"


def _header(ctx: StepContext) -> str:
    activity, conformity, diversity = ctx.traits
    s = ctx.stats
    return (
        f"MY SOCIAL TRAITS:\n- activity: {activity}\n- conformity: {conformity}\n"
        f"- diversity: {diversity}\n"
        f"MY RATINGS SO FAR: {s.n_ratings} movies, mean {s.mean_rating:.2f} on a "
        f"{ctx.scale.min:g}-{ctx.scale.max:g} scale, on average {s.mean_item_offset:+.2f} against "
        "the historical averages."
    )


def _update_prompt(ctx: StepContext) -> str:
    current = ctx.taste.strip() or "(none yet: this is my first batch of ratings)"
    return (
        "TASK: update my profile.\n"
        f"{_header(ctx)}\n\n"
        f"MY CURRENT PROFILE:\n{current}\n\n"
        f"MY NEW RATINGS (batch {ctx.batch_index + 1} of {ctx.n_batches}, oldest first, JSON):\n"
        f"{_ratings_json(ctx)}\n\n"
        "Rewrite my profile so that it also reflects the new ratings: a first-person description "
        "(\"I ...\") of the genres, eras, themes, styles and people I like and dislike, and of how "
        "my ratings compare with the historical averages. Keep what my earlier ratings support; "
        f"use at most {ctx.target_words} words.\n"
        'Answer with JSON only: {"taste": "<my updated first-person profile>"}'
    )


def _enrich_prompt(ctx: StepContext) -> str:
    ids = ", ".join(str(br.item_id) for br in ctx.ratings)
    return (
        "TASK: explain my ratings.\n"
        f"{_header(ctx)}\n\n"
        f"MY PROFILE:\n{ctx.taste.strip()}\n\n"
        f"RATINGS TO EXPLAIN (JSON):\n{_ratings_json(ctx)}\n\n"
        "For every rating, say in the first person why I gave that rating, grounded in the "
        "movie's facts and my profile, in one or two sentences. Each reason will be read after "
        '"I rated movie <title> (<year>) as <my_rating> because", so start it with the reason '
        "itself.\n"
        'Answer with JSON only: {"explanations": [{"item_id": <item_id>, "reason": "<reason>"}, '
        f"...]}} with exactly one entry for each item_id: {ids}."
    )


def _reflect_prompt(ctx: StepContext) -> str:
    return (
        "TASK: reflect on my profile.\n"
        f"{_header(ctx)}\n\n"
        f"MY PROFILE:\n{ctx.taste.strip()}\n\n"
        f"EVIDENCE FROM MY LATEST RATINGS (JSON, with my reasons):\n"
        f"{_ratings_json(ctx, with_reasons=True)}\n\n"
        "Check the profile against this evidence. Correct statements that the ratings contradict, "
        "add tastes or dislikes they reveal (for example \"However, I have realized that ...\"), "
        "drop what nothing supports, and keep the rest. Stay in the first person; use at most "
        f"{ctx.target_words} words.\n"
        'Answer with JSON only: {"taste": "<my revised first-person profile>"}'
    )


_BUILDERS = {"update": _update_prompt, "enrich": _enrich_prompt, "reflect": _reflect_prompt}


def build_messages(request: StepRequest) -> list[dict[str, str]]:
    """Chat messages for one step; a retry appends the rejected answer and why it was rejected."""
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": _BUILDERS[request.kind](request.context)},
    ]
    if request.rejected:
        text, reason = request.rejected[-1]
        echo = text if len(text) <= _MAX_ECHO_CHARS else text[:_MAX_ECHO_CHARS] + " ..."
        messages.append({"role": "assistant", "content": echo})
        messages.append(
            {
                "role": "user",
                "content": (
                    f"That answer was rejected: {reason}. Answer again with only the JSON object "
                    f"asked for above (attempt {request.attempt + 1})."
                ),
            }
        )
    return messages
