"""Options every data-using command shares: which dataset to load and how to split it.

Dataset options: ``--dataset {ml-latest-small,ml-100k,ml-1m,csv}`` (default: the embedded
ml-latest-small), ``--data-dir``, ``--enrichment``, ``--skip-bad-rows``, and for ``csv`` the file
and its column mapping (``--csv``, ``--csv-columns``, ``--csv-scale``, ``--csv-items``,
``--csv-item-columns``, ``--csv-sep``).

Split options default to the paper's protocol (:data:`~recsim_personas.data.splits.PAPER_SPLIT`):
``--split temporal:0.6 --min-interactions 100 --max-interactions 200 --users 200 --seed 0``.
One adaptation: when ``--users`` is not given and fewer than 200 users qualify (the embedded
ml-latest-small has 115 users with 100-200 ratings), all qualifying users are kept and a note says
so. An explicit ``--users N`` is strict: too few qualifying users is an error.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from recsim_personas.cli.options import add_count_option
from recsim_personas.data.splits import PAPER_SPLIT, SplitConfig, eligible_users
from recsim_personas.errors import ConfigError, RecsimError

if TYPE_CHECKING:
    from recsim_personas.data.dataset import RatingDataset, RatingScale

__all__ = [
    "DATASET_CHOICES",
    "DEFAULT_CSV_COLUMNS",
    "add_dataset_arguments",
    "add_split_arguments",
    "check_models",
    "dataset_and_split_config",
    "dataset_from_args",
    "parse_mapping",
    "parse_scale",
    "split_config_from_args",
]

#: ``--dataset`` choices: the MovieLens loaders plus a generic CSV / parquet file.
DATASET_CHOICES: tuple[str, ...] = ("ml-latest-small", "ml-100k", "ml-1m", "csv")
#: ``--csv-columns`` default: MovieLens' own CSV header (``ratings.csv`` of ml-latest-small).
DEFAULT_CSV_COLUMNS = "user_id=userId,item_id=movieId,rating=rating,timestamp=timestamp"


def parse_mapping(text: str, option: str) -> dict[str, str]:
    """Parse ``key=value,key=value`` (as ``--csv-columns`` takes it) into a dict.

    Raises:
        ConfigError: A part has no ``=`` or an empty side, or a key repeats.
    """
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(
                f"{option}: {part!r} is not canonical=column (e.g. {DEFAULT_CSV_COLUMNS})"
            )
        if key in out:
            raise ConfigError(f"{option}: {key!r} is mapped twice")
        out[key] = value
    if not out:
        raise ConfigError(f"{option} is empty; give canonical=column pairs, e.g. {DEFAULT_CSV_COLUMNS}")
    return out


def parse_scale(text: str) -> RatingScale:
    """Parse ``MIN:MAX:STEP`` (e.g. ``1:5:1``, ``0.5:5:0.5``) into a :class:`RatingScale`.

    Raises:
        ConfigError: Not three numbers.
        DataError: The numbers do not make a scale (``RatingScale`` validation).
    """
    from recsim_personas.data.dataset import RatingScale

    parts = text.split(":")
    try:
        lo, hi, step = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--csv-scale {text!r} is not MIN:MAX:STEP (e.g. 1:5:1 or 0.5:5:0.5)") from None
    return RatingScale(lo, hi, step)


# -- parser set-up -----------------------------------------------------------------------------
def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--dataset``, ``--data-dir``, ``--enrichment``, ``--skip-bad-rows`` and the CSV options."""
    g = parser.add_argument_group("dataset")
    g.add_argument(
        "--dataset",
        choices=DATASET_CHOICES,
        default="ml-latest-small",
        help="dataset to load (default: %(default)s, embedded in the package; ml-100k and ml-1m "
        "need --data-dir or `recsim-personas data download NAME`; csv needs --csv)",
    )
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder with the dataset's original files; omitted: the embedded copy or "
                   "the download cache")
    g.add_argument("--enrichment", default=None, metavar="PATH",
                   help="item-enrichment table (CSV or parquet) joined by item id")
    g.add_argument("--skip-bad-rows", action="store_true",
                   help="drop malformed rows (bad fields, bytes the encoding cannot read) and report "
                   "how many instead of stopping")
    g.add_argument("--encoding", default="utf-8", metavar="NAME",
                   help="text encoding of --csv, --csv-items and --enrichment files, e.g. latin-1 "
                   "(default: %(default)s; the MovieLens loaders know their own)")
    c = parser.add_argument_group("csv dataset (--dataset csv)")
    c.add_argument("--csv", default=None, metavar="PATH", help="ratings file (.csv or .parquet)")
    c.add_argument("--csv-columns", default=DEFAULT_CSV_COLUMNS, metavar="MAP",
                   help="canonical=file-column pairs for user_id, item_id, rating and optional "
                   "timestamp (default: %(default)s)")
    c.add_argument("--csv-scale", default="1:5:1", metavar="MIN:MAX:STEP",
                   help="rating scale of the file, e.g. 0.5:5:0.5 for half stars "
                   "(default: %(default)s)")
    c.add_argument("--csv-items", default=None, metavar="PATH", help="optional item file")
    c.add_argument("--csv-item-columns", default=None, metavar="MAP",
                   help="canonical=file-column pairs for the item file: item_id (required), title, "
                   "year, genres, description, director, cast; omitted: item_id only")
    c.add_argument("--csv-sep", default=",", metavar="SEP",
                   help="field separator (default: %(default)s)")


