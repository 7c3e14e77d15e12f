"""``recsim-personas train``: fine-tune the persona and single LoRA adapters of a run folder.

LoRA fine-tuning of a frozen small LM on the run folder's train ratings (prompt = the user's
profile, the item and, in msml mode, the retrieved memory; target = the rating). One adapter per
persona and two single adapters (sub-sampled to the smallest and largest persona dataset), per
memory mode. Resumable; finished adapters are reused.

Examples::

    recsim-personas memory --out runs/ml1m --dataset ml-1m --data-dir ~/data/ml-1m
    recsim-personas train runs/ml1m --data-dir ~/data/ml-1m          # cpu preset
    recsim-personas train runs/ml1m --preset paper --model microsoft/Phi-3-mini-4k-instruct --memory both
    recsim-personas train runs/ml1m --adapters persona --set max_steps=50 --set r=8 --dry-run

Trains, per memory mode (``ms`` = M_s, ``msml`` = M_s + M_l), one adapter per persona
(``adapters/persona_<p>__<mode>``) and the single adapters sub-sampled to the smallest and largest
persona dataset (``single_min__<mode>``, ``single_max__<mode>``). Finished adapters are skipped; an
interrupted one resumes from its checkpoint. The dataset is the one the run folder was built from
(its name is read from the folder; pass ``--data-dir`` for ml-1m / ml-100k).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from recsim_personas.adapter_names import adapter_name

__all__ = [
    "add_experiment_arguments",
    "experiment_config_from_args",
    "load_run_dataset",
    "register",
    "run",
]


def _kinds(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _memory(text: str) -> tuple[str, ...]:
    value = text.strip().lower()
    if value == "both":
        return ("ms", "msml")
    if value in ("ms", "msml"):
        return (value,)
    raise argparse.ArgumentTypeError(f"expected ms, msml or both, got {text!r}")


def _per_user(text: str) -> int | float | None:
    if text.strip().lower() in ("all", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count, a fraction or 'all', got {text!r}") from None
    if value.is_integer() and value >= 1:
        return int(value)
    if 0 < value < 1:
        return value
    raise argparse.ArgumentTypeError(f"expected a count >= 1 or a fraction in (0, 1), got {text!r}")


def _setting(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. max_steps=50), got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def add_experiment_arguments(parser: argparse.ArgumentParser, *, evaluate: bool = False) -> None:
    """Options shared by ``train`` and ``evaluate``: run folder, dataset, model, what to run."""
    from recsim_personas.cli.common import add_dataset_arguments
    from recsim_personas.cli.options import add_count_option

    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `recsim-personas memory`")
    add_dataset_arguments(parser)
    # None = the dataset named in the run folder's manifest.
    parser.set_defaults(dataset=None)
    for action in parser._actions:
        if action.dest == "dataset":
            action.help = ("dataset the run folder was built from (default: the name in its manifest; "
                           "ml-100k and ml-1m also need --data-dir)")
    m = parser.add_argument_group("model and adapters")
    m.add_argument("--model", default=None,
                   help="base LM: hub id or local path (default: the packaged SmolLM2-135M-Instruct)")
    m.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda (default: auto)")
    m.add_argument("--preset", default="cpu", choices=("cpu", "paper"),
                   help="LoRA training preset: cpu (all linear projections, rank 16, step cap) or paper "
                   "(q/k, rank 256, alpha 32, lr 3e-4, 2 epochs) (default: cpu)")
    m.add_argument("--set", dest="overrides", type=_setting, action="append", default=[],
                   metavar="KEY=VALUE", help="override a LoRA setting of the preset, e.g. --set max_steps=50 "
                   "(repeatable; see LoraTrainConfig)")
    m.add_argument("--memory", type=_memory, default=("ms", "msml"), metavar="ms|msml|both",
                   help="memory modes: M_s only, M_s + M_l, or both (default: both)")
    m.add_argument("--adapters", type=_kinds, default=("persona", "single_min", "single_max"),
                   metavar="A,B", help="adapter kinds: persona, single_min, single_max (default: all)")
    m.add_argument("--template", default="paper", help="prompt preset: paper or compact (default: paper)")
    m.add_argument("--k", type=int, default=1, help="memories retrieved per prompt in msml mode (default: 1)")
    m.add_argument("--delta", type=float, default=0.0, help="minimum memory similarity (default: 0)")
    m.add_argument("--cue", action="store_true",
                   help="collaborative cue: prompts also state the user's and the item's mean ratings and a "
                   "bias model's estimate; adapters <adapter>_cue__<mode> (default: off)")
    b = parser.add_argument_group("budget")
    add_count_option(b, "--users", "user", words=("none",),
                     help="use at most N users (seeded, proportional per persona) (default: all)")
    b.add_argument("--train-rows-per-user", type=_per_user, default=None, metavar="N|F|all",
                   help="at most N train rows per user, or a fraction (default: all)")
    # The messages speak of users, as they always have.
    add_count_option(b, "--test-rows-per-user", "user", words=("none",),
                     help="at most N test rows per user (default: all)")
    b.add_argument("--seed", type=int, default=0, help="seed of row caps and sub-sampling (default: 0)")
    c = parser.add_argument_group("calibration (train and evaluate must agree)")
    c.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="train on every train row and report raw distributions only (default: hold out the "
                   "newest rows of each user as a validation slice and fit a temperature per agent there)")
    c.add_argument("--validation-fraction", type=float, default=0.1, metavar="F",
                   help="share of each user's train rows (the newest) held out for calibration (default: 0.1)")
    add_count_option(c, "--validation-rows", "validation row", words=("none",),
                     help="score at most N validation rows per evaluated agent (seeded) (default: all)")
    if evaluate:
        e = parser.add_argument_group("evaluation")
        e.add_argument("--mode", default="score", choices=("score", "generate"),
                       help="score: the level distribution from one pass (default); generate: the "
                       "paper's 4 sampled tokens parsed with a regex (URR counts failures)")
        e.add_argument("--no-base", action="store_true", help="skip the prompted base model (rows 3-4)")
        e.add_argument("--server", default=None, metavar="URL",
                       help="score through a vLLM server serving the run's adapters (`recsim-personas "
                       "serve RUN --launch`), e.g. http://127.0.0.1:8000/v1 (default: in this process)")
        e.add_argument("--json", default=None, metavar="PATH", help="also write the table as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def experiment_config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~recsim_personas.training.experiment.ExperimentConfig` the options describe."""
    from recsim_personas.training.experiment import ExperimentConfig

    return ExperimentConfig(
        model=args.model,
        device=args.device,
        train_preset=args.preset,
        train_overrides=dict(args.overrides),
        memory_modes=tuple(args.memory),
        adapters=tuple(args.adapters),
        base_rows=not getattr(args, "no_base", False),
        max_users=args.users,
        train_rows_per_user=args.train_rows_per_user,
        test_rows_per_user=args.test_rows_per_user,
        eval_mode=getattr(args, "mode", "score"),
        template=args.template,
        k=args.k,
        delta=args.delta,
        cue=bool(getattr(args, "cue", False)),
        seed=args.seed,
        server=getattr(args, "server", None),
        calibrate=args.calibrate,
        validation_fraction=args.validation_fraction,
        validation_rows=args.validation_rows,
    )


