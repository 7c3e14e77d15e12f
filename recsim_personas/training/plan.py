"""What the Table-1 experiment will do, counted without a model: :func:`plan_experiment`.

The plan lists every adapter with its rows and optimizer steps (the trainer's own batch schedule),
every Table-1 row with its test rows, what the config cuts versus the full protocol, and with a
tokenizer the tokens each costs, which :meth:`ExperimentPlan.estimate_seconds` turns into a runtime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas.errors import ConfigError
from recsim_personas.training.adapter_folder import ADAPTER_INFO
from recsim_personas.training.config import LoraTrainConfig
from recsim_personas.training.experiment_config import TABLE1_ROWS, ExperimentConfig
from recsim_personas.training.run_inputs import (
    adapter_datasets,
    load_inputs,
    persona_table,
    test_interactions,
    train_interactions,
    users_of,
)
from recsim_personas.training.run_paths import adapter_dir, result_path
from recsim_personas.training.schedule import steps_per_epoch

__all__ = ["ExperimentPlan", "plan_experiment"]


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
    split, personas_frame = load_inputs(run)
    personas = persona_table(personas_frame)
    tcfg = config.train_config()
    users = users_of(split, personas, config)
    train = train_interactions(split, config, users)
    test = test_interactions(split, config, users)
    tokens = _token_estimates(run, dataset, split, config, tokenizer) if dataset is not None and tokenizer is not None else {}
    adapters = [
        _adapter_entry(run, name, mode, part, tcfg, tokens, config.cue)
        for mode in config.memory_modes
        for name, part in adapter_datasets(train, personas, config.adapters, config.seed).items()
    ]
    evaluations = _evaluation_entries(run, config, test, tokens)
    cuts = _cuts(config, tcfg, split, personas, users, train, test, adapters)
    return ExperimentPlan(adapters=adapters, evaluations=evaluations, cuts=cuts, tokens=tokens)


def _adapter_entry(run: Path, name: str, mode: str, part: pd.DataFrame, tcfg: LoraTrainConfig,
                   tokens: dict[str, dict[str, float]], cue: bool = False) -> dict[str, Any]:
    """One adapter of the plan: its rows, users, steps, epochs, whether it is done (and its tokens)."""
    counts = part.groupby("user_id").size().to_numpy()
    steps_epoch = steps_per_epoch(counts, tcfg)
    total = max(1, math.ceil(tcfg.epochs * steps_epoch))
    steps = min(total, tcfg.max_steps) if tcfg.max_steps else total
    entry = {"name": name, "mode": mode, "cue": cue, "rows": len(part), "users": len(counts),
             "steps": steps, "epochs": round(steps / steps_epoch, 3),
             "done": (adapter_dir(run, name, mode, cue=cue) / ADAPTER_INFO).is_file()}
    if tokens:
        t = tokens[mode]
        groups = np.ceil(counts / tcfg.batch_size).sum() if tcfg.prefix_sharing else 0
        per_epoch = groups * t["prefix"] + counts.sum() * t["suffix"]
        if not tcfg.prefix_sharing:
            per_epoch = counts.sum() * (t["prefix"] + t["suffix"])
        entry["train_tokens"] = int(per_epoch * steps / steps_epoch)
    return entry


def _evaluation_entries(run: Path, config: ExperimentConfig, test: pd.DataFrame,
                        tokens: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One entry per Table-1 row: its test rows, users, whether it is done (and its tokens)."""
    evaluations = []
    n_users = int(test["user_id"].nunique())
    for no in config.rows():
        kind, mode = TABLE1_ROWS[no]
        entry = {"row": no, "adapter": kind, "mode": mode, "test_rows": len(test), "users": n_users,
                 "done": result_path(run, no, kind, mode, cue=config.cue).is_file()}
        if tokens:
            t = tokens[mode]
            entry["eval_tokens"] = int(n_users * t["prefix"] + len(test) * t["suffix"])
        evaluations.append(entry)
    return evaluations


def _cuts(config: ExperimentConfig, tcfg: LoraTrainConfig, split: Any, personas: dict[int, int],
          users: np.ndarray, train: pd.DataFrame, test: pd.DataFrame,
          adapters: list[dict[str, Any]]) -> list[str]:
    """Lines saying what the config cuts versus the full protocol."""
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
    if config.calibrate:
        from recsim_personas.training.run_inputs import validation_interactions

        held = validation_interactions(split, config, users, capped=False)
        scored = len(held) if config.validation_rows is None else min(len(held), config.validation_rows)
        cuts.append(f"validation: the newest {config.validation_fraction:.0%} of each user's train rows "
                    f"({len(held)} rows) held out of training; {scored} of them scored per evaluated agent "
                    f"to fit its temperature")
    if tcfg.max_steps is not None:
        capped = [a for a in adapters if a["epochs"] < tcfg.epochs - 1e-9]
        if capped:
            cuts.append(f"steps: at most {tcfg.max_steps} per adapter (cuts {len(capped)} adapters short "
                        f"of {tcfg.epochs:g} epochs)")
    return cuts