def add_split_arguments(parser: argparse.ArgumentParser, default: SplitConfig = PAPER_SPLIT) -> None:
    """Add ``--split``, ``--users``, ``--min-interactions``, ``--max-interactions``, ``--seed``."""
    paper = " = the paper's protocol" if default == PAPER_SPLIT else ""
    g = parser.add_argument_group(f"split (default: {default.describe()}{paper})")
    g.add_argument("--split", default=default.spec, metavar="SPEC",
                   help="temporal:F (oldest F of each user's ratings train), random:F (seeded "
                   "per-user shuffle) or last:N (newest N test) (default: %(default)s)")
    users = "all" if default.n_users is None else default.n_users
    add_count_option(g, "--users", "user", value="all",
                     help=f"sample N qualifying users with --seed, or 'all' (default: {users}; if "
                     "fewer qualify and --users is not given, all qualifying users are kept)")
    for flag, which in (("--min-interactions", "at least"), ("--max-interactions", "at most")):
        add_count_option(g, flag, "count", word="none", words=("any",), minimum=0, expected="an integer",
                         default=getattr(default, flag[2:].replace("-", "_")),
                         help=f"keep users with {which} N ratings (default: %(default)s)")
    add_count_option(g, "--seed", "seed", word="", minimum=0, expected="an integer seed",
                     default=default.seed, metavar="SEED",
                     help="seed of the user sample, random splits and models (default: %(default)s)")
    parser.set_defaults(_split_default_users=default.n_users)


# -- args to objects ---------------------------------------------------------------------------
def dataset_from_args(args: argparse.Namespace) -> RatingDataset:
    """Load the dataset the options name.

    Raises:
        ConfigError: ``--dataset csv`` without ``--csv`` (or CSV options without it), bad mappings.
        DataError: The files are missing or malformed.
    """
    encoding = getattr(args, "encoding", "utf-8")
    enrichment = args.enrichment
    if enrichment and encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
        from recsim_personas.data.enrichment import load_enrichment

        enrichment = load_enrichment(enrichment, encoding=encoding, skip_bad_rows=args.skip_bad_rows)
    if args.dataset == "csv":
        if not args.csv:
            raise ConfigError(
                "--dataset csv needs --csv PATH (plus --csv-columns and --csv-scale if the file "
                f"differs from the defaults {DEFAULT_CSV_COLUMNS} and 1:5:1)"
            )
        from recsim_personas.data.enrichment import enrich_items
        from recsim_personas.data.tabular import load_csv

        dataset = load_csv(
            args.csv,
            columns=parse_mapping(args.csv_columns, "--csv-columns"),
            scale=parse_scale(args.csv_scale),
            items_path=args.csv_items,
            item_columns=(
                parse_mapping(args.csv_item_columns, "--csv-item-columns")
                if args.csv_item_columns
                else None
            ),
            sep=args.csv_sep,
            encoding=encoding,
            skip_bad_rows=args.skip_bad_rows,
        )
        if enrichment is not None:
            dataset = enrich_items(dataset, enrichment, skip_bad_rows=args.skip_bad_rows)
        return dataset
    if args.csv:
        raise ConfigError(f"--csv is only used with --dataset csv (got --dataset {args.dataset})")
    from recsim_personas.data.registry import load_dataset

    return load_dataset(
        args.dataset, args.data_dir, enrichment=enrichment, skip_bad_rows=args.skip_bad_rows
    )


