"""Benchmark: classic baselines on the paper's split and on a random 80:20 split.

Command (from the project root; a few minutes on one core)::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/baselines.py

Datasets (read from ``../shared/data``; never shipped): ml-100k and the ML-1M prefix
``ml-1m-users-1-2999`` (every rating of users 1-2999). Splits:

- ``paper``: the paper's protocol, 200 users with 100-200 ratings sampled with seed 0, each user's
  oldest 60% of ratings train and newest 40% test (``PAPER_SPLIT``).
- ``random-0.8``: every user, a seeded per-user random 80:20 split (seed 0).

Each (dataset, split) writes ``results/baselines-<dataset>-<split>.json`` (``--out``, whose
``{dataset}`` and ``{split}`` are filled in; ``--dataset`` and ``--split`` run one of each) through
:mod:`recsim_personas.benchmarking`: ``results`` holds one object per model, ``metrics`` the same
numbers keyed by model, and it prints a table. Checks (the issue's "done when"): on ml-100k random
80:20 the bias baseline lands near RMSE 0.94 and biased MF near 0.93 (published figures for these
models on ml-100k), and on every split biased MF beats the global mean. The exit code is 1 if a
check fails.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from recsim_personas.benchmarking import ResultsFile, bench_argparser, out_path
from recsim_personas.data.registry import load_dataset
from recsim_personas.data.splits import PAPER_SPLIT, SplitConfig, make_split
from recsim_personas.eval.offline import EvalConfig, evaluate_baselines
from recsim_personas.eval.report import print_results, results_markdown

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

#: (results name, loader name, folder under the data root)
DATASETS: tuple[tuple[str, str, str], ...] = (
    ("ml-100k", "ml-100k", "ml-100k"),
    ("ml-1m-users-1-2999", "ml-1m", "ml-1m-users-1-2999"),
)
SPLITS: dict[str, SplitConfig] = {
    "paper": PAPER_SPLIT,
    "random-0.8": SplitConfig(method="random", train_fraction=0.8, seed=0),
}
#: Published-figure bands for ml-100k, random 80:20 ("about 0.94" and "about 0.93").
EXPECTED_ML100K_RANDOM = {"bias": (0.92, 0.96), "biased-mf": (0.90, 0.95)}


def run_checks(name: str, split_name: str, metrics: dict[str, dict]) -> list[dict]:
    """The benchmark's pass/fail checks for one (dataset, split)."""
    checks = []
    mf, glob = metrics["biased-mf"]["rmse"], metrics["global-mean"]["rmse"]
    checks.append({
        "check": "biased-mf RMSE < global-mean RMSE",
        "value": f"{mf:.4f} < {glob:.4f}",
        "passed": bool(mf < glob),
    })
    if name == "ml-100k" and split_name == "random-0.8":
        for model, (lo, hi) in EXPECTED_ML100K_RANDOM.items():
            value = metrics[model]["rmse"]
            checks.append({
                "check": f"{model} RMSE in [{lo}, {hi}] (published: about {(lo + hi) / 2:.2f})",
                "value": f"{value:.4f}",
                "passed": bool(lo <= value <= hi),
            })
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = bench_argparser(__file__, __doc__, out="baselines-{dataset}-{split}.json")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="folder holding the datasets")
    parser.add_argument("--dataset", choices=[d[0] for d in DATASETS], default=None, help="one dataset (default: all)")
    parser.add_argument("--split", choices=list(SPLITS), default=None, help="one split (default: all)")
    parser.add_argument("--k", type=int, default=10, help="ranked-list length")
    args = parser.parse_args(argv)
    datasets = [d for d in DATASETS if args.dataset in (None, d[0])]
    splits = {name: s for name, s in SPLITS.items() if args.split in (None, name)}
    if len(datasets) * len(splits) > 1 and "{" not in args.out:
        parser.error("--out names one file: choose one --dataset and one --split, or put {dataset} and {split} in it")

    eval_config = EvalConfig(k=args.k)
    all_checks: list[dict] = []
    markdown: list[str] = []
    start_all = time.perf_counter()
    for name, loader, folder in datasets:
        dataset = load_dataset(loader, args.data / folder)
        for split_name, split_config in splits.items():
            results_file = ResultsFile(out_path(args, dataset=name, split=split_name), "baselines", argv)
            start = time.perf_counter()
            split = make_split(dataset, split_config)
            results = evaluate_baselines(split, config=eval_config, progress=False)
            metrics = {r["model"]: {k: v for k, v in r.items() if k != "model"} for r in results}
            checks = run_checks(name, split_name, metrics)
            all_checks += [{"dataset": name, "split": split_name, **c} for c in checks]
            info = split.summary()
            title = (
                f"{name}, {split_name}: {split_config.describe()} - {info['users']} users, "
                f"{info['train_rows']:,} train / {info['test_rows']:,} test ratings"
            )
            print_results(results, k=eval_config.k, title=title)
            for c in checks:
                print(f"  [{'PASS' if c['passed'] else 'FAIL'}] {c['check']}: {c['value']}")
            markdown.append(results_markdown(results, k=eval_config.k, title=title))
            config = {
                "dataset": {**dataset.summary(), "folder": folder},
                "dataset_fingerprint": dataset.fingerprint(),
                "split_name": split_name,
                "split": split_config.to_dict(),
                "split_summary": info,
                "eval": {**eval_config.to_dict(),
                         "relevance_threshold_used": eval_config.threshold_for(split.scale)},
                "seconds": round(time.perf_counter() - start, 2),
            }
            path = results_file.write(config=config, metrics=metrics, results=results, checks=checks)
            print(f"  wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}\n")

    print("Markdown tables (for the README):\n")
    print("\n".join(markdown))
    failed = [c for c in all_checks if not c["passed"]]
    print(f"{len(all_checks) - len(failed)}/{len(all_checks)} checks passed in "
          f"{time.perf_counter() - start_all:.0f} s")
    for c in failed:
        print(f"FAILED: {c['dataset']} {c['split']}: {c['check']} ({c['value']})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
