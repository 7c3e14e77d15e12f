"""What machine this is: the CPU model and flags recorded in every results file and dtype probe."""

from __future__ import annotations

import platform
from typing import Any

__all__ = ["BF16_FLAGS", "cpu_info"]

#: CPU flags that tell whether bf16 has hardware support (recorded, and part of the cache key).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2", "avx_vnni")

def cpu_info() -> dict[str, Any]:
    """CPU model name and flags (from ``/proc/cpuinfo`` on Linux; ``platform`` elsewhere)."""
    model, flags = "", []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = value.split()
                if model and flags:
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return {"model": model, "flags": sorted(flags), "bf16_flags": [f for f in BF16_FLAGS if f in flags]}
