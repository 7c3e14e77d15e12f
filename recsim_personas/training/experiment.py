"""The Table-1 experiment: train theta_persona / theta_single(min) / theta_single(max), evaluate all rows.

Given a run folder from the memory stage (split, profiles, memories, embeddings, personas) and an
:class:`ExperimentConfig`, :func:`run_experiment` produces the small-LM rows of the paper's Table 1:

====  ==============  ==========
No.   adapter         memories
====  ==============  ==========
3     - (prompted)    M_s
4     - (prompted)    M_s + M_l
5     single (max)    M_s
6     single (min)    M_s
7     single (max)    M_s + M_l
8     single (min)    M_s + M_l
9     persona         M_s
10    persona         M_s + M_l
====  ==============  ==========

Training data, per memory mode: one row per train interaction (at most ``train_rows_per_user`` per
user, drawn at random with the seed). ``persona_<p>`` trains on the rows of persona ``p``'s users.
``single_min`` / ``single_max`` train on all users' rows, sub-sampled by the same fraction per user to
the size of the smallest / largest persona dataset (the paper's fair comparison). Evaluation: the test
rows (at most ``test_rows_per_user`` per user, drawn at random), each persona adapter on its own
users, the single adapters and the prompted base model on everyone.

Caching: every finished adapter lives in ``adapters/<name>__<mode>/`` (with ``recsim_adapter.json``;
an interrupted adapter resumes from its checkpoint) and every finished evaluation in
``results/row<NN>_<adapter>__<mode>.json`` together with the predictions parquet. A re-run skips what
is finished with the same inputs and redoes what changed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from recsim_personas.artifacts import atomic_write_parquet, stable_hash
from recsim_personas.errors import ConfigError, DataError, unknown_keys
from recsim_personas.training.config import PRESETS, LoraTrainConfig
from recsim_personas.training.rows import cap_per_user, rows_digest, subsample_to_size

__all__ = [
    "ADAPTER_KINDS",
    "TABLE1_ROWS",
    "ExperimentConfig",
    "ExperimentPlan",
    "ExperimentResult",
    "adapter_dir",
    "evaluate_rows",
    "experiment_table",
    "finished_adapters",
    "persona_map",
    "plan_experiment",
    "run_experiment",
    "select_users",
    "test_rows",
    "train_adapters",
]

MemoryMode = Literal["ms", "msml"]
AdapterKind = Literal["persona", "single_min", "single_max"]
EvalMode = Literal["score", "generate"]
#: Adapter kinds that are trained (``base`` = the prompted model, no adapter).
ADAPTER_KINDS: tuple[str, ...] = get_args(AdapterKind)
#: Table 1 row number -> (adapter kind, memory mode), as in the paper.
TABLE1_ROWS: dict[int, tuple[str, str]] = {
    3: ("base", "ms"),
    4: ("base", "msml"),
    5: ("single_max", "ms"),
    6: ("single_min", "ms"),
    7: ("single_max", "msml"),
    8: ("single_min", "msml"),
    9: ("persona", "ms"),
    10: ("persona", "msml"),
}
_MODE_LABEL = {"ms": "M_s", "msml": "M_s + M_l"}
_KIND_LABEL = {"base": "-", "single_max": "single (max)", "single_min": "single (min)", "persona": "persona"}


def _choices(values: Sequence[str], allowed: Sequence[str], what: str, errors: list[str]) -> tuple[str, ...]:
    out = tuple(values)
    for v in out:
        if v not in allowed:
            close = difflib.get_close_matches(str(v), list(allowed), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            errors.append(f"{what}: unknown value {v!r}; choose from {', '.join(allowed)}.{hint}")
    if len(set(out)) != len(out):
        errors.append(f"{what} has duplicates: {list(out)}")
    return out


@dataclass(frozen=True)
class ExperimentConfig:
    """What the Table-1 experiment trains and evaluates.

    Every field has help text in its metadata. ``to_dict`` / ``from_dict`` round-trip.
    """

    model: str | None = field(
        default=None, metadata={"help": "Base LM: None = packaged SmolLM2-135M-Instruct, or a hub id / path."}
    )
    device: str = field(default="auto", metadata={"help": "auto (CUDA if present), cpu or cuda."})
    train_preset: Literal["cpu", "paper"] = field(
        default="cpu", metadata={"help": "LoraTrainConfig preset: cpu or paper."}
    )
    train_overrides: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "LoraTrainConfig fields overriding the preset."}
    )
    memory_modes: tuple[MemoryMode, ...] = field(
        default=("ms", "msml"), metadata={"help": "Memory modes: ms (M_s) and/or msml (M_s + M_l)."}
    )
    adapters: tuple[AdapterKind, ...] = field(
        default=("persona", "single_min", "single_max"),
        metadata={"help": "Adapter kinds to train and evaluate."},
    )
    base_rows: bool = field(
        default=True, metadata={"help": "Also evaluate the prompted base model (rows 3-4)."}
    )
    max_users: int | None = field(
        default=None,
        metadata={"help": "Use at most N users of the split (seeded, proportional per persona, at least "
                  "one per persona), or None for all (CPU budget)."},
    )
    train_rows_per_user: int | float | None = field(
        default=None,
        metadata={"help": "Cap on train rows per user (int), a fraction, or None for all (CPU budget)."},
    )
    test_rows_per_user: int | None = field(
        default=None, metadata={"help": "Cap on test rows per user, or None for all (CPU budget)."}
    )
    eval_mode: EvalMode = field(
        default="score", metadata={"help": "score (distribution, one pass) or generate (the paper's)."}
    )
    template: str = field(default="paper", metadata={"help": "Prompt preset (paper or compact)."})
    k: int = field(default=1, metadata={"help": "Memories retrieved per prompt in msml mode (paper: 1)."})
    delta: float = field(default=0.0, metadata={"help": "Minimum cosine similarity of a memory."})
    eval_batch_size: int = field(default=64, metadata={"help": "Requests per agent call."})
    scorer_batch: int = field(default=16, metadata={"help": "Rows per scoring forward pass."})
    server: str | None = field(
        default=None,
        metadata={"help": "Evaluate through a vLLM server that serves the base model and the run's "
                  "adapters (`recsim-personas serve RUN --launch`), e.g. http://127.0.0.1:8000/v1; "
                  "None: in this process."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the row caps, sub-sampling and sampling."})

    def __post_init__(self) -> None:
        errors: list[str] = []
        object.__setattr__(self, "memory_modes", _choices(self.memory_modes, ("ms", "msml"), "memory_modes", errors))
        object.__setattr__(self, "adapters", _choices(self.adapters, ADAPTER_KINDS, "adapters", errors))
        if not self.memory_modes:
            errors.append("memory_modes is empty; give ms and/or msml")
        if not self.adapters and not self.base_rows:
            errors.append("nothing to do: adapters is empty and base_rows is False")
        if self.train_preset not in PRESETS:
            close = difflib.get_close_matches(str(self.train_preset), list(PRESETS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            errors.append(f"train_preset: unknown preset {self.train_preset!r}; choose from {', '.join(PRESETS)}.{hint}")
        else:
            try:
                self.train_config()
            except ConfigError as exc:
                errors.append(f"train_overrides: {exc}")
        if self.eval_mode not in get_args(EvalMode):
            errors.append(f"eval_mode must be score or generate, got {self.eval_mode!r}")
        r = self.train_rows_per_user
        if r is not None and (isinstance(r, bool) or not (
            (isinstance(r, int) and r >= 1) or (isinstance(r, float) and 0 < r <= 1)
        )):
            errors.append(f"train_rows_per_user must be an int >= 1, a fraction in (0, 1] or None, got {r!r}")
        u = self.max_users
        if u is not None and (isinstance(u, bool) or not isinstance(u, int) or u < 1):
            errors.append(f"max_users must be an int >= 1 or None, got {u!r}")
        t = self.test_rows_per_user
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
            errors.append(f"test_rows_per_user must be an int >= 1 or None, got {t!r}")
        if self.k < 1:
            errors.append(f"k must be >= 1, got {self.k}")
        if self.eval_batch_size < 1 or self.scorer_batch < 1:
            errors.append("eval_batch_size and scorer_batch must be >= 1")
        try:
            from recsim_personas.agents.prompts import get_template

            get_template(self.template)
        except ConfigError as exc:
            errors.append(f"template: {exc}")
        if errors:
            raise ConfigError("invalid ExperimentConfig:\n  - " + "\n  - ".join(errors))

    def train_config(self) -> LoraTrainConfig:
        """The LoRA settings: the preset with :attr:`train_overrides` applied."""
        return LoraTrainConfig.preset(self.train_preset, **dict(self.train_overrides))

    def rows(self) -> list[int]:
        """Table-1 row numbers this config produces, ascending."""
        out = []
        for no, (kind, mode) in TABLE1_ROWS.items():
            if mode in self.memory_modes and (kind in self.adapters or (kind == "base" and self.base_rows)):
                out.append(no)
        return out

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["memory_modes"] = list(self.memory_modes)
        out["adapters"] = list(self.adapters)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        names = [f.name for f in dataclasses.fields(cls)]
        hints = unknown_keys(data, names)
        if hints:
            raise ConfigError(f"unknown ExperimentConfig field(s): {', '.join(hints)}")
        kwargs = dict(data)
        for key in ("memory_modes", "adapters"):
            if key in kwargs and isinstance(kwargs[key], str):
                kwargs[key] = tuple(s.strip() for s in kwargs[key].split(",") if s.strip())
            elif key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Run-folder inputs
# ---------------------------------------------------------------------------------------------
def adapter_dir(run_dir: str | Path, name: str, mode: str) -> Path:
    """``<run_dir>/adapters/<name>__<mode>`` (docs/design.md)."""
    return Path(run_dir) / "adapters" / f"{name}__{mode}"


def _load_inputs(run_dir: Path) -> tuple[Any, pd.DataFrame]:
    from recsim_personas.data.splits import Split

    if not (run_dir / "split" / "config.json").is_file():
        raise DataError(
            f"run folder {run_dir} has no split; build it first with "
            f"`recsim-personas memory --out {run_dir}`"
        )
    split = Split.load(run_dir / "split")
    path = run_dir / "personas.parquet"
    if not path.is_file():
        raise DataError(
            f"run folder {run_dir} has no personas.parquet; run the personas stage "
            f"(`recsim-personas memory --stages personas --out {run_dir}`)"
        )
    personas = pd.read_parquet(path)
    return split, personas


def _persona_map(personas: pd.DataFrame) -> dict[int, int]:
    return {int(u): int(p) for u, p in zip(personas["user_id"], personas["persona"], strict=True)}


def select_users(personas: dict[int, int], max_users: int | None, seed: int = 0) -> np.ndarray:
    """At most ``max_users`` user ids, drawn per persona in proportion to its size (at least one each).

    Shares are rounded by largest remainder; the draw within a persona is seeded. ``None``: everyone.
    """
    users = np.asarray(sorted(personas), dtype=np.int64)
    if max_users is None or max_users >= len(users):
        return users
    groups: dict[int, list[int]] = {}
    for u in users.tolist():
        groups.setdefault(personas[u], []).append(u)
    keys = sorted(groups)
    if max_users < len(keys):
        raise ConfigError(
            f"max_users={max_users} is fewer than the {len(keys)} personas; every persona needs a user"
        )
    exact = np.array([max_users * len(groups[p]) / len(users) for p in keys])
    quota = np.maximum(1, np.floor(exact).astype(int))
    for i in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if quota.sum() >= max_users:
            break
        if quota[i] < len(groups[keys[i]]):
            quota[i] += 1
    while quota.sum() > max_users:
        quota[int(np.argmax(quota))] -= 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(groups[p], size=int(q), replace=False) for p, q in zip(keys, quota, strict=True)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _users_of(split: Any, personas: dict[int, int], config: ExperimentConfig) -> np.ndarray:
    missing = sorted(set(split.train["user_id"].astype(int)) - set(personas))
    if missing:
        raise DataError(
            f"user(s) {missing[:5]} of the split have no persona; re-run the personas stage"
        )
    return select_users(personas, config.max_users, config.seed)


def _train_interactions(split: Any, config: ExperimentConfig, users: np.ndarray) -> pd.DataFrame:
    train = split.train[split.train["user_id"].isin(users)]
    return cap_per_user(train, config.train_rows_per_user, seed=config.seed).reset_index(drop=True)


def _test_interactions(split: Any, config: ExperimentConfig, users: np.ndarray) -> pd.DataFrame:
    test = split.test[split.test["user_id"].isin(users)]
    return cap_per_user(test, config.test_rows_per_user, seed=config.seed).reset_index(drop=True)


def _adapter_datasets(
    interactions: pd.DataFrame, personas: dict[int, int], kinds: Sequence[str], seed: int
) -> dict[str, pd.DataFrame]:
    """``{adapter name: its rows (or interactions)}`` for one memory mode."""
    if "persona" not in interactions.columns:
        interactions = interactions.assign(persona=[personas[int(u)] for u in interactions["user_id"]])
    by_persona = {int(p): part for p, part in interactions.groupby("persona", sort=True)}
    sizes = {p: len(part) for p, part in by_persona.items()}
    out: dict[str, pd.DataFrame] = {}
    if "persona" in kinds:
        for p, part in by_persona.items():
            out[f"persona_{p}"] = part.reset_index(drop=True)
    if "single_min" in kinds:
        out["single_min"] = subsample_to_size(interactions, min(sizes.values()), seed=seed)
    if "single_max" in kinds:
        out["single_max"] = subsample_to_size(interactions, max(sizes.values()), seed=seed + 1)
    return out


# ---------------------------------------------------------------------------------------------
# Plan (no model needed)
# ---------------------------------------------------------------------------------------------
@dataclass
class ExperimentPlan:
    """What :func:`run_experiment` will do: adapters with their row counts, evaluations with theirs.

    Attributes:
        adapters: One dict per adapter: ``name``, ``mode``, ``rows``, ``users``, ``steps``, ``done``
            (a finished adapter folder exists), and with token estimates ``train_tokens``.
        evaluations: One dict per Table-1 row: ``row``, ``adapter``, ``mode``, ``test_rows``, ``users``,
            ``done`` and with token estimates ``eval_tokens``.
        cuts: Human-readable lines saying what the config cuts versus the full protocol.
        tokens: Mean prompt tokens per mode (``prefix``, ``suffix``) when estimated.
    """

    adapters: list[dict[str, Any]]
    evaluations: list[dict[str, Any]]
    cuts: list[str]
    tokens: dict[str, dict[str, float]] = field(default_factory=dict)

    def estimate_seconds(self, train_s_per_token: float, eval_s_per_token: float) -> dict[str, float]:
        """Estimated wall seconds from measured per-token costs (needs token estimates).

        Returns:
            ``train``, ``eval`` and ``total`` seconds (finished adapters / evaluations count 0).
        """
        if not self.tokens:
            raise ConfigError("the plan has no token estimates; build it with plan_experiment(..., tokenizer=...)")
        train = sum(a["train_tokens"] for a in self.adapters if not a["done"]) * train_s_per_token
        evals = sum(e["eval_tokens"] for e in self.evaluations if not e["done"]) * eval_s_per_token
        return {"train": train, "eval": evals, "total": train + evals}


def _token_estimates(
    run_dir: Path, dataset: Any, split: Any, config: ExperimentConfig, tokenizer: Any, n_sample: int = 40
) -> dict[str, dict[str, float]]:
    from recsim_personas.memory.pipeline import run_item_catalog
    from recsim_personas.memory.store import MemoryStore
    from recsim_personas.training.rows import build_test_rows

    catalog = run_item_catalog(run_dir, dataset, split)
    store = MemoryStore.from_run_dir(run_dir, catalog=catalog)
    sample = split.test.sample(n=min(n_sample, len(split.test)), random_state=config.seed)
    out = {}
    for mode in config.memory_modes:
        rows = build_test_rows(store, catalog, sample, memory_mode=mode, template=config.template,
                               scale=dataset.scale, tokenizer=tokenizer, k=config.k, delta=config.delta)
        enc = lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"])  # noqa: E731
        out[mode] = {"prefix": float(np.mean([enc(p) for p in rows["prefix"]])),
                     "suffix": float(np.mean([enc(s) for s in rows["suffix"]])) + 2.0}
    return out


def plan_experiment(
    run_dir: str | Path,
    config: ExperimentConfig,
    *,
    dataset: Any = None,
    tokenizer: Any = None,
) -> ExperimentPlan:
    """Count what :func:`run_experiment` would train and evaluate, without loading a model.

    With ``dataset`` and ``tokenizer`` the plan also estimates tokens (from prompts built for a sample
    of test rows), so :meth:`ExperimentPlan.estimate_seconds` can turn measured per-token costs into
    a runtime.
    """
    run = Path(run_dir)
    split, personas_frame = _load_inputs(run)
    personas = _persona_map(personas_frame)
    tcfg = config.train_config()
    users = _users_of(split, personas, config)
    train = _train_interactions(split, config, users)
    test = _test_interactions(split, config, users)
    tokens = _token_estimates(run, dataset, split, config, tokenizer) if dataset is not None and tokenizer is not None else {}
    adapters = []
    for mode in config.memory_modes:
        for name, part in _adapter_datasets(train, personas, config.adapters, config.seed).items():
            counts = part.groupby("user_id").size().to_numpy()
            steps_epoch = _steps_per_epoch(counts, tcfg)
            total = max(1, math.ceil(tcfg.epochs * steps_epoch))
            steps = min(total, tcfg.max_steps) if tcfg.max_steps else total
            entry = {"name": name, "mode": mode, "rows": len(part), "users": len(counts),
                     "steps": steps, "epochs": round(steps / steps_epoch, 3),
                     "done": (adapter_dir(run, name, mode) / "recsim_adapter.json").is_file()}
            if tokens:
                t = tokens[mode]
                groups = np.ceil(counts / tcfg.batch_size).sum() if tcfg.prefix_sharing else 0
                per_epoch = groups * t["prefix"] + counts.sum() * t["suffix"]
                if not tcfg.prefix_sharing:
                    per_epoch = counts.sum() * (t["prefix"] + t["suffix"])
                entry["train_tokens"] = int(per_epoch * steps / steps_epoch)
            adapters.append(entry)
    evaluations = []
    n_users = int(test["user_id"].nunique())
    for no in config.rows():
        kind, mode = TABLE1_ROWS[no]
        entry = {"row": no, "adapter": kind, "mode": mode, "test_rows": len(test), "users": n_users,
                 "done": _result_path(run, no, kind, mode).is_file()}
        if tokens:
            t = tokens[mode]
            entry["eval_tokens"] = int(n_users * t["prefix"] + len(test) * t["suffix"])
        evaluations.append(entry)
    cuts = []
    full_train, full_test = len(split.train), len(split.test)
    if config.max_users is not None and len(users) < len(personas):
        cuts.append(f"users: {len(users)} of {len(personas)} (seeded, proportional per persona)")
    if config.train_rows_per_user is not None:
        cuts.append(f"train rows: at most {config.train_rows_per_user} per user (random, seed "
                    f"{config.seed}): {len(train)} of {full_train}")
    if config.test_rows_per_user is not None:
        cuts.append(f"test rows: at most {config.test_rows_per_user} per user (random, seed "
                    f"{config.seed}): {len(test)} of {full_test}")
    if tcfg.max_steps is not None:
        capped = [a for a in adapters if a["epochs"] < tcfg.epochs - 1e-9]
        if capped:
            cuts.append(f"steps: at most {tcfg.max_steps} per adapter (cuts {len(capped)} adapters short "
                        f"of {tcfg.epochs:g} epochs)")
    return ExperimentPlan(adapters=adapters, evaluations=evaluations, cuts=cuts, tokens=tokens)


def _steps_per_epoch(counts: np.ndarray, tcfg: LoraTrainConfig) -> int:
    """Optimizer steps of one epoch: the trainer's own batch schedule for these per-user row counts."""
    from recsim_personas.training.lora import _Row, _Schedule

    rows = [_Row(f"user{u}", [0], [0], 1) for u, c in enumerate(counts) for _ in range(int(c))]
    return _Schedule(rows, tcfg).steps_per_epoch if rows else 0


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
@dataclass
class _Context:
    run: Path
    dataset: Any
    split: Any
    personas: dict[int, int]
    catalog: Any
    store: Any
    model: Any
    tokenizer: Any
    max_tokens: int


