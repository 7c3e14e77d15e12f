"""One suite every user agent passes: what the ``UserAgent`` protocol (``agents/protocol.py``) promises.

As every baseline passes ``TestEveryBaseline`` (and every LensKit component its shared test class),
every agent here passes :class:`TestEveryUserAgent`: the bias agent, the latent-factor agent and the
LM agent (a 2-layer random llama with one LoRA adapter per persona), all on the same small real run
folder (8 users of ml-latest-small, half-star scale). A new agent gets the suite by adding a case to
:data:`AGENT_CASES`; :func:`test_every_agent_class_and_kind_is_in_the_suite` fails until it does.

What the protocol promises, and what is checked:

- ``rate`` answers ``n`` requests with a :class:`RatingBatch`: ``probs`` ``(n, n_levels)`` over
  ``scale.levels``, rows summing to 1; ``outside_mass`` ``(n,)`` in [0, 1] (0 for agents that are
  not language models); ``valid`` ``(n,)`` booleans. So every rating drawn is on the scale's grid
  and every expectation inside the scale.
- Calls are batched: a request's answer does not depend on the other requests of the batch or on
  their order (a batch equals its requests one by one: each user's answers are its own stream).
- The same requests get the same answers (call again, or build the agent again with the same seed),
  and ``RatingBatch.sample`` draws the same ratings from the same seeded generator.
- ``leave_probability`` answers each (user, session so far) with a probability in [0, 1], for empty
  sessions, good and bad ratings and, where ``accepts_unrated_events``, unrated steps (NaN).
- An empty request list gets an empty answer (a vector env whose sessions all ended).
- User mistakes raise the library's error (:class:`~recsim_personas.errors.RecsimError`): a request
  list of mismatched lengths (a ``DataError`` from every agent), and, for agents that cannot answer
  them, unknown user or item ids;
  the cheap agents document a fallback for unknown ids (zero bias) and must answer with a valid
  distribution.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
from conftest import tiny_lm_agent

import recsim_personas
from recsim_personas.agents.protocol import RatingBatch, SessionEvent, UserAgent
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import DataError, RecsimError
from tests.tolerances import FP32_PATH_ATOL

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class AgentCase:
    """How to build one agent on a population, and what it documents beyond the protocol."""

    build: Callable[[Any, Any], Any]  # (population, tokenizer) -> agent
    #: "fallback": unknown ids get a valid answer; "error": they raise a RecsimError.
    unknown_ids: str
    #: Whether ``outside_mass`` may be non-zero (a language model's mass outside the scale's tokens).
    language_model: bool = False
    #: Absolute tolerance between two code paths (exact for numpy agents).
    atol: float = 0.0


def _bias(population, tokenizer):
    from recsim_personas.agents.bias_agent import BiasUserAgent

    return BiasUserAgent.fit(population.train, population.scale)


def _mf(population, tokenizer):
    from recsim_personas.agents.mf_agent import LatentFactorUserAgent

    return LatentFactorUserAgent.fit(population.train, population.scale, seed=0)


def _lm(population, tokenizer):
    return tiny_lm_agent(tokenizer, population)


#: Every agent the suite runs on, by the name ``PersonaRecConfig(agent=...)`` gives it.
AGENT_CASES: dict[str, AgentCase] = {
    "bias": AgentCase(_bias, unknown_ids="fallback"),
    "mf": AgentCase(_mf, unknown_ids="fallback"),
    "lm": AgentCase(_lm, unknown_ids="error", language_model=True, atol=FP32_PATH_ATOL),
}
#: The class of each case's agent (for the check that no agent class is left out).
AGENT_CLASSES = {"bias": "BiasUserAgent", "mf": "LatentFactorUserAgent", "lm": "LMUserAgent"}


@pytest.fixture(scope="module")
def run_population(small_run_dir):
    from recsim_personas.envs.population import population_from_run_dir

    return population_from_run_dir(small_run_dir)


@pytest.fixture(scope="module", params=list(AGENT_CASES))
def case(request, run_population, smollm2_tokenizer):
    """``(name, AgentCase, agent)`` for every agent of the suite."""
    spec = AGENT_CASES[request.param]
    return request.param, spec, spec.build(run_population, smollm2_tokenizer)


def _requests(population, n: int = 6) -> tuple[list[int], list[int]]:
    """``n`` (user, item) pairs: each user's first test items, users interleaved."""
    test = population.test.sort_values(["user_id", "item_id"])
    per_user = test.groupby("user_id").head(2)
    users = per_user["user_id"].astype(int).tolist()[:n]
    items = per_user["item_id"].astype(int).tolist()[:n]
    return users, items


