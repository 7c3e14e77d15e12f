"""PersonaRec-v0, the single environment: API conformance, determinism, options and errors."""

from __future__ import annotations

import doctest
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from conftest import build_small_run, tiny_lm_agent
from gymnasium.utils.env_checker import check_env

import recsim_personas.envs
from recsim_personas.agents.bias_agent import BiasUserAgent, discretized_gaussian
from recsim_personas.agents.exits import ExitRuleConfig, PatienceExitRule
from recsim_personas.data.dataset import RatingScale
from recsim_personas.envs import ENV_IDS
from recsim_personas.envs.config import PersonaRecConfig
from recsim_personas.envs.persona_rec import PersonaRecEnv
from recsim_personas.envs.population import (
    UserPopulation,
    population_from_run_dir,
)
from recsim_personas.errors import ConfigError, EnvError

pytestmark = [pytest.mark.synthetic_population(n_users=40, n_items=150, seed=0),
              pytest.mark.bias_agent(activity_levels=True)]


def make(population, agent, **kw) -> PersonaRecEnv:
    return gym.make("PersonaRec-v0", population=population, agent=agent, **kw).unwrapped


def rollout(env, seed: int, steps: int, action_seed: int = 0):
    """Reset with ``seed`` and step with seeded random valid actions (autoreset by hand)."""
    rng = np.random.default_rng(action_seed)
    obs, info = env.reset(seed=seed)
    trace = [(obs, info)]
    for _ in range(steps):
        allowed = np.flatnonzero(info["action_mask"])
        k = env.config.slate_size
        action = rng.choice(allowed, size=k, replace=False)
        obs, reward, terminated, truncated, info = env.step(int(action[0]) if k == 1 else action)
        trace.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            obs, info = env.reset()
            trace.append((obs, info))
    return trace


def assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b)
    else:
        assert a == b, (a, b)


# -- registration ---------------------------------------------------------------------------------------
def test_registered_with_string_entry_points():
    spec = gym.spec("PersonaRec-v0")
    assert spec.entry_point == "recsim_personas.envs.persona_rec:PersonaRecEnv"
    assert spec.vector_entry_point == "recsim_personas.envs.vector:PersonaRecVectorEnv"
    assert spec.max_episode_steps is None
    assert ENV_IDS == ("PersonaRec-v0", "PersonaRec-v1")
    # v0 is frozen on the bias users; v1 defaults to the latent-factor users.
    assert spec.kwargs == {}
    assert gym.spec("PersonaRec-v1").kwargs == {"cheap_agent": "mf"}


def test_importing_the_registration_loads_no_torch_and_no_pandas():
    code = (
        "import sys, recsim_personas.envs, gymnasium as gym; gym.spec('PersonaRec-v0'); "
        "heavy = [m for m in ('torch', 'transformers', 'pandas', 'sentence_transformers') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_importing_the_package_registers_the_env():
    """``import recsim_personas`` registers PersonaRec-v0, so ``recsim_personas:PersonaRec-v0`` resolves."""
    code = (
        "import gymnasium as gym, sys; import recsim_personas; "
        "assert 'PersonaRec-v0' in gym.registry, 'not registered'; "
        "assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


# -- check_env -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"slate_size": 3},
        {"exit": "rule", "reward": "normalized"},
        {"rating": "expectation", "reward": "like", "seen_items": "allow"},
        {"observation": "flat"},
        {"observation": "flat", "mask_in_obs": True, "slate_size": 2},
        {"mask_in_obs": True},
    ],
    ids=["default", "slate", "rule-exit", "expectation", "flat", "flat-mask-slate", "dict-mask"],
)
def test_check_env_passes_with_the_cheap_agent(env_id, options, population, agent):
    env = gym.make(env_id, population=population, agent=agent, render_mode="ansi", **options)
    # Every warning counts (the checker's and the library's), except the third-party ones that
    # pyproject.toml's filterwarnings names: catch_warnings keeps those filters.
    with warnings.catch_warnings(record=True) as caught:
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []


