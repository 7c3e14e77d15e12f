"""The base of memory/'s config dataclasses: :class:`~recsim_personas.config.Config`, named in messages."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar, Self

from recsim_personas.config import Config
from recsim_personas.errors import ConfigError, unknown_keys

__all__ = ["NamedConfig", "refuse_unknown_keys"]


class NamedConfig(Config):
    """A :class:`~recsim_personas.config.Config` whose unknown-key error names the config in words.

    ``from_dict`` first refuses unknown keys with one line, ``unknown persona config key(s) 'kmax'
    (did you mean 'k_max'?); valid keys: ...`` (the message these configs have always given), then
    builds and validates as :meth:`Config.from_dict` does.
    """

    #: The config's name in messages ("persona config").
    config_name: ClassVar[str] = "config"

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> Self:
        """Build from plain data (the inverse of ``to_dict``); every problem in one ConfigError."""
        if isinstance(data, dict):
            refuse_unknown_keys(cls, data, cls.config_name)
        return super().from_dict(data, source=source)


def refuse_unknown_keys(cls: type, data: dict[str, Any], what: str) -> None:
    """Raise ``unknown <what> key(s) 'x' (did you mean 'y'?); valid keys: ...`` for keys not fields of ``cls``."""
    names = [f.name for f in fields(cls)]
    bad = unknown_keys(data, names)
    if bad:
        raise ConfigError(f"unknown {what} key(s) {', '.join(bad)}; valid keys: {', '.join(names)}")
