"""The ``recsim-personas`` console script: one sub-command per module in :data:`COMMANDS`.

Each command module exposes ``register(subparsers) -> None`` that adds its parser and sets
``func=run`` where ``run(args) -> int``. User errors (:class:`RecsimError`) exit with code 2 and
one readable line; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from recsim_personas import __version__
from recsim_personas.errors import RecsimError

__all__ = ["COMMANDS", "build_parser", "main"]

#: Command modules under ``recsim_personas.cli``, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "demo",
    "data",
    "baselines",
    "memory",
    "train",
    "evaluate",
    "simulate",
    "reproduce",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsim-personas",
        description="Simulated recommender-system users from persona LoRA adapters (PersonaRec-v0).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"recsim_personas.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RecsimError as exc:
        print(f"recsim-personas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is saved and a re-run resumes from it", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
