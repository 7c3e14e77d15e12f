"""Every baseline's hyperparameters are a Config dataclass: they round-trip and report all problems."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from recsim_personas.baselines import BASELINES, make_baseline
from recsim_personas.baselines.params import BaselineParams, BiasedMFParams
from recsim_personas.data.checks import first_true
from recsim_personas.errors import ConfigError


@pytest.mark.parametrize("name", list(BASELINES))
def test_params_round_trip_and_match_the_model(name):
    spec = BASELINES[name]
    params_type = spec.cls.params_type
    assert issubclass(params_type, BaselineParams)
    default = params_type()
    assert params_type.from_dict(json.loads(json.dumps(default.to_dict()))) == default
    model = make_baseline(name)
    assert model.get_params() == dataclasses.asdict(default)
    assert all(params_type.field_help()[f] for f in model.get_params())  # every field has help


def test_every_bound_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        BiasedMFParams(n_factors=0, init_std=-1.0, seed=True)
    text = str(info.value)
    assert text.startswith("invalid BiasedMF parameters: ")
    for part in ("n_factors must be an integer >= 1, got 0", "init_std must be a number >= 0, got -1.0",
                 "seed must be an integer >= 0, got True"):
        assert part in text


def test_numbers_become_plain_python_types():
    params = BiasedMFParams(reg=1, n_factors=3)
    assert type(params.reg) is float and type(params.n_factors) is int
    with pytest.raises(ConfigError, match=re.escape("n_factor: unknown key. Did you mean 'n_factors'?")):
        BiasedMFParams.from_dict({"n_factor": 3})


def test_first_true():
    assert first_true([False, True, True]) == 1
    assert first_true([]) is None and first_true([False]) is None
