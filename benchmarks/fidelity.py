"""Benchmark: how well the LM user agents rate held-out movies (the paper's Table 1, rows 3-10).

Commands (from the project root)::

    .venv/bin/python benchmarks/fidelity.py --budget cpu --dry-run   # plan + estimated time, no LM run
    .venv/bin/python benchmarks/fidelity.py --budget smoke           # the whole path in minutes
    .venv/bin/python benchmarks/fidelity.py --budget cpu             # about an hour on 2 idle CPU cores
    .venv/bin/python benchmarks/fidelity.py --budget cpu --threads 1 # on a machine shared with other jobs
    .venv/bin/python benchmarks/fidelity.py --budget full --model microsoft/Phi-3-mini-4k-instruct  # GPU

Protocol (the paper's): ML-1M users 1-2999 from ``../shared/data/ml-1m-users-1-2999``, 200 users with
100-200 ratings sampled with seed 0, each user's oldest 60% of ratings train, newest 40% test
(``PAPER_SPLIT``). Memories from the offline ``template`` distillation backend, all-MiniLM-L6-v2
embeddings, K = 4 personas, top-1 retrieval (``MemoryPipelineConfig.paper()``). Then
:func:`~recsim_personas.training.experiment.run_experiment`: the prompted base model (rows 3-4),
theta_single(max) / theta_single(min) (rows 5-8) and theta_persona (rows 9-10), each with M_s and
M_s + M_l, scored in ``score`` mode (headline: the expectation of the rating distribution; the table
also shows the most likely level and a seeded sample). The classic baselines (global mean, user+item
bias, biased MF) are fitted on the same train split and scored on the same test rows.

Budgets (what is cut is printed and stored in the JSON):

``full``
    The paper's setting: every user and row, the ``paper`` LoRA preset (q/k, rank 256, alpha 32,
    lr 3e-4, 2 epochs). For a GPU.
``cpu``
    SmolLM2-135M with the ``cpu`` LoRA preset, cut to fit about an hour on 2 cores: a seeded
    persona-proportional sample of users, a few train rows and test rows per user (random, seeded).
``smoke``
    One user per persona, 2 train rows and 1 test row each, one optimizer step per adapter: checks
    the whole path, numbers mean nothing.

Writes ``--out`` (default ``results/fidelity-<budget>.json``) through
:mod:`recsim_personas.benchmarking`: ``config`` with the ``cuts`` and the ``plan``, ``metrics`` with
the rows, per persona, the baselines, the training curves' summary, the time of every stage and the
table in Markdown, which it also prints for the README.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from recsim_personas.benchmarking import ResultsFile, bench_argparser, out_path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DEFAULT_DATA = SHARED_DATA / "ml-1m-users-1-2999"

#: ExperimentConfig fields per budget.
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"max_users": 4, "train_rows_per_user": 2, "test_rows_per_user": 1,
              "train_overrides": {"max_steps": 1}},
    "cpu": {"max_users": 40, "train_rows_per_user": 8, "test_rows_per_user": 3, "train_overrides": {}},
    "full": {"train_preset": "paper"},
}
#: Per-token wall seconds used by ``--dry-run`` unless ``--measure`` re-measures them: SmolLM2-135M,
#: float32, cpu preset, idle 2-core machine, 2 torch threads (the measurements on idle and busy
#: machines, and why ``--threads 1`` on a shared one: docs/benchmarks.md).
DEFAULT_RATES = {"train_s_per_token": 0.0104, "eval_s_per_token": 0.0026}
BASELINES = ("global-mean", "bias", "biased-mf")


def _markdown(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("-" if v is None or v == "" else (format(v, fmt) if fmt else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measure_rates(model: Any, tokenizer: Any, run_dir: Path, dataset: Any, config: Any) -> dict[str, float]:
    """Seconds per token of LoRA training and of scoring now (``recsim_personas.training.estimate``)."""
    from recsim_personas.training.estimate import measure_rates as measure

    return measure(model, tokenizer, run_dir, dataset, config)


def fit_baselines(split: Any, test: Any, scale: Any) -> list[dict[str, Any]]:
    """Global mean, user+item bias and biased MF on ``split.train``, scored on ``test`` and on all test rows."""
    import numpy as np

    from recsim_personas.baselines.registry import make_baseline
    from recsim_personas.eval.metrics import mae, rmse

    out = []
    for name in BASELINES:
        kwargs = {"scale": scale}
        if name == "biased-mf":
            kwargs["seed"] = 0
        t0 = time.perf_counter()
        model = make_baseline(name, **kwargs).fit(split.train)
        fit_s = time.perf_counter() - t0
        entry = {"model": name, "train_seconds": round(fit_s, 2), "train_rows": len(split.train)}
        for label, rows in (("", test), ("_all_test", split.test)):
            pred = np.asarray(model.predict(rows["user_id"].to_numpy(), rows["item_id"].to_numpy()), dtype=float)
            entry[f"rmse{label}"] = rmse(pred, rows["rating"].to_numpy())
            entry[f"mae{label}"] = mae(pred, rows["rating"].to_numpy())
            entry[f"n_test{label}"] = len(rows)
        out.append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = bench_argparser(__file__, __doc__, out="fidelity-{budget}.json")
    parser.add_argument("--budget", choices=tuple(BUDGETS), default="cpu", help="how much to run (default: cpu)")
    parser.add_argument("--dry-run", action="store_true",
                        help="build (or reuse) the memory stages, print the plan and the estimated time, stop")
    parser.add_argument("--measure", action="store_true",
                        help="with --dry-run: measure the per-token costs on this machine now (about a minute)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="ML-1M folder (ratings.dat, movies.dat)")
    parser.add_argument("--run-dir", type=Path, default=None, help="run folder (default: runs/fidelity-<budget>)")
    parser.add_argument("--model", default=None, help="base LM (default: packaged SmolLM2-135M-Instruct)")
    parser.add_argument("--eval-mode", choices=("score", "generate"), default="score",
                        help="score (default) or generate (the paper's 4 sampled tokens + regex)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice; 1 is faster on a busy machine)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    results_file = ResultsFile(out_path(args), "fidelity", argv)

    import torch

    from recsim_personas.data.registry import load_dataset
    from recsim_personas.data.splits import PAPER_SPLIT, Split
    from recsim_personas.memory.pipeline import MemoryPipelineConfig, build_memories
    from recsim_personas.training.experiment import (
        ExperimentConfig,
        plan_experiment,
        run_experiment,
    )
    from recsim_personas.training.run_inputs import evaluation_rows

    if args.threads:
        torch.set_num_threads(args.threads)
    budget = dict(BUDGETS[args.budget])
    config = ExperimentConfig(model=args.model, eval_mode=args.eval_mode, **budget)
    run_dir = args.run_dir or ROOT / "runs" / f"fidelity-{args.budget}"
    t_all = time.perf_counter()
    timings: dict[str, float] = {}

    dataset = load_dataset("ml-1m", args.data_dir)
    t0 = time.perf_counter()
    memory = build_memories(dataset, PAPER_SPLIT, MemoryPipelineConfig.paper(), run_dir, progress=not args.quiet)
    timings["memory"] = round(time.perf_counter() - t0, 1)
    stage_seconds = {s: t.seconds for s, t in memory.timings.items()}
    print(f"memory stages ({run_dir}): " + ", ".join(
        f"{s} {sec:.1f} s" if memory.timings[s].ran else f"{s} cached" for s, sec in stage_seconds.items()))

    from recsim_personas.agents.llm import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    plan = plan_experiment(run_dir, config, dataset=dataset, tokenizer=tokenizer)
    tcfg = config.train_config()
    print(f"\nbudget {args.budget}: preset {config.train_preset} (r={tcfg.r}, alpha={tcfg.alpha:g}, "
          f"{len(tcfg.target_modules)} target modules, lr={tcfg.learning_rate:g}, epochs={tcfg.epochs:g}, "
          f"max_steps={tcfg.max_steps}, batch {tcfg.batch_size}), eval mode {config.eval_mode}")
    print("cut versus the paper's protocol:" if plan.cuts else "nothing cut (the paper's protocol)")
    for line in plan.cuts:
        print(f"  - {line}")
    if args.budget != "full":
        print("  - model: SmolLM2-135M-Instruct instead of Phi-3-Mini (3.8B); LoRA preset "
              f"'{config.train_preset}' instead of 'paper'; template distillation instead of GPT-4o")
    print("prompt tokens (mean): " + ", ".join(
        f"{m}: prefix {t['prefix']:.0f} + item {t['suffix']:.0f}" for m, t in plan.tokens.items()))
    print(f"{'adapter':<20}{'rows':>6}{'users':>6}{'steps':>6}{'epochs':>7}{'tokens':>10}")
    for a in plan.adapters:
        print(f"{a['name'] + '__' + a['mode']:<20}{a['rows']:>6}{a['users']:>6}{a['steps']:>6}"
              f"{a['epochs']:>7.2f}{a['train_tokens']:>10,}" + ("  (done)" if a["done"] else ""))
    for e in plan.evaluations:
        print(f"row {e['row']:>2} {e['adapter']:<11}{e['mode']:<5}{e['test_rows']:>6} test rows "
              f"{e['users']:>4} users {e['eval_tokens']:>10,} tokens" + ("  (done)" if e["done"] else ""))
    rates = dict(DEFAULT_RATES)
    model = None
    if args.dry_run and args.measure:
        model, tokenizer = load_causal_lm(args.model, device=config.device, dtype=tcfg.dtype)
        rates = measure_rates(model, tokenizer, run_dir, dataset, config)
        print(f"measured now: {1000 * rates['train_s_per_token']:.2f} ms per training token, "
              f"{1000 * rates['eval_s_per_token']:.2f} ms per scored token (torch threads: "
              f"{torch.get_num_threads()})")
    estimate = plan.estimate_seconds(rates["train_s_per_token"], rates["eval_s_per_token"])
    print(f"estimated time: training {estimate['train'] / 60:.0f} min + evaluation {estimate['eval'] / 60:.0f} "
          f"min = {estimate['total'] / 60:.0f} min (at {1000 * rates['train_s_per_token']:.1f} / "
          f"{1000 * rates['eval_s_per_token']:.1f} ms per train / scored token; model load and row "
          "building not included)")
    if args.dry_run:
        return 0

    split = Split.load(run_dir / "split")
    if model is None:
        model, tokenizer = load_causal_lm(args.model, device=config.device, dtype=tcfg.dtype)
    t0 = time.perf_counter()
    result = run_experiment(run_dir, dataset, config, model=model, tokenizer=tokenizer,
                            progress=not args.quiet, log=lambda line: print(line, flush=True))
    timings["experiment"] = round(time.perf_counter() - t0, 1)
    evaluated = evaluation_rows(run_dir, config)
    baselines = fit_baselines(split, evaluated, dataset.scale)
    timings["total"] = round(time.perf_counter() - t_all, 1)

    rows = result.table.to_dict(orient="records")
    from recsim_personas.reproduce.table1 import PAPER_TABLE1

    paper = {r.no: r for r in PAPER_TABLE1}
    for r in rows:
        r["paper_rmse"], r["paper_mae"], r["paper_urr"] = paper[r["No."]].rmse, paper[r["No."]].mae, paper[r["No."]].urr
    for b in baselines:
        rows.append({"No.": "-", "Adapter": b["model"], "Memories": "(classic)", "RMSE": b["rmse"],
                     "MAE": b["mae"], "URR": 0.0, "test_rows": b["n_test"], "train_rows": b["train_rows"],
                     "train_seconds": b["train_seconds"]})
    for r in rows:
        if r.get("train_rows") and r.get("train_seconds") is not None and r["Memories"] != "(classic)":
            r["train_s_per_row"] = r["train_seconds"] / r["train_rows"]
    columns = [("No.", "No.", ""), ("Adapter", "Adapter", ""), ("Memories", "Memories", ""),
               ("RMSE", "RMSE", ".3f"), ("MAE", "MAE", ".3f"), ("URR", "URR", ".1%"),
               ("outside_mass", "Outside mass", ".1%"), ("RMSE (mode)", "RMSE mode", ".3f"),
               ("RMSE (sample)", "RMSE sample", ".3f"), ("test_rows", "Test rows", ""),
               ("train_rows", "Train rows", ""), ("train_steps", "Steps", ""),
               ("train_seconds", "Train s", ".0f"), ("train_s_per_row", "Train s/row", ".1f"),
               ("paper_rmse", "Paper RMSE", ".3f")]
    table_md = _markdown(rows, columns)
    print(f"\nFidelity, budget {args.budget} (ML-1M users 1-2999, paper split; errors per rating over "
          f"{len(evaluated)} test rows of {evaluated['user_id'].nunique()} users; RMSE/MAE of the "
          "distribution's expectation):\n")
    print(table_md)
    print(f"\ntotal {timings['total'] / 60:.1f} min (memory {timings['memory']:.0f} s, train + evaluate "
          f"{timings['experiment']:.0f} s); estimate was {estimate['total'] / 60:.0f} min")
    curves = {k: {"rows": t.n_rows, "steps": t.steps, "first_loss": t.first_loss, "final_loss": t.final_loss,
                  "seconds": t.wall_seconds, "tokens": t.train_tokens} for k, t in result.train.items()}
    out = results_file.write(
        config={"budget": args.budget, "experiment": config.to_dict(), "lora": tcfg.to_dict(),
                "split": PAPER_SPLIT.to_dict(), "memory": MemoryPipelineConfig.paper().to_dict(),
                "data_dir": str(args.data_dir), "run_dir": str(run_dir),
                "torch_threads": torch.get_num_threads(), "cuts": plan.cuts,
                "plan": {"adapters": plan.adapters, "evaluations": plan.evaluations, "tokens": plan.tokens,
                         "estimate_seconds": estimate, "rates": rates}},
        metrics={"rows": rows, "per_persona": result.persona_points, "baselines": baselines,
                 "train": curves, "timings": {**timings, "memory_stages": stage_seconds},
                 "averaging": "per rating; headline = expectation of the rating distribution",
                 "table_markdown": table_md},
    )
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