def _context(run_dir: str | Path, dataset: Any, config: ExperimentConfig, model: Any, tokenizer: Any) -> _Context:
    from recsim_personas.agents.llm import load_causal_lm
    from recsim_personas.memory.pipeline import run_item_catalog
    from recsim_personas.memory.store import MemoryStore

    run = Path(run_dir)
    split, personas = _load_inputs(run)
    if split.dataset_fingerprint and split.dataset_fingerprint != dataset.fingerprint():
        raise DataError(
            f"run folder {run} was built from dataset {split.dataset_name!r} (fingerprint "
            f"{split.dataset_fingerprint}), not from {dataset.name!r} ({dataset.fingerprint()}); pass the "
            "same dataset options as the memory command"
        )
    catalog = run_item_catalog(run, dataset, split)
    store = MemoryStore.from_run_dir(run, catalog=catalog)
    if model is None:
        model, tokenizer = load_causal_lm(config.model, device=config.device, dtype=config.train_config().dtype)
    elif tokenizer is None:
        raise ConfigError("pass tokenizer= together with model=")
    context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    return _Context(run, dataset, split, _persona_map(personas), catalog, store, model, tokenizer, context - 8)


def _rows_for(ctx: _Context, interactions: pd.DataFrame, mode: str, config: ExperimentConfig) -> pd.DataFrame:
    from recsim_personas.training.rows import build_training_rows

    return build_training_rows(
        ctx.store, ctx.catalog, interactions, memory_mode=mode, template=config.template,
        scale=ctx.dataset.scale, tokenizer=ctx.tokenizer, max_tokens=ctx.max_tokens, k=config.k,
        delta=config.delta,
    )


