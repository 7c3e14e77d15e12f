"""The batched PersonaRec-v0: one agent call per step, autoreset modes, equivalence with the single env."""

from __future__ import annotations

import re
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import recsim_personas.envs  # noqa: F401  (registers PersonaRec-v0)
from recsim_personas.envs.vector import PersonaRecVectorEnv, reserve_prefix_cache
from recsim_personas.errors import EnvError

pytestmark = [pytest.mark.synthetic_population(n_users=30, n_items=120, seed=1),
              pytest.mark.bias_agent(activity_levels=True)]


class CountingAgent:
    """Wraps an agent and records the size of every call."""

    def __init__(self, inner):
        self.inner = inner
        self.scale = inner.scale
        self.rate_calls: list[int] = []
        self.leave_calls: list[int] = []

    def rate(self, user_ids, item_ids):
        self.rate_calls.append(len(user_ids))
        return self.inner.rate(user_ids, item_ids)

    def leave_probability(self, user_ids, sessions):
        self.leave_calls.append(len(user_ids))
        return self.inner.leave_probability(user_ids, sessions)


def test_make_vec_uses_the_vector_entry_point(population, agent):
    envs = gym.make_vec("PersonaRec-v0", num_envs=4, population=population, agent=agent)
    assert isinstance(envs, PersonaRecVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.action_space.shape == (4,)
    obs, info = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    assert obs["profile"].shape == (4, population.embedding_dim)
    assert info["action_mask"].shape == (4, population.n_items) and info["_action_mask"].all()
    slate = gym.make_vec("PersonaRec-v0", num_envs=3, population=population, agent=agent, slate_size=2)
    assert slate.action_space.shape == (3, 2)


def test_one_rate_and_one_leave_call_per_step(population, agent):
    counting = CountingAgent(agent)
    envs = PersonaRecVectorEnv(8, population=population, agent=counting, seen_items="allow", exit="rule")
    envs.reset(seed=0)
    stepped = []
    for t in range(6):
        info = envs.step(np.arange(8) + t)[4]
        stepped.append(int(info.get("_item_id", np.zeros(8, bool)).sum()))
    # one call per step covering every sub-env that stepped (autoreset ones are reset instead);
    # exit="rule" decides in the env, so the agent is never asked to leave
    assert counting.rate_calls == stepped and counting.leave_calls == []
    counting = CountingAgent(agent)
    envs = PersonaRecVectorEnv(8, population=population, agent=counting, seen_items="allow", exit="agent", horizon=50)
    envs.reset(seed=0)
    envs.step(np.arange(8))
    assert counting.rate_calls == [8] and counting.leave_calls == [8]
    slate = CountingAgent(agent)
    envs = PersonaRecVectorEnv(8, population=population, agent=slate, slate_size=3, seen_items="allow")
    envs.reset(seed=0)
    envs.step(np.arange(24).reshape(8, 3))
    assert slate.rate_calls == [24] and slate.leave_calls == [8]


def _single_trajectory(population, agent, seed, actions, options):
    """What PersonaRecEnv does with ``seed`` and ``actions``, mirroring NEXT_STEP autoreset."""
    env = gym.make("PersonaRec-v0", population=population, agent=agent, **options).unwrapped
    obs, info = env.reset(seed=seed)
    out = [(obs, 0.0, False, False, info["user_id"])]
    done = False
    for action in actions:
        if done:
            obs, info = env.reset()
            out.append((obs, 0.0, False, False, info["user_id"]))
            done = False
            continue
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info["user_id"]))
        done = terminated or truncated
    return out


