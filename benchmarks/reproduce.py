"""Benchmark: one preset of ``recsim-personas reproduce``, recorded in ``results/reproduce-<preset>.json``.

Commands (from the project root)::

    .venv/bin/python benchmarks/reproduce.py --preset demo --fresh --repeat 2   # first run and cached re-run
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reproduce.py --preset cpu --data-dir ../shared/data/ml-1m-users-1-2999

Runs (or resumes: every stage is cached in the run folder) :func:`recsim_personas.reproduce.pipeline.run_reproduction`
on the preset's YAML (``configs/<preset>.yaml``; ``--run-dir`` for another run folder), prints the
newcomer's report and writes ``--out`` (default ``results/reproduce-<preset>.json``) through
:mod:`recsim_personas.benchmarking`, with the config, the Table-1 rows beside the paper's numbers, the classic baselines
on the same test rows, the simulation report (per-policy simulated metrics with CIs next to offline
metrics, rank correlations), the time of each stage, the run folder's manifest (each stage's
inputs and seconds when it ran) and, with ``--repeat 2``, the wall time of every run (the second
one reuses the cache). ``--fresh`` deletes the run folder first.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from recsim_personas.benchmarking import ResultsFile, bench_argparser, out_path


def main(argv: list[str] | None = None) -> int:
    parser = bench_argparser(__file__, __doc__, out="reproduce-{preset}.json")
    parser.add_argument("--preset", default="demo", choices=("demo", "cpu", "paper"))
    parser.add_argument("--data-dir", default=None, help="dataset.data_dir (ML-1M for cpu and paper)")
    parser.add_argument("--run-dir", default=None, help="run folder, the config's out (default: the preset's)")
    parser.add_argument("--fresh", action="store_true", help="delete the run folder first (time a first run)")
    parser.add_argument("--repeat", type=int, default=1, help="run this many times (2: first + cached re-run)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    results_file = ResultsFile(out_path(args), "reproduce", argv)

    from recsim_personas.cli.reproduce import print_report
    from recsim_personas.config import config_to_dict
    from recsim_personas.reproduce.loading import load_reproduce_config
    from recsim_personas.reproduce.pipeline import run_reproduction

    extra = {"dataset.data_dir": args.data_dir, "out": args.run_dir}
    config = load_reproduce_config(args.preset, overrides=args.overrides, extra=extra)
    if args.fresh and Path(config.out).exists():
        import shutil

        shutil.rmtree(config.out)
    walls = []
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        report = run_reproduction(config)
        elapsed = time.perf_counter() - start
        print_report(report, elapsed)
        walls.append(round(elapsed, 1))

    out = Path(report.out)
    table1 = json.loads((out / "table1.json").read_text())
    simulation = None
    if report.simulation is not None:
        simulation = {"results": report.simulation.results, "correlations": report.simulation.correlations,
                      "config": report.simulation.config.to_dict()}
    manifest = out / "manifest.json"
    stages = json.loads(manifest.read_text()).get("stages", {}) if manifest.exists() else {}
    path = results_file.write(
        config=config_to_dict(config),
        metrics={
            "table1": table1,
            "simulation": simulation,
            "seconds_last_run": {**report.seconds, "total": elapsed},
            "wall_seconds_per_run": walls,
            "fresh": args.fresh,
            "stages": stages,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