def train_adapters(
    run_dir: str | Path,
    dataset: Any,
    config: ExperimentConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    _ctx: _Context | None = None,
) -> dict[str, Any]:
    """Train (or reuse) every adapter the config asks for; returns ``{"<name>__<mode>": TrainResult}``.

    Args:
        run_dir: Run folder with split, memories and personas.
        dataset: The dataset the run folder was built from (for item texts).
        config: The experiment config.
        model: A loaded base model (default: loaded from ``config.model``); restored unchanged.
        tokenizer: Its tokenizer (required with ``model``).
        progress: Progress bars.
        log: Receives one line per adapter (e.g. ``print``).
    """
    from recsim_personas.training.lora import train_adapter

    ctx = _ctx or _context(run_dir, dataset, config, model, tokenizer)
    tcfg = config.train_config()
    train = _train_interactions(ctx.split, config, _users_of(ctx.split, ctx.personas, config))
    results: dict[str, Any] = {}
    for mode in config.memory_modes:
        rows = _rows_for(ctx, train, mode, config)
        rows["persona"] = [ctx.personas[int(u)] for u in rows["user_id"]]
        for name, part in _adapter_datasets(rows, ctx.personas, config.adapters, config.seed).items():
            key = f"{name}__{mode}"
            t0 = time.perf_counter()
            result = train_adapter(ctx.model, ctx.tokenizer, part, tcfg, adapter_dir(ctx.run, name, mode),
                                   name=key, progress=progress)
            results[key] = result
            if log is not None:
                state = "cached" if result.cached else f"{time.perf_counter() - t0:.0f} s"
                log(f"adapter {key}: {result.n_rows} rows, {result.steps} steps, loss "
                    f"{result.first_loss:.3f} -> {result.final_loss:.3f} ({state})")
    return results


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
def _result_path(run: Path, no: int, kind: str, mode: str, results_dir: str = "results") -> Path:
    return run / results_dir / f"row{no:02d}_{kind}__{mode}.json"


