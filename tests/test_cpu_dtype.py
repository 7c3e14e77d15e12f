"""dtype="auto" on CPU: bfloat16 where the measured probe shows it faster, float32 elsewhere, cached."""

from __future__ import annotations

import json

import pytest
import torch

from recsim_personas.agents import cpu_dtype
from recsim_personas.agents.llm import resolve_dtype


@pytest.fixture()
def probe(monkeypatch, tmp_path):
    """A stubbed probe whose speedup the test sets; counts how often it runs."""
    monkeypatch.setenv("RECSIM_PERSONAS_CACHE", str(tmp_path))
    calls = {"n": 0, "speedup": 1.0}

    def fake(repeats: int = 3) -> dict[str, float]:
        calls["n"] += 1
        return {"float32_s": 1.0, "bfloat16_s": 1.0 / calls["speedup"], "speedup": calls["speedup"]}

    monkeypatch.setattr(cpu_dtype, "measure_bf16_speedup", fake)
    return calls


def test_bf16_cpu_gets_bfloat16_and_the_probe_runs_once(probe, tmp_path):
    probe["speedup"] = 6.5  # an AMX machine
    assert resolve_dtype("auto", "cpu") == torch.bfloat16
    assert resolve_dtype("auto", "cpu") == torch.bfloat16
    assert probe["n"] == 1  # cached per machine
    (entry,) = json.loads((tmp_path / "probes" / "cpu_dtype.json").read_text()).values()
    assert entry["dtype"] == "bfloat16" and entry["speedup"] == 6.5


def test_cpu_without_fast_bf16_gets_float32(probe):
    probe["speedup"] = 0.05  # AVX2 only: bf16 emulated
    assert resolve_dtype("auto", "cpu") == torch.float32
    probe["speedup"] = cpu_dtype.MIN_SPEEDUP - 0.01  # barely faster: not worth the accuracy
    (cpu_dtype.cache_dir("probes") / "cpu_dtype.json").unlink()
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert probe["n"] == 2
    # Explicit names are never probed.
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16 and probe["n"] == 2


def test_unreadable_cache_only_reruns_the_probe(probe, tmp_path):
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "cpu_dtype.json").write_text("{not json")
    probe["speedup"] = 3.0
    assert cpu_dtype.cpu_auto_dtype() == "bfloat16" and probe["n"] == 1


def test_real_probe_and_cpu_info():
    timing = cpu_dtype.measure_bf16_speedup(repeats=1)
    assert timing["float32_s"] > 0 and timing["bfloat16_s"] > 0
    from recsim_personas.hardware import cpu_info

    info = cpu_info()
    assert info["model"] and set(info["bf16_flags"]) <= set(info["flags"])
