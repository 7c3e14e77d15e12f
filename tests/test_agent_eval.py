"""evaluate_agent: RMSE / MAE of three point estimates, URR, outside mass, per persona, results JSON."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from recsim_personas.agents.protocol import RatingBatch
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError, DataError
from recsim_personas.eval.agent_eval import evaluate_agent

STARS = RatingScale(1, 5, 1)


class TableAgent:
    """Answers from a fixed table: (user, item) -> (probs, valid, outside); records its calls."""

    scale = STARS

    def __init__(self, table):
        self.table = table
        self.calls = []

    def rate(self, user_ids, item_ids):
        self.calls.append(list(zip(user_ids, item_ids, strict=True)))
        rows = [self.table[(u, i)] for u, i in zip(user_ids, item_ids, strict=True)]
        return RatingBatch(probs=np.array([r[0] for r in rows], dtype=float),
                           outside_mass=np.array([r[2] for r in rows], dtype=float),
                           valid=np.array([r[1] for r in rows], dtype=bool))

    def leave_probability(self, user_ids, sessions):  # pragma: no cover - not used here
        return np.zeros(len(user_ids))


def _one_hot(level):
    p = np.zeros(5)
    p[level - 1] = 1.0
    return p


TEST = pd.DataFrame({"user_id": [2, 1, 1, 2], "item_id": [20, 10, 11, 21], "rating": [1.0, 4.0, 5.0, 3.0]})
TABLE = {
    (1, 10): ([0.0, 0.0, 0.5, 0.5, 0.0], True, 0.1),   # expectation 3.5, mode 3 (lower of a tie)
    (1, 11): (_one_hot(5), True, 0.3),                  # exact
    (2, 20): ([0.25, 0.25, 0.25, 0.25, 0.0], True, 0.0),  # expectation 2.5, mode 1
    (2, 21): (np.full(5, 0.2), False, 0.2),             # invalid (generate mode: unparsable)
}


def test_metrics_by_hand_overall_and_per_persona(tmp_path):
    agent = TableAgent(TABLE)
    out = tmp_path / "res.json"
    res = evaluate_agent(agent, TEST, personas={1: 0, 2: 1}, name="t", batch_size=3, progress=False,
                         config={"what": "hand check"}, out_path=out)
    m = res.metrics
    # Valid rows: (1,10) 3.5 vs 4, (1,11) 5 vs 5, (2,20) 2.5 vs 1.
    assert m["n"] == 4 and m["n_valid"] == 3 and m["urr"] == pytest.approx(0.25)
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 2.25) / 3))
    assert m["mae"] == pytest.approx((0.5 + 0 + 1.5) / 3)
    assert m["rmse_expectation"] == m["rmse"]
    assert m["rmse_mode"] == pytest.approx(np.sqrt((1 + 0 + 0) / 3))  # modes 3, 5, 1
    assert m["mae_mode"] == pytest.approx(1 / 3)
    assert m["outside_mass"] == pytest.approx(0.15)
    assert m["rmse_per_user"] == pytest.approx(np.mean([np.sqrt(0.25 / 2), 1.5]))
    assert set(res.per_persona) == {0, 1}
    assert res.per_persona[0]["rmse"] == pytest.approx(np.sqrt(0.25 / 2))
    assert res.per_persona[1]["urr"] == pytest.approx(0.5) and res.per_persona[1]["n_valid"] == 1
    # Rows are sorted by user before batching, so a user's prompts share the prefix cache.
    assert agent.calls == [[(1, 10), (1, 11), (2, 20)], [(2, 21)]]
    doc = json.loads(out.read_text())
    assert doc["headline"] == "expectation" and doc["config"] == {"what": "hand check"}
    assert {"git", "versions", "hardware", "metrics", "per_persona"} <= set(doc)
    assert doc["per_persona"]["1"]["n"] == 2
    pred = res.predictions
    assert list(pred["user_id"]) == [1, 1, 2, 2]
    assert {"p_1", "p_5", "expectation", "mode", "sample", "valid", "persona"} <= set(pred.columns)


def test_sample_estimate_is_seeded_and_follows_the_distribution():
    n = 400
    test = pd.DataFrame({"user_id": np.arange(n), "item_id": np.arange(n), "rating": np.full(n, 3.0)})
    table = {(u, u): ([0.0, 0.5, 0.0, 0.5, 0.0], True, 0.0) for u in range(n)}
    a = evaluate_agent(TableAgent(table), test, seed=1, progress=False)
    b = evaluate_agent(TableAgent(table), test, seed=1, progress=False)
    c = evaluate_agent(TableAgent(table), test, seed=2, progress=False)
    assert a.predictions["sample"].equals(b.predictions["sample"])
    assert not a.predictions["sample"].equals(c.predictions["sample"])
    assert set(a.predictions["sample"]) == {2.0, 4.0}
    assert abs((a.predictions["sample"] == 4.0).mean() - 0.5) < 0.1
    # Expectation (3) is exact, the mode (2) and a sample (2 or 4) are one star off.
    assert a.metrics["rmse"] == 0.0 and a.metrics["rmse_mode"] == 1.0 and a.metrics["rmse_sample"] == 1.0


def test_works_with_the_bias_agent():
    from recsim_personas.agents.bias_agent import BiasUserAgent

    train = pd.DataFrame({"user_id": [1, 1, 2, 2, 3, 3], "item_id": [10, 11, 10, 11, 10, 12],
                          "rating": [5.0, 4.0, 2.0, 1.0, 3.0, 4.0]})
    agent = BiasUserAgent.fit(train, STARS, noise_std=0.7)
    test = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [12, 12, 11], "rating": [5.0, 1.0, 3.0]})
    res = evaluate_agent(agent, test, progress=False)
    direct = agent.rate([1, 2, 3], [12, 12, 11]).expectation(STARS)
    assert res.metrics["rmse"] == pytest.approx(np.sqrt(np.mean((direct - test["rating"].to_numpy()) ** 2)))
    assert res.metrics["urr"] == 0.0 and res.per_persona == {}


def test_bad_input_is_named():
    agent = TableAgent(TABLE)
    with pytest.raises(DataError, match="test rows lack column"):
        evaluate_agent(agent, TEST.drop(columns="rating"), progress=False)
    with pytest.raises(DataError, match="no test rows"):
        evaluate_agent(agent, TEST.iloc[:0], progress=False)
    with pytest.raises(DataError, match=re.escape("test rating 4.5 (user 1, item 10) is not on the agent's scale")):
        evaluate_agent(agent, TEST.assign(rating=[1.0, 4.5, 5.0, 3.0]), progress=False)
    with pytest.raises(DataError, match="user 2 of the test rows has no persona"):
        evaluate_agent(agent, TEST, personas={1: 0}, progress=False)
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        evaluate_agent(agent, TEST, batch_size=0, progress=False)

    class Broken(TableAgent):
        def rate(self, user_ids, item_ids):
            return RatingBatch(probs=np.ones((len(user_ids), 3)) / 3, outside_mass=np.zeros(len(user_ids)))

    with pytest.raises(DataError, match=re.escape("returned probs of shape (4, 3) for 4 requests on a 5-level")):
        evaluate_agent(Broken(TABLE), TEST, progress=False)
