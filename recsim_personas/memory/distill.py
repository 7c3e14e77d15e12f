"""Distillation with hierarchical self-reflection: train ratings -> profile M_s and memories M_l.

For each user, the **train** interactions are sorted chronologically (ties by item id) and cut into
batches of at most ``config.batch_size`` (paper: 10). For every batch, in order:

1. ``update``: the backend rewrites the profile's taste description with the batch's ratings;
2. ``enrich``: the backend explains every rating of the batch; each becomes one M_l text,
   ``"I rated movie <title> (<year>) as <rating> because <reason>"``;
3. ``reflect``: the backend revises the taste description against the batch's evidence.

The social traits (activity, conformity, diversity) are computed from the user's statistics with
population cut points (:class:`~recsim_personas.memory.statistics.TraitCuts`), the same for every
backend, and rendered with the paper's texts; only the taste description and the reasons come from
the backend.

Rules shared by all backends (the distiller enforces them, not the backend):

* **Word limit.** An answer longer than ``config.max_words`` words (paper: 2,000) is rejected.
* **Format.** An answer that does not parse (:func:`~recsim_personas.memory.step_output.parse_step_output`)
  is rejected.
* **Retries.** A rejected answer is retried up to ``config.max_retries`` times, the rejected answer
  and the reason shown to the model. Every rejection is a row of the log (``user_id, batch, step,
  attempt, reason, words, detail``).
* **Fallback.** When the retries are used up: ``fallback="template"`` uses the template backend's
  text for that step (logged as ``fallback_template``), ``"error"`` fails the user with a
  :class:`~recsim_personas.errors.BackendError` naming the user, the batch and the step. ``"auto"``
  is ``template`` for the ``hf`` backend (small local models often miss the format) and ``error``
  for ``openai``. A template text over the word limit is cut to the limit (logged as ``truncated``).
* **Failures.** A transport failure (after the backend's own retries) fails that user only; the
  others go on, and the run raises at the end. An unreachable endpoint stops the run at once.
* **Checkpoints.** With ``checkpoint_dir``, each finished user is written atomically to
  ``user-<id>.json`` with a hash of everything that determines it (the user's ratings and item
  facts, trait cuts, output-relevant config, backend identity, prompt version). A re-run loads
  matching files and only distils the others; a changed input re-distils the user.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas.artifacts import stable_hash
from recsim_personas.data.dataset import RatingDataset
from recsim_personas.errors import BackendError, ConfigError, DataError
from recsim_personas.memory.backends.factory import make_backend
from recsim_personas.memory.backends.steps import (
    BatchRating,
    StepContext,
    StepKind,
    StepRequest,
    TextBackend,
)
from recsim_personas.memory.backends.template import TEMPLATE_VERSION
from recsim_personas.memory.distill_checkpoint import (
    CHECKPOINT_VERSION,
    read_checkpoint,
    resume_hint,
    write_checkpoint,
)
from recsim_personas.memory.distill_config import DistillConfig
from recsim_personas.memory.distill_result import (
    LOG_COLUMNS as LOG_COLUMNS,  # compatibility re-export
)
from recsim_personas.memory.distill_result import MEMORY_COLUMNS as MEMORY_COLUMNS  # compatibility
from recsim_personas.memory.distill_result import DistillResult
from recsim_personas.memory.distill_steps import StepRunner, UserRun
from recsim_personas.memory.distill_steps import (
    memory_text as memory_text,  # compatibility re-export
)
from recsim_personas.memory.profile import UserProfile
from recsim_personas.memory.prompts import PROMPT_VERSION
from recsim_personas.memory.statistics import TrainStatistics, UserStatistics
from recsim_personas.memory.traits import trait_text

__all__ = ["Distiller", "distill_users"]

_STEPS: tuple[StepKind, ...] = ("update", "enrich", "reflect")


class Distiller:
    """Distils users of one train split with one backend (see the module docstring).

    Args:
        dataset: The dataset the split was made from.
        catalog: ``ItemCatalog`` (item averages and text as rating prompts show them) or ``None``
            (train averages and the dataset's item columns, the same numbers by definition).
        train: Train interactions (``user_id, item_id, rating, timestamp``).
        backend: A :class:`~recsim_personas.memory.backends.TextBackend`, a backend name, or
            ``None`` for ``config.backend``.
        config: Options (default :class:`DistillConfig()`).
    """

    def __init__(
        self,
        dataset: RatingDataset,
        catalog: Any,
        train: pd.DataFrame,
        backend: TextBackend | str | None = None,
        config: DistillConfig | None = None,
    ) -> None:
        self.config = config or DistillConfig()
        if isinstance(backend, str) and backend != self.config.backend:
            self.config = dataclasses.replace(self.config, backend=backend)
        self.dataset = dataset
        self.stats = TrainStatistics(dataset, train, shrinkage=self.config.shrinkage, catalog=catalog)
        if backend is None or isinstance(backend, str):
            backend = make_backend(self.config.backend, config=self.config)
        if not isinstance(backend, TextBackend):
            raise ConfigError(
                f"backend {backend!r} lacks the TextBackend methods (name, parallelism, run, "
                "identity, usage)"
            )
        self.backend = backend
        self.cuts = self.stats.trait_cuts()
        self._steps = StepRunner(backend, self.config)
        self._fact_digests: dict[tuple[Any, ...], bytes] = {}

    # -- users -----------------------------------------------------------------------------------
    def resolve_users(self, users: Any = None) -> list[int]:
        """The users to distil (all train users when ``None``), validated, duplicates removed.

        Raises:
            DataError: an id not in the split, or a user with no train interactions.
        """
        if users is None:
            return [int(u) for u in self.stats.users]
        out: list[int] = []
        for raw in users:
            try:
                u = int(raw)
            except (TypeError, ValueError):
                raise DataError(f"user id {raw!r} is not an integer") from None
            if u not in out:
                self._check_user(u)
                out.append(u)
        return out

    def _check_user(self, u: int) -> None:
        if self.stats.has_user(u):
            return
        split_users = self.stats.users
        if u in set(self.dataset.interactions["user_id"].unique().tolist()):
            raise DataError(
                f"user {u} has an empty train history: no train interactions in this split "
                f"({len(split_users)} users have some); distil only users of split.train"
            )
        span = f"ids {int(split_users.min())}..{int(split_users.max())}" if len(split_users) else "none"
        raise DataError(f"unknown user id {u}: not in the train split ({len(split_users)} users, {span})")

    def _new_run(self, user_id: int, base_hash: str) -> UserRun:
        history = self.stats.history(user_id)
        n = len(history)
        size = self.config.batch_size
        bounds = [(s, min(s + size, n)) for s in range(0, n, size)]
        levels = self.cuts.levels(self.stats.user_statistics(user_id))
        traits = tuple(
            trait_text(t, lv)
            for t, lv in zip(("activity", "conformity", "diversity"), levels, strict=True)
        )
        # Each rating's item facts leave that rating out of the average (memory.statistics), so an
        # M_l text never states its own rating through a self-including average.
        ratings = [
            BatchRating(item=self.stats.item_facts_without(i, float(r)), rating=float(r), timestamp=int(t))
            for i, r, t in zip(history["item_id"].tolist(), history["rating"].tolist(),
                               history["timestamp"].tolist(), strict=True)
        ]
        batches = [tuple(ratings[s:e]) for s, e in bounds]
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(history.to_numpy(dtype=np.float64)).tobytes())
        for br in ratings:  # item facts as prompts show them (catalog text and averages)
            digest.update(self._fact_digest(br.item))
        inputs_hash = stable_hash({"base": base_hash, "user": user_id, "data": digest.hexdigest()})
        return UserRun(user_id=user_id, history=history, bounds=bounds, batches=batches,
                       levels=levels, traits=traits, inputs_hash=inputs_hash)  # type: ignore[arg-type]

    def _fact_digest(self, facts: Any) -> bytes:
        key = (facts.item_id, facts.avg_rating, facts.n_ratings)  # leave-one-out facts vary by rating
        cached = self._fact_digests.get(key)
        if cached is None:
            fields = [getattr(facts, f.name) for f in dataclasses.fields(facts)]
            cached = hashlib.sha256(json.dumps(fields, default=str).encode()).digest()
            self._fact_digests[key] = cached
        return cached

    def _base_hash(self) -> str:
        return stable_hash({
            "checkpoint": CHECKPOINT_VERSION,
            "template": TEMPLATE_VERSION,
            "prompts": PROMPT_VERSION,
            "cuts": self.cuts.to_dict(),
            "scale": self.dataset.scale.to_dict(),
            "config": self.config.output_dict(),
            "backend": self.backend.identity(),
        })

    # -- contexts --------------------------------------------------------------------------------
    def _stats_upto(self, run: UserRun, upto: int) -> UserStatistics | None:
        if upto == 0:
            return None
        if upto not in run.stats:
            run.stats[upto] = self.stats.user_statistics(run.user_id, upto=upto)
        return run.stats[upto]

    def _context(self, run: UserRun, b: int, kind: StepKind) -> StepContext:
        start, stop = run.bounds[b]
        ratings = run.batches[b]
        stats = self._stats_upto(run, stop)
        assert stats is not None
        return StepContext(
            user_id=run.user_id,
            batch_index=b,
            n_batches=run.n_batches,
            ratings=ratings,
            stats=stats,
            previous_stats=self._stats_upto(run, start),
            traits=run.traits,
            taste=run.taste,
            scale=self.dataset.scale,
            target_words=self.config.target_words,
            reasons={br.item_id: run.reasons[br.item_id] for br in ratings if br.item_id in run.reasons}
            if kind == "reflect" else None,
            memo=run.memo,
        )

    # -- checkpoints -----------------------------------------------------------------------------
    def _load_checkpoint(self, directory: Path, run: UserRun) -> dict[str, Any] | None:
        return read_checkpoint(directory, run.user_id, run.inputs_hash)

    def _save_checkpoint(self, directory: Path, run: UserRun, row: dict[str, Any]) -> None:
        write_checkpoint(directory, run.user_id, {"inputs_hash": run.inputs_hash, "user_id": run.user_id,
                                                  "profile": row, "memories": run.memories, "log": run.log})

    # -- main loop -------------------------------------------------------------------------------
    def distill(
        self,
        users: Any = None,
        *,
        progress: bool = True,
        checkpoint_dir: str | Path | None = None,
    ) -> DistillResult:
        """Distil ``users`` (all train users when ``None``); see :func:`distill_users`."""
        from recsim_personas.progress import progress_bar

        t0 = time.perf_counter()
        selected = self.resolve_users(users)
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        done, todo = self._setup(selected, ckpt)
        resumed = len(done)
        failed: list[UserRun] = []
        bar = progress_bar(total=len(selected), initial=resumed, enabled=progress, unit="user",
                           desc=f"distill ({self.backend.name})")
        try:
            size = max(1, int(self.backend.parallelism))
            for start in range(0, len(todo), size):
                cohort = todo[start:start + size]
                self._distill_cohort(cohort, done, ckpt, bar)
                failed.extend(r for r in cohort if r.failed is not None)
                if self._steps.fatal is not None:
                    raise BackendError(f"{self._steps.fatal}{resume_hint(ckpt, len(done))}")
        finally:
            bar.close()
        if failed:
            raise BackendError(
                f"distillation failed for {len(failed)} of {len(selected)} users "
                f"(users {[r.user_id for r in failed][:10]}): {failed[0].failed}{resume_hint(ckpt, len(done))}"
            )
        return self._result(selected, done, resumed, time.perf_counter() - t0)

    def _setup(self, selected: list[int], ckpt: Path | None) -> tuple[dict[int, dict[str, Any]], list[UserRun]]:
        """Checkpointed users (``{user: {profile, memories, log}}``) and the runs still to do."""
        if ckpt is not None:
            ckpt.mkdir(parents=True, exist_ok=True)
        base = self._base_hash()
        done: dict[int, dict[str, Any]] = {}
        todo: list[UserRun] = []
        for u in selected:
            run = self._new_run(u, base)
            loaded = self._load_checkpoint(ckpt, run) if ckpt is not None else None
            if loaded is not None:
                done[u] = loaded
            else:
                todo.append(run)
        return done, todo

    def _distill_cohort(self, cohort: list[UserRun], done: dict[int, dict[str, Any]], ckpt: Path | None,
                        bar: Any) -> None:
        """Walk a cohort's batches in lockstep; finished users go to ``done`` (and a checkpoint)."""
        for b in range(max(r.n_batches for r in cohort)):
            active = [r for r in cohort if b < r.n_batches and r.failed is None]
            for kind in _STEPS:
                active = [r for r in active if r.failed is None]
                if active:
                    self._steps.run(kind, [(r, StepRequest(kind, self._context(r, b, kind))) for r in active], b)
                if self._steps.fatal is not None:
                    break
            self._steps.counts["batches"] += len(active)
            for run in active:
                if run.failed is None and b == run.n_batches - 1:
                    row = self._profile_row(run)
                    done[run.user_id] = {"profile": row, "memories": run.memories, "log": run.log}
                    if ckpt is not None:
                        self._save_checkpoint(ckpt, run, row)
                    bar.update(1)
            if self._steps.fatal is not None:
                return

    @staticmethod
    def _profile_row(run: UserRun) -> dict[str, Any]:
        a, c, d = run.levels
        return UserProfile(user_id=run.user_id, activity_level=a, conformity_level=c,
                           diversity_level=d, taste=run.taste).to_row()

    def _result(self, selected: list[int], done: dict[int, dict[str, Any]], resumed: int,
                seconds: float) -> DistillResult:
        usage = {
            "backend": self.backend.name,
            "users": len(selected),
            "resumed_users": resumed,
            **self._steps.counts,
            "seconds": round(seconds, 3),
            **{f"backend_{k}": v for k, v in self.backend.usage().items()},
        }
        return DistillResult.from_rows(
            [done[u]["profile"] for u in selected],
            [m for u in selected for m in done[u]["memories"]],
            [entry for u in selected for entry in done[u]["log"]],
            usage=usage, trait_cuts=self.cuts,
        )


def distill_users(
    dataset: RatingDataset,
    catalog: Any,
    train: pd.DataFrame,
    backend: TextBackend | str | None = None,
    config: DistillConfig | None = None,
    *,
    users: Any = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
) -> DistillResult:
    """Distil profiles (M_s) and enriched interactions (M_l) from the train split.

    Args:
        dataset: The dataset the split was made from (items, rating scale).
        catalog: ``ItemCatalog(dataset, train)`` or ``None`` (see :class:`Distiller`).
        train: Train interactions; test interactions must not be passed (memories see train only).
        backend: A backend object, a name (``"template"``, ``"openai"``, ``"hf"``) or ``None`` for
            ``config.backend``.
        config: Options (default ``DistillConfig()``: template backend, batches of 10, 2,000 words).
        users: User ids to distil (default: every user of ``train``).
        progress: Show a tqdm bar.
        checkpoint_dir: Folder for per-user checkpoints; a re-run resumes from it.

    Returns:
        A :class:`DistillResult` (profiles, memories, log, usage).

    Raises:
        DataError: an unknown user id, or a user with an empty train history.
        BackendError: a user failed (after retries and per the fallback rule), or the endpoint is
            unreachable; finished users stay in ``checkpoint_dir``.
        ConfigError: an invalid config or backend.

    Example:
        >>> result = distill_users(dataset, catalog, split.train)            # doctest: +SKIP
        >>> result.profile(1).profile_text[:40]                               # doctest: +SKIP
        'PERSONA: You excel at role-playing. Pict'
    """
    distiller = Distiller(dataset, catalog, train, backend, config)
    return distiller.distill(users, progress=progress, checkpoint_dir=checkpoint_dir)
