"""Evaluating the Table-1 rows: each row's agent on the experiment's test rows, cached per row.

Each row's result (metrics overall and per persona, config, adapter keys, timing) is written to
``results/row<NN>_<adapter>__<mode>.json`` with its predictions in the ``.parquet`` beside it, under
the hash of its inputs (config, test rows, the run keys of its adapters): a re-run reuses a row
whose inputs did not change.

With ``config.calibrate`` each row's agent also scores the validation slice (held out of training)
and its temperature is fitted there (:mod:`recsim_personas.training.calibration`): the row's JSON
gains a ``calibration`` entry and ``row<NN>_<adapter>__<mode>.calibrated.parquet`` holds the
calibrated test predictions beside the raw ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas.artifacts import atomic_write_parquet, stable_hash
from recsim_personas.training.context import RunContext, load_context
from recsim_personas.training.experiment_config import TABLE1_ROWS, ExperimentConfig
from recsim_personas.training.rows import rows_digest
from recsim_personas.training.run_inputs import test_interactions, users_of, validation_interactions
from recsim_personas.training.run_paths import result_name, result_path, row_adapters

__all__ = ["evaluate_rows"]


@dataclass
class _Row:
    """A Table-1 row still to evaluate."""

    no: int
    kind: str
    mode: str
    inputs: dict[str, Any]
    path: Path


def evaluate_rows(
    run_dir: str | Path, dataset: Any, config: ExperimentConfig, *, model: Any = None, tokenizer: Any = None,
    progress: bool = True, log: Callable[[str], None] | None = None, results_dir: str = "results",
    _ctx: RunContext | None = None,
) -> dict[int, dict[str, Any]]:
    """Evaluate every Table-1 row of the config on the test rows; returns ``{row: results dict}``.

    Each row's result (metrics overall and per persona, config, adapter keys, timing) is cached in
    ``<results_dir>/row<NN>_<adapter>__<mode>.json`` with its predictions in the ``.parquet`` beside
    it (another ``results_dir`` keeps an evaluation on other test rows apart from Table 1's).

    Raises:
        AdapterError: An adapter the row needs is not trained (run :func:`train_adapters` first).
    """
    ctx = _ctx or load_context(run_dir, dataset, config, model, tokenizer)
    users = users_of(ctx.split, ctx.personas, config)
    test = test_interactions(ctx.split, config, users)
    test_hash = rows_digest(test.astype(str), columns=("user_id", "item_id", "rating"))
    needed, keys = _trained_adapters(ctx, config)
    validation = None
    if config.calibrate:
        from recsim_personas.training.calibration import check_holdout, validation_digest

        check_holdout(ctx.run, validation_digest(validation_interactions(ctx.split, config, users, capped=False)),
                      keys)
        validation = validation_interactions(ctx.split, config, users)
    out: dict[int, dict[str, Any]] = {}
    todo = []
    for no in config.rows():
        kind, mode = TABLE1_ROWS[no]
        inputs = _eval_inputs(no, kind, mode, config, test_hash, keys, ctx,
                              validation if config.calibrated(no) else None)
        path = result_path(ctx.run, no, kind, mode, results_dir, cue=config.cue)
        cached = _read_result(path, stable_hash(inputs))
        if cached is None:
            todo.append(_Row(no, kind, mode, inputs, path))
            continue
        out[no] = cached
        if log is not None:
            rmse_cached = cached["metrics"]["rmse"]
            log(f"row {no:>2} ({kind}, {mode}): cached, RMSE "
                f"{'-' if rmse_cached is None else format(rmse_cached, '.3f')}")
    if todo:
        out.update(_evaluate(ctx, config, test, validation, todo, needed, progress=progress, log=log))
    return out


def _trained_adapters(ctx: RunContext, config: ExperimentConfig) -> tuple[dict[str, Path], dict[str, str]]:
    """``({adapter name: folder}, {adapter name: run key})`` of every adapter the rows need.

    Raises:
        AdapterError: One of them is not trained.
    """
    from recsim_personas.errors import AdapterError
    from recsim_personas.training.adapter_folder import read_adapter_info

    needed: dict[str, Path] = {}
    keys: dict[str, str] = {}
    for no in config.rows():
        kind, mode = TABLE1_ROWS[no]
        for name in row_adapters(kind, mode, ctx.personas, cue=config.cue):
            folder = ctx.run / "adapters" / name
            try:
                keys[name] = read_adapter_info(folder)["run_key"]
            except AdapterError:
                raise AdapterError(
                    f"row {no} needs adapter {name!r}, which is not trained ({folder}); run "
                    f"`recsim-personas train {ctx.run}` first"
                ) from None
            needed[name] = folder
    return needed, keys


def _evaluate(ctx: RunContext, config: ExperimentConfig, test: pd.DataFrame, validation: pd.DataFrame | None,
              todo: list[_Row], needed: dict[str, Path], *, progress: bool,
              log: Callable[[str], None] | None) -> dict[int, dict[str, Any]]:
    """Score the rows of ``todo`` with the base model and ``needed`` adapters, in process or served."""
    from recsim_personas.agents.llm import load_adapters

    out: dict[int, dict[str, Any]] = {}
    local = config.server is None
    model = ctx.model
    if local and needed:
        model = load_adapters(ctx.model, needed)
    scorer = _local_scorer(ctx, config, model) if local else _served_scorer(ctx, config, needed)
    try:
        for row in todo:
            out[row.no] = _evaluate_row(ctx, config, test, validation, row, scorer, progress=progress, log=log)
    finally:
        if needed and local:
            # Give the caller its plain base model back (adapters are removed, weights untouched).
            model.unload()
        if not local:
            scorer.close()
    return out


def _local_scorer(ctx: RunContext, config: ExperimentConfig, model: Any) -> Any:
    from recsim_personas.agents.scoring import RatingScorer

    return RatingScorer(model, ctx.tokenizer, ctx.dataset.scale, max_batch=config.scorer_batch, seed=config.seed)


def _served_scorer(ctx: RunContext, config: ExperimentConfig, needed: dict[str, Path]) -> Any:
    from recsim_personas.agents.llm import served_model_path
    from recsim_personas.agents.served import ServedConfig, ServedRatingScorer

    scorer = ServedRatingScorer(config.server, ctx.tokenizer, ctx.dataset.scale,
                                base_model=served_model_path(config.model), config=ServedConfig(seed=config.seed))
    scorer.check_adapters(list(needed))
    return scorer


def _evaluate_row(ctx: RunContext, config: ExperimentConfig, test: pd.DataFrame, validation: pd.DataFrame | None,
                  row: _Row, scorer: Any, *, progress: bool, log: Callable[[str], None] | None) -> dict[str, Any]:
    """Evaluate one Table-1 row's agent; write and return its results."""
    from recsim_personas.agents.lm_agent import LMUserAgent, adapter_naming
    from recsim_personas.eval.agent_eval import evaluate_agent

    no, kind, mode = row.no, row.kind, row.mode
    agent = LMUserAgent(
        scorer, ctx.store, ctx.catalog, memory_mode=mode, k=config.k, delta=config.delta,
        adapter_for=adapter_naming(ctx.store, kind, mode, cue=config.cue), template=config.template,
        mode=config.eval_mode, seed=config.seed, cue=ctx.cue,
    )
    evaluation = evaluate_agent(
        agent, test, personas=ctx.personas, name=result_name(no, kind, mode, cue=config.cue),
        batch_size=config.eval_batch_size, seed=config.seed, progress=progress,
        config={"row": no, "adapter": kind, "memory_mode": mode, **config.to_dict()},
    )
    scorer.clear_cache()
    from recsim_personas.training.calibration import calibrated_path, write_calibrated

    predictions_path = row.path.with_suffix(".parquet")
    atomic_write_parquet(predictions_path, evaluation.predictions)
    extra: dict[str, Any] = {}
    if validation is not None and config.calibrated(no):
        calibration = _row_calibration(ctx, config, validation, row, agent, progress=progress)
        scorer.clear_cache()
        calibrated = write_calibrated(evaluation.predictions, predictions_path, ctx.dataset.scale, calibration)
        err = calibrated["expectation"].to_numpy() - calibrated["rating"].to_numpy()
        extra["calibration"] = {**{k: calibration[k] for k in ("temperature", "n_rows", "users", "nll_before",
                                                                 "nll_after", "fitted_on")},
                                "rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err)))}
    else:
        calibrated_path(predictions_path).unlink(missing_ok=True)  # no stale calibrated copy
    evaluation.write_json(row.path, extra={
        "row": no, "adapter": kind, "memory_mode": mode, "inputs_hash": stable_hash(row.inputs),
        "adapters": row_adapters(kind, mode, ctx.personas, cue=config.cue), **extra,
    })
    if log is not None:
        cal = extra.get("calibration")
        note = (f"; T={cal['temperature']:.2f} on {cal['n_rows']} validation ratings (NLL "
                f"{cal['nll_before']:.3f} -> {cal['nll_after']:.3f})") if cal else ""
        log(f"row {no:>2} ({kind}, {mode}): RMSE {evaluation.rmse:.3f}, MAE {evaluation.mae:.3f}, "
            f"URR {100 * evaluation.urr:.1f}% ({evaluation.seconds:.0f} s){note}")
    return json.loads(row.path.read_text(encoding="utf-8"))


def _row_calibration(ctx: RunContext, config: ExperimentConfig, validation: pd.DataFrame, row: _Row, agent: Any,
                     *, progress: bool) -> dict[str, Any]:
    """The row's temperature: reused from ``calibration/`` when its inputs match, else fitted now."""
    from recsim_personas.training.calibration import (
        calibration_path,
        fit_row_calibration,
        read_calibration,
    )

    # Everything the agent's validation predictions depend on: not the test rows.
    inputs = {k: v for k, v in row.inputs.items() if k != "test"}
    path = calibration_path(ctx.run, row.no, row.kind, row.mode)
    cached = read_calibration(path, stable_hash(inputs))
    if cached is not None:
        return cached
    return fit_row_calibration(agent, validation, path, inputs, personas=ctx.personas,
                               name=result_name(row.no, row.kind, row.mode), batch_size=config.eval_batch_size,
                               seed=config.seed, progress=progress)


def _eval_inputs(no: int, kind: str, mode: str, config: ExperimentConfig, test_hash: str,
                 keys: dict[str, str], ctx: RunContext, validation: pd.DataFrame | None = None) -> dict[str, Any]:
    inputs = {
        "row": no, "adapter": kind, "mode": mode, "eval_mode": config.eval_mode,
        "template": config.template, "k": config.k, "delta": config.delta, "seed": config.seed,
        "test": test_hash, "model": str(getattr(ctx.model.config, "_name_or_path", "")),
        "adapters": {n: keys[n] for n in row_adapters(kind, mode, ctx.personas, cue=config.cue)},
    }
    if config.cue:  # only then: the cached results without the cue keep their hashes
        inputs["cue"] = True
    if validation is not None:  # absent without calibration: the inputs (and caches) of before
        from recsim_personas.training.calibration import validation_digest

        inputs["validation"] = {"rows": validation_digest(validation), "fraction": config.validation_fraction}
    return inputs


def _read_result(path: Path, inputs_hash: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return doc if doc.get("inputs_hash") == inputs_hash else None