def _adapter_names(kind: str, mode: str, personas: dict[int, int]) -> list[str]:
    if kind == "base":
        return []
    if kind == "persona":
        return [f"persona_{p}__{mode}" for p in sorted(set(personas.values()))]
    return [f"{kind}__{mode}"]


def evaluate_rows(
    run_dir: str | Path,
    dataset: Any,
    config: ExperimentConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    results_dir: str = "results",
    _ctx: _Context | None = None,
) -> dict[int, dict[str, Any]]:
    """Evaluate every Table-1 row of the config on the test rows; returns ``{row: results dict}``.

    Each row's result (metrics overall and per persona, config, adapter keys, timing) is cached in
    ``<results_dir>/row<NN>_<adapter>__<mode>.json`` with its predictions in the ``.parquet`` beside
    it (another ``results_dir`` keeps an evaluation on other test rows apart from Table 1's).

    Raises:
        AdapterError: An adapter the row needs is not trained (run :func:`train_adapters` first).
    """
    from recsim_personas.agents.llm import load_adapters
    from recsim_personas.agents.lm_agent import LMUserAgent, adapter_naming
    from recsim_personas.agents.scoring import RatingScorer
    from recsim_personas.errors import AdapterError
    from recsim_personas.eval.agent_eval import evaluate_agent
    from recsim_personas.training.lora import read_adapter_info

    ctx = _ctx or _context(run_dir, dataset, config, model, tokenizer)
    test = _test_interactions(ctx.split, config, _users_of(ctx.split, ctx.personas, config))
    test_hash = rows_digest(test.astype(str), columns=("user_id", "item_id", "rating"))
    needed: dict[str, Path] = {}
    keys: dict[str, str] = {}
    for no in config.rows():
        kind, mode = TABLE1_ROWS[no]
        for name in _adapter_names(kind, mode, ctx.personas):
            folder = ctx.run / "adapters" / name
            try:
                keys[name] = read_adapter_info(folder)["run_key"]
            except AdapterError:
                raise AdapterError(
                    f"row {no} needs adapter {name!r}, which is not trained ({folder}); run "
                    f"`recsim-personas train {ctx.run}` first"
                ) from None
            needed[name] = folder
    out: dict[int, dict[str, Any]] = {}
    todo = []
    for no in config.rows():
        kind, mode = TABLE1_ROWS[no]
        inputs = _eval_inputs(no, kind, mode, config, test_hash, keys, ctx)
        path = _result_path(ctx.run, no, kind, mode, results_dir)
        cached = _read_result(path, stable_hash(inputs))
        if cached is not None:
            out[no] = cached
            if log is not None:
                rmse_cached = cached["metrics"]["rmse"]
                log(f"row {no:>2} ({kind}, {mode}): cached, RMSE "
                    f"{'-' if rmse_cached is None else format(rmse_cached, '.3f')}")
        else:
            todo.append((no, kind, mode, inputs, path))
    if not todo:
        return out
    model_ = ctx.model
    local = config.server is None
    scorer: Any
    if not local:
        from recsim_personas.agents.llm import served_model_path
        from recsim_personas.agents.served import ServedConfig, ServedRatingScorer

        scorer = ServedRatingScorer(config.server, ctx.tokenizer, ctx.dataset.scale,
                                    base_model=served_model_path(config.model),
                                    config=ServedConfig(seed=config.seed))
        scorer.check_adapters(list(needed))
    else:
        if needed:
            model_ = load_adapters(ctx.model, needed)
        scorer = RatingScorer(model_, ctx.tokenizer, ctx.dataset.scale, max_batch=config.scorer_batch,
                              seed=config.seed)
    store = ctx.store
    try:
        for no, kind, mode, inputs, path in todo:
            agent = LMUserAgent(
                scorer, store, ctx.catalog, memory_mode=mode, k=config.k, delta=config.delta,
                adapter_for=adapter_naming(store, kind, mode), template=config.template,
                mode=config.eval_mode, seed=config.seed,
            )
            evaluation = evaluate_agent(
                agent, test, personas=ctx.personas, name=f"row{no:02d}_{kind}__{mode}",
                batch_size=config.eval_batch_size, seed=config.seed, progress=progress,
                config={"row": no, "adapter": kind, "memory_mode": mode, **config.to_dict()},
            )
            scorer.clear_cache()
            atomic_write_parquet(path.with_suffix(".parquet"), evaluation.predictions)
            evaluation.write_json(path, extra={
                "row": no, "adapter": kind, "memory_mode": mode, "inputs_hash": stable_hash(inputs),
                "adapters": _adapter_names(kind, mode, ctx.personas),
            })
            out[no] = json.loads(path.read_text(encoding="utf-8"))
            if log is not None:
                log(f"row {no:>2} ({kind}, {mode}): RMSE {evaluation.rmse:.3f}, MAE {evaluation.mae:.3f}, "
                    f"URR {100 * evaluation.urr:.1f}% ({evaluation.seconds:.0f} s)")
    finally:
        if needed and local:
            # Give the caller its plain base model back (adapters are removed, weights untouched).
            model_.unload()
        if not local:
            scorer.close()
    return out


