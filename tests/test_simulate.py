"""Policies in simulation next to their offline metrics: the report, its files, and the CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from recsim_personas.cli.main import main
from recsim_personas.envs.population import (
    population_from_run_dir,
)
from recsim_personas.envs.simulate import (
    SIM_METRICS,
    SimulationConfig,
    run_simulation,
    spearman,
)
from recsim_personas.errors import ConfigError
from recsim_personas.eval.intervals import mean_ci

pytestmark = pytest.mark.synthetic_population(n_users=40, n_items=150, seed=3)


@pytest.fixture(scope="module")
def report(population, agent):
    config = SimulationConfig(
        policies=("random", "popularity", "als", "oracle", "bandit"),
        episodes=48,
        horizon=8,
        n_envs=16,
        seed=0,
        k=5,
        oracle_candidates=None,
    )
    return run_simulation(config, agent=agent, population=population, progress=False)


@pytest.fixture(scope="module")
def run_dir(small_run_dir) -> Path:
    """A small real run folder (8 users of ml-latest-small, template profiles, hashing embeddings)."""
    return small_run_dir


def test_mean_ci_and_spearman_match_hand_computed_values():
    values = np.array([2.0, 4.0, 6.0, 2.0, 6.0, 4.0, 2.0, 6.0, np.nan])
    mean, lo, hi = mean_ci(values)
    # The bootstrap interval of the mean: sd 1.85, n 8 -> half-width near 1.96 * 1.85 / sqrt(8) = 1.28.
    assert mean == 4.0 and 2.0 < lo < mean < hi < 6.0
    assert hi - lo == pytest.approx(2 * 1.96 * values[:-1].std() / math.sqrt(8), rel=0.15)
    assert mean_ci(values) == (mean, lo, hi)  # seeded
    # A like rate of few sessions: the interval stays inside [0, 1] (a t interval would not).
    rates = np.array([1.0, 1.0, 1.0, 1.0, 0.0])
    assert 0.0 <= mean_ci(rates)[1] <= mean_ci(rates)[2] <= 1.0
    # Too few episodes: no interval at all.
    assert all(math.isnan(x) for x in mean_ci(np.array([0.0, 1.0, 1.0, 1.0]))[1:])
    assert math.isnan(mean_ci(np.array([1.0]))[1])
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


def test_report_has_every_policy_with_confidence_intervals(report):
    rows = {r["policy"]: r for r in report.results}
    assert list(rows) == ["random", "popularity", "als", "oracle", "bandit"]
    for row in rows.values():
        for metric in SIM_METRICS:
            lo, hi = row[metric + "_ci"]
            assert lo <= row[metric] <= hi
        assert 1 <= row["session_length"] <= 8 and 0 <= row["exit_rate"] <= 1
        assert 0 <= row["like_rate"] <= 1 and row["steps"] > 0
    # the exact oracle is the upper bound the simulator offers; random is not
    assert rows["oracle"]["mean_rating"] > rows["random"]["mean_rating"] + 0.3
    for name in ("random", "popularity", "als", "oracle"):
        assert 0 <= rows[name]["ndcg@5"] <= 1 and rows[name]["precision@5"] is not None
    assert rows["oracle"]["rmse"] > 0 and rows["oracle"]["mae"] > 0
    assert rows["random"]["rmse"] is None and rows["als"]["rmse"] is None
    assert rows["bandit"]["ndcg@5"] is None and "no offline model" in rows["bandit"]["offline_note"]
    assert set(report.correlations) == {"ndcg@5 vs mean_rating", "ndcg@5 vs like_rate", "ndcg@5 vs return"}
    offline = [rows[n]["ndcg@5"] for n in ("random", "popularity", "als", "oracle")]
    simulated = [rows[n]["mean_rating"] for n in ("random", "popularity", "als", "oracle")]
    assert report.correlations["ndcg@5 vs mean_rating"] == pytest.approx(spearman(offline, simulated))


def test_policies_meet_the_same_users(population, agent):
    config = SimulationConfig(policies=("random", "popularity"), episodes=20, horizon=3, n_envs=8, seed=4)
    a = run_simulation(config, agent=agent, population=population, progress=False)
    b = run_simulation(config, agent=agent, population=population, progress=False)
    assert [r["mean_rating"] for r in a.results] == [r["mean_rating"] for r in b.results]
    assert [r["session_length"] for r in a.results] == [r["session_length"] for r in b.results]


def test_report_files(report, tmp_path):
    paths = report.save(tmp_path)
    doc = json.loads(paths["json"].read_text())
    assert {"config", "git", "versions", "hardware", "results", "correlations"} <= set(doc)
    assert doc["config"]["episodes"] == 48 and doc["config"]["env_info"]["agent"] == "BiasUserAgent"
    assert [r["policy"] for r in doc["results"]] == ["random", "popularity", "als", "oracle", "bandit"]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(report.table())
    text = console.export_text()
    assert "oracle" in text and "NDCG@5" in text and "Spearman" in text


def test_simulation_config_validates_everything_at_once():
    with pytest.raises(ConfigError) as err:
        SimulationConfig(policies="random,oracel", episodes=0, horizon=-1)
    msg = str(err.value)
    assert "unknown policy 'oracel' (did you mean 'oracle'?)" in msg
    assert "episodes must be an integer >= 1, got 0" in msg and "horizon must be an integer >= 1, got -1" in msg
    cfg = SimulationConfig(policies=("random",), env={"slate_size": 2})
    assert SimulationConfig.from_dict(cfg.to_dict()) == cfg


def test_population_from_a_real_run_folder(run_dir):
    pop = population_from_run_dir(run_dir)
    assert pop.n_users == 8 and pop.n_personas == 2 and pop.embedding_dim == 64
    assert set(pop.activity_levels.tolist()) <= {0, 1, 2}
    assert pop.store is not None and pop.catalog is not None
    assert np.allclose(np.linalg.norm(pop.profile_embeddings, axis=1), 1.0, atol=1e-5)
    first = int(pop.item_ids[0])
    row = pop.dataset.items.loc[first]
    assert pop.item_titles[0] == f"{row['title']} ({int(row['year'])})"
    assert set(pop.item_ids) == set(pop.train["item_id"])


def test_cli_simulate_on_a_run_folder(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([
        "simulate", "--run-dir", str(run_dir), "--agent", "bias", "--policies", "random,popularity,oracle",
        "--episodes", "8", "--horizon", "4", "--n-envs", "4", "--k", "5", "--out", str(out),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "PersonaRec-v0 simulation: 8 episodes x horizon 4, agent BiasUserAgent" in printed
    doc = json.loads((out / "simulate.json").read_text())
    assert [r["policy"] for r in doc["results"]] == ["random", "popularity", "oracle"]
    assert (out / "simulate.png").is_file()


def test_cli_reports_user_errors_in_one_line(run_dir, capsys):
    assert main(["simulate", "--run-dir", str(run_dir), "--agent", "bias", "--policies", "random,popularty"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"unknown policy 'popularty' \(did you mean 'popularity'\?\)", err)
    assert err.count("\n") == 1
    assert main(["simulate", "--run-dir", str(run_dir), "--agent", "lm", "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert "is missing persona adapter(s) persona_0__ms, persona_1__ms" in err
