"""``recsim-personas evaluate``: RMSE / MAE / URR of the LM user agents on a run folder's test split.

RMSE, MAE and URR of the prompted base model and the trained adapters on the run folder's test split
(Table 1 rows 3-10), overall and per persona; one results JSON per row in RUN_DIR/results.

Examples::

    recsim-personas evaluate runs/ml1m --data-dir ~/data/ml-1m
    recsim-personas evaluate runs/ml1m --mode generate --test-rows-per-user 10 --json table.json

Evaluates the rows of the paper's Table 1 that the options select: the prompted base model (rows
3-4, unless ``--no-base``), single (max) / single (min) (rows 5-8) and persona adapters (rows 9-10,
each persona's adapter on its own users), for M_s and M_s + M_l. Train the adapters first with
``recsim-personas train`` and the same selection options. Each row's metrics (overall and per
persona) go to ``RUN_DIR/results/row<NN>_<adapter>__<mode>.json`` (finished rows are reused).

The headline RMSE / MAE score the expectation of the agent's rating distribution; the table also
shows the most likely level (``RMSE mode``) and a seeded sample (``RMSE sample``, what the simulated
user answers). Errors average per rating.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["print_table", "register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    from recsim_personas.cli.options import add_command
    from recsim_personas.cli.train import add_experiment_arguments

    p = add_command(sub, "evaluate", run,
                    help="score the LM user agents (base, single, persona) on the test split")
    add_experiment_arguments(p, evaluate=True)


def _fmt(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, pattern)


def print_table(table: Any, title: str = "LM user agents on the test split") -> None:
    """Print an experiment table (``ExperimentResult.table``) with rich."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, caption="Errors average per rating; RMSE/MAE score the distribution's "
              "expectation (mode = most likely level, sample = seeded draw).")
    columns = [("No.", "No.", "d"), ("Adapter", "Adapter", "s"), ("Memories", "Memories", "s"),
               ("RMSE", "RMSE", ".3f"), ("MAE", "MAE", ".3f"), ("URR", "URR", ".1%"),
               ("outside_mass", "Outside", ".1%"), ("RMSE (mode)", "RMSE mode", ".3f"),
               ("RMSE (sample)", "RMSE sample", ".3f"), ("test_rows", "Test rows", "d"),
               ("train_rows", "Train rows", "d"), ("train_seconds", "Train s", ".0f"),
               ("eval_seconds", "Eval s", ".0f")]
    if "T" in table.columns:  # calibrated rows: the temperature and the errors after it
        columns[5:5] = [("T", "T", ".2f"), ("RMSE (calibrated)", "RMSE cal.", ".3f")]
    for _, header, fmt in columns:
        t.add_column(header, justify="left" if fmt == "s" else "right")
    for row in table.to_dict(orient="records"):
        t.add_row(*[_fmt(row.get(key), fmt) for key, _, fmt in columns])
    # Not a terminal (a log file, CI): wide enough that no column is cut.
    Console(width=None if sys.stdout.isatty() else 200).print(t)


def run(args: argparse.Namespace) -> int:
    """Run the command; user errors propagate as ``RecsimError`` (exit code 2 in ``main``)."""
    from pathlib import Path

    from recsim_personas.artifacts import atomic_write_json, environment_info, git_info
    from recsim_personas.cli.common import check_models, check_server
    from recsim_personas.cli.outputs import check_output_file
    from recsim_personas.cli.train import experiment_config_from_args, load_run_dataset
    from recsim_personas.integrity import verify_run_folder
    from recsim_personas.training.experiment import (
        evaluate_rows,
        experiment_table,
        finished_adapters,
        persona_map,
        plan_experiment,
    )

    config = experiment_config_from_args(args)
    if args.json:
        check_output_file(args.json, "--json")
    check_models([(config.model, "--model")])
    check_server(config.server)
    adapters_dir = Path(args.run_dir) / "adapters"
    trained = sorted(p.name for p in adapters_dir.glob("*__*") if p.is_dir()) if adapters_dir.is_dir() else []
    # Damaged results are recomputed; damaged memories or adapters, or stale adapters, are refused.
    verify_run_folder(args.run_dir, adapters=trained, repair=("results",), check=("memory", "adapters"))
    plan = plan_experiment(args.run_dir, config)  # checks the run folder before loading the model
    for line in plan.cuts:
        print(f"cut: {line}")
    dataset = load_run_dataset(args)
    results = evaluate_rows(args.run_dir, dataset, config, progress=not args.quiet,
                            log=lambda line: print(line, flush=True))
    table, points = experiment_table(config, results, finished_adapters(args.run_dir), persona_map(args.run_dir))
    print_table(table)
    if args.json:
        atomic_write_json(args.json, {"config": config.to_dict(), "rows": table.to_dict(orient="records"),
                                      "per_persona": points, "git": git_info(), **environment_info()})
        print(f"wrote {args.json}")
    return 0
