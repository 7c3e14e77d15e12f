"""Benchmark: what the item average in a prompt tells about the label, train rows against test rows.

Command (from the project root; under a minute once the memories exist)::

    .venv/bin/python benchmarks/leakage.py --run-dir runs/full

Needs a run folder of the paper protocol on ``../shared/data/ml-1m-users-1-2999`` (made by
``recsim-personas reproduce --preset full --estimate-only dataset.data_dir=...``, or by the
``memory`` command). No language model runs.

For three ways of computing the average a row's prompt shows, the share of train and test rows with
no average, the share whose shown average equals the label, and how well the shown average predicts
the label (RMSE, Pearson correlation) on train rows and on test rows. A training row is leak-free
when those numbers match the test rows' (the model then cannot learn a shortcut that vanishes):

- ``train-only, self-including`` (the old behaviour): averages over the split's train rows, the
  row's own rating included;
- ``train-only, leave-one-out``: the same ratings, the row's own rating left out;
- ``dataset, leave-one-out`` (the default): every rating of the dataset but the evaluated users'
  test rows, the row's own rating left out.

Also: the train rows whose item the user's profile names (dropped by ``named_items="drop"``).
Writes ``--out`` (default ``results/leakage.json``) through :mod:`recsim_personas.benchmarking`; the
table of the last run is in the README ("Simulated users that carry each user's taste").
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from recsim_personas.benchmarking import ResultsFile, bench_argparser, out_path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-1m-users-1-2999"


def _stats(shown: np.ndarray, label: np.ndarray) -> dict[str, float | None]:
    has = np.isfinite(shown)
    out: dict[str, float | None] = {"rows": len(label), "no_average": float(1 - has.mean())}
    if has.sum() > 2:
        s, y = shown[has], label[has]
        out["equal_to_label"] = float((np.abs(s - y) < 0.005).mean())
        out["rmse"] = float(np.sqrt(np.mean((s - y) ** 2)))
        out["pearson"] = float(np.corrcoef(s, y)[0, 1])
    return out


def _averages(pool: pd.DataFrame, rows: pd.DataFrame, leave_one_out: bool) -> np.ndarray:
    agg = pool.groupby("item_id")["rating"].agg(["sum", "count"])
    s = rows["item_id"].map(agg["sum"]).to_numpy(dtype=float)
    n = rows["item_id"].map(agg["count"]).fillna(0).to_numpy(dtype=float)
    if leave_one_out:
        s, n = s - rows["rating"].to_numpy(dtype=float), n - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def main(argv: list[str] | None = None) -> int:
    parser = bench_argparser(__file__, __doc__, raw=True)
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "full"))
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    args = parser.parse_args(argv)
    results_file = ResultsFile(out_path(args), "leakage", argv)

    from recsim_personas.data.registry import load_dataset
    from recsim_personas.data.splits import Split
    from recsim_personas.memory.pipeline import run_item_catalog
    from recsim_personas.memory.statistics import rating_pool
    from recsim_personas.memory.store import MemoryStore
    from recsim_personas.training.rows import profile_names_item

    run = Path(args.run_dir)
    dataset = load_dataset("ml-1m", args.data_dir)
    split = Split.load(run / "split")
    train, test = split.train, split.test
    full_pool = rating_pool(dataset, train, test, "dataset")
    ways = {
        "train-only, self-including": (train, False),
        "train-only, leave-one-out": (train, True),
        "dataset, leave-one-out": (full_pool, True),
    }
    results = {}
    for name, (pool, loo) in ways.items():
        results[name] = {
            "train": _stats(_averages(pool, train, loo), train["rating"].to_numpy(dtype=float)),
            # A test rating is never in a pool: its shown average is the plain pool average.
            "test": _stats(_averages(pool, test, False), test["rating"].to_numpy(dtype=float)),
        }
    store = MemoryStore.from_run_dir(run)
    catalog = run_item_catalog(run, dataset, split)
    named = sum(profile_names_item(store.profile(int(u)), catalog.info(int(i)))
                for u, i in zip(train["user_id"], train["item_id"], strict=True))
    named_test = sum(profile_names_item(store.profile(int(u)), catalog.info(int(i)))
                     for u, i in zip(test["user_id"], test["item_id"], strict=True))
    path = results_file.write(
        config={"run_dir": str(run), "data_dir": args.data_dir, "users": int(train["user_id"].nunique()),
                "train_rows": len(train), "test_rows": len(test), "pool_rows": len(full_pool)},
        metrics={"averages": results, "profile_named_train_rows": int(named),
                 "profile_named_test_rows": int(named_test)},
    )
    print("| item average shown | rows | no average | = label | RMSE vs label | Pearson |")
    print("|---|---|---|---|---|---|")
    for name, parts in results.items():
        for part in ("train", "test"):
            r = parts[part]
            print(f"| {name} ({part}) | {r['rows']:,} | {100 * r['no_average']:.1f}% | "
                  f"{100 * r.get('equal_to_label', 0):.1f}% | {r.get('rmse', float('nan')):.3f} | "
                  f"{r.get('pearson', float('nan')):.3f} |")
    print(f"\ntrain rows whose item the profile names: {named:,} of {len(train):,} "
          f"({100 * named / len(train):.1f}%; dropped from training); test rows: {named_test:,}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
