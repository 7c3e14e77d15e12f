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
* **Format.** An answer that does not parse (:func:`~recsim_personas.memory.prompts.parse_step_output`)
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
import difflib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from recsim_personas.artifacts import atomic_write_parquet, atomic_write_text, stable_hash
from recsim_personas.data.dataset import RatingDataset
from recsim_personas.errors import BackendError, ConfigError, DataError, unknown_keys
from recsim_personas.memory.backends import (
    BACKENDS,
    BatchRating,
    StepContext,
    StepKind,
    StepRequest,
    StepResponse,
    TextBackend,
    make_backend,
)
from recsim_personas.memory.backends.template import TEMPLATE_VERSION, TemplateBackend
from recsim_personas.memory.profile import PROFILE_COLUMNS, UserProfile
from recsim_personas.memory.prompts import PROMPT_VERSION, parse_step_output
from recsim_personas.memory.statistics import TrainStatistics, TraitCuts, UserStatistics
from recsim_personas.memory.traits import trait_text

__all__ = [
    "CHECKPOINT_VERSION",
    "LOG_COLUMNS",
    "MEMORY_COLUMNS",
    "DistillConfig",
    "DistillResult",
    "Distiller",
    "distill_users",
    "memory_text",
]

#: Columns of ``memories.parquet``.
MEMORY_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "rating", "timestamp", "text")
#: Columns of ``distill_log.parquet``.
LOG_COLUMNS: tuple[str, ...] = ("user_id", "batch", "step", "attempt", "reason", "words", "detail")
#: Bump when the checkpoint format or the distillation loop changes.
CHECKPOINT_VERSION = "1"
_STEPS: tuple[StepKind, ...] = ("update", "enrich", "reflect")
_FALLBACKS = ("auto", "template", "error")