def test_observation_flattens(population, agent):
    env = make(population, agent)
    obs, _ = env.reset(seed=0)
    flat = gym.spaces.flatten(env.observation_space, obs)
    assert flat.shape == (gym.spaces.flatdim(env.observation_space),)
    assert env.observation_space.contains(obs)
    # history_items one-hot: history_len x (n_items + 1); padding = n_items
    assert np.all(obs["history_items"] == population.n_items)
    assert np.all(obs["history_ratings"] == 0)


# -- determinism and pickling -----------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"slate_size": 3, "exit": "rule"}])
def test_two_envs_with_the_same_seed_roll_out_identically(population, agent, options):
    a = rollout(make(population, agent, **options), seed=7, steps=60)
    b = rollout(make(population, agent, **options), seed=7, steps=60)
    assert_same(a, b)
    c = rollout(make(population, agent, **options), seed=8, steps=60)
    with pytest.raises(AssertionError):
        assert_same(a, c)


def test_env_pickles_and_the_copy_continues_identically(population, agent):
    env = make(population, agent, render_mode="ansi")
    env.reset(seed=3)
    env.step(0)
    copy = pickle.loads(pickle.dumps(env))
    for action in (5, 9, 11):
        out_a, out_b = env.step(action), copy.step(action)
        assert_same(out_a, out_b)
        if out_a[2] or out_a[3]:
            break
    assert env.render() == copy.render()


# -- dynamics ---------------------------------------------------------------------------------------------
def test_step_info_reports_the_rated_item(population, agent):
    env = make(population, agent, seen_items="allow", exit="none")
    obs, info = env.reset(seed=0, options={"user_id": 5})
    assert info["user_id"] == 5 and info["persona"] == 5 % 3
    obs, reward, terminated, _truncated, info = env.step(12)
    assert info["item_id"] == population.item_ids[12] == 12
    assert info["item_title"] == "Item 12 (genre 0)"
    assert info["rated"] and reward == info["rating"]
    assert info["rating"] in population.scale.levels
    probs = info["rating_probs"]
    assert probs.shape == (population.scale.n_levels,) and probs.sum() == pytest.approx(1.0)
    assert info["expected_rating"] == pytest.approx(probs @ population.scale.levels)
    assert info["exit_probability"] == 0.0 and not terminated
    assert obs["history_items"][0] == 12 and obs["history_ratings"][0] == info["rating"]
    assert obs["step"] == 1


def test_ratings_are_sampled_from_the_agent_distribution(population, agent):
    env = make(population, agent, seen_items="allow", exit="none", horizon=1)
    user, item = 7, 20
    ratings = []
    for seed in range(300):
        env.reset(seed=seed, options={"user_id": user})
        ratings.append(env.step(item)[4]["rating"])
    expected = agent.rate([user], [item]).expectation(population.scale)[0]
    assert np.mean(ratings) == pytest.approx(expected, abs=0.15)
    assert len(set(ratings)) > 1


def test_expectation_mode_uses_the_mean(population, agent):
    env = make(population, agent, rating="expectation", seen_items="allow")
    env.reset(seed=0, options={"user_id": 3})
    info = env.step(4)[4]
    assert info["rating"] == pytest.approx(info["expected_rating"])


@pytest.mark.parametrize("reward", ["rating", "normalized", "like"])
def test_reward_options(population, agent, reward):
    env = make(population, agent, reward=reward, seen_items="allow", exit="none", like_threshold=4.0)
    _, info = env.reset(seed=1)
    scale = population.scale
    for action in range(10):
        _, r, _, _, info = env.step(action)
        rating = info["rating"]
        expected = {
            "rating": rating,
            "normalized": (rating - scale.min) / (scale.max - scale.min),
            "like": float(rating >= 4.0),
        }[reward]
        assert r == pytest.approx(expected)