def _sessions(population, scale: RatingScale, unrated: bool) -> list[list[SessionEvent]]:
    items = [int(i) for i in population.item_ids[:3]]
    sessions = [
        [],
        [SessionEvent(i, float(scale.max)) for i in items],
        [SessionEvent(i, float(scale.min)) for i in items],
        [SessionEvent(items[0], float(scale.levels[len(scale.levels) // 2]))],
    ]
    if unrated:
        sessions.append([SessionEvent(i, float("nan")) for i in items])
    return sessions


class TestEveryUserAgent:
    """The ``UserAgent`` protocol, on every agent of :data:`AGENT_CASES`."""

    def test_implements_the_protocol(self, case):
        _, _, agent = case
        assert isinstance(agent, UserAgent)
        assert isinstance(agent.scale, RatingScale)

    def test_rate_answers_a_distribution_over_the_scale_per_request(self, case, run_population):
        _, spec, agent = case
        users, items = _requests(run_population)
        batch = agent.rate(users, items)
        n, k = len(users), agent.scale.n_levels
        assert isinstance(batch, RatingBatch)
        assert batch.probs.shape == (n, k) and np.isfinite(batch.probs).all()
        assert (batch.probs >= 0).all()
        np.testing.assert_allclose(batch.probs.sum(axis=1), 1.0, atol=1e-6)
        assert batch.outside_mass.shape == (n,)
        assert ((batch.outside_mass >= 0) & (batch.outside_mass <= 1)).all()
        if not spec.language_model:
            assert (batch.outside_mass == 0).all()
        assert batch.valid.shape == (n,) and batch.valid.dtype == bool

    def test_ratings_are_inside_the_scale_and_on_its_grid(self, case, run_population):
        _, _, agent = case
        scale = agent.scale
        users, items = _requests(run_population)
        batch = agent.rate(users, items)
        expected = batch.expectation(scale)
        assert ((expected >= scale.min - 1e-9) & (expected <= scale.max + 1e-9)).all()
        drawn = np.concatenate([batch.sample(scale, np.random.default_rng(s)) for s in range(20)])
        assert np.isin(drawn, scale.levels).all()
        assert scale.contains(drawn).all()

    def test_same_requests_same_answers_and_seeded_samples(self, case, run_population, smollm2_tokenizer):
        _, spec, agent = case
        users, items = _requests(run_population)
        first = agent.rate(users, items)
        again = agent.rate(users, items)
        np.testing.assert_allclose(again.probs, first.probs, atol=spec.atol, rtol=0)
        rebuilt = spec.build(run_population, smollm2_tokenizer).rate(users, items)
        np.testing.assert_allclose(rebuilt.probs, first.probs, atol=spec.atol, rtol=0)
        a = first.sample(agent.scale, np.random.default_rng(7))
        b = first.sample(agent.scale, np.random.default_rng(7))
        np.testing.assert_array_equal(a, b)

    def test_a_batch_equals_its_requests_one_by_one(self, case, run_population):
        _, spec, agent = case
        users, items = _requests(run_population)
        batch = agent.rate(users, items)
        single = np.concatenate([agent.rate([u], [i]).probs for u, i in zip(users, items, strict=True)])
        np.testing.assert_allclose(single, batch.probs, atol=spec.atol, rtol=0)

    def test_each_request_is_its_own_stream(self, case, run_population):
        """A request's answer depends on neither the other requests of its batch nor their order."""
        _, spec, agent = case
        users, items = _requests(run_population)
        forward = agent.rate(users, items).probs
        backward = agent.rate(users[::-1], items[::-1]).probs
        np.testing.assert_allclose(backward[::-1], forward, atol=spec.atol, rtol=0)
        others = agent.rate([users[0], users[-1]], [items[0], items[-1]]).probs
        np.testing.assert_allclose(others[0], forward[0], atol=spec.atol, rtol=0)

    def test_leave_probability_is_a_probability_per_session(self, case, run_population):
        _, spec, agent = case
        sessions = _sessions(run_population, agent.scale, getattr(agent, "accepts_unrated_events", False))
        users = [int(u) for u in run_population.user_ids[: len(sessions)]]
        p = np.asarray(agent.leave_probability(users, sessions))
        assert p.shape == (len(users),) and np.isfinite(p).all()
        assert ((p >= 0) & (p <= 1)).all()
        again = np.asarray(agent.leave_probability(users, [list(s) for s in sessions]))
        np.testing.assert_allclose(again, p, atol=spec.atol, rtol=0)
        single = np.concatenate([agent.leave_probability([u], [s]) for u, s in zip(users, sessions, strict=True)])
        np.testing.assert_allclose(single, p, atol=spec.atol, rtol=0)

    def test_mismatched_request_lists_raise_the_library_error(self, case, run_population):
        _, _, agent = case
        users, items = _requests(run_population)
        with pytest.raises(DataError, match=r"2 user ids but 1 item ids"):
            agent.rate(users[:2], items[:1])
        with pytest.raises(DataError, match=r"2 users but 1 sessions"):
            agent.leave_probability(users[:2], [[]])

    def test_unknown_ids_get_the_documented_answer(self, case, run_population):
        _, spec, agent = case
        users, items = _requests(run_population)
        unknown_user = int(max(run_population.user_ids)) + 10_000
        unknown_item = int(max(run_population.dataset.items.index)) + 10_000
        for request in (([unknown_user], [items[0]]), ([users[0]], [unknown_item])):
            if spec.unknown_ids == "fallback":
                probs = agent.rate(*request).probs
                assert probs.shape == (1, agent.scale.n_levels)
                np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
            else:
                missing = request[0][0] if request[0][0] == unknown_user else request[1][0]
                with pytest.raises(RecsimError, match=re.escape(str(missing))):
                    agent.rate(*request)


    def test_the_empty_request_list_gets_an_empty_answer(self, case):
        _, _, agent = case
        batch = agent.rate([], [])
        assert batch.probs.shape == (0, agent.scale.n_levels) and batch.outside_mass.shape == (0,)
        assert np.asarray(agent.leave_probability([], [])).shape == (0,)


def _agent_classes() -> set[str]:
    """Classes under ``recsim_personas/agents`` that answer ``rate`` and ``leave_probability``
    (defined there or inherited from such a class); the Protocol itself left out."""
    root = Path(recsim_personas.__file__).parent / "agents"
    defined: dict[str, tuple[set[str], list[str]]] = {}
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
                bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
                defined[node.name] = (methods, bases)

    def answers(name: str, seen: frozenset = frozenset()) -> bool:
        if name not in defined or name in seen:
            return False
        methods, bases = defined[name]
        if "Protocol" in bases:
            return False
        if {"rate", "leave_probability"} <= methods:
            return True
        return any(answers(b, seen | {name}) for b in bases)

    return {name for name in defined if answers(name)}


def test_every_agent_class_and_kind_is_in_the_suite():
    from recsim_personas.envs.config import AgentKind

    assert _agent_classes() == set(AGENT_CLASSES.values())
    assert set(get_args(AgentKind)) - {"auto"} == set(AGENT_CASES) == set(AGENT_CLASSES)
