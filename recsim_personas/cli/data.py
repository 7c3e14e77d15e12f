"""``recsim-personas data``: download a MovieLens archive, or show what a dataset holds.

Examples::

    recsim-personas data download ml-100k                 # official archive, sha256-checked
    recsim-personas data info ml-latest-small             # the embedded copy
    recsim-personas data info ml-1m --data-dir ~/data/ml-1m
"""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "run"]

_NAMES = "{ml-1m,ml-100k,ml-latest-small}"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` command and its ``download`` / ``info`` sub-commands."""
    p = sub.add_parser(
        "data",
        help="download a MovieLens dataset or show what one holds",
        description="Download MovieLens archives (for machines with internet) and inspect datasets.",
    )
    actions = p.add_subparsers(dest="data_command", metavar="ACTION")

    dl = actions.add_parser(
        "download",
        help="download, sha256-check and extract an official GroupLens archive into the cache",
        description=(
            "Downloads https://files.grouplens.org/datasets/movielens/NAME.zip (or "
            "$RECSIM_PERSONAS_DATA_URL/NAME.zip), checks its sha256 and extracts it atomically into "
            "the cache, where `load_dataset(NAME)` finds it. ml-100k and ml-1m may not be "
            "redistributed: keep them out of repositories."
        ),
    )
    dl.add_argument("name", metavar=_NAMES, help="dataset to download")
    dl.add_argument(
        "--cache-dir", default=None, help="folder to extract into (default: the library cache)"
    )
    dl.add_argument("--base-url", default=None, help="mirror holding NAME.zip (default: GroupLens)")
    dl.add_argument(
        "--timeout", type=float, default=15.0, help="seconds to wait for the server (default 15)"
    )
    dl.add_argument("--force", action="store_true", help="download again even if the cache has it")
    dl.set_defaults(func=run)

    info = actions.add_parser("info", help="load a dataset and print its size, scale and coverage")
    info.add_argument("name", metavar=_NAMES, help="dataset to describe")
    info.add_argument(
        "--data-dir",
        default=None,
        help="folder with the dataset's files (default: embedded / cache)",
    )
    info.add_argument(
        "--enrichment", default=None, help="item-enrichment table to join (CSV or parquet)"
    )
    info.add_argument(
        "--skip-bad-rows", action="store_true", help="drop bad rows and report how many"
    )
    info.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a table"
    )
    info.set_defaults(func=run)

    p.set_defaults(func=run, data_parser=p)


def run(args: argparse.Namespace) -> int:
    """Run ``data download`` or ``data info``; user errors propagate as ``RecsimError``."""
    if getattr(args, "data_command", None) is None:
        args.data_parser.print_help()
        return 2
    if args.data_command == "download":
        from recsim_personas.data.download import download_dataset

        folder = download_dataset(
            args.name,
            args.cache_dir,
            base_url=args.base_url,
            timeout=args.timeout,
            force=args.force,
        )
        print(f"{args.name}: {folder}")
        return 0
    return _info(args)


def _info(args: argparse.Namespace) -> int:
    from recsim_personas.data.registry import load_dataset

    ds = load_dataset(
        args.name, args.data_dir, enrichment=args.enrichment, skip_bad_rows=args.skip_bad_rows
    )
    items = ds.items
    facts: dict[str, object] = {
        **ds.summary(),
        "catalogue_items": len(items),
        "users_with_demographics": len(ds.users) if len(ds.users.columns) else 0,
        "items_with_year": int(items["year"].notna().sum()),
        "items_with_description": int(items["description"].notna().sum()),
        "items_with_cast": int(items["cast"].notna().sum()),
        "skipped_rows": ds.report.total_skipped,
        "source": ds.source.get("path", ""),
    }
    if args.json:
        print(json.dumps({**facts, "report": ds.report.to_dict()}, indent=2, default=str))
        return 0
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        shown = (
            f"{value:,}"
            if isinstance(value, int)
            else (f"{value:.5f}" if isinstance(value, float) else value)
        )
        print(f"{key:<{width}}  {shown}")
    for note in ds.report.notes:
        print(f"note: {note}")
    for example in ds.report.examples[:5]:
        print(f"skipped: {example}")
    return 0
