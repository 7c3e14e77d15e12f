"""``recsim-personas baselines``: table, results JSON, shared dataset/split options, user errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recsim_personas.cli.main import main
from recsim_personas.data.splits import Split

FAKE_ENV = {"versions": {"python": "3.x", "numpy": np.__version__}, "hardware": {"cpu_count": 1}}


@pytest.fixture()
def fast_env(monkeypatch):
    """Skip the torch import that ``environment_info`` does (covered by the integration test)."""
    import recsim_personas.eval.report as report

    monkeypatch.setattr(report, "environment_info", lambda: FAKE_ENV)


@pytest.fixture(scope="module")
def embedded():
    from recsim_personas.data.registry import load_dataset

    return load_dataset("ml-latest-small")


@pytest.fixture()
def cached_embedded(monkeypatch, embedded):
    """Load the embedded dataset once per module instead of once per command."""
    import recsim_personas.data.registry as registry

    real = registry.load_dataset

    def load(name, data_dir=None, **kw):
        if name == "ml-latest-small" and data_dir is None and not kw.get("enrichment"):
            return embedded
        return real(name, data_dir, **kw)

    monkeypatch.setattr(registry, "load_dataset", load)


@pytest.fixture()
def ratings_csv(tmp_path):
    """30 users with 12-40 ratings each on a 1-5 scale, MovieLens CSV header."""
    rng = np.random.default_rng(0)
    rows = []
    for user in range(1, 31):
        n = int(rng.integers(12, 41))
        for t, item in enumerate(rng.choice(80, size=n, replace=False)):
            rows.append((user, int(item) + 1, int(rng.integers(1, 6)), 1_000 + 10 * t))
    path = tmp_path / "ratings.csv"
    pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"]).to_csv(path,
                                                                                    index=False)
    return path


CSV_ALL_USERS = ["--split", "random:0.8", "--users", "all", "--min-interactions", "none",
                 "--max-interactions", "none"]


def test_csv_run_writes_results_json(ratings_csv, tmp_path, capsys, fast_env):
    out = tmp_path / "res" / "baselines.json"
    rc = main(["baselines", "--dataset", "csv", "--csv", str(ratings_csv), *CSV_ALL_USERS,
               "--models", "global-mean,bias,biased-mf,popularity,als", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Baselines on ratings: random:0.8, all users with any count, seed 0 - 30 users" in text
    assert "average per rating" in text and "average per user" in text
    doc = json.loads(out.read_text())
    assert {"config", "git", "versions", "hardware", "results"} <= set(doc)
    assert doc["config"]["split"]["method"] == "random" and doc["config"]["split"]["n_users"] is None
    assert doc["config"]["split_summary"]["users"] == 30
    by = {r["model"]: r for r in doc["results"]}
    assert list(by) == ["global-mean", "bias", "biased-mf", "popularity", "als"]
    for name in ("global-mean", "bias", "biased-mf"):
        assert by[name]["rmse"] > 0 and by[name]["mae"] > 0 and "fallback_count" in by[name]
    for name in ("popularity", "als"):
        assert by[name]["rmse"] is None
        assert 0 <= by[name]["precision@10"] <= 1 and 0 <= by[name]["recall@10"] <= 1
        assert 0 <= by[name]["ndcg@10"] <= 1
    assert by["global-mean"]["precision@10"] is None  # ranks nothing


def test_csv_column_mapping_and_scale(tmp_path, capsys, fast_env):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({
        "who": np.repeat(np.arange(10), 12),
        "what": np.tile(np.arange(12), 10),
        "stars": rng.integers(1, 11, 120) / 2,
    })
    path = tmp_path / "r.csv"
    frame.to_csv(path, sep=";", index=False)
    out = tmp_path / "r.json"
    rc = main(["baselines", "--dataset", "csv", "--csv", str(path), "--csv-sep", ";",
               "--csv-columns", "user_id=who,item_id=what,rating=stars",
               "--csv-scale", "0.5:5:0.5", "--split", "last:2", "--users", "all",
               "--min-interactions", "none", "--max-interactions", "none",
               "--models", "bias", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["config"]["dataset"]["scale"] == "0.5-5.0 step 0.5"
    assert doc["config"]["split_summary"]["test_rows"] == 20  # last 2 of each of 10 users
    assert doc["config"]["eval"]["relevance_threshold_used"] == 4.0


def test_default_is_the_paper_split_adapted_to_the_embedded_data(cached_embedded, capsys,
                                                                 tmp_path, fast_env):
    out = tmp_path / "r.json"
    rc = main(["baselines", "--models", "bias,popularity", "--json", str(out),
               "--save-split", str(tmp_path / "split")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "note: only 115 users of ml-latest-small qualify" in text
    doc = json.loads(out.read_text())
    cfg = doc["config"]
    assert cfg["dataset"]["name"] == "ml-latest-small"
    assert cfg["split"] == {"method": "temporal", "train_fraction": 0.6, "last_n": 1,
                            "min_interactions": 100, "max_interactions": 200, "n_users": None,
                            "seed": 0}
    assert cfg["split_summary"]["users"] == 115
    split = Split.load(tmp_path / "split")
    assert len(split.users) == 115 and len(split.test) == cfg["split_summary"]["test_rows"]


def test_explicit_users_sample(cached_embedded, capsys, tmp_path, fast_env):
    out = tmp_path / "r.json"
    assert main(["baselines", "--users", "20", "--seed", "3", "--models", "user-mean",
                 "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["config"]["split"]["n_users"] == 20 and doc["config"]["split"]["seed"] == 3
    assert doc["config"]["split_summary"]["users"] == 20


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "bias,biased_mf"], "unknown baseline 'biased_mf'; choose from"),
        (["--dataset", "csv"], "--dataset csv needs --csv PATH"),
        (["--split", "temporl:0.6"], "Did you mean 'temporal'?"),
        (["--users", "500"], "has only 115 users that qualify"),
        (["--csv", "x.csv"], "--csv is only used with --dataset csv"),
        (["--dataset", "ml-100k", "--data-dir", "/nonexistent/ml-100k"], "/nonexistent/ml-100k"),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, message, cached_embedded, capsys):
    rc = main(["baselines", "--models", "bias", *argv])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recsim-personas baselines: error: ")
    assert message in err and "\n" not in err


def test_bad_option_values_are_usage_errors(capsys):
    for argv in (["--users", "zero"], ["--min-interactions", "-3"], ["--seed", "x"]):
        with pytest.raises(SystemExit) as info:
            main(["baselines", *argv])
        assert info.value.code == 2
    assert "expected a number of users or 'all', got 'zero'" in capsys.readouterr().err


@pytest.mark.integration
def test_default_run_all_models_real_environment(tmp_path, capsys):
    """The README's main job as of this issue: no flags but --json, every baseline."""
    out = tmp_path / "r.json"
    assert main(["baselines", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["versions"]["numpy"] == np.__version__ and doc["git"]["commit"]
    by = {r["model"]: r for r in doc["results"]}
    assert set(by) == {"global-mean", "user-mean", "item-mean", "bias", "biased-mf", "random",
                       "popularity", "als"}
    assert by["biased-mf"]["rmse"] < by["global-mean"]["rmse"]
    assert by["als"]["ndcg@10"] > by["random"]["ndcg@10"]
