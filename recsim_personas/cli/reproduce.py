"""``recsim-personas reproduce``: the paper's Table 1 and a simulation report from one command.

Split, distillation, personas, LoRA training (theta_single min/max, theta_persona; M_s and M_s +
M_l), the prompted base model rows, evaluation, classic baselines and the baseline policies in
PersonaRec-v0. Cached in the run folder: an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import time

from recsim_personas.adapter_names import adapter_name

__all__ = ["print_report", "register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    from recsim_personas.cli.options import add_command

    p = add_command(sub, "reproduce", run,
                    help="run every stage of a preset (demo, cpu, paper) and write Table 1, figures, simulation")
    p.add_argument("--preset", default="demo", help="demo | cpu | full | paper (configs/<preset>.yaml)")
    p.add_argument("--config", default=None, help="a YAML config file instead of a preset")
    p.add_argument("--dataset", default=None, help="override dataset.name")
    p.add_argument("--data-dir", default=None, help="override dataset.data_dir")
    p.add_argument("--model", default=None, help="override model.name (hub id or local path)")
    p.add_argument("--out", default=None, help="override the run folder")
    p.add_argument("--server", default=None, metavar="URL",
                   help="override model.server: score the evaluation and the LM simulation through a "
                   "vLLM server that serves the run's trained adapters (`recsim-personas serve RUN "
                   "--launch`), e.g. http://127.0.0.1:8000/v1; training stays in this process")
    p.add_argument("--dry-run", action="store_true",
                   help="make every check a real run makes before its first stage (the whole config, "
                   "the output folder, the folder's lock, damaged or stale files) and print what "
                   "would run, without running it")
    p.add_argument("--estimate-only", action="store_true",
                   help="build the memories, measure this machine's speed, print the time the rest will "
                        "take (RUN/estimate.json) and stop")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. split.n_users=20")


def print_report(report, elapsed: float) -> None:
    """The short report a newcomer reads: fidelity table, simulation table, where the files are."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a log file or pipe: wide enough that the columns are not cut
        console = Console(width=200)
    table = Table(title="Rating fidelity (Table 1 layout; errors per rating on the evaluated test rows)")
    cols = ["No.", "Base", "Adapter", "Memories", "RMSE", "MAE", "URR", "Test rows", "Train s", "Paper RMSE"]
    for c in cols:
        table.add_column(c)
    for row in report.table1.to_dict(orient="records"):
        if row["RMSE"] == "-" and row["Base"] != "classic" and row["No."] in (0, 1, 2):
            continue
        table.add_row(*(str(row[c]) for c in cols))
    console.print(table)
    console.print("Rows 0-2 (prompted LLaMA-3) need an 8B LLM and are marked in table1.md.")
    if report.fidelity is not None:
        from recsim_personas.cli.fidelity import print_fidelity

        print_fidelity(report.fidelity, console)
    else:
        summary = _summary(report.table1.to_dict(orient="records"))
        if summary:
            console.print(summary)
    if report.simulation is not None:
        console.print(report.simulation.table())
    console.print(f"\nFinished in {elapsed:.0f} s. Files in [bold]{report.out}[/bold]:")
    for name in ("table1.md", "table1.csv", "table1.json", "fidelity.md", "fidelity.json",
                 "fidelity_calibration.png", "figure3_persona_error_vs_size.png",
                 "figure2_persona_words.png", "simulate.json", "simulate.png", "plots/", "adapters/",
                 "results/"):
        if (report.out / name.rstrip("/")).exists():
            console.print(f"  {report.out / name}")


def _summary(rows: list[dict]) -> str:
    """One sentence: the best simulated user against the best classic predictor (lower RMSE is better)."""

    def rmse(row: dict) -> float | None:
        try:
            return float(row["RMSE"])
        except (TypeError, ValueError):
            return None

    agents = [r for r in rows if r["Base"] != "classic" and rmse(r) is not None]
    classic = [r for r in rows if r["Base"] == "classic" and rmse(r) is not None]
    if not agents or not classic:
        return ""
    best = min(agents, key=rmse)
    yard = min(classic, key=rmse)
    verdict = "beats" if rmse(best) < rmse(yard) else "does not beat"
    return (
        f"Best simulated user: row {best['No.']} ({best['Adapter']}, {best['Memories']}) with RMSE {rmse(best):.3f}; "
        f"it {verdict} the best classic predictor ({yard['Adapter']}, RMSE {rmse(yard):.3f}) on the same "
        f"{best['Test rows']} test ratings. Lower is better; the paper's column is its Phi-3-mini on ML-1M."
    )


def _dry_run(config) -> None:
    """What a real run of ``config`` would do: the checks it makes first, then each stage's state."""
    from pathlib import Path

    from recsim_personas.artifacts import RunFolder
    from recsim_personas.errors import DataError
    from recsim_personas.integrity import adapter_up_to_date, verify_run_folder
    from recsim_personas.reproduce.stages import adapter_inputs, stage_configs

    out = Path(config.out)
    stages = stage_configs(config)
    print(f"config: valid (preset {config.preset}); run folder {out}")
    if not out.is_dir():
        print("run folder: new; every stage runs")
        return
    with RunFolder(out).lock("recsim-personas reproduce --dry-run"):
        pass  # free now: a real run would get it
    try:
        verify_run_folder(out)
        print("run folder: every recorded file is intact")
    except DataError as exc:  # reported: the real run repairs it
        print(f"run folder: {exc} -> a real run removes the damaged file and rebuilds its stage")
    manifest = RunFolder(out).manifest()["stages"]
    for stage in ("split", "distill", "embed", "personas"):
        state = "recorded" if stage in manifest else "to run"
        print(f"  {stage:<18} {state} (re-run when its inputs changed)")
    exp = stages.experiment
    settings = adapter_inputs(exp)
    if "personas" in manifest:
        from recsim_personas.training.experiment import plan_experiment

        plan = plan_experiment(out, exp)
        for a in plan.adapters:
            name = adapter_name(a['name'], a['mode'], cue=a.get('cue', False))
            state = "done" if adapter_up_to_date(out, name, settings) else "to train"
            print(f"  adapter {name:<26} {a['rows']:>6} rows {a['steps']:>5} steps  {state}")
    sim = "enabled" if stages.simulation is not None else "disabled"
    print(f"  simulation: {sim}")


def run(args: argparse.Namespace) -> int:
    from recsim_personas.cli.common import check_server
    from recsim_personas.cli.outputs import check_output_dir
    from recsim_personas.reproduce.loading import load_reproduce_config
    from recsim_personas.reproduce.pipeline import run_reproduction

    extra = {"dataset.name": args.dataset, "dataset.data_dir": args.data_dir, "model.name": args.model,
             "model.server": args.server, "out": args.out}
    config = load_reproduce_config(
        None if args.config else args.preset, config_path=args.config, overrides=args.overrides, extra=extra
    )
    check_output_dir(config.out, "--out (out)")
    check_server(config.model.server, "--server (model.server)")
    if args.dry_run:
        _dry_run(config)
        return 0
    start = time.perf_counter()
    report = run_reproduction(config, estimate_only=args.estimate_only)
    if args.estimate_only:
        print(f"estimate written to {report.out / 'estimate.json'} ({time.perf_counter() - start:.0f} s)")
        return 0
    print_report(report, time.perf_counter() - start)
    return 0