@pytest.mark.parametrize("options", [{"horizon": 4}, {"horizon": 3, "slate_size": 2, "exit": "rule"}])
def test_sub_env_i_equals_the_single_env_seeded_with_seed_plus_i(population, agent, options):
    n, steps, seed = 4, 14, 11
    rng = np.random.default_rng(0)
    shape = (steps, n) if options.get("slate_size", 1) == 1 else (steps, n, options["slate_size"])
    actions = rng.integers(0, population.n_items, size=shape)
    envs = PersonaRecVectorEnv(n, population=population, agent=agent, **options)
    obs, info = envs.reset(seed=seed)
    vec = [[({k: v[i] for k, v in obs.items()}, 0.0, False, False, info["user_id"][i])] for i in range(n)]
    for t in range(steps):
        obs, reward, terminated, truncated, info = envs.step(actions[t])
        for i in range(n):
            vec[i].append(({k: v[i] for k, v in obs.items()}, reward[i], terminated[i], truncated[i], info["user_id"][i]))
    resets = 0
    for i in range(n):
        single = _single_trajectory(population, agent, seed + i, actions[:, i], options)
        assert len(single) == len(vec[i])
        for (o1, r1, te1, tr1, u1), (o2, r2, te2, tr2, u2) in zip(single, vec[i], strict=True):
            assert u1 == u2 and r1 == r2 and te1 == te2 and tr1 == tr2
            for key in o1:
                assert np.array_equal(o1[key], o2[key]), key
        resets += sum(1 for step in single[1:] if step[4] is not None and step[1] == 0.0 and step[0]["step"] == 0)
    assert resets > 0  # the horizon forced autoresets, so they were compared too


def test_matches_gymnasiums_sync_vector_env(population, agent):
    """Gymnasium's SyncVectorEnv over single envs (seed + i each) and the batched env agree exactly."""
    kw = {"population": population, "agent": agent, "horizon": 3, "slate_size": 2}
    sync = gym.make_vec("PersonaRec-v0", num_envs=3, vectorization_mode="sync", **kw)
    batched = gym.make_vec("PersonaRec-v0", num_envs=3, vectorization_mode="vector_entry_point", **kw)
    assert isinstance(batched, PersonaRecVectorEnv)
    obs_a, _ = sync.reset(seed=21)
    batched.reset(seed=21)
    rng = np.random.default_rng(1)
    for _ in range(10):
        actions = rng.integers(0, population.n_items, (3, 2))
        out_a, out_b = sync.step(actions), batched.step(actions)
        for key in obs_a:
            assert np.array_equal(out_a[0][key], out_b[0][key]), key
        for x, y in zip(out_a[1:4], out_b[1:4], strict=True):
            assert np.array_equal(x, y)
        assert np.array_equal(out_a[4]["user_id"], out_b[4]["user_id"])


def test_next_step_autoreset_semantics(population, agent):
    envs = PersonaRecVectorEnv(2, population=population, agent=agent, horizon=2, exit="none", seen_items="allow")
    envs.reset(seed=0, options={"user_id": [3, 4]})
    envs.step(np.array([0, 1]))
    obs, reward, terminated, truncated, info = envs.step(np.array([2, 3]))
    assert truncated.all() and not terminated.any()
    obs, reward, terminated, truncated, info = envs.step(np.array([4, 5]))  # actions ignored: reset
    assert np.all(reward == 0) and not (terminated | truncated).any()
    assert np.all(obs["step"] == 0) and not info["_item_id"].any() and info["_user_id"].all()
    obs, reward, terminated, truncated, info = envs.step(np.array([4, 5]))
    assert np.all(obs["step"] == 1) and info["_item_id"].all()


def test_same_step_autoreset_returns_the_final_observation(population, agent):
    envs = PersonaRecVectorEnv(
        2, population=population, agent=agent, horizon=1, exit="none", autoreset_mode="SameStep"
    )
    envs.reset(seed=0)
    obs, _reward, _terminated, truncated, info = envs.step(np.array([0, 1]))
    assert truncated.all() and info["_final_obs"].all()
    assert info["final_obs"][0]["step"] == 1 and np.all(obs["step"] == 0)
    assert info["final_info"]["_item_id"].all() and not info["_item_id"].any()
    assert info["_user_id"].all() and info["step"].tolist() == [0, 0]
    # a sub-env that goes on keeps its step info next to one that was reset
    envs = PersonaRecVectorEnv(
        2, population=population, agent=agent, horizon=5, exit="none", autoreset_mode="SameStep"
    )
    envs.reset(seed=0)
    envs._engine.t[0] = 4  # sub-env 0 reaches the horizon on this step
    obs, _, _, truncated, info = envs.step(np.array([0, 1]))
    assert truncated.tolist() == [True, False]
    assert info["_item_id"].tolist() == [False, True] and info["step"].tolist() == [0, 1]
    assert info["_final_obs"].tolist() == [True, False] and obs["step"].tolist() == [0, 1]


