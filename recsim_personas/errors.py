"""The library's one error hierarchy.

Every error a user can cause derives from :class:`RecsimError`; the CLI maps these to exit
code 2 with one readable line. Any other exception escaping the library is a bug.
"""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "BackendError",
    "ConfigError",
    "DataError",
    "EnvError",
    "ModelError",
    "RecsimError",
]


class RecsimError(Exception):
    """Base class of every user-facing error raised by recsim-personas."""


class DataError(RecsimError):
    """Bad or missing input data: names the file, line, field or id, and the fix."""


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
