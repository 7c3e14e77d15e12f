"""``recsim-personas fidelity``: do the simulated users rate like the real ones? (a run folder's report)

RMSE/MAE (expectation and mode), per-user Spearman and NDCG@10, AUC of P(like), histogram distance,
calibration plot and the paired bootstrap interval of agent - bias, per agent and per persona, on
exactly the rows the agents were scored on.

Examples::

    recsim-personas fidelity runs/demo
    recsim-personas fidelity runs/full --data-dir ~/data/ml-1m --json fidelity.json

Reads the Table-1 predictions in ``RUN_DIR/results`` (run ``recsim-personas evaluate`` first), fits
the user + item bias predictor on the same ratings the agents' item averages come from, and prints
per predictor: RMSE / MAE of the expectation and of the mode (per rating), per-user Spearman and
NDCG@10 (per user), AUC of P(like), the rating-histogram distances, and the paired bootstrap 95%
interval (over users) of agent minus bias for RMSE and Spearman. A calibrated agent (its temperature
fitted on the validation slice held out of training) has a second row, ``<agent> (T=0.62)``, with
every metric on its temperature-scaled distributions. Writes ``fidelity.json``,
``fidelity.md`` and ``fidelity_calibration.png`` into the run folder.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["print_fidelity", "register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``fidelity`` command."""
    from recsim_personas.cli.common import add_dataset_arguments
    from recsim_personas.cli.options import add_command

    p = add_command(sub, "fidelity", run,
                    help="fidelity report of a run folder's evaluated agents against the bias predictor")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder with evaluated rows (results/row*.parquet)")
    add_dataset_arguments(p)
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--results", default=None,
                   help="predictions folder in RUN_DIR: fidelity_results (rows re-scored for the report, "
                        "used when present) or results (Table 1's)")
    p.add_argument("--json", default=None, help="also write the report to this JSON file")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.3f}"


def _interval(d: float | None, ci: list[float] | None) -> str:
    return "-" if d is None or ci is None else f"{d:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def print_fidelity(report: Any, console: Any = None) -> None:
    """Print a :class:`~recsim_personas.reproduce.fidelity_report.FidelityReport` with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 200)
    table = Table(title=f"Fidelity on the same test rows (item averages and bias fitted on: {report.item_stats})",
                  caption="RMSE/MAE/AUC/NLL per rating; Spearman, NDCG@10 per user; intervals: paired "
                          "bootstrap over users, 95%. (T=...): the agent above, temperature-scaled with T fitted "
                          "on the validation slice (held out of training; never on test rows).")
    heads = ["predictor", "rows", "RMSE", "MAE", "RMSE mode", "Spearman", "NDCG@10", "AUC like", "hist TV",
             "NLL", "RMSE - bias [95%]", "Spearman - bias [95%]"]
    for h in heads:
        table.add_column(h, justify="left" if h == "predictor" else "right", no_wrap=h == "predictor")
    for row in report.rows:
        m, p = row["metrics"], row.get("paired")
        table.add_row(row["name"], str(m["n"]), _cell(m["rmse"]), _cell(m["mae"]), _cell(m["rmse_mode"]),
                      _cell(m["spearman"]), _cell(m["ndcg@10"]), _cell(m["auc_like"]), _cell(m["hist_tv"]),
                      _cell(m.get("nll")),
                      _interval(p["rmse_diff"], p["rmse_diff_ci"]) if p else "",
                      _interval(p["spearman_diff"], p["spearman_diff_ci"]) if p else "")
    console.print(table)
    console.print(report.verdict)


def run(args: argparse.Namespace) -> int:
    """Run the command; user errors propagate as ``RecsimError`` (exit code 2 in ``main``)."""
    from pathlib import Path

    from recsim_personas.artifacts import atomic_write_json, environment_info, git_info
    from recsim_personas.cli.train import load_run_dataset
    from recsim_personas.reproduce.fidelity_report import fidelity_report

    dataset = load_run_dataset(args)
    results = args.results
    if results is None:
        results = "fidelity_results" if any((Path(args.run_dir) / "fidelity_results").glob("row*.parquet")) else "results"
    report = fidelity_report(args.run_dir, dataset, n_boot=args.bootstrap, seed=args.seed, results_dir=results)
    print_fidelity(report)
    for path in report.files.values():
        print(f"wrote {path}")
    if args.json:
        atomic_write_json(args.json, {"rows": report.rows, "verdict": report.verdict,
                                      "item_stats": report.item_stats, "git": git_info(), **environment_info()})
        print(f"wrote {args.json}")
    return 0
