"""The unknown-key check that runs before :meth:`Config.from_dict`, in the library's older wording.

:meth:`recsim_personas.config.Config.from_dict` reports unknown keys in its own list of problems.
Configs whose callers (and tests) rely on the older one-line message ``unknown split config key(s)
'n_user' (did you mean 'n_users'?); valid keys: ...`` call :func:`reject_unknown_keys` first.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from recsim_personas.errors import ConfigError, unknown_keys

__all__ = ["reject_unknown_keys"]


def reject_unknown_keys(cls: type, data: Any, what: str) -> None:
    """Raise one :class:`ConfigError` naming every key of ``data`` that is no field of ``cls``.

    Args:
        cls: A dataclass.
        data: The mapping to check (anything else is left to ``Config.from_dict``).
        what: Names the config in the message (``"split config"``, ``"EvalConfig"``).
    """
    if not isinstance(data, dict):
        return
    names = [f.name for f in dataclasses.fields(cls)]
    bad = unknown_keys(data, names)
    if bad:
        raise ConfigError(f"unknown {what} key(s) {', '.join(bad)}; valid keys: {', '.join(names)}")
