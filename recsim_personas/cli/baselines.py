"""``recsim-personas baselines``: fit the classic recommenders on a split and report their metrics.

Fits global/user/item mean, user+item bias and biased MF (rating predictors: RMSE, MAE) and random,
popularity and implicit ALS (rankers: precision/recall/NDCG@k, coverage) on the train part of a
split, and scores them on the test part. RMSE/MAE average per rating (and per user in the /user
columns); ranking metrics per user, relevant = test rating >= 4 (4.0 on half stars).

Examples::

    recsim-personas baselines                                   # embedded ml-latest-small, paper split
    recsim-personas baselines --dataset ml-100k --data-dir ~/data/ml-100k \\
        --split random:0.8 --users all --min-interactions none --max-interactions none --json r.json

The default split is the paper's protocol adapted to the data: temporal 60:40 per user, users with
100-200 ratings, 200 of them sampled with seed 0 (all qualifying users when fewer qualify, as on
ml-latest-small with 115). The JSON file holds ``config``, ``git``, ``versions``, ``hardware`` and
``results`` (one object per model with ``model`` and its metrics).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "run"]


def _models(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``baselines`` command."""
    from recsim_personas.cli.common import add_dataset_arguments, add_split_arguments
    from recsim_personas.cli.options import add_command

    p = add_command(sub, "baselines", run,
                    help="fit classic recommenders on a split; print RMSE/MAE and ranking metrics")
    add_dataset_arguments(p)
    add_split_arguments(p)
    e = p.add_argument_group("evaluation")
    e.add_argument("--models", type=_models, default=None, metavar="A,B,...",
                   help="models to run (default: all: global-mean, user-mean, item-mean, bias, "
                   "biased-mf, random, popularity, als)")
    e.add_argument("--k", type=int, default=10, help="length of ranked lists (default: %(default)s)")
    e.add_argument("--relevance-threshold", type=float, default=None, metavar="R",
                   help="test ratings >= R are relevant (default: 4 on 1-5, 4.0 on 0.5-5)")
    e.add_argument("--json", default=None, metavar="PATH", help="write the results JSON here")
    e.add_argument("--save-split", default=None, metavar="DIR",
                   help="also save the split (train/test parquet + config.json) to DIR")


def run(args: argparse.Namespace) -> int:
    """Run the command; user errors propagate as ``RecsimError`` (exit code 2 in ``main``)."""
    from recsim_personas.baselines.registry import baseline_names, get_baseline_spec
    from recsim_personas.cli.common import dataset_and_split_config
    from recsim_personas.cli.outputs import check_output_dir, check_output_file
    from recsim_personas.data.splits import make_split
    from recsim_personas.eval.offline import EvalConfig, evaluate_baselines
    from recsim_personas.eval.report import print_results, results_document, write_results_json

    names = args.models if args.models is not None else list(baseline_names())
    for name in names:  # fail on a typo before loading anything
        get_baseline_spec(name)
    eval_config = EvalConfig(k=args.k, relevance_threshold=args.relevance_threshold)

    if args.json:
        check_output_file(args.json, "--json")  # before the work, not after the table is computed
    if args.save_split:
        check_output_dir(args.save_split, "--save-split")
    notes: list[str] = []
    dataset, split_config = dataset_and_split_config(args, notes)
    split = make_split(dataset, split_config)
    if args.save_split:
        split.save(args.save_split)
    results = evaluate_baselines(split, names, config=eval_config, progress=True)

    info = split.summary()
    title = (
        f"Baselines on {dataset.name}: {split_config.describe()} - {info['users']} users, "
        f"{info['train_rows']:,} train / {info['test_rows']:,} test ratings"
    )
    print_results(results, k=eval_config.k, title=title)
    for note in notes:
        print(f"note: {note}")
    if args.json:
        config = {
            "command": "baselines",
            "dataset": {**dataset.summary(), "source": dict(dataset.source)},
            "dataset_fingerprint": dataset.fingerprint(),
            "split": split_config.to_dict(),
            "split_spec": split_config.spec,
            "split_summary": info,
            "eval": {**eval_config.to_dict(),
                     "relevance_threshold_used": eval_config.threshold_for(split.scale)},
            "models": names,
            "notes": notes,
        }
        path = write_results_json(args.json, results_document(config, results))
        print(f"wrote {path}", file=sys.stderr)
    return 0
