"""``recsim-personas demo``: the README's main job, the ``demo`` reproduction preset with no flags.

Runs `recsim-personas reproduce --preset demo`: split, distilled memories, personas, LoRA adapters,
the Table-1 fidelity report, classic baselines and the simulation report of baseline policies in
PersonaRec-v0. A second run reuses the cached run folder.
"""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    from recsim_personas.cli.options import add_command

    p = add_command(sub, "demo", run,
                    help="run the whole pipeline on the embedded ml-latest-small (offline, ~10 min on 2 cores)")
    p.add_argument("--out", default=None, help="run folder (default: runs/demo)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")


def run(args: argparse.Namespace) -> int:
    import time

    from recsim_personas.cli.reproduce import print_report
    from recsim_personas.reproduce.loading import load_reproduce_config
    from recsim_personas.reproduce.pipeline import run_reproduction

    config = load_reproduce_config("demo", overrides=args.overrides, extra={"out": args.out})
    start = time.perf_counter()
    report = run_reproduction(config)
    print_report(report, time.perf_counter() - start)
    return 0
