"""The CPU's dtype for ``dtype="auto"``: bfloat16 where a short measurement shows it faster, else float32.

A CPU with bf16 matrix units (AMX, AVX512-BF16) runs bfloat16 matmuls several times faster than
float32 (measured on a 2-core AMX machine: 6-7x on SmolLM2's shapes); one without them (AVX2 only,
such as the project's AMD EPYC) emulates bf16 through conversions and runs it 10-50x *slower*. CPU
flags are a hint, not an answer (torch's kernels decide), so :func:`cpu_auto_dtype` times one
SmolLM2-shaped matmul (``64 x 576`` by ``576 x 1536``) in both dtypes and picks bfloat16 only when
it is at least :data:`MIN_SPEEDUP` times faster. The probe takes well under a second and runs once
per machine: its result is cached in ``cache_dir("probes")/cpu_dtype.json`` under a key made of the
CPU model, its bf16-related flags, the torch version and the thread count.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from typing import Any

from recsim_personas.artifacts import atomic_write_json
from recsim_personas.hardware import cpu_info
from recsim_personas.paths import cache_dir

__all__ = ["MIN_SPEEDUP", "cpu_auto_dtype", "measure_bf16_speedup"]

#: bfloat16 must beat float32 by this factor to be chosen (it also costs accuracy: ~1e-2 on scores).
MIN_SPEEDUP = 1.2
_SHAPE = (64, 576, 1536)


def measure_bf16_speedup(repeats: int = 3) -> dict[str, float]:
    """Seconds per SmolLM2-shaped matmul in float32 and bfloat16 (best of ``repeats``), and the ratio."""
    import torch

    m, k, n = _SHAPE
    out: dict[str, float] = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(m, k, generator=gen).to(dtype)
        b = torch.randn(k, n, generator=gen).to(dtype)
        torch.matmul(a, b)  # warm-up (kernel selection, first-touch)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - start)
        out[f"{name}_s"] = best
    out["speedup"] = out["float32_s"] / max(out["bfloat16_s"], 1e-12)
    return out


def _cache_key(info: dict[str, Any]) -> str:
    import torch

    text = json.dumps([info["model"], info["bf16_flags"], torch.__version__, torch.get_num_threads()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cpu_auto_dtype() -> str:
    """``"bfloat16"`` or ``"float32"``: what ``dtype="auto"`` means on this machine's CPU.

    Measured once per machine (CPU model, bf16 flags, torch version, threads) and cached; a cache
    that cannot be read or written only means the probe runs again.
    """
    info = cpu_info()
    key = _cache_key(info)
    path = cache_dir("probes") / "cpu_dtype.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    entry = cached.get(key) if isinstance(cached, dict) else None
    if isinstance(entry, dict) and entry.get("dtype") in ("float32", "bfloat16"):
        return str(entry["dtype"])
    timing = measure_bf16_speedup()
    dtype = "bfloat16" if timing["speedup"] >= MIN_SPEEDUP else "float32"
    record = {"dtype": dtype, "cpu": info["model"], "bf16_flags": info["bf16_flags"], **timing,
              "pid": os.getpid(), "measured_at": time.time()}
    with contextlib.suppress(OSError):
        atomic_write_json(path, {**(cached if isinstance(cached, dict) else {}), key: record})
    return dtype
