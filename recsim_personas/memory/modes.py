"""The memory modes a simulated user reads: ``"ms"`` (profile M_s) or ``"msml"`` (M_s plus memories M_l)."""

from __future__ import annotations

from typing import Literal

from recsim_personas.errors import ConfigError, did_you_mean

__all__ = ["MEMORY_MODES", "MemoryMode", "check_memory_mode"]

MemoryMode = Literal["ms", "msml"]
#: Every memory mode, in the paper's order.
MEMORY_MODES: tuple[MemoryMode, ...] = ("ms", "msml")


def check_memory_mode(mode: object) -> None:
    """Raise :class:`ConfigError` (with a did-you-mean) unless ``mode`` is one of :data:`MEMORY_MODES`."""
    if mode not in MEMORY_MODES:
        raise ConfigError(f"memory_mode must be 'ms' or 'msml', got {mode!r}.{did_you_mean(mode, MEMORY_MODES)}")