@dataclass(frozen=True)
class DistillConfig:
    """How to distil profiles and memories. Every field is validated in ``__post_init__``.

    Attributes:
        backend: ``"template"`` (default, deterministic, no model), ``"openai"`` or ``"hf"``.
        model: Model name (``openai``: default ``"gpt-4o"``; ``hf``: hub id or local path, default
            the packaged SmolLM2-135M-Instruct).
        base_url: OpenAI-compatible endpoint (default ``https://api.openai.com/v1``).
        batch_size: Ratings per chronological batch (paper: at most 10).
        max_words: Answers longer than this many words are rejected (paper: 2,000).
        target_words: Length the prompts ask the taste description to stay under.
        max_retries: Retries of a rejected answer (wrong format or too long) before the fallback.
        fallback: ``"auto"``, ``"template"`` or ``"error"`` (see the module docstring).
        concurrency: ``openai``: users in flight at once (thread pool size).
        generation_batch_size: ``hf``: prompts generated together.
        temperature: Sampling temperature (0 = greedy / deterministic).
        seed: Seed of sampling and of the backoff jitter.
        max_new_tokens: Longest answer, in tokens (``max_tokens`` for ``openai``).
        request_retries: ``openai``: retries of one HTTP request on 429 / 5xx / timeout /
            connection error / malformed body.
        backoff_base: ``openai``: first backoff delay in seconds (doubles per retry).
        backoff_max: ``openai``: longest backoff delay in seconds.
        timeout: ``openai``: seconds a request waits for its answer (5 s to connect).
        retry_after_max: ``openai``: the longest ``Retry-After`` (seconds) honoured; a server asking
            for a longer wait stops the run at once.
        json_mode: ``openai``: send ``response_format={"type": "json_object"}``.
        cache: ``openai``: keep the on-disk request cache.
        cache_dir: ``openai``: cache folder (default ``cache_dir("llm-requests", "openai")``).
        api_key_env: ``openai``: environment variable holding the API key.
        price_per_million: ``openai``: USD per 1M (input, output) tokens; ``None`` = the model's
            entry in ``PRICES`` (GPT-4o: 2.50 / 10.00), or 0.
        shrinkage: Pseudo-count of the per-genre / per-decade leans (template statistics).
        device: ``hf``: ``"auto"``, ``"cpu"``, ``"cuda"``.
        dtype: ``hf``: ``"auto"``, ``"float32"``, ``"bfloat16"`` ...
    """

    backend: str = "template"
    model: str | None = None
    base_url: str | None = None
    batch_size: int = 10
    max_words: int = 2000
    target_words: int = 300
    max_retries: int = 2
    fallback: Literal["auto", "template", "error"] = "auto"
    concurrency: int = 4
    generation_batch_size: int = 4
    temperature: float = 0.0
    seed: int = 0
    max_new_tokens: int = 1024
    request_retries: int = 2
    backoff_base: float = 1.0
    backoff_max: float = 10.0
    timeout: float = 30.0
    retry_after_max: float = 30.0
    json_mode: bool = True
    cache: bool = True
    cache_dir: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    price_per_million: tuple[float, float] | None = None
    shrinkage: float = 5.0
    device: str = "auto"
    dtype: str = "auto"

    #: Fields that change the distilled texts (part of checkpoint keys); the rest only change speed.
    OUTPUT_FIELDS = (
        "backend", "model", "batch_size", "max_words", "target_words", "max_retries", "fallback",
        "temperature", "seed", "max_new_tokens", "json_mode", "shrinkage", "dtype",
    )

    def __post_init__(self) -> None:
        errors: list[str] = []
        if self.backend not in BACKENDS:
            close = difflib.get_close_matches(str(self.backend), BACKENDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            errors.append(f"backend={self.backend!r}: use one of {list(BACKENDS)}.{hint}")
        if self.fallback not in _FALLBACKS:
            errors.append(f"fallback={self.fallback!r}: use one of {list(_FALLBACKS)}")
        for name, low in (
            ("batch_size", 1), ("max_words", 1), ("target_words", 1), ("max_retries", 0),
            ("concurrency", 1), ("generation_batch_size", 1), ("max_new_tokens", 1),
            ("request_retries", 0),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                errors.append(f"{name}={value!r}: must be an integer >= {low}")
        for name in ("temperature", "backoff_base", "backoff_max", "retry_after_max", "shrinkage"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                errors.append(f"{name}={value!r}: must be a number >= 0")
        if not isinstance(self.timeout, (int, float)) or self.timeout <= 0:
            errors.append(f"timeout={self.timeout!r}: must be a number > 0")
        if self.price_per_million is not None:
            price = tuple(self.price_per_million)
            if len(price) != 2 or any(not isinstance(p, (int, float)) or p < 0 for p in price):
                errors.append(
                    f"price_per_million={self.price_per_million!r}: need (input, output) USD >= 0"
                )
            else:
                object.__setattr__(self, "price_per_million", (float(price[0]), float(price[1])))
        if errors:
            raise ConfigError("invalid DistillConfig: " + "; ".join(errors))

    def resolved_fallback(self, backend_name: str) -> str:
        """``"template"`` or ``"error"`` for ``backend_name`` (resolves ``"auto"``)."""
        if self.fallback != "auto":
            return self.fallback
        return "error" if backend_name == "openai" else "template"

    def output_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.OUTPUT_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["price_per_million"] is not None:
            out["price_per_million"] = list(out["price_per_million"])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: unknown keys (with a did-you-mean) or invalid values.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        hints = unknown_keys(data, names)
        if hints:
            raise ConfigError(f"unknown DistillConfig key(s): {', '.join(hints)}")
        values = dict(data)
        if values.get("price_per_million") is not None:
            values["price_per_million"] = tuple(values["price_per_million"])
        return cls(**values)


def memory_text(item_label: str, rating_text: str, reason: str) -> str:
    """One M_l text, in the paper's format (Appendix C)."""
    reason = reason.strip()
    if reason and not reason.endswith((".", "!", "?")):
        reason += "."
    return f"I rated movie {item_label} as {rating_text} because {reason}"


def _truncate_words(text: str, limit: int) -> str:
    words = text.split()
    return text if len(words) <= limit else " ".join(words[:limit])


def _empty_frame(columns: tuple[str, ...], dtypes: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "str")) for c in columns})


# Text columns use "str" (pandas 3's string dtype; plain object strings on pandas 2), so frames
# compare equal after a parquet round trip.
_MEMORY_DTYPES = {"user_id": "int64", "item_id": "int64", "rating": "float64", "timestamp": "int64",
                  "text": "str"}
_LOG_DTYPES = {"user_id": "int64", "batch": "int64", "step": "str", "attempt": "int64",
               "reason": "str", "words": "int64", "detail": "str"}