def check_models(named: list[tuple[str | None, str]], embedders: list[tuple[str | None, str]] = ()) -> None:
    """Fail at once, before any work, on a model or embedder that cannot be loaded offline.

    Args:
        named: ``(hub id or path, option)`` of language models (``None`` = the packaged default).
        embedders: ``(embedder spec, option)``.

    Raises:
        ConfigError: Every problem, one line each (an unknown hub id offline: seconds, no retries).
    """
    from recsim_personas.reproduce.loading import embedder_problem, model_problem

    problems = [p for name, option in named if (p := model_problem(name, option))]
    problems += [p for spec, option in embedders if (p := embedder_problem(spec, option))]
    if problems:
        raise ConfigError("; ".join(problems))


def split_config_from_args(
    args: argparse.Namespace,
    dataset: RatingDataset | None = None,
    notes: list[str] | None = None,
) -> SplitConfig:
    """The :class:`SplitConfig` the options describe.

    Args:
        args: Parsed options (from a parser set up by :func:`add_split_arguments`).
        dataset: Needed only for the default ``--users`` adaptation (see the module docstring);
            without it the default user count is used as is.
        notes: If given, receives a human-readable line for each adaptation made.

    Raises:
        ConfigError: A bad ``--split`` spec or an inconsistent combination.
    """
    users = args.users
    if users == "all":
        n_users = None
    elif users is not None:
        n_users = int(users)
    else:
        n_users = getattr(args, "_split_default_users", PAPER_SPLIT.n_users)
    config = SplitConfig.from_spec(
        args.split,
        min_interactions=args.min_interactions or None,
        max_interactions=args.max_interactions,
        n_users=n_users,
        seed=args.seed,
    )
    if users is None and n_users is not None and dataset is not None:
        n_eligible = len(eligible_users(dataset.interactions, config))
        if 0 < n_eligible < n_users:
            config = SplitConfig.from_dict({**config.to_dict(), "n_users": None})
            if notes is not None:
                notes.append(
                    f"only {n_eligible} users of {dataset.name} qualify for {config.describe()}, "
                    f"fewer than the default {n_users}: using all {n_eligible} (pass --users N to "
                    "require a count)"
                )
    return config


def dataset_and_split_config(
    args: argparse.Namespace, notes: list[str] | None = None
) -> tuple[RatingDataset, SplitConfig]:
    """Load the dataset and build the split config from parsed options (see the two helpers)."""
    # Validate the split options before the (possibly slow) load.
    split_config_from_args(args)
    dataset = dataset_from_args(args)
    return dataset, split_config_from_args(args, dataset, notes)


def check_server(url: str | None, option: str = "--server") -> None:
    """Fail at once, before any work, when ``--server`` does not answer ``/v1/models``.

    A few seconds at most against a server that is down (the served scorer's connect timeout and
    bounded retries); None checks nothing.

    Raises:
        ConfigError: the URL is not http(s).
        BackendError: the server does not answer (one line, naming the URL and the fix).
    """
    if url is None:
        return
    from recsim_personas.agents.served import probe_server

    try:
        probe_server(url)
    except RecsimError as exc:
        raise type(exc)(f"{option}: {exc}") from None
