"""The config base every config dataclass derives from (recsim_personas.config.Config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from recsim_personas.config import Config
from recsim_personas.errors import ConfigError, did_you_mean, not_one_of


@dataclass(frozen=True)
class Inner(Config):
    rank: int = 8
    mode: Literal["ms", "msml"] = "ms"


@dataclass(frozen=True)
class Outer(Config):
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    names: tuple[str, ...] = ("a",)
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


def test_round_trip_keeps_every_field() -> None:
    cfg = Outer(lr=0.5, names=("x", "y"), inner=Inner(rank=4, mode="msml"))
    data = cfg.to_dict()
    assert data == {"lr": 0.5, "names": ["x", "y"], "inner": {"rank": 4, "mode": "msml"}}
    assert Outer.from_dict(data) == cfg


def test_from_dict_reports_every_problem_at_once_with_hints() -> None:
    with pytest.raises(ConfigError) as info:
        Outer.from_dict({"lrr": 1.0, "names": 3, "inner": {"rank": "four", "mode": "msm"}})
    text = str(info.value)
    assert text.startswith("Outer: 4 error(s)")
    assert "lrr: unknown key. Did you mean 'lr'?" in text
    assert "names: expected list of str, got 3" in text
    assert "inner.rank: expected an integer, got 'four'" in text
    assert "inner.mode: 'msm' is not one of 'ms', 'msml'. Did you mean 'msml'?" in text or (
        "Did you mean 'ms'?" in text
    )


def test_cross_field_rule_of_post_init_joins_the_report() -> None:
    with pytest.raises(ConfigError, match="lr must be > 0"):
        Outer.from_dict({"lr": -1.0})


def test_from_dict_needs_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"Outer: expected a mapping .* got list"):
        Outer.from_dict([1, 2])


def test_replace_validates_and_rejects_unknown_fields() -> None:
    cfg = Outer()
    assert cfg.replace(lr=0.1).lr == 0.1
    with pytest.raises(ConfigError, match=r"Outer has no field 'lrr' \(did you mean 'lr'\?\)"):
        cfg.replace(lrr=0.1)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        cfg.replace(lr=0.0)


def test_field_help_reads_metadata() -> None:
    assert Outer.field_help() == {"lr": "learning rate", "names": "", "inner": ""}


def test_from_yaml_applies_overrides(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.2\ninner:\n  rank: 2\n")
    cfg = Outer.from_yaml(path, ["inner.mode=msml"])
    assert cfg == Outer(lr=0.2, inner=Inner(rank=2, mode="msml"))


def test_did_you_mean_and_not_one_of() -> None:
    assert did_you_mean("popularty", ["random", "popularity"]) == " Did you mean 'popularity'?"
    assert did_you_mean("zzz", ["random", "popularity"]) == ""
    assert did_you_mean("ab", ["abc", "abd", "xyz"], n=2) in (
        " Did you mean 'abc' or 'abd'?", " Did you mean 'abd' or 'abc'?"
    )
    assert not_one_of("policy", "radom", ["random", "oracle"]) == (
        "policy must be one of random, oracle, got 'radom'. Did you mean 'random'?"
    )
