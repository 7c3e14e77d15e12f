"""One distillation step for a cohort of users: ask the backend, check each answer, retry or fall back.

The rules (word limit, format, retries, fallback) are those of :mod:`recsim_personas.memory.distill`;
they live here so that every backend gets the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from recsim_personas.errors import BackendError
from recsim_personas.memory.backends.steps import (
    BatchRating,
    StepKind,
    StepRequest,
    StepResponse,
    TextBackend,
)
from recsim_personas.memory.backends.template import TemplateBackend
from recsim_personas.memory.distill_config import DistillConfig
from recsim_personas.memory.statistics import UserStatistics
from recsim_personas.memory.step_output import parse_step_output

__all__ = ["StepRunner", "UserRun", "memory_text"]


def memory_text(item_label: str, rating_text: str, reason: str) -> str:
    """One M_l text, in the paper's format (Appendix C)."""
    reason = reason.strip()
    if reason and not reason.endswith((".", "!", "?")):
        reason += "."
    return f"I rated movie {item_label} as {rating_text} because {reason}"


def _truncate_words(text: str, limit: int) -> str:
    words = text.split()
    return text if len(words) <= limit else " ".join(words[:limit])


@dataclass
class UserRun:
    """Mutable state of one user during distillation."""

    user_id: int
    history: pd.DataFrame
    bounds: list[tuple[int, int]]
    batches: list[tuple[BatchRating, ...]]
    levels: tuple[int, int, int]
    traits: tuple[str, str, str]
    inputs_hash: str
    taste: str = ""
    memo: dict[str, Any] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)
    memories: list[dict[str, Any]] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    failed: BackendError | None = None
    stats: dict[int, UserStatistics] = field(default_factory=dict)

    @property
    def n_batches(self) -> int:
        return len(self.bounds)

    def add_log(self, batch: int, step: str, attempt: int, reason: str, words: int, detail: str) -> None:
        self.log.append({"user_id": self.user_id, "batch": batch, "step": step, "attempt": attempt,
                         "reason": reason, "words": words, "detail": detail})


class StepRunner:
    """Runs one step kind for many users with one backend, enforcing the distiller's rules.

    Args:
        backend: The text backend.
        config: Word limit, retries and fallback.

    Attributes:
        counts: ``rejections, fallbacks, truncations, steps, batches`` so far.
        fatal: The first failure that will hit every user (the run stops), else ``None``.
    """

    def __init__(self, backend: TextBackend, config: DistillConfig) -> None:
        self.backend = backend
        self.config = config
        self.template = backend if isinstance(backend, TemplateBackend) else TemplateBackend()
        self.fallback = config.resolved_fallback(backend.name)
        self.counts = {"rejections": 0, "fallbacks": 0, "truncations": 0, "steps": 0, "batches": 0}
        self.fatal: BackendError | None = None

    def validate(self, req: StepRequest, resp: StepResponse) -> tuple[dict[str, Any] | None, str, str]:
        """``(payload, reason code, detail)``; payload ``None`` when rejected."""
        words = len(resp.text.split())
        if words > self.config.max_words:
            return None, "too_long", f"{words} words > limit {self.config.max_words}"
        if resp.payload is not None:
            return resp.payload, "", ""
        try:
            return parse_step_output(req.kind, resp.text, req.context), "", ""
        except BackendError as exc:
            return None, "invalid_output", str(exc)

    @staticmethod
    def apply(run: UserRun, req: StepRequest, payload: dict[str, Any]) -> None:
        """Store an accepted answer: the batch's M_l texts (enrich) or the new taste text."""
        ctx = req.context
        if req.kind != "enrich":
            run.taste = payload["taste"]
            return
        reasons = payload["reasons"]
        for br in ctx.ratings:
            reason = reasons[br.item_id]
            run.reasons[br.item_id] = reason
            run.memories.append({
                "user_id": run.user_id,
                "item_id": br.item_id,
                "rating": br.rating,
                "timestamp": br.timestamp,
                "text": memory_text(br.item_label, ctx.scale.format(br.rating), reason),
            })

    def use_template(self, run: UserRun, req: StepRequest, reason: str) -> None:
        """Fallback (or the template backend's own answer) with the word limit enforced by cutting."""
        resp = self.template.answer(req)
        payload = dict(resp.payload or {})
        limit = self.config.max_words
        words = len(resp.text.split())
        note = ""
        if req.kind != "enrich" and len(payload["taste"].split()) > limit:
            payload["taste"] = _truncate_words(payload["taste"], limit)
            note = f"template text cut to {limit} words"
        elif req.kind == "enrich" and words > limit:
            per = max(1, limit // max(1, len(payload["reasons"])))
            payload["reasons"] = {k: _truncate_words(v, per) for k, v in payload["reasons"].items()}
            note = f"template reasons cut to {per} words each"
        if note:
            run.add_log(req.context.batch_index, req.kind, req.attempt, "truncated", words, note)
            self.counts["truncations"] += 1
        if reason:
            run.add_log(req.context.batch_index, req.kind, req.attempt, "fallback_template", words,
                        f"used the template text after: {reason}")
            self.counts["fallbacks"] += 1
        self.apply(run, req, payload)

    def run(self, kind: StepKind, pending: list[tuple[UserRun, StepRequest]], b: int) -> None:
        """Answer ``pending`` (one request per user), retrying rejected answers as the config says."""
        self.counts["steps"] += len(pending)
        if isinstance(self.backend, TemplateBackend):
            # Deterministic: a retry would repeat the answer, so go straight to the limit check.
            for run, req in pending:
                self.use_template(run, req, "")
            return
        while pending:
            responses = self.backend.run([req for _, req in pending])
            if len(responses) != len(pending):
                raise BackendError(
                    f"backend {self.backend.name!r} returned {len(responses)} answers for "
                    f"{len(pending)} requests"
                )
            retry: list[tuple[UserRun, StepRequest]] = []
            for (run, req), resp in zip(pending, responses, strict=True):
                again = self._answer(run, req, resp, kind, b)
                if again is not None:
                    retry.append((run, again))
            pending = retry

    def _answer(self, run: UserRun, req: StepRequest, resp: StepResponse, kind: StepKind,
                b: int) -> StepRequest | None:
        """Handle one answer; the retry request when it was rejected with retries left."""
        if resp.error is not None:
            run.failed = resp.error
            if resp.fatal and self.fatal is None:
                self.fatal = resp.error
            return None
        payload, code, detail = self.validate(req, resp)
        if payload is not None:
            self.apply(run, req, payload)
            return None
        self.counts["rejections"] += 1
        run.add_log(b, kind, req.attempt, code, len(resp.text.split()),
                    f"{detail}; answer starts {' '.join(resp.text.split())[:120]!r}")
        if req.attempt < self.config.max_retries:
            return req.retry(resp.text, detail)
        if self.fallback == "template":
            self.use_template(run, req, f"{code} ({detail})")
        else:
            run.failed = BackendError(
                f"{req.context.where}, step {kind}: {req.attempt + 1} answers rejected, last "
                f"{code} ({detail}); raise max_retries or max_words, or use "
                "fallback='template'"
            )
        return None
