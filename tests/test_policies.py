"""Policies acting in PersonaRec-v0: valid actions, what each one recommends, and a learner that learns."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

import recsim_personas.envs  # noqa: F401  (registers PersonaRec-v0)
from recsim_personas.agents.bias_agent import BiasUserAgent
from recsim_personas.envs.policies import (
    POLICY_NAMES,
    EpsilonGreedyBandit,
    OraclePolicy,
    Policy,
    PolicyContext,
    RandomPolicy,
    make_policy,
)
from recsim_personas.envs.population import UserPopulation
from recsim_personas.envs.vector import PersonaRecVectorEnv
from recsim_personas.errors import ConfigError

pytestmark = pytest.mark.synthetic_population(n_users=40, n_items=150, seed=2)


@pytest.fixture(scope="module")
def real_population() -> UserPopulation:
    """ml-latest-small (embedded) with the default split, without the memory stage."""
    from recsim_personas.data.registry import load_dataset
    from recsim_personas.data.splits import make_split
    from recsim_personas.envs.population import default_split_config

    ds = load_dataset("ml-latest-small")
    split = make_split(ds, default_split_config(ds))
    return UserPopulation.from_split(split.train, split.test, ds.scale, items=ds.items, name="ml-latest-small")


@pytest.mark.parametrize("name", POLICY_NAMES)
@pytest.mark.parametrize("slate_size", [1, 3])
def test_every_policy_acts_validly_in_single_and_vector_envs(name, slate_size, population, agent):
    env = gym.make("PersonaRec-v0", population=population, agent=agent, slate_size=slate_size).unwrapped
    policy = make_policy(name, env, seed=0)
    assert isinstance(policy, Policy) and policy.name == name
    obs, info = env.reset(seed=0)
    for _ in range(5):
        action = policy.act(obs, info)
        assert env.action_space.contains(np.asarray(action) if slate_size > 1 else int(action))
        chosen = np.atleast_1d(action)
        assert info["action_mask"][chosen].all()
        assert len(set(chosen.tolist())) == slate_size
        next_obs, reward, terminated, truncated, next_info = env.step(action)
        policy.update(obs, action, reward, next_obs, next_info)
        obs, info = next_obs, next_info
        if terminated or truncated:
            obs, info = env.reset()

    envs = PersonaRecVectorEnv(4, population=population, agent=agent, slate_size=slate_size)
    policy = make_policy(name, envs, seed=0)
    obs, info = envs.reset(seed=0)
    for _ in range(5):
        actions = policy.act(obs, info)
        assert actions.shape == ((4,) if slate_size == 1 else (4, slate_size))
        rows = np.arange(4)[:, None]
        assert info["action_mask"][rows, actions.reshape(4, -1)].all()
        next_obs, reward, terminated, truncated, next_info = envs.step(actions)
        policy.update(obs, actions, reward, next_obs, next_info)
        obs, info = next_obs, next_info


def test_popularity_and_als_follow_their_rankers(population, agent):
    env = gym.make("PersonaRec-v0", population=population, agent=agent, slate_size=2).unwrapped
    obs, info = env.reset(seed=0, options={"user_id": 9})
    for name in ("popularity", "als"):
        policy = make_policy(name, env, seed=0)
        action = policy.act(obs, info)
        top = policy.recommender().recommend(9, 2, exclude_seen=True)
        assert population.item_ids[action].tolist() == top.tolist()


def test_oracle_picks_the_best_expected_rating(population, agent):
    env = gym.make("PersonaRec-v0", population=population, agent=agent).unwrapped
    obs, info = env.reset(seed=0, options={"user_id": 3})
    exact = make_policy("oracle", env, n_candidates=None)
    allowed = np.flatnonzero(info["action_mask"])
    expected = agent.rate(np.full(len(allowed), 3), population.item_ids[allowed]).expectation(population.scale)
    assert exact.act(obs, info) == allowed[np.argmax(expected)]
    sampled = OraclePolicy(PolicyContext.from_env(env), seed=1, n_candidates=10)
    action = sampled.act(obs, info)
    assert info["action_mask"][action] == 1
    # the sampled oracle is the best of its sample, so it is never better than the exact one
    best = expected.max()
    assert agent.rate([3], [population.item_ids[action]]).expectation(population.scale)[0] <= best


def _mean_reward(envs, policy, seed: int, users: np.ndarray, horizon: int, learn: bool) -> float:
    obs, info = envs.reset(seed=seed, options={"user_id": users.tolist()})
    total, steps = 0.0, 0
    alive = np.ones(envs.num_envs, dtype=bool)
    for _ in range(horizon):
        actions = policy.act(obs, info)
        next_obs, reward, terminated, truncated, next_info = envs.step(actions)
        if learn:
            policy.update(obs, actions, reward, next_obs, next_info)
        live = alive & next_info["_item_id"]
        total += float(reward[live].sum())
        steps += int(live.sum())
        alive &= ~(terminated | truncated)
        obs, info = next_obs, next_info
    return total / max(steps, 1)


def test_epsilon_greedy_bandit_learns_to_beat_random(real_population):
    agent = BiasUserAgent.fit(real_population.train, real_population.scale)
    envs = PersonaRecVectorEnv(32, population=real_population, agent=agent, horizon=20)
    bandit = make_policy("bandit", envs, seed=0, epsilon=0.1)
    assert isinstance(bandit, EpsilonGreedyBandit)
    rng = np.random.default_rng(0)
    for episode in range(30):  # ~19k training steps
        users = rng.choice(real_population.user_ids, 32)
        _mean_reward(envs, bandit, 1000 + episode, users, 20, learn=True)
    assert bandit.counts.sum() > 10_000
    bandit.epsilon = 0.0
    random = RandomPolicy(PolicyContext.from_env(envs), seed=0)
    eval_users = rng.choice(real_population.user_ids, 32)
    learned = np.mean([_mean_reward(envs, bandit, s, eval_users, 20, learn=False) for s in range(3)])
    baseline = np.mean([_mean_reward(envs, random, s, eval_users, 20, learn=False) for s in range(3)])
    # random earns about 3.6 stars a step here and the exact oracle about 4.0
    assert learned > baseline + 0.1, (learned, baseline)


def test_make_policy_rejects_unknown_names_and_parameters(population, agent):
    env = gym.make("PersonaRec-v0", population=population, agent=agent)
    with pytest.raises(ConfigError, match=re.escape(
        "unknown policy 'popularty'; choose from random, popularity, als, mf, oracle, bandit. Did you mean 'popularity'?"
    )):
        make_policy("popularty", env)
    with pytest.raises(ConfigError, match=re.escape("policy 'random':")):
        make_policy("random", env, epsilon=0.1)
    with pytest.raises(ConfigError, match=re.escape("epsilon must be in [0, 1], got 2")):
        make_policy("bandit", env, epsilon=2)