def test_disabled_autoreset_needs_a_masked_reset(population, agent):
    envs = PersonaRecVectorEnv(
        2, population=population, agent=agent, horizon=1, exit="none", autoreset_mode=AutoresetMode.DISABLED
    )
    envs.reset(seed=0)
    envs.step(np.array([0, 1]))
    with pytest.raises(EnvError, match=re.escape("sub-environment(s) [0, 1] ended; with autoreset_mode=DISABLED")):
        envs.step(np.array([0, 1]))
    obs, info = envs.reset(options={"reset_mask": np.array([True, False])})
    assert info["_user_id"].tolist() == [True, False]
    assert obs["step"].tolist() == [0, 1]


def test_same_seed_same_rollout_and_reset_options(population, agent):
    def run(seed):
        envs = PersonaRecVectorEnv(5, population=population, agent=agent, slate_size=2)
        obs, info = envs.reset(seed=seed)
        rng = np.random.default_rng(3)
        trace = [obs["history_items"].copy(), info["user_id"].copy()]
        for _ in range(12):
            obs, reward, terminated, truncated, info = envs.step(rng.integers(0, population.n_items, (5, 2)))
            trace += [obs["history_items"].copy(), reward, terminated, truncated]
        return trace

    a, b, c = run(5), run(5), run(6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    envs = PersonaRecVectorEnv(3, population=population, agent=agent)
    _, info = envs.reset(seed=0, options={"user_id": [2, None, 7]})
    assert info["user_id"][0] == 2 and info["user_id"][2] == 7
    _, info = envs.reset(seed=[1, 2, 3], options={"user_id": 9})
    assert info["user_id"].tolist() == [9, 9, 9]


def test_batched_action_and_option_errors(population, agent):
    envs = PersonaRecVectorEnv(3, population=population, agent=agent, slate_size=2)
    with pytest.raises(EnvError, match=re.escape("call reset() before step()")):
        envs.step(np.zeros((3, 2), dtype=np.int64))
    envs.reset(seed=0)
    with pytest.raises(EnvError, match=re.escape(
        "actions have 3 items per slate but slate_size is 2: pass an integer array of shape (3, 2)"
    )):
        envs.step(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(EnvError, match=re.escape("actions must have shape (3, 2) (num_envs, slate), got (2, 2)")):
        envs.step(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(EnvError, match=re.escape("action must be an integer array of shape (3, 2)")):
        envs.step(np.zeros((3, 2)))
    with pytest.raises(EnvError, match=re.escape(f"action {population.n_items} is out of range")):
        envs.step(np.full((3, 2), population.n_items))
    with pytest.raises(EnvError, match=re.escape("options['user_id'] has 2 entries for 3 sub-environments")):
        envs.reset(options={"user_id": [1, 2]})
    with pytest.raises(EnvError, match=re.escape("unknown user id 77")):
        envs.reset(options={"user_id": [1, 2, 77]})
    with pytest.raises(EnvError, match=re.escape("reset got 2 seeds for 3 sub-environments")):
        envs.reset(seed=[1, 2])
    with pytest.raises(EnvError, match=re.escape("autoreset_mode must be one of")):
        PersonaRecVectorEnv(2, population=population, agent=agent, autoreset_mode="later")


def _smollm2_like_scorer() -> SimpleNamespace:
    """A stand-in scorer over SmolLM2-135M's shape (30 layers, 9 heads of 64, 3 key/value heads ->
    46,080 bytes per cached token in float32) with the default 1 GiB / 256-entry cache."""

    class Param:
        def element_size(self):
            return 4

    config = SimpleNamespace(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                             hidden_size=576, head_dim=64)
    model = SimpleNamespace(config=config, parameters=lambda: iter([Param()]))
    return SimpleNamespace(model=model, cache_bytes=2**30, cache_entries=256, device="cpu")


def test_prefix_cache_is_sized_for_every_session(agent):
    scorer = _smollm2_like_scorer()
    lm_like = SimpleNamespace(scorer=scorer)
    limit = reserve_prefix_cache(lm_like, 32)
    assert limit == scorer.cache_bytes == int(2 * 32 * 640 * 46_080 * 1.25) and scorer.cache_entries == 256
    reserve_prefix_cache(lm_like, 4)  # never lowered
    assert scorer.cache_bytes == limit
    assert reserve_prefix_cache(lm_like, 128) > limit and scorer.cache_entries == 512
    assert reserve_prefix_cache(agent, 32) is None  # the bias agent has no cache


def test_prefix_cache_holds_the_population_when_it_fits(monkeypatch):
    import recsim_personas.envs.prefix_cache as pc

    per_user = 2 * int(640 * 46_080 * 1.25)  # rating and exit prefixes
    scorer = _smollm2_like_scorer()
    lm_like = SimpleNamespace(scorer=scorer)
    monkeypatch.setattr(pc, "device_memory_bytes", lambda device: 24 * 2**30)
    assert reserve_prefix_cache(lm_like, 8, n_users=115) == 115 * per_user  # 8.5 GB < 12 GiB
    assert scorer.cache_entries == 4 * 115
    # Too large for half of the memory: only the live sessions are guaranteed.
    small = _smollm2_like_scorer()
    assert reserve_prefix_cache(SimpleNamespace(scorer=small), 32, n_users=6040) == 32 * per_user
    assert small.cache_entries == 256
    unknown = _smollm2_like_scorer()
    monkeypatch.setattr(pc, "device_memory_bytes", lambda device: None)
    assert reserve_prefix_cache(SimpleNamespace(scorer=unknown), 32, n_users=115) == 32 * per_user


def test_render_returns_one_text_per_session(population, agent):
    envs = PersonaRecVectorEnv(2, population=population, agent=agent, render_mode="ansi")
    envs.reset(seed=0)
    envs.step(np.array([1, 2]))
    texts = envs.render()
    assert len(texts) == 2 and all(t.startswith("PersonaRec-v0 | user") for t in texts)


@pytest.mark.integration
def test_lm_agent_gets_one_batched_call_with_mixed_adapters(tmp_path_factory, smollm2_tokenizer):
    from test_env import build_small_run, tiny_lm_agent

    from recsim_personas.envs.population import population_from_run_dir

    pop = population_from_run_dir(build_small_run(tmp_path_factory.mktemp("lmvec") / "run"))
    agent = tiny_lm_agent(smollm2_tokenizer, pop)
    counting = CountingAgent(agent)
    users = pop.user_ids[:4]
    assert len({int(p) for p in pop.personas[:4]}) == 2  # both adapters in the batch
    envs = PersonaRecVectorEnv(4, population=pop, agent=counting, exit="agent", seen_items="allow")
    envs.reset(seed=0, options={"user_id": users.tolist()})
    actions = np.array([0, 1, 2, 3])
    _, _, _, _, info = envs.step(actions)
    assert counting.rate_calls == [4] and counting.leave_calls == [4]
    # batching changes nothing: each (user, item) scored alone gives the same distribution
    for j, user in enumerate(users):
        alone = agent.rate([int(user)], [int(pop.item_ids[actions[j]])]).probs[0]
        assert np.abs(alone - info["rating_probs"][j]).max() < 1e-4
