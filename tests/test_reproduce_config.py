"""The reproduction config: presets load, overrides apply, invalid configs list every error at once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recsim_personas.config import apply_overrides, config_to_dict
from recsim_personas.errors import ConfigError
from recsim_personas.reproduce.config import PRESETS, ReproduceConfig, preset_path
from recsim_personas.reproduce.loading import load_reproduce_config


def test_every_preset_file_names_its_command_in_the_header() -> None:
    for preset in PRESETS:
        head = preset_path(preset).read_text().splitlines()[:3]
        assert any(f"recsim-personas reproduce --preset {preset}" in line for line in head), preset


def test_demo_preset_loads_offline_with_the_embedded_dataset() -> None:
    config = load_reproduce_config("demo")
    assert isinstance(config, ReproduceConfig)
    assert config.dataset.name == "ml-latest-small"
    assert config.dataset.data_dir is None
    assert config.preset == "demo"


def test_overrides_reach_nested_sections_and_are_typed() -> None:
    config = load_reproduce_config(
        "demo", overrides=["split.n_users=12", "evaluation.mode=generate", "training.memory_modes=[ms]"]
    )
    assert config.split.n_users == 12
    assert config.evaluation.mode == "generate"
    assert config.training.memory_modes == ["ms"]


def test_configs_round_trip_through_dicts(tmp_path: Path) -> None:
    import yaml

    config = load_reproduce_config("demo", overrides=["split.seed=3"])
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    again = load_reproduce_config(config_path=path)
    assert again == config


def test_invalid_config_lists_all_errors_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_reproduce_config(
            "demo",
            overrides=[
                "split.n_userz=3",  # unknown key
                "split.seed=abc",  # wrong type
                "evaluation.mode=generat",  # bad choice
            ],
        )
    text = str(info.value)
    assert "3 error(s)" in text
    assert "split.n_userz: unknown key. Did you mean 'n_users'?" in text
    assert "split.seed: expected an integer, got 'abc'" in text
    assert "Did you mean 'generate'?" in text


def test_missing_dataset_path_and_missing_model_are_reported_together(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as info:
        load_reproduce_config(
            "demo",
            overrides=[f"dataset.data_dir={missing}", f"model.name={tmp_path / 'no-model'}"],
        )
    text = str(info.value)
    assert "2 error(s)" in text
    assert re.search(r"dataset\.data_dir: folder .*nope.* does not exist", text)
    assert "model.name: model path" in text and "does not exist" in text


def test_hub_model_id_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"not in the local Hugging Face cache and the hub is unreachable"):
        load_reproduce_config("demo", overrides=["model.name=nobody/no-such-model-xyz"])


def test_unknown_preset_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=re.escape("Did you mean 'demo'?")):
        preset_path("dmeo")


def test_cross_field_rule_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"min_interactions \(300\) > max_interactions \(200\)"):
        load_reproduce_config("demo", overrides=["split.min_interactions=300"])


def test_override_syntax_error_names_the_fix() -> None:
    with pytest.raises(ConfigError, match=re.escape("is not key=value")):
        apply_overrides({}, ["split.n_users"])


def test_typed_and_filesystem_errors_are_listed_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_reproduce_config(
            "demo", overrides=["split.n_userz=3", f"dataset.data_dir={tmp_path / 'missing'}"]
        )
    text = str(info.value)
    assert "2 error(s)" in text
    assert "split.n_userz: unknown key" in text
    assert "dataset.data_dir: folder" in text


def test_unknown_lora_override_is_caught_before_training() -> None:
    with pytest.raises(ConfigError, match=re.escape("training.overrides.max_stepz: unknown LoRA setting. Did you mean 'max_steps'?")):
        load_reproduce_config("demo", overrides=["training.overrides.max_stepz=3"])


def test_user_and_row_caps_reach_the_experiment(tmp_path: Path) -> None:
    from recsim_personas.reproduce.stages import experiment_config as _experiment_config

    config = load_reproduce_config(
        "cpu", overrides=[f"dataset.data_dir={tmp_path}", "training.max_users=7", "evaluation.test_rows_per_user=2"]
    )
    exp = _experiment_config(config)
    assert (exp.max_users, exp.train_rows_per_user, exp.test_rows_per_user) == (7, 8, 2)
    with pytest.raises(ConfigError, match="max_users"):
        load_reproduce_config("cpu", overrides=[f"dataset.data_dir={tmp_path}", "training.max_users=many"])


def test_report_summary_names_the_best_agent_and_the_yardstick() -> None:
    from recsim_personas.cli.reproduce import _summary

    rows = [
        {"No.": 3, "Base": "SmolLM2", "Adapter": "-", "Memories": "M_s", "RMSE": "2.100", "Test rows": 8},
        {"No.": 10, "Base": "SmolLM2", "Adapter": "persona", "Memories": "M_s + M_l", "RMSE": "1.010", "Test rows": 8},
        {"No.": 0, "Base": "LLaMA-3", "Adapter": "-", "Memories": "M_s", "RMSE": "-", "Test rows": "-"},
        {"No.": "-", "Base": "classic", "Adapter": "bias", "Memories": "-", "RMSE": "0.955", "Test rows": 8},
        {"No.": "-", "Base": "classic", "Adapter": "global-mean", "Memories": "-", "RMSE": "0.991", "Test rows": 8},
    ]
    text = _summary(rows)
    assert "row 10 (persona, M_s + M_l) with RMSE 1.010" in text
    assert "does not beat the best classic predictor (bias, RMSE 0.955)" in text
    rows[1]["RMSE"] = "0.900"
    assert "it beats the best classic predictor" in _summary(rows)
    assert _summary(rows[:3]) == ""


def test_full_preset_is_the_whole_protocol_with_an_estimate_first(tmp_path: Path) -> None:
    from recsim_personas.reproduce.stages import experiment_config as _experiment_config
    from recsim_personas.reproduce.stages import memory_config as _memory_config

    config = load_reproduce_config("full", overrides=[f"dataset.data_dir={tmp_path}"])
    exp = _experiment_config(config)
    assert (exp.max_users, exp.train_rows_per_user, exp.test_rows_per_user) == (None, None, None)
    tcfg = exp.train_config()
    assert tcfg.max_steps is None and tcfg.epochs >= 1.0
    assert config.training.estimate_first and config.split.n_users == 200
    assert _memory_config(config).item_stats == "dataset"
    compact = load_reproduce_config("full", overrides=[f"dataset.data_dir={tmp_path}", "evaluation.template=compact"])
    assert _experiment_config(compact).template == "compact"
    with pytest.raises(ConfigError, match="item_stats"):
        load_reproduce_config("full", overrides=[f"dataset.data_dir={tmp_path}", "memory.item_stats=all"])


def test_estimate_covers_only_what_is_left() -> None:
    from recsim_personas.training.estimate import estimate_experiment
    from recsim_personas.training.experiment import ExperimentPlan

    plan = ExperimentPlan(
        adapters=[{"name": "persona_0", "mode": "ms", "rows": 100, "train_tokens": 50_000, "done": False},
                  {"name": "persona_1", "mode": "ms", "rows": 80, "train_tokens": 40_000, "done": True}],
        evaluations=[{"row": 9, "test_rows": 300, "eval_tokens": 30_000, "done": False}],
        cuts=[], tokens={"ms": {"prefix": 500.0, "suffix": 50.0}},
    )
    est = estimate_experiment(plan, {"train_s_per_token": 0.01, "eval_s_per_token": 0.002})
    assert est["train"] == pytest.approx(500.0) and est["eval"] == pytest.approx(60.0)
    assert est["total"] == pytest.approx(560.0)
    assert "adapters to train: 1 of 2 (100 rows, 50,000 tokens)" in est["lines"][0]
    assert "= 0.2 h" in est["lines"][1] and "resumes" in est["lines"][1]


def test_demo_rescores_one_agent_for_the_fidelity_report_and_checks_the_rows(tmp_path: Path) -> None:
    from recsim_personas.reproduce.pipeline import _fidelity_rows
    from recsim_personas.reproduce.stages import experiment_config as _experiment_config

    config = load_reproduce_config("demo")
    assert config.evaluation.fidelity_rows == [9] and config.evaluation.fidelity_test_rows_per_user is None
    assert 9 in _experiment_config(config).rows()
    bad = load_reproduce_config("demo", overrides=["training.memory_modes=[ms]", "evaluation.fidelity_rows=[10]"])
    with pytest.raises(ConfigError, match=re.escape("evaluation.fidelity_rows [10] are not Table-1 rows")):
        _fidelity_rows(tmp_path, None, bad, _experiment_config(bad), False, print)


def test_split_section_is_the_library_split_config_with_the_papers_defaults() -> None:
    from recsim_personas.config import Config
    from recsim_personas.data.splits import PAPER_SPLIT, SplitConfig
    from recsim_personas.reproduce.config import SplitSection
    from recsim_personas.reproduce.stages import split_config

    config = load_reproduce_config("demo")
    assert isinstance(config, Config) and isinstance(config.split, SplitConfig)
    assert type(split_config(config)) is SplitConfig and split_config(config).n_users == 4
    assert SplitSection().to_split_config() == PAPER_SPLIT
    assert ReproduceConfig.from_dict(config.to_dict()) == config