def load_run_dataset(args: argparse.Namespace) -> Any:
    """Load the dataset of the run folder (``--dataset`` or the name in its manifest)."""
    from recsim_personas.cli.common import dataset_from_args
    from recsim_personas.errors import DataError

    run = Path(args.run_dir)
    if not run.is_dir():
        raise DataError(f"run folder {run} does not exist; create it with `recsim-personas memory --out {run}`")
    if args.dataset is None:
        try:
            manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
            args.dataset = manifest["dataset"]["name"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            raise DataError(
                f"{run / 'manifest.json'} does not name the dataset; pass --dataset (and --data-dir)"
            ) from None
    return dataset_from_args(args)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` command."""
    from recsim_personas.cli.options import add_command

    p = add_command(sub, "train", run, help="fine-tune persona and single LoRA adapters on a run folder")
    add_experiment_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="print what would be trained and stop")


def _print_plan(plan: Any, run_dir: str, config: Any) -> None:
    from recsim_personas.integrity import adapter_up_to_date
    from recsim_personas.reproduce.stages import adapter_inputs

    settings = adapter_inputs(config)
    print(f"{'adapter':<22} {'rows':>6} {'users':>5} {'steps':>5} {'epochs':>6}  state")
    for a in plan.adapters:
        name = adapter_name(a['name'], a['mode'], cue=a.get('cue', False))
        # "done" only when recorded with these memories and settings, intact: the real run reuses it.
        done = adapter_up_to_date(run_dir, name, settings)
        print(f"{name:<22} {a['rows']:>6} {a['users']:>5} {a['steps']:>5} {a['epochs']:>6.2f}  "
              f"{'done' if done else 'to train'}")
    for line in plan.cuts:
        print(f"cut: {line}")


def run(args: argparse.Namespace) -> int:
    """Run the command; user errors propagate as ``RecsimError`` (exit code 2 in ``main``)."""
    from recsim_personas.artifacts import RunFolder
    from recsim_personas.cli.common import check_models
    from recsim_personas.integrity import record_adapters, verify_run_folder
    from recsim_personas.reproduce.stages import adapter_inputs
    from recsim_personas.training.experiment import plan_experiment, train_adapters

    config = experiment_config_from_args(args)  # validate before loading anything
    if not config.adapters:
        from recsim_personas.errors import ConfigError

        raise ConfigError("--adapters is empty; give persona, single_min and/or single_max")
    check_models([(config.model, "--model")])
    verify_run_folder(args.run_dir, check=("memory",))  # memory files intact (train cannot rebuild them)
    plan = plan_experiment(args.run_dir, config)
    tcfg = config.train_config()
    print(f"train -> {args.run_dir}/adapters  (preset {config.train_preset}: r={tcfg.r}, "
          f"{','.join(tcfg.target_modules)}, lr={tcfg.learning_rate:g}, epochs={tcfg.epochs:g}, "
          f"max_steps={tcfg.max_steps})")
    _print_plan(plan, args.run_dir, config)
    if args.dry_run:
        return 0
    dataset = load_run_dataset(args)
    with RunFolder(args.run_dir).lock("recsim-personas train"):
        names = [adapter_name(a['name'], a['mode'], cue=a.get('cue', False)) for a in plan.adapters]
        verify_run_folder(args.run_dir, adapters=names, repair=("adapters",),
                          check=("memory", "adapters"))  # a damaged adapter is retrained
        results = train_adapters(args.run_dir, dataset, config, progress=not args.quiet,
                                 log=lambda line: print(line, flush=True))
        record_adapters(args.run_dir, results, adapter_inputs(config))
    total = sum(r.wall_seconds for r in results.values() if not r.cached)
    print(f"trained {sum(not r.cached for r in results.values())} adapter(s) in {total:.0f} s, "
          f"reused {sum(r.cached for r in results.values())}", file=sys.stderr)
    return 0
