"""Training every adapter of the Table-1 experiment, one after another on one loaded base model.

Per memory mode: one row per capped train interaction (:func:`~recsim_personas.training.rows.build_training_rows`),
split into each adapter's dataset (:func:`~recsim_personas.training.run_inputs.adapter_datasets`), each
trained by :func:`~recsim_personas.training.lora.train_adapter` into ``adapters/<name>__<mode>/`` (a
finished adapter with the same inputs is reused, an interrupted one resumes). With ``config.cue`` the
prompts state the collaborative cue and the adapters go to ``adapters/<name>_cue__<mode>/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from recsim_personas.adapter_names import adapter_name
from recsim_personas.training.context import RunContext, load_context
from recsim_personas.training.experiment_config import ExperimentConfig
from recsim_personas.training.run_inputs import adapter_datasets, train_interactions, users_of
from recsim_personas.training.run_paths import adapter_dir

__all__ = ["train_adapters"]


def train_adapters(
    run_dir: str | Path, dataset: Any, config: ExperimentConfig, *, model: Any = None, tokenizer: Any = None,
    progress: bool = True, log: Callable[[str], None] | None = None, _ctx: RunContext | None = None,
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

    ctx = _ctx or load_context(run_dir, dataset, config, model, tokenizer)
    tcfg = config.train_config()
    users = users_of(ctx.split, ctx.personas, config)
    train = train_interactions(ctx.split, config, users)
    results: dict[str, Any] = {}
    for mode in config.memory_modes:
        rows = _training_rows(ctx, train, mode, config)
        rows["persona"] = [ctx.personas[int(u)] for u in rows["user_id"]]
        for name, part in adapter_datasets(rows, ctx.personas, config.adapters, config.seed).items():
            key = adapter_name(name, mode, cue=config.cue)
            t0 = time.perf_counter()
            result = train_adapter(ctx.model, ctx.tokenizer, part, tcfg, adapter_dir(ctx.run, name, mode, cue=config.cue),
                                   name=key, progress=progress)
            results[key] = result
            if log is not None:
                state = "cached" if result.cached else f"{time.perf_counter() - t0:.0f} s"
                log(f"adapter {key}: {result.n_rows} rows, {result.steps} steps, loss "
                    f"{result.first_loss:.3f} -> {result.final_loss:.3f} ({state})")
    if config.calibrate and results:
        _record_holdout(ctx, config, users, results)
    return results


def _record_holdout(ctx: RunContext, config: ExperimentConfig, users: Any, results: dict[str, Any]) -> None:
    """Record the validation slice these adapters were trained without (the evaluation checks it)."""
    from recsim_personas.training.adapter_folder import read_adapter_info
    from recsim_personas.training.calibration import record_holdout, validation_digest
    from recsim_personas.training.run_inputs import validation_interactions

    held_out = validation_interactions(ctx.split, config, users, capped=False)
    keys = {key: read_adapter_info(Path(result.out_dir))["run_key"] for key, result in results.items()}
    record_holdout(ctx.run, validation_digest(held_out), config.validation_fraction, keys)


def _training_rows(ctx: RunContext, interactions: pd.DataFrame, mode: str, config: ExperimentConfig) -> pd.DataFrame:
    from recsim_personas.training.rows import build_training_rows

    return build_training_rows(
        ctx.store, ctx.catalog, interactions, memory_mode=mode, template=config.template,
        scale=ctx.dataset.scale, tokenizer=ctx.tokenizer, max_tokens=ctx.max_tokens, k=config.k,
        delta=config.delta, cue=ctx.cue,
    )
