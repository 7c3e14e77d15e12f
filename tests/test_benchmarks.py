"""Every benchmark writes its results through ``recsim_personas.benchmarking``: one schema, one ``--out``."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

import recsim_personas.benchmarking as benchmarking
from recsim_personas.benchmarking import (
    REQUIRED_KEYS,
    SCHEMA,
    ResultsFile,
    bench_argparser,
    check_document,
    out_path,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("[!_]*.py"))
#: Examples that write a results file.
RESULT_EXAMPLES = [ROOT / "examples" / "train_maskable_ppo.py"]


@pytest.fixture
def no_torch_versions(monkeypatch):
    """``environment_info`` imports torch for the CUDA name (seconds); its own tests cover it."""
    env = {"versions": {"python": "3", "numpy": "1"},
           "hardware": {"machine": "x86_64", "processor": "x86_64", "cpu_count": 2, "cuda": None,
                        "cpu_model": "flat duplicate", "cpu_flags": ["avx2"]}}
    monkeypatch.setattr(benchmarking, "environment_info", lambda: env)


def test_write_results_follows_the_schema(tmp_path, no_torch_versions):
    path = write_results(
        tmp_path / "sub" / "r.json", benchmark="demo", argv=["--steps", "2", "a b"],
        config={"steps": 2, "path": tmp_path}, metrics={"rate": 1.5},
        results=[{"model": "bias", "rmse": 0.9}], checks=[{"check": "fast", "passed": True}],
    )
    doc = json.loads(path.read_text())
    assert list(doc) == list(REQUIRED_KEYS)
    assert check_document(doc) == []
    assert doc["schema"] == SCHEMA and doc["benchmark"] == "demo"
    assert doc["command"] == "python benchmarks/demo.py --steps 2 'a b'"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["written_at"])
    assert doc["config"] == {"steps": 2, "path": str(tmp_path)} and doc["metrics"] == {"rate": 1.5}
    assert doc["results"] == [{"model": "bias", "rmse": 0.9}]
    assert doc["checks"] == [{"check": "fast", "passed": True}]
    assert set(doc["git"]) == {"commit", "dirty"} and isinstance(doc["git"]["commit"], str)
    assert isinstance(doc["git"]["dirty"], bool)
    hw = doc["hardware"]
    assert set(benchmarking.HARDWARE_KEYS) <= set(hw) and "cpu_model" not in hw  # one place for the CPU
    assert isinstance(hw["cpu"]["model"], str) and isinstance(hw["cpu"]["flags"], list)
    assert isinstance(hw["cpu"]["bf16_flags"], list)
    assert isinstance(hw["load_average"]["before"], list) and len(hw["load_average"]["after"]) == 3
    assert doc["versions"] == {"python": "3", "numpy": "1"}


def test_results_file_records_the_load_before_and_rewrites_in_place(tmp_path, no_torch_versions, monkeypatch):
    monkeypatch.setattr(benchmarking.os, "getloadavg", lambda: (1.0, 2.0, 3.0))
    results = ResultsFile(tmp_path / "r.json", "demo", [])
    monkeypatch.setattr(benchmarking.os, "getloadavg", lambda: (4.0, 5.0, 6.0))
    results.write(config={}, metrics={"rows": 1})
    results.write(config={}, metrics={"rows": 2}, hardware={"gpu_clock": 1}, sections={"curve": [1, 2]})
    doc = json.loads(results.path.read_text())
    assert doc["metrics"] == {"rows": 2} and doc["curve"] == [1, 2] and doc["hardware"]["gpu_clock"] == 1
    assert doc["hardware"]["load_average"] == {"before": [1.0, 2.0, 3.0], "after": [4.0, 5.0, 6.0]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_the_write_is_atomic_and_the_schema_is_enforced(tmp_path, no_torch_versions):
    results = ResultsFile(tmp_path / "r.json", "demo", [])
    results.write(config={}, metrics={"ok": 1})
    before = results.path.read_text()
    with pytest.raises(TypeError, match="not JSON serialisable"):
        results.write(config={}, metrics={"bad": object()})
    assert results.path.read_text() == before  # the old file is intact, no temporary file left
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    with pytest.raises(ValueError, match="'passed' \\(bool\\)"):
        results.write(config={}, metrics={}, checks=[{"name": "x", "passed": 1}])
    with pytest.raises(ValueError, match="section 'git' is one of the schema's own keys"):
        results.write(config={}, metrics={}, sections={"git": {}})
    with pytest.raises(ValueError, match="hardware key 'cpu'"):
        results.write(config={}, metrics={}, hardware={"cpu": "mine"})
    assert check_document({"schema": SCHEMA}) == [f"missing key {k!r}" for k in REQUIRED_KEYS[1:]]


def test_out_is_always_the_results_json_file(tmp_path, capsys):
    parser = bench_argparser(ROOT / "benchmarks" / "fidelity.py", "Benchmark: x.\n\nMore.", out="fidelity-{budget}.json")
    parser.add_argument("--budget", default="cpu")
    args = parser.parse_args([])
    assert out_path(args) == ROOT / "results" / "fidelity-cpu.json"
    assert out_path(parser.parse_args(["--budget", "smoke"])) == ROOT / "results" / "fidelity-smoke.json"
    assert out_path(parser.parse_args(["--out", str(tmp_path / "f.json")])) == tmp_path / "f.json"
    assert out_path(parser.parse_args(["--json", str(tmp_path / "old.json")])) == tmp_path / "old.json"
    assert bench_argparser(ROOT / "benchmarks" / "leakage.py", None).parse_args([]).out == str(
        ROOT / "results" / "leakage.json")
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--out", str(tmp_path)])  # a folder was --out's meaning in some scripts
    assert exc.value.code == 2
    assert "--out is always the results JSON file" in capsys.readouterr().err


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_converted_benchmarks_are_all_found():
    assert {p.stem for p in SCRIPTS} >= {
        "agent_throughput", "baselines", "env_throughput", "exit_calibration", "fidelity", "leakage",
        "memory", "reproduce", "rl_user_models", "served_throughput", "train_throughput",
    }


@pytest.mark.parametrize("path", SCRIPTS + RESULT_EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_benchmark_writes_through_the_helper(path, capsys):
    # A script's private helper modules (``_<script>_*.py`` beside it) count as part of it.
    helpers = sorted(path.parent.glob(f"_{path.stem}_*.py"))
    source = "\n".join(p.read_text(encoding="utf-8") for p in [path, *helpers])
    assert "from recsim_personas.benchmarking import" in source
    assert "ResultsFile(" in source or "write_results(" in source
    for own_writer in ("atomic_write_json", "environment_info", "results_document", "write_results_json",
                       "lscpu", "/proc/cpuinfo", "argparse.ArgumentParser"):
        assert own_writer not in source, f"{path.name} writes results its own way ({own_writer})"
    with pytest.raises(SystemExit) as exc:
        _load(path).main(["--help"])
    assert exc.value.code == 0
    usage = capsys.readouterr().out
    assert "--out PATH.json" in usage and "the results JSON file" in usage