def _eval_inputs(no: int, kind: str, mode: str, config: ExperimentConfig, test_hash: str,
                 keys: dict[str, str], ctx: _Context) -> dict[str, Any]:
    return {
        "row": no, "adapter": kind, "mode": mode, "eval_mode": config.eval_mode,
        "template": config.template, "k": config.k, "delta": config.delta, "seed": config.seed,
        "test": test_hash, "model": str(getattr(ctx.model.config, "_name_or_path", "")),
        "adapters": {n: keys[n] for n in _adapter_names(kind, mode, ctx.personas)},
    }


def _read_result(path: Path, inputs_hash: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return doc if doc.get("inputs_hash") == inputs_hash else None


# ---------------------------------------------------------------------------------------------
# Whole experiment
# ---------------------------------------------------------------------------------------------
@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns.

    Attributes:
        table: One row per Table-1 row (``No.``, ``Adapter``, ``Memories``, ``RMSE``, ``MAE``, ``URR``,
            ``outside_mass``, ``RMSE (mode)``, ``RMSE (sample)``, ``test_rows``, ``train_rows``,
            ``train_seconds``, ``eval_seconds``).
        train: ``{"<name>__<mode>": TrainResult}``.
        results: ``{row: results dict}`` as written to ``results/``.
        persona_points: Per persona adapter: ``persona``, ``memory``, ``train_rows``, ``rmse``, ``mae``
            (the paper's Figure 3).
    """

    table: pd.DataFrame
    train: dict[str, Any]
    results: dict[int, dict[str, Any]]
    persona_points: list[dict[str, Any]]


def experiment_table(config: ExperimentConfig, results: dict[int, dict[str, Any]], train: dict[str, Any],
           personas: dict[int, int]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The Table-1 frame and the per-persona points from evaluation results and train results.

    Args:
        config: The experiment config (which rows).
        results: ``{row: results dict}`` from :func:`evaluate_rows`.
        train: ``{"<name>__<mode>": TrainResult}`` (e.g. :func:`finished_adapters`).
        personas: ``user_id -> persona``.
    """
    records, points = [], []
    for no in config.rows():
        kind, mode = TABLE1_ROWS[no]
        res = results.get(no)
        if res is None:
            continue
        names = _adapter_names(kind, mode, personas)
        trained = [train[n] for n in names if n in train]
        m = res["metrics"]
        records.append({
            "No.": no,
            "Adapter": _KIND_LABEL[kind],
            "Memories": _MODE_LABEL[mode],
            "RMSE": m["rmse"],
            "MAE": m["mae"],
            "URR": m["urr"],
            "outside_mass": m["outside_mass"],
            "RMSE (mode)": m["rmse_mode"],
            "RMSE (sample)": m["rmse_sample"],
            "test_rows": m["n"],
            "train_rows": sum(t.n_rows for t in trained) if trained else 0,
            "train_steps": sum(t.steps for t in trained) if trained else 0,
            "train_seconds": round(sum(t.wall_seconds for t in trained), 1) if trained else 0.0,
            "eval_seconds": res.get("seconds"),
        })
        if kind == "persona":
            for p, pm in sorted(res.get("per_persona", {}).items(), key=lambda kv: int(kv[0])):
                t = train.get(f"persona_{int(p)}__{mode}")
                points.append({"persona": int(p), "memory": mode, "train_rows": t.n_rows if t else None,
                               "rmse": pm["rmse"], "mae": pm["mae"], "n_test": pm["n"]})
    return pd.DataFrame.from_records(records), points


def finished_adapters(run_dir: str | Path) -> dict[str, Any]:
    """``{"<name>__<mode>": TrainResult}`` of every finished adapter in ``run_dir/adapters``."""
    from recsim_personas.errors import AdapterError
    from recsim_personas.training.lora import load_train_result

    out = {}
    for folder in sorted((Path(run_dir) / "adapters").glob("*__*")):
        try:
            out[folder.name] = load_train_result(folder)
        except AdapterError:
            continue
    return out


def test_rows(run_dir: str | Path, config: ExperimentConfig) -> pd.DataFrame:
    """The test interactions the experiment evaluates (users and per-user caps of ``config`` applied)."""
    run = Path(run_dir)
    split, personas = _load_inputs(run)
    pmap = _persona_map(personas)
    return _test_interactions(split, config, _users_of(split, pmap, config))


def persona_map(run_dir: str | Path) -> dict[int, int]:
    """``user_id -> persona`` of a run folder (``personas.parquet``)."""
    return _persona_map(_load_inputs(Path(run_dir))[1])


def run_experiment(
    run_dir: str | Path,
    dataset: Any,
    config: ExperimentConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> ExperimentResult:
    """Train every adapter, evaluate every row; resumable (finished work is reused).

    Args:
        run_dir: Run folder from the memory stage (split, memories, embeddings, personas).
        dataset: The dataset the run folder was built from.
        config: What to train and evaluate.
        model: A loaded base model (default: ``load_causal_lm(config.model)``); returned unchanged.
        tokenizer: Its tokenizer (required with ``model``).
        progress: Progress bars.
        log: Receives progress lines (adapter finished, row evaluated).

    Returns:
        :class:`ExperimentResult` whose ``table`` has the paper's row numbering 3-10 and the train
        time per row.
    """
    ctx = _context(run_dir, dataset, config, model, tokenizer)
    train = train_adapters(run_dir, dataset, config, progress=progress, log=log, _ctx=ctx) if config.adapters else {}
    results = evaluate_rows(run_dir, dataset, config, progress=progress, log=log, _ctx=ctx)
    table, points = experiment_table(config, results, train, ctx.personas)
    return ExperimentResult(table=table, train=train, results=results, persona_points=points)
