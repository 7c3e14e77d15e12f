"""Building blocks of every command's parser: the one home of the CLI's option helpers.

- :func:`add_command` adds a sub-command whose ``run(args) -> int`` ``main`` calls; its ``--help``
  page opens with the second paragraph of the command module's docstring.
- :func:`count_type` parses a whole number with a lower bound, or a word such as ``all``; anything
  else is argparse's usage error (exit code 2, one line). :func:`add_count_option` adds an option
  that takes one (``--users N|all``, ``--k K|elbow``, ``--oracle-candidates N|all``).
- :func:`config_from_args` builds a config dataclass from the options named like its fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["add_command", "add_count_option", "command_description", "config_from_args", "count_type"]

T = TypeVar("T")

#: Where argparse lets an option be added: a parser or one of its argument groups.
Adder = argparse.ArgumentParser | argparse._ArgumentGroup


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], int],
    help: str,
    *,
    description: str | None = None,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """Add the sub-command ``name``, whose ``run(args)`` ``main`` calls.

    ``help`` is its line in ``recsim-personas --help``; ``description`` heads its own ``--help``
    page and defaults to the second paragraph of the docstring of ``run``'s module (argparse folds
    its white space), so the module's docstring and the command's help say the same.
    """
    if description is None:
        description = command_description(sys.modules[run.__module__].__doc__)
    parser = sub.add_parser(name, help=help, description=description, **kwargs)
    parser.set_defaults(func=run)
    return parser


def command_description(doc: str | None) -> str | None:
    """The second paragraph of a command module's docstring (after its title line), white space folded."""
    paragraphs = [p for p in inspect.cleandoc(doc or "").split("\n\n") if p.strip()]
    return " ".join(paragraphs[1].split()) if len(paragraphs) > 1 else None


def count_type(
    noun: str,
    *,
    plural: str | None = None,
    word: str = "all",
    words: Iterable[str] = (),
    value: Any = None,
    minimum: int = 1,
    expected: str | None = None,
) -> Callable[[str], Any]:
    """An argparse ``type``: a whole number ``>= minimum``, or ``word`` (or one of ``words``).

    Args:
        noun: What is counted, singular (``"user"``): the messages say "expected a number of users
            or 'all'" and "expected at least 1 user".
        plural: The plural of ``noun`` (default: ``noun + "s"``).
        word: The word that stands for no number (``all``, ``elbow``, ``none``); ``""`` for none.
        words: Further words accepted for it (case-insensitive).
        value: What ``word`` parses to (default ``None``).
        minimum: The smallest number accepted; below 1 the messages say "a count >= N".
        expected: What the "not a number" message expects instead of "a number of <plural>".
    """
    accepted = {w.lower() for w in (word, *words) if w}
    alternative = f" or {word!r}" if word else ""
    wanted = expected or f"a number of {plural or noun + 's'}"
    if minimum == 1:
        too_small = f"at least 1 {noun}"
    else:
        too_small = f"a{'n' if noun[:1] in 'aeiou' else ''} {noun} >= {minimum}{alternative}"

    def parse(text: str) -> Any:
        if text.strip().lower() in accepted:
            return value
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}{alternative}, got {text!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"expected {too_small}, got {number}")
        return number

    parse.__name__ = noun.replace(" ", "_")  # argparse names the type in some messages
    return parse


def add_count_option(
    parser: Adder,
    flag: str,
    noun: str,
    *,
    help: str,
    default: Any = None,
    word: str = "all",
    metavar: str | None = None,
    **type_options: Any,
) -> argparse.Action:
    """Add ``flag`` taking a count of ``noun`` (see :func:`count_type`); metavar ``N|<word>``."""
    return parser.add_argument(
        flag, type=count_type(noun, word=word, **type_options), default=default,
        metavar=metavar or (f"N|{word}" if word else "N"), help=help,
    )


def config_from_args(cls: type[T], args: argparse.Namespace, **values: Any) -> T:
    """``cls(...)`` from the options named like its fields, plus (or instead of them) ``values``."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    given = {n: getattr(args, n) for n in names if n not in values and hasattr(args, n)}
    return cls(**given, **values)