def test_seen_items_penalty_mask_and_allow(population, agent):
    user = int(population.user_ids[0])
    seen_item = int(population.seen_items(0)[0])
    env = make(population, agent, seen_penalty=-2.0, exit="none")
    _, info = env.reset(seed=0, options={"user_id": user})
    assert info["action_mask"][seen_item] == 0 and info["action_mask"].dtype == np.int8
    obs, reward, _, _, info = env.step(seen_item)
    assert reward == -2.0 and not info["rated"] and info["n_seen"] == 1
    assert obs["history_items"][0] == seen_item and obs["history_ratings"][0] == 0.0
    # an item becomes seen once the user rated it in the session
    fresh = int(np.flatnonzero(info["action_mask"])[0])
    _, _, _, _, info = env.step(fresh)
    assert info["rated"] and info["action_mask"][fresh] == 0

    masked = make(population, agent, seen_items="mask")
    masked.reset(seed=0, options={"user_id": user})
    title = population.item_titles[seen_item]
    msg = (
        f"item index {seen_item} (item id {population.item_ids[seen_item]}, {title!r}) is masked: "
        f"user {user} has already seen it; choose among the items where info['action_mask'] == 1, "
        "or make the env with seen_items='penalty'"
    )
    with pytest.raises(EnvError, match=re.escape(msg)):
        masked.step(seen_item)

    allow = make(population, agent, seen_items="allow")
    _, info = allow.reset(seed=0, options={"user_id": user})
    assert info["action_mask"].all()
    assert allow.step(seen_item)[4]["rated"]


def test_slate_choice_model(population, agent):
    levels = population.scale.levels
    # a picky user with an unattractive outside option picks the best slate item
    env = make(population, agent, slate_size=4, choice_temperature=1e-3, no_choice_utility=1.0,
               seen_items="allow", exit="none")
    env.reset(seed=0, options={"user_id": 2})
    obs, reward, _, _, info = env.step(np.array([1, 2, 3, 4]))
    assert info["choice_probs"].shape == (5,) and info["choice_probs"].sum() == pytest.approx(1.0)
    expected = agent.rate([2] * 4, population.item_ids[[1, 2, 3, 4]]).probs @ levels
    assert info["slate_expected_ratings"] == pytest.approx(expected)
    assert info["chosen_slot"] == int(np.argmax(expected))
    assert info["item_id"] == population.item_ids[1 + int(np.argmax(expected))]
    assert reward == info["rating"]
    # an outside option worth the top of the scale wins against a mediocre slate
    env = make(population, agent, slate_size=2, choice_temperature=1e-3, no_choice_utility=5.0,
               seen_items="allow", exit="none")
    env.reset(seed=0, options={"user_id": 2})
    obs, reward, _, _, info = env.step(np.array([1, 2]))
    assert info["chosen_slot"] == -1 and not info["rated"] and reward == 0.0
    assert info["item_id"] == -1 and info["item_title"] == ""
    assert obs["history_items"][0] == 1 and obs["history_ratings"][0] == 0.0


def test_exit_modes(population, agent):
    env = make(population, agent, exit="none", horizon=5, seen_items="allow")
    env.reset(seed=0)
    for t in range(5):
        _, _, terminated, truncated, info = env.step(t)
        assert not terminated and truncated == (t == 4)
    with pytest.raises(EnvError, match=re.escape("the session has ended (terminated or truncated); call reset()")):
        env.step(0)

    impatient = ExitRuleConfig(initial_patience=(0.1, 0.1, 0.1), base=0.5, drop_per_unsatisfying=5.0)
    env = make(population, agent, exit="rule", exit_rule=impatient, horizon=50)
    ends = []
    for seed in range(20):
        env.reset(seed=seed)
        for t in range(50):
            _, _, terminated, truncated, info = env.step(int(np.flatnonzero(info["action_mask"])[0]) if t else t)
            assert info["exit_probability"] >= 0.5
            if terminated or truncated:
                ends.append((terminated, t))
                break
    assert all(term for term, _ in ends) and np.mean([t for _, t in ends]) < 3


