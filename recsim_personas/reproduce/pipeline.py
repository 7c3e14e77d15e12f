"""``recsim-personas reproduce``: every stage from ratings to the paper's Table 1 and a simulation report.

Stages, each cached in the run folder so that an interrupted run resumes where it stopped:

1. split + distilled memories + personas (:func:`recsim_personas.memory.pipeline.build_memories`);
2. LoRA adapters and the small-LM rows of Table 1 (:func:`recsim_personas.training.experiment.run_experiment`);
3. classic rating predictors on the same split and the same evaluated test rows;
4. ``table1.{md,csv,json}`` and the paper's figures;
5. the baseline policies in ``PersonaRec-v0`` next to their offline metrics
   (:func:`recsim_personas.envs.simulate.run_simulation`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from recsim_personas.artifacts import (
    RunFolder,
    atomic_write_json,
    environment_info,
    git_info,
    stable_hash,
)
from recsim_personas.reproduce.config import ReproduceConfig
from recsim_personas.reproduce.stages import (
    adapter_inputs,
    experiment_config,
    memory_config,
    simulation_config,
    split_config,
)

__all__ = [
    "CLASSIC_BASELINES", "ReproductionReport", "run_reproduction",
]

#: Rating predictors evaluated beside the simulator (the yardstick it must approach).
CLASSIC_BASELINES = ("global-mean", "user-mean", "item-mean", "bias", "biased-mf")


@dataclass
class ReproductionReport:
    """Where a reproduction put its results, and the headline tables."""

    out: Path
    table1: pd.DataFrame
    baselines: list[dict[str, Any]]
    simulation: Any | None
    seconds: dict[str, float] = field(default_factory=dict)
    fidelity: Any | None = None
    files: dict[str, Path] = field(default_factory=dict)


def _classic_baselines(
    run: RunFolder, split: Any, test_rows: pd.DataFrame, seed: int, pool: pd.DataFrame | None = None
) -> list[dict[str, Any]]:
    """Fit on the rating pool the agents' item averages come from (``pool``, default the train
    split), score on exactly the test rows the agents were scored on."""
    from recsim_personas.data.splits import Split
    from recsim_personas.eval.offline import evaluate_baselines

    fit_on = split.train if pool is None else pool
    path = run / "results" / "classic_baselines.json"
    inputs = {"train": stable_hash(fit_on.to_dict("list")), "test": stable_hash(test_rows.to_dict("list")),
              "models": CLASSIC_BASELINES, "seed": seed}
    if run.is_done("classic_baselines", inputs):
        return json.loads(path.read_text())["results"]
    same_rows = Split(
        train=fit_on,
        test=test_rows,
        config=split.config,
        dataset_fingerprint=split.dataset_fingerprint,
        dataset_name=split.dataset_name,
        scale=split.scale,
    )
    results = evaluate_baselines(same_rows, CLASSIC_BASELINES, seed=seed, progress=False)
    for r in results:
        r["n_test"] = len(test_rows)
        r["train_rows"] = len(fit_on)
        r["train_seconds"] = r.get("fit_seconds")
    atomic_write_json(path, {"results": results})
    run.mark_done("classic_baselines", inputs, outputs=["results/classic_baselines.json"])
    return results


def _adapter_records(run: RunFolder) -> dict[str, Any]:
    stages = run.manifest()["stages"]
    # The weights only: a retrained adapter with identical weights (new timestamps) changes nothing.
    return {name: (rec.get("files") or {}).get(f"adapters/{name.removeprefix('adapter:')}/adapter_model.safetensors")
            for name, rec in sorted(stages.items()) if name.startswith("adapter:")}


def _simulation(config: ReproduceConfig, out: Path, run: RunFolder, log: Callable[[str], None]) -> Any:
    from recsim_personas.envs.simulate import SimulationConfig, SimulationReport, run_simulation

    sim = config.simulation
    sim_config = simulation_config(config)
    # The adapters' digests: a retrained adapter re-runs the simulation.
    inputs = {"sim": sim_config.to_dict(), "adapters": _adapter_records(run)}
    stem = "simulate"
    if run.is_done("simulation", inputs):
        doc = json.loads((out / f"{stem}.json").read_text())
        cfg = dict(doc["config"])
        env_info = cfg.pop("env_info", {})
        return SimulationReport(config=SimulationConfig.from_dict(cfg), results=doc["results"],
                                correlations=doc.get("correlations", {}), env_info=env_info)
    log(f"simulating {', '.join(sim.policies)}: {sim.episodes} sessions x {sim.horizon} steps ({sim.agent} agent)")
    report = run_simulation(sim_config)
    files = report.save(out, stem=stem)
    run.mark_done("simulation", inputs, outputs=[str(Path(p).relative_to(out)) for p in files.values()])
    return report


def _fidelity_rows(out: Path, dataset: Any, config: ReproduceConfig, exp_config: Any, progress: bool,
                   log: Callable[[str], None]) -> str:
    """Re-score ``evaluation.fidelity_rows`` on more test rows, into ``fidelity_results/``."""
    import dataclasses

    from recsim_personas.errors import ConfigError
    from recsim_personas.training.experiment import TABLE1_ROWS, evaluate_rows

    wanted = [int(n) for n in config.evaluation.fidelity_rows]
    unknown = [n for n in wanted if n not in exp_config.rows()]
    if unknown:
        raise ConfigError(f"evaluation.fidelity_rows {unknown} are not Table-1 rows of this config "
                          f"(it has {exp_config.rows()})")
    kinds = sorted({TABLE1_ROWS[n][0] for n in wanted})
    modes = tuple(sorted({TABLE1_ROWS[n][1] for n in wanted}))
    sub = dataclasses.replace(
        exp_config, test_rows_per_user=config.evaluation.fidelity_test_rows_per_user,
        adapters=tuple(k for k in kinds if k != "base"), base_rows="base" in kinds, memory_modes=modes,
    )
    if sorted(sub.rows()) != sorted(wanted):
        # Rows of the same kind and memory mode come together; keep what was asked for only.
        log(f"fidelity rows: scoring {sub.rows()} (the adapters and memory modes of {wanted})")
    evaluate_rows(out, dataset, sub, progress=progress, log=log, results_dir="fidelity_results")
    return "fidelity_results"


def _print_estimate(out: Path, dataset: Any, exp_config: Any, log: Callable[[str], None]) -> tuple[Any, Any]:
    """Measure per-token costs now, print what is left and how long it will take; ``estimate.json``."""
    from recsim_personas.agents.llm import load_causal_lm
    from recsim_personas.training.estimate import estimate_experiment, measure_rates
    from recsim_personas.training.experiment import plan_experiment

    model, tokenizer = load_causal_lm(exp_config.model, device=exp_config.device,
                                      dtype=exp_config.train_config().dtype)
    plan = plan_experiment(out, exp_config, dataset=dataset, tokenizer=tokenizer)
    for line in plan.cuts:
        log(f"cut: {line}")
    log("measuring this machine's training and scoring speed (about a minute) ...")
    rates = measure_rates(model, tokenizer, out, dataset, exp_config)
    estimate = estimate_experiment(plan, rates)
    for line in estimate["lines"]:
        log(line)
    atomic_write_json(out / "estimate.json", {
        "estimate_s": {k: estimate[k] for k in ("train", "eval", "total")}, "rates": rates,
        "adapters": plan.adapters, "evaluations": plan.evaluations, "tokens": plan.tokens, "cuts": plan.cuts,
        "git": git_info(), **environment_info(),
    })
    return model, tokenizer


def run_reproduction(
    config: ReproduceConfig,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    estimate_only: bool = False,
) -> ReproductionReport:
    """Run (or resume) every stage of ``config``; return and write the tables and figures.

    With ``estimate_only`` (or ``training.estimate_first``) the per-token costs are measured after
    the memory stages and the experiment's remaining time is printed (and written to
    ``estimate.json``); ``estimate_only`` stops there.

    The run folder is locked for the whole run (a second ``reproduce`` on it fails at once) and
    verified first: damaged files are removed and their stages rebuilt.
    """
    out = Path(config.out)
    run = RunFolder(out)
    with run.lock("recsim-personas reproduce"):
        return _reproduce(config, run, progress=progress, log=log, estimate_only=estimate_only)


def _reproduce(config: ReproduceConfig, run: RunFolder, *, progress: bool, log: Callable[[str], None],
               estimate_only: bool = False) -> ReproductionReport:
    from recsim_personas.data.registry import load_dataset
    from recsim_personas.data.splits import Split
    from recsim_personas.integrity import record_adapters, verify_run_folder
    from recsim_personas.memory.pipeline import build_memories
    from recsim_personas.reproduce.figures import plot_persona_error_vs_size, plot_persona_words
    from recsim_personas.reproduce.table1 import ROW_KEYS, render_table1, write_table1
    from recsim_personas.training.experiment import run_experiment
    from recsim_personas.training.run_inputs import evaluation_rows

    out = run.path
    # A damaged file of any stage is removed here, so that stage (and what depends on it) rebuilds.
    adapters_dir = out / "adapters"
    existing = sorted(p.name for p in adapters_dir.glob("*__*") if p.is_dir()) if adapters_dir.is_dir() else []
    verify_run_folder(out, adapters=existing, repair=("memory", "adapters", "results"))
    atomic_write_json(out / "reproduce_config.json", config.to_dict())
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    dataset = load_dataset(config.dataset.name, config.dataset.data_dir, enrichment=config.dataset.enrichment)
    build_memories(dataset, split_config(config), memory_config(config), out, progress=progress)
    seconds["memories"] = time.perf_counter() - t0
    log(f"memories ready in {out} ({seconds['memories']:.1f} s)")

    t0 = time.perf_counter()
    exp_config = experiment_config(config)
    model = tokenizer = None
    if config.training.estimate_first or estimate_only:
        model, tokenizer = _print_estimate(out, dataset, exp_config, log)
        seconds["estimate"] = time.perf_counter() - t0
        if estimate_only:
            return ReproductionReport(out=out, table1=pd.DataFrame(), baselines=[], simulation=None,
                                      seconds=seconds, files={"estimate.json": out / "estimate.json"})
    result = run_experiment(out, dataset, exp_config, model=model, tokenizer=tokenizer, progress=progress, log=log)
    record_adapters(out, result.train, adapter_inputs(exp_config))
    seconds["experiment"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    split = Split.load(out / "split")
    from recsim_personas.memory.pipeline import run_item_stats
    from recsim_personas.memory.statistics import rating_pool

    pool = rating_pool(dataset, split.train, split.test, run_item_stats(out))
    baselines = _classic_baselines(run, split, evaluation_rows(out, exp_config), config.seed, pool)
    seconds["baselines"] = time.perf_counter() - t0

    from recsim_personas.reproduce.fidelity_report import fidelity_report

    t0 = time.perf_counter()
    results_dir = "results"
    if config.evaluation.fidelity_rows:
        results_dir = _fidelity_rows(out, dataset, config, exp_config, progress, log)
    fidelity = fidelity_report(out, dataset, seed=config.seed, results_dir=results_dir)
    seconds["fidelity"] = time.perf_counter() - t0

    rows: dict[int, dict[str, Any]] = {}
    by_no = {int(r["No."]): r for r in result.table.to_dict(orient="records")}
    for no in ROW_KEYS:
        if no in by_no:
            r = by_no[no]
            rows[no] = {"rmse": r["RMSE"], "mae": r["MAE"], "urr": r["URR"], "n_test": r["test_rows"],
                        "train_rows": r["train_rows"], "train_seconds": r["train_seconds"]}
    model_name = config.model.name or "SmolLM2-135M-Instruct"
    table = render_table1(rows, baselines, model_name=model_name)
    meta = {
        "config": config.to_dict(),
        "experiment": exp_config.to_dict(),
        "git": git_info(),
        **environment_info(),
        "experiment_table": result.table.to_dict(orient="records"),
        "persona_points": result.persona_points,
        "baselines": baselines,
        "fidelity": {"rows": fidelity.rows, "verdict": fidelity.verdict, "item_stats": fidelity.item_stats},
    }
    files = {p.name: p for p in write_table1(table, out, meta)}
    if result.persona_points:
        files["figure3_persona_error_vs_size.png"] = plot_persona_error_vs_size(
            [p for p in result.persona_points if p.get("train_rows")], out / "figure3_persona_error_vs_size.png"
        )
    personas_json = out / "personas.json"
    if personas_json.exists():
        data = json.loads(personas_json.read_text())
        desc = data.get("personas") or data.get("descriptions") or []  # personas.json names them "personas"
        files["figure2_persona_words.png"] = plot_persona_words(desc, out / "figure2_persona_words.png")

    simulation = None
    if config.simulation.enabled:
        t0 = time.perf_counter()
        simulation = _simulation(config, out, run, log)
        seconds["simulation"] = time.perf_counter() - t0
    files.update(fidelity.files)
    return ReproductionReport(out=out, table1=table, baselines=baselines, simulation=simulation,
                              seconds=seconds, files=files, fidelity=fidelity)
