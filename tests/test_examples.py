"""The RL examples run end to end on a small synthetic population (``--smoke``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> str:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.integration
def test_maskable_ppo_example_trains_evaluates_and_writes_results(tmp_path):
    pytest.importorskip("sb3_contrib")
    out = tmp_path / "rl-smoke.json"
    stdout = run(["examples/train_maskable_ppo.py", "--smoke", "--budget-s", "5", "--num-envs", "8",
                  "--episodes", "24", "--out", str(out)])
    doc = json.loads(out.read_text())
    policies = [r["policy"] for r in doc["results"]]
    assert policies == ["random", "popularity", "als", "mf", "MaskablePPO (learned)", "oracle"]
    assert doc["config"]["train_steps"] > 0 and doc["learning_curve"]
    assert {"model", "flags"} <= set(doc["hardware"]["cpu"])
    for r in doc["results"]:
        assert r["return_ci"][0] <= r["return"] <= r["return_ci"][1]
    assert (tmp_path / "rl-smoke-curve.png").stat().st_size > 0
    assert (tmp_path / "rl-smoke-comparison.png").stat().st_size > 0
    assert "MaskablePPO (learned)" in stdout


@pytest.mark.integration
def test_cleanrl_style_ppo_example_runs_on_the_vector_env():
    pytest.importorskip("torch")
    stdout = run(["examples/cleanrl_ppo.py", "--smoke", "--total-steps", "512", "--num-envs", "8",
                  "--episodes", "16"])
    assert "training return" in stdout
    assert "PPO (greedy)   return" in stdout and "popularity     return" in stdout


@pytest.mark.integration
def test_item_dqn_example_trains_within_a_cpu_budget_and_records_it(tmp_path):
    pytest.importorskip("stable_baselines3")
    out = tmp_path / "dqn-smoke.json"
    stdout = run(["examples/train_item_dqn.py", "--smoke", "--num-envs", "8", "--episodes", "24",
                  "--cpu-budget-s", "60", "--out", str(out)])
    doc = json.loads(out.read_text())
    policies = [r["policy"] for r in doc["results"]]
    assert policies == ["random", "popularity", "als", "mf", "item-scoring DQN (learned)", "oracle"]
    cfg = doc["config"]
    assert cfg["train_steps"] == 2_000 and cfg["stopped_by"] == "planned steps"
    assert 0 < cfg["train_cpu_seconds"] <= 60 and cfg["train_wall_seconds"] > 0
    assert len(doc["hardware"]["training_load_average"]["start"]) == 3 and doc["learning_curve"]
    assert doc["verdict"]["within_budget_1200_cpu_seconds"] is True
    for r in doc["results"]:
        assert r["return_ci"][0] <= r["return"] <= r["return_ci"][1]
    assert (tmp_path / "dqn-smoke-curve.png").stat().st_size > 0
    assert "item-scoring DQN (learned)" in stdout
    # A budget smaller than the planned steps need stops training early and says so.
    short = tmp_path / "dqn-short.json"
    run(["examples/train_item_dqn.py", "--smoke", "--num-envs", "8", "--episodes", "8",
         "--cpu-budget-s", "0.5", "--out", str(short)])
    cfg = json.loads(short.read_text())["config"]
    assert cfg["stopped_by"] == "budget" and 0 < cfg["train_steps"] < 2_000