def test_agent_exit_uses_the_patience_rule_of_the_bias_agent(population, agent):
    env = make(population, agent, exit="agent", seen_items="allow")
    _, info = env.reset(seed=0, options={"user_id": 4})
    _, _, _, _, info = env.step(0)
    rule = PatienceExitRule()
    level = population.activity_levels[population.user_position(4)]
    rating = info["rating"]
    patience = rule.update(rule.initial(np.array([level])), np.array([rating]), rule.initial(np.array([level])))
    assert info["exit_probability"] == pytest.approx(rule.leave_probability(patience)[0])


def test_unrated_steps_reach_the_bias_agent_as_unsatisfying(population, agent):
    user = int(population.user_ids[0])
    seen_item = int(population.seen_items(0)[0])
    env = make(population, agent, exit="agent")
    env.reset(seed=0, options={"user_id": user})
    info = env.step(seen_item)[4]
    rule = PatienceExitRule()
    p0 = rule.initial(population.activity_levels[:1])
    expected = rule.leave_probability(rule.update(p0, np.array([np.nan]), p0))[0]
    assert not info["rated"] and info["exit_probability"] == pytest.approx(expected)
    assert info["exit_probability"] > rule.leave_probability(p0)[0]


def test_render_ansi_prints_the_session(population, agent):
    env = make(population, agent, render_mode="ansi", exit="none", horizon=2, seen_items="allow")
    assert "no session yet" in env.render()
    env.reset(seed=0, options={"user_id": 6})
    env.step(3)
    env.step(6)
    text = env.render()
    assert text.splitlines()[0].startswith("PersonaRec-v0 | user 6 | persona 0 | activity")
    assert "Item 3 (genre 0): rated" in text and "Item 6 (genre 0): rated" in text
    assert text.rstrip().endswith("-> horizon reached")


# -- errors -----------------------------------------------------------------------------------------------
def test_invalid_actions_raise_clear_errors(population, agent):
    env = make(population, agent)
    with pytest.raises(EnvError, match=re.escape("call reset() before step()")):
        env.step(0)
    env.reset(seed=0)
    n = population.n_items
    with pytest.raises(EnvError, match=re.escape(
        f"action {n} is out of range: the catalogue has {n} items, so valid indices are 0..{n - 1} "
        "(env.unwrapped.item_ids[i] is the item id of index i)"
    )):
        env.step(n)
    with pytest.raises(EnvError, match=re.escape("action -1 is out of range")):
        env.step(-1)
    with pytest.raises(EnvError, match=re.escape(
        f"action must be an integer item index (int or numpy integer) in 0..{n - 1}, got float 3.0; "
        "env.unwrapped.item_index(item_id) maps an item id to its index"
    )):
        env.step(3.0)
    with pytest.raises(EnvError, match=re.escape("action must be an integer item index")):
        env.step("3")
    with pytest.raises(EnvError, match=re.escape("action has 2 items but slate_size is 1: pass one integer item index")):
        env.step([1, 2])

    slate = make(population, agent, slate_size=3)
    slate.reset(seed=0)
    with pytest.raises(EnvError, match=re.escape(
        "action has 2 items but slate_size is 3: pass an integer array of shape (3,)"
    )):
        slate.step(np.array([1, 2]))
    with pytest.raises(EnvError, match=re.escape(
        f"action must be an integer array of shape (3,) holding item indices in 0..{n - 1}, got dtype float64"
    )):
        slate.step(np.array([1.0, 2.0, 3.0]))


def test_unknown_user_id_suggests_close_ids(population, agent):
    env = make(population, agent)
    with pytest.raises(EnvError, match=re.escape(
        f"unknown user id 400: the population {population.name!r} has 40 users (ids 1..40, "
        "see env.unwrapped.population.user_ids). Did you mean 40"
    )):
        env.reset(seed=0, options={"user_id": 400})
    with pytest.raises(EnvError, match=re.escape("unknown reset option(s) ['user']")):
        env.reset(options={"user": 3})


