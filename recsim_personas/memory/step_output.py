"""Reading an LLM backend's answer to a distillation step into its payload, robustly.

:func:`parse_step_output` accepts code fences, prose around the JSON object, and
``{"item_id": reason}`` maps as well as lists; anything it cannot read raises
:class:`~recsim_personas.errors.BackendError` with the reason, which the distiller logs before
retrying with the rejected answer and the reason shown to the model.
"""

from __future__ import annotations

import json
import re
from typing import Any

from recsim_personas.errors import BackendError
from recsim_personas.memory.backends.steps import StepContext, StepKind

__all__ = ["extract_json", "parse_step_output"]

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in ``text`` (code fences and surrounding prose allowed).

    Raises:
        BackendError: no JSON object can be decoded.
    """
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        stripped = candidate.strip()
        try:
            value = json.loads(stripped)
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
        for match in re.finditer(r"\{", stripped):
            try:
                value, _ = decoder.raw_decode(stripped[match.start():])
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    snippet = " ".join(text.split())[:80]
    raise BackendError(f"answer is not a JSON object (starts {snippet!r})")


def _clean_reason(reason: str) -> str:
    reason = " ".join(str(reason).split())
    # The model sometimes repeats the frame ("I rated movie X as 4 because ...").
    lowered = reason.lower()
    if lowered.startswith("i rated") and " because " in lowered:
        reason = reason[lowered.index(" because ") + len(" because "):]
    elif lowered.startswith("because "):
        reason = reason[len("because "):]
    return reason.strip()


def _reasons(data: dict[str, Any], ctx: StepContext) -> dict[int, str]:
    raw = data.get("explanations", data.get("reasons"))
    pairs: list[tuple[Any, Any]] = []
    if isinstance(raw, list):
        for entry in raw:
            if isinstance(entry, dict):
                text = entry.get("reason", entry.get("text", entry.get("explanation")))
                pairs.append((entry.get("item_id"), text))
    elif isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        raise BackendError('answer has no "explanations" list')
    wanted = {br.item_id for br in ctx.ratings}
    out: dict[int, str] = {}
    for key, text in pairs:
        try:
            item_id = int(key)
        except (TypeError, ValueError):
            continue
        if item_id in wanted and isinstance(text, str) and _clean_reason(text):
            out[item_id] = _clean_reason(text)
    missing = sorted(wanted - set(out))
    if missing:
        raise BackendError(f"explanations missing for item_id(s) {missing}")
    return out


def parse_step_output(kind: StepKind, text: str, ctx: StepContext) -> dict[str, Any]:
    """Parse an LLM answer into the step's payload.

    Returns:
        ``{"taste": str}`` for ``update`` / ``reflect``; ``{"reasons": {item_id: str}}`` for
        ``enrich`` (one per rating of the batch).

    Raises:
        BackendError: not JSON, a field missing or empty, or an item without a reason.
    """
    data = extract_json(text)
    if kind == "enrich":
        return {"reasons": _reasons(data, ctx)}
    taste = data.get("taste", data.get("profile"))
    if not isinstance(taste, str) or len(taste.split()) < 3:
        raise BackendError('answer has no "taste" text of at least 3 words')
    return {"taste": " ".join(taste.split())}