_PROFILE_DTYPES = {"user_id": "int64", "activity": "str", "conformity": "str", "diversity": "str",
                   "activity_level": "int64", "conformity_level": "int64",
                   "diversity_level": "int64", "taste": "str", "profile_text": "str"}


@dataclass
class DistillResult:
    """What :func:`distill_users` returns.

    Attributes:
        profiles: One row per user, columns :data:`~recsim_personas.memory.profile.PROFILE_COLUMNS`.
        memories: One row per train interaction, columns :data:`MEMORY_COLUMNS`.
        log: One row per rejected or replaced answer, columns :data:`LOG_COLUMNS`.
        usage: Counters: users, resumed users, batches, steps, rejections, fallbacks, seconds, and
            the backend's own (requests, tokens, cost, cache hits).
        trait_cuts: The cut points that mapped statistics to trait levels.
    """

    profiles: pd.DataFrame
    memories: pd.DataFrame
    log: pd.DataFrame
    usage: dict[str, Any] = field(default_factory=dict)
    trait_cuts: TraitCuts | None = None

    def profile(self, user_id: int) -> UserProfile:
        rows = self.profiles[self.profiles["user_id"] == int(user_id)]
        if rows.empty:
            raise DataError(
                f"user id {user_id} is not in this result ({len(self.profiles)} users distilled)"
            )
        return UserProfile.from_row(rows.iloc[0].to_dict())

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``profiles.parquet``, ``memories.parquet``, ``distill_log.parquet`` atomically."""
        directory = Path(directory)
        paths = {
            "profiles": directory / "profiles.parquet",
            "memories": directory / "memories.parquet",
            "log": directory / "distill_log.parquet",
        }
        atomic_write_parquet(paths["profiles"], self.profiles)
        atomic_write_parquet(paths["memories"], self.memories)
        atomic_write_parquet(paths["log"], self.log)
        return paths


@dataclass
class _UserRun:
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
        self._template = backend if isinstance(backend, TemplateBackend) else TemplateBackend()
        self.cuts = self.stats.trait_cuts()
        self._fallback = self.config.resolved_fallback(backend.name)
        self._counts = {"rejections": 0, "fallbacks": 0, "truncations": 0, "steps": 0, "batches": 0}
        self._fatal: BackendError | None = None
        self._fact_digests: dict[tuple[Any, ...], bytes] = {}

    # -- users -----------------------------------------------------------------------------------
    def resolve_users(self, users: Any = None) -> list[int]:
        """The users to distil (all train users when ``None``), validated, duplicates removed.

        Raises:
            DataError: an id not in the split, or a user with no train interactions.
        """
        split_users = self.stats.users
        if users is None:
            return [int(u) for u in split_users]
        out: list[int] = []
        known = None
        for raw in users:
            try:
                u = int(raw)
            except (TypeError, ValueError):
                raise DataError(f"user id {raw!r} is not an integer") from None
            if u in out:
                continue
            if not self.stats.has_user(u):
                if known is None:
                    known = set(self.dataset.interactions["user_id"].unique().tolist())
                if u in known:
                    raise DataError(
                        f"user {u} has an empty train history: no train interactions in this split "
                        f"({len(split_users)} users have some); distil only users of split.train"
                    )
                span = f"ids {int(split_users.min())}..{int(split_users.max())}" if len(split_users) else "none"
                raise DataError(
                    f"unknown user id {u}: not in the train split ({len(split_users)} users, {span})"
                )
            out.append(u)
        return out

    def _new_run(self, user_id: int, base_hash: str) -> _UserRun:
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
        return _UserRun(user_id=user_id, history=history, bounds=bounds, batches=batches,
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
    def _stats_upto(self, run: _UserRun, upto: int) -> UserStatistics | None:
        if upto == 0:
            return None
        if upto not in run.stats:
            run.stats[upto] = self.stats.user_statistics(run.user_id, upto=upto)
        return run.stats[upto]

    def _context(self, run: _UserRun, b: int, kind: StepKind) -> StepContext:
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

    # -- steps -----------------------------------------------------------------------------------
    def _validate(self, req: StepRequest, resp: StepResponse) -> tuple[dict[str, Any] | None, str, str]:
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

    def _apply(self, run: _UserRun, req: StepRequest, payload: dict[str, Any]) -> None:
        ctx = req.context
        if req.kind == "enrich":
            reasons = payload["reasons"]
            for br in ctx.ratings:
                reason = reasons[br.item_id]
                run.reasons[br.item_id] = reason
                run.memories.append({
                    "user_id": run.user_id,
                    "item_id": br.item_id,
                    "rating": br.rating,
                    "timestamp": br.timestamp,
                    "text": memory_text(br.item.label, ctx.scale.format(br.rating), reason),
                })
        else:
            run.taste = payload["taste"]

    def _use_template(self, run: _UserRun, req: StepRequest, reason: str) -> None:
        """Fallback (or the template backend's own answer) with the word limit enforced by cutting."""
        resp = self._template.answer(req)
        payload = dict(resp.payload or {})
        limit = self.config.max_words
        if req.kind != "enrich" and len(payload["taste"].split()) > limit:
            payload["taste"] = _truncate_words(payload["taste"], limit)
            run.add_log(req.context.batch_index, req.kind, req.attempt, "truncated",
                        len(resp.text.split()), f"template text cut to {limit} words")
            self._counts["truncations"] += 1
        elif req.kind == "enrich" and len(resp.text.split()) > limit:
            per = max(1, limit // max(1, len(payload["reasons"])))
            payload["reasons"] = {k: _truncate_words(v, per) for k, v in payload["reasons"].items()}
            run.add_log(req.context.batch_index, req.kind, req.attempt, "truncated",
                        len(resp.text.split()), f"template reasons cut to {per} words each")
            self._counts["truncations"] += 1
        if reason:
            run.add_log(req.context.batch_index, req.kind, req.attempt, "fallback_template",
                        len(resp.text.split()), f"used the template text after: {reason}")
            self._counts["fallbacks"] += 1
        self._apply(run, req, payload)

    def _run_step(self, kind: StepKind, runs: list[_UserRun], b: int) -> None:
        pending = [(run, StepRequest(kind, self._context(run, b, kind))) for run in runs]
        self._counts["steps"] += len(pending)
        if isinstance(self.backend, TemplateBackend):
            # Deterministic: a retry would repeat the answer, so go straight to the limit check.
            for run, req in pending:
                self._use_template(run, req, "")
            return
        while pending:
            responses = self.backend.run([req for _, req in pending])
            if len(responses) != len(pending):
                raise BackendError(
                    f"backend {self.backend.name!r} returned {len(responses)} answers for "
                    f"{len(pending)} requests"
                )
            retry: list[tuple[_UserRun, StepRequest]] = []
            for (run, req), resp in zip(pending, responses, strict=True):
                if resp.error is not None:
                    run.failed = resp.error
                    if resp.fatal and self._fatal is None:
                        self._fatal = resp.error
                    continue
                payload, code, detail = self._validate(req, resp)
                if payload is not None:
                    self._apply(run, req, payload)
                    continue
                self._counts["rejections"] += 1
                run.add_log(b, kind, req.attempt, code, len(resp.text.split()),
                            f"{detail}; answer starts {' '.join(resp.text.split())[:120]!r}")
                if req.attempt < self.config.max_retries:
                    retry.append((run, req.retry(resp.text, detail)))
                elif self._fallback == "template":
                    self._use_template(run, req, f"{code} ({detail})")
                else:
                    run.failed = BackendError(
                        f"{req.context.where}, step {kind}: {req.attempt + 1} answers rejected, last "
                        f"{code} ({detail}); raise max_retries or max_words, or use "
                        "fallback='template'"
                    )
            pending = retry

    # -- checkpoints -----------------------------------------------------------------------------
    @staticmethod
    def _checkpoint_path(directory: Path, user_id: int) -> Path:
        return directory / f"user-{user_id}.json"

    def _load_checkpoint(self, directory: Path, run: _UserRun) -> dict[str, Any] | None:
        path = self._checkpoint_path(directory, run.user_id)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # unreadable: distil the user again (the file is replaced atomically)
        if not isinstance(data, dict) or data.get("inputs_hash") != run.inputs_hash:
            return None
        return data

    def _profile_row(self, run: _UserRun) -> dict[str, Any]:
        a, c, d = run.levels
        return UserProfile(user_id=run.user_id, activity_level=a, conformity_level=c,
                           diversity_level=d, taste=run.taste).to_row()

    def _save_checkpoint(self, directory: Path, run: _UserRun, row: dict[str, Any]) -> None:
        payload = {"inputs_hash": run.inputs_hash, "user_id": run.user_id, "profile": row,
                   "memories": run.memories, "log": run.log}
        atomic_write_text(self._checkpoint_path(directory, run.user_id),
                          json.dumps(payload, ensure_ascii=False, default=_json_default))

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
        base = self._base_hash()
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        if ckpt is not None:
            ckpt.mkdir(parents=True, exist_ok=True)
        done: dict[int, dict[str, Any]] = {}
        todo: list[_UserRun] = []
        for u in selected:
            run = self._new_run(u, base)
            loaded = self._load_checkpoint(ckpt, run) if ckpt is not None else None
            if loaded is not None:
                done[u] = loaded
            else:
                todo.append(run)
        resumed = len(done)
        failed: list[_UserRun] = []
        bar = progress_bar(total=len(selected), initial=resumed, enabled=progress, unit="user",
                   desc=f"distill ({self.backend.name})")
        try:
            size = max(1, int(self.backend.parallelism))
            for start in range(0, len(todo), size):
                cohort = todo[start:start + size]
                for b in range(max(r.n_batches for r in cohort)):
                    active = [r for r in cohort if b < r.n_batches and r.failed is None]
                    for kind in _STEPS:
                        active = [r for r in active if r.failed is None]
                        if active:
                            self._run_step(kind, active, b)
                        if self._fatal is not None:
                            break
                    self._counts["batches"] += len(active)
                    for run in active:
                        if run.failed is None and b == run.n_batches - 1:
                            row = self._profile_row(run)
                            done[run.user_id] = {"profile": row, "memories": run.memories, "log": run.log}
                            if ckpt is not None:
                                self._save_checkpoint(ckpt, run, row)
                            bar.update(1)
                    if self._fatal is not None:
                        break
                failed.extend(r for r in cohort if r.failed is not None)
                if self._fatal is not None:
                    raise BackendError(f"{self._fatal}{self._resume_hint(ckpt, len(done))}")
        finally:
            bar.close()
        if failed:
            first = failed[0].failed
            raise BackendError(
                f"distillation failed for {len(failed)} of {len(selected)} users "
                f"(users {[r.user_id for r in failed][:10]}): {first}{self._resume_hint(ckpt, len(done))}"
            )
        return self._result(selected, done, resumed, time.perf_counter() - t0)

    @staticmethod
    def _resume_hint(ckpt: Path | None, n_done: int) -> str:
        if ckpt is None:
            return f"; {n_done} finished users were not kept (pass checkpoint_dir to resume)"
        # Only accepted answers are cached: a re-run asks again for every failed step.
        return (f"; {n_done} finished users are checkpointed in {ckpt}: after fixing the cause, a "
                "re-run resumes after them")

    def _result(self, selected: list[int], done: dict[int, dict[str, Any]], resumed: int,
                seconds: float) -> DistillResult:
        profile_rows = [done[u]["profile"] for u in selected]
        memory_rows = [m for u in selected for m in done[u]["memories"]]
        log_rows = [entry for u in selected for entry in done[u]["log"]]
        profiles = pd.DataFrame(profile_rows, columns=list(PROFILE_COLUMNS)) if profile_rows else \
            _empty_frame(PROFILE_COLUMNS, _PROFILE_DTYPES)
        profiles = profiles.astype(_PROFILE_DTYPES)
        memories = pd.DataFrame(memory_rows, columns=list(MEMORY_COLUMNS)) if memory_rows else \
            _empty_frame(MEMORY_COLUMNS, _MEMORY_DTYPES)
        memories = memories.astype(_MEMORY_DTYPES)
        log = pd.DataFrame(log_rows, columns=list(LOG_COLUMNS)) if log_rows else \
            _empty_frame(LOG_COLUMNS, _LOG_DTYPES)
        log = log.astype(_LOG_DTYPES)
        usage = {
            "backend": self.backend.name,
            "users": len(selected),
            "resumed_users": resumed,
            **self._counts,
            "seconds": round(seconds, 3),
            **{f"backend_{k}": v for k, v in self.backend.usage().items()},
        }
        return DistillResult(profiles=profiles, memories=memories, log=log, usage=usage,
                             trait_cuts=self.cuts)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


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