def test_invalid_options_are_reported_together(population, agent):
    with pytest.raises(ConfigError) as err:
        make(population, agent, horizon=0, reward="ratings", seen_items="hide")
    msg = str(err.value)
    assert "horizon must be an integer >= 1, got 0" in msg
    assert "reward must be one of rating, normalized, like, got 'ratings'. Did you mean 'rating'?" in msg
    assert "seen_items must be one of penalty, mask, allow, got 'hide'" in msg
    with pytest.raises(ConfigError, match=re.escape("unknown PersonaRec-v0 option(s): 'horizn' (did you mean 'horizon'?)")):
        make(population, agent, horizn=5)
    with pytest.raises(ConfigError, match=re.escape("like_threshold=7.0 lies outside the rating scale 1-5")):
        make(population, agent, like_threshold=7.0)
    with pytest.raises(EnvError, match=re.escape("render_mode 'human' is not supported")):
        PersonaRecEnv(population=population, agent=agent, render_mode="human")


def test_agent_must_implement_the_protocol_on_the_same_scale(population, agent):
    with pytest.raises(EnvError, match=re.escape("agent object does not implement the UserAgent protocol")):
        make(population, object())
    other = BiasUserAgent.fit(population.train.assign(rating=population.train["rating"] / 2), RatingScale(0.5, 2.5, 0.5))
    with pytest.raises(EnvError, match=re.escape("agent rates on the scale")):
        make(population, other)


def test_config_round_trips_and_resolves_the_agent():
    cfg = PersonaRecConfig(horizon=7, slate_size=2, exit_rule=ExitRuleConfig(base=0.1), run_dir="runs/x")
    assert PersonaRecConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.resolved_agent == "lm" and PersonaRecConfig().resolved_agent == "bias"
    assert PersonaRecConfig(run_dir="runs/x", agent="bias").resolved_agent == "bias"
    with pytest.raises(ConfigError, match=re.escape("agent='lm' needs run_dir")):
        PersonaRecConfig(agent="lm")
    assert set(PersonaRecConfig.field_help()) >= {"horizon", "slate_size", "exit", "history_len"}


# -- run folders ------------------------------------------------------------------------------------------
def _fake_run_folder(root: Path, n_personas: int = 2) -> Path:
    run = root / "run"
    for name in ("split/config.json", "profiles.parquet", "embeddings/profiles.npy"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("{}")
    pd.DataFrame({"user_id": [1, 2, 3], "persona": [0, 1, n_personas - 1]}).to_parquet(run / "personas.parquet")
    return run


def test_run_folder_missing_adapters_names_them_and_the_command(tmp_path):
    run = _fake_run_folder(tmp_path)
    (run / "adapters" / "persona_0__ms").mkdir(parents=True)
    (run / "adapters" / "persona_0__ms" / "adapter_config.json").write_text("{}")
    msg = (
        f"run folder {run} is missing persona adapter(s) persona_1__ms under {run / 'adapters'} "
        "(the LM agent needs one per persona for memory mode 'ms'); train them with "
        f"`recsim-personas train {run} --memory ms --adapters persona`, or use the cheap agent: "
        "gym.make('PersonaRec-v0', run_dir=..., agent='bias')"
    )
    with pytest.raises(EnvError, match=re.escape(msg)):
        gym.make("PersonaRec-v0", run_dir=str(run))
    with pytest.raises(EnvError, match=re.escape("persona_0__msml, persona_1__msml")):
        gym.make("PersonaRec-v0", run_dir=str(run), memory_mode="msml")


def test_missing_or_incomplete_run_folder(tmp_path):
    with pytest.raises(EnvError, match=re.escape(f"run_dir {str(tmp_path / 'nope')!r} does not exist")):
        population_from_run_dir(tmp_path / "nope")
    run = _fake_run_folder(tmp_path)
    (run / "personas.parquet").unlink()
    with pytest.raises(EnvError, match=re.escape(
        f"run folder {run} is incomplete: missing personas.parquet; run `recsim-personas memory --out {run}` first"
    )):
        population_from_run_dir(run)


# -- the bias agent and the exit rule -------------------------------------------------------------------------
def test_discretized_gaussian_matches_the_normal_cdf():
    import math

    scale = RatingScale(0.5, 5.0, 0.5)
    mean, std = np.array([3.3, 0.2, 5.4]), 0.7
    got = discretized_gaussian(mean, std, scale)
    edges = np.r_[-np.inf, scale.levels[:-1] + 0.25, np.inf]
    cdf = np.vectorize(lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2.0))))
    want = np.diff(cdf((edges[None, :] - mean[:, None]) / std), axis=1)
    assert np.abs(got - want).max() < 1e-6
    assert np.allclose(got.sum(axis=1), 1.0)


