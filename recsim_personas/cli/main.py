"""The ``recsim-personas`` console script: one sub-command per module in :data:`COMMANDS`.

Each command module exposes ``register(subparsers) -> None`` that adds its parser and sets
``func=run`` where ``run(args) -> int``. User errors (:class:`RecsimError`) exit with code 2 and
one readable line; any other exception is a bug and keeps its traceback.

The console stays quiet: the library's own warnings (:class:`RecsimWarning`) print as one
``note:`` line each; third-party Python warnings and the transformers / hub loggers' notices are
hidden (``RECSIM_PERSONAS_WARNINGS=1`` shows them, for debugging); progress bars draw only on a
terminal (:mod:`recsim_personas.progress`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from recsim_personas import __version__
from recsim_personas.errors import RecsimError, RecsimWarning
from recsim_personas.progress import bars_enabled

__all__ = ["COMMANDS", "build_parser", "main"]

#: Command modules under ``recsim_personas.cli``, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "demo",
    "data",
    "baselines",
    "memory",
    "train",
    "evaluate",
    "fidelity",
    "simulate",
    "reproduce",
    "serve",
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


def _show_note(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"recsim-personas: note: {message}", file=sys.stderr)


def quiet_console() -> None:
    """Library warnings as ``note:`` lines; third-party warnings and logger notices hidden.

    Works through environment variables the libraries read when they are imported, so the CLI's
    start-up imports none of them.
    """
    if os.environ.get("RECSIM_PERSONAS_WARNINGS", "").strip() not in {"", "0"}:
        return
    warnings.simplefilter("ignore")
    warnings.simplefilter("default", RecsimWarning)
    warnings.showwarning = _show_note
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not bars_enabled():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("transformers", "huggingface_hub", "sentence_transformers", "peft", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    quiet_console()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from recsim_personas.interrupts import Interrupted, terminate_as_interrupt

    terminate_as_interrupt()  # SIGTERM unwinds like Ctrl-C: checkpoints written, temp files removed
    try:
        return int(args.func(args) or 0)
    except RecsimError as exc:
        print(f"recsim-personas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else 2
        print("interrupted; finished work is saved and a re-run resumes from it", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
