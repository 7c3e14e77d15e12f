"""The library's one error hierarchy.

Every error a user can cause derives from :class:`RecsimError`; the CLI maps these to exit
code 2 with one readable line. Any other exception escaping the library is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = [
    "AdapterError",
    "BackendError",
    "ConfigError",
    "DataError",
    "EnvError",
    "ModelError",
    "OutputError",
    "RecsimError",
    "RecsimWarning",
    "closest",
    "did_you_mean",
    "not_one_of",
    "unknown_keys",
]


class RecsimError(Exception):
    """Base class of every user-facing error raised by recsim-personas."""


class RecsimWarning(UserWarning):
    """Base of every warning the library issues (the CLI prints these as one ``note:`` line)."""


class DataError(RecsimError):
    """Bad or missing input data: names the file, line, field or id, and the fix."""


class OutputError(RecsimError):
    """A result cannot be written: the path is a file or folder of the wrong kind, or not writable."""


class ConfigError(RecsimError):
    """An invalid configuration (unknown key, wrong type, inconsistent fields)."""


class BackendError(RecsimError):
    """An LLM or embedding backend failed (unreachable endpoint, bad response, missing extra)."""


class ModelError(RecsimError):
    """A language model cannot be loaded or used (missing path, unsupported tokenizer)."""


class AdapterError(ModelError):
    """An unknown or missing LoRA adapter."""


class EnvError(RecsimError):
    """Invalid use of the Gymnasium environment (bad action, unknown user, bad run folder)."""


def closest(value: object, choices: Iterable[object], *, n: int = 1, cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` of ``choices`` (as strings) closest to ``value``, best first (difflib's ratio)."""
    return difflib.get_close_matches(str(value), [str(c) for c in choices], n=n, cutoff=cutoff)


def did_you_mean(value: object, choices: Iterable[object], *, n: int = 1, cutoff: float = 0.6) -> str:
    """``" Did you mean 'x'?"`` (leading space) naming the closest of ``choices``, or ``""``.

    The one did-you-mean hint of the library: append it to a message that ends with a full stop.
    """
    close = closest(value, choices, n=n, cutoff=cutoff)
    if not close:
        return ""
    names = [repr(c) for c in close]
    said = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    return f" Did you mean {said}?"


def not_one_of(what: str, value: object, choices: Sequence[object]) -> str:
    """``"{what} must be one of a, b, got 'x'. Did you mean 'a'?"``: the message for a bad choice."""
    listed = ", ".join(str(c) for c in choices)
    return f"{what} must be one of {listed}, got {value!r}.{did_you_mean(value, choices)}"


def unknown_keys(keys: Iterable[object], known: Sequence[str]) -> list[str]:
    """The keys not in ``known``, each quoted with its closest known name: ``"'lr' (did you mean 'x'?)"``.

    Config ``from_dict`` methods use it to build one :class:`ConfigError` that lists every bad key.
    """
    out = []
    for key in keys:
        if key not in known:
            close = closest(key, known)
            out.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return out