def test_bias_agent_follows_the_bias_predictor(population, agent):
    from recsim_personas.baselines.bias import BiasPredictor

    pred = BiasPredictor(scale=population.scale).fit(population.train)
    users, items = np.array([1, 2, 3, 999]), np.array([0, 5, 7, 8])
    assert np.allclose(agent.mean_rating(users, items), pred.predict(users, items))
    residual = pred.predict(population.train["user_id"], population.train["item_id"]) - population.train["rating"]
    assert agent.noise_std == pytest.approx(float(np.sqrt(np.mean(residual**2))))
    assert agent.rate(users, items).probs.shape == (4, population.scale.n_levels)


def test_bias_agent_leave_probability_replays_growing_sessions_incrementally(population, agent):
    from recsim_personas.agents.protocol import SessionEvent

    rng = np.random.default_rng(0)
    users = population.user_ids[:3]
    sessions: list[list[SessionEvent]] = [[], [], []]
    rule = PatienceExitRule()
    for _ in range(8):
        for s in sessions:
            s.append(SessionEvent(int(rng.integers(100)), float(rng.choice([1.0, 3.0, 5.0, np.nan]))))
        got = agent.leave_probability(users, sessions)
        fresh = [[e.rating for e in s] for s in sessions]
        levels = agent.activity_level(users)
        want = rule.leave_probability(rule.patience_after(levels, fresh))
        assert np.allclose(got, want)
    # an edited session (its last event replaced) is replayed from the start
    sessions[0][-1] = SessionEvent(1, 1.0)
    want = rule.leave_probability(rule.patience_after(agent.activity_level(users[:1]), [[e.rating for e in sessions[0]]]))
    assert agent.leave_probability(users[:1], sessions[:1])[0] == pytest.approx(want[0])


def test_module_doctests_run():
    import recsim_personas.agents.bias_agent as bias_agent
    import recsim_personas.agents.exits as exits
    import recsim_personas.envs.config as config
    import recsim_personas.envs.persona_rec as persona_rec

    for module in (persona_rec, config, exits, bias_agent, recsim_personas.envs):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        assert result.attempted > 0, module.__name__


# -- the language-model agent -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lm_population(small_run_dir) -> UserPopulation:
    return population_from_run_dir(small_run_dir)


@pytest.mark.integration
@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("options", [{}, {"slate_size": 2, "exit": "rule"}], ids=["default", "slate"])
def test_check_env_passes_with_a_tiny_lm_agent(env_id, options, lm_population, smollm2_tokenizer):
    agent = tiny_lm_agent(smollm2_tokenizer, lm_population)
    env = gym.make(env_id, population=lm_population, agent=agent, render_mode="ansi", **options)
    # Every warning counts (the checker's and the library's), except the third-party ones that
    # pyproject.toml's filterwarnings names: catch_warnings keeps those filters.
    with warnings.catch_warnings(record=True) as caught:
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    env.reset(seed=0)
    action = np.array([0, 1]) if options else 0
    _, reward, _, _, info = env.step(action)
    if info["rated"]:
        assert info["rating_probs"].sum() == pytest.approx(1.0) and reward == info["rating"]
    assert 0.0 <= info["exit_probability"] <= 1.0


@pytest.mark.integration
def test_lm_agent_rollouts_are_seeded(lm_population, smollm2_tokenizer):
    agent = tiny_lm_agent(smollm2_tokenizer, lm_population)
    a = rollout(make(lm_population, agent), seed=5, steps=6)
    b = rollout(make(lm_population, agent), seed=5, steps=6)
    assert_same(a, b)


@pytest.mark.integration
@pytest.mark.parametrize("vector", [False, True], ids=["single", "vector"])
def test_warm_cache_option_computes_every_users_prefixes_up_front(lm_population, smollm2_tokenizer, vector):
    from recsim_personas.envs.vector import PersonaRecVectorEnv

    agent = tiny_lm_agent(smollm2_tokenizer, lm_population)
    kind = (lambda **kw: PersonaRecVectorEnv(2, **kw)) if vector else (lambda **kw: PersonaRecEnv(**kw))
    env = kind(population=lm_population, agent=agent, warm_cache=True)
    n = lm_population.n_users
    assert agent.scorer.cache_info()["misses"] == 2 * n  # rating and exit prefix of every user
    env.reset(seed=0)
    env.step(np.zeros(2, dtype=np.int64) if vector else 0)
    assert agent.scorer.cache_info()["misses"] == 2 * n  # the steps computed none
    cold = tiny_lm_agent(smollm2_tokenizer, lm_population)
    kind(population=lm_population, agent=cold, exit="rule", warm_cache=True)
    assert cold.scorer.cache_info()["misses"] == n  # no exit prompts without exit="agent"
    with pytest.raises(ConfigError, match="warm_cache must be True or False"):
        PersonaRecConfig(warm_cache="yes")


@pytest.mark.integration
def test_make_with_a_trained_run_folder_builds_the_lm_agent(tmp_path, smollm2_tokenizer):
    """run_dir + agent='auto' loads the base model and every persona adapter by name."""
    from conftest import build_tiny_llama
    from peft import LoraConfig, get_peft_model

    run = build_small_run(tmp_path / "run")
    model_dir = tmp_path / "tiny-model"
    build_tiny_llama(smollm2_tokenizer).save_pretrained(model_dir)
    smollm2_tokenizer.save_pretrained(model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    for k in range(2):
        adapter = get_peft_model(build_tiny_llama(smollm2_tokenizer, seed=k), lora)
        adapter.save_pretrained(run / "adapters" / f"persona_{k}__ms")
    env = gym.make("PersonaRec-v0", run_dir=str(run), model=str(model_dir), device="cpu", dtype="float32")
    base = env.unwrapped
    assert type(base.agent).__name__ == "LMUserAgent"
    assert set(base.agent.scorer.adapters) >= {"persona_0__ms", "persona_1__ms"}
    check_env(base)


# -- the embedded default -------------------------------------------------------------------------------------
@pytest.mark.integration
def test_default_env_runs_offline_with_no_arguments():
    env = gym.make("recsim_personas.envs:PersonaRec-v0")
    base = env.unwrapped
    assert type(base.agent).__name__ == "BiasUserAgent"
    assert base.population.n_users == 115 and base.population.n_personas == 4
    assert base.population.embedding_dim == 384
    check_env(base)
    assert base.population.item_titles[base.item_index(1)] == "Toy Story (1995)"


def test_exit_calibration_options_are_checked_and_round_trip():
    cfg = PersonaRecConfig(exit_calibration="raw", exit_hazard=[0.3, 0.2, 0.1])
    assert cfg.exit_hazard == (0.3, 0.2, 0.1)
    assert PersonaRecConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=re.escape("exit_hazard must be three probabilities")):
        PersonaRecConfig(exit_hazard=(0.2, 0.3))
    with pytest.raises(ConfigError, match=re.escape("Did you mean 'anchored'?")):
        PersonaRecConfig(exit_calibration="anchor")
