"""PersonaRec for RL code: the latent-factor users, masks, flat observations, evaluate_policy, SB3."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env

import recsim_personas.envs  # noqa: F401  (registers the ids)
from recsim_personas.agents.bias_agent import BiasUserAgent
from recsim_personas.agents.mf_agent import (
    LatentFactorUserAgent,
    heldout_residual_std,
    posterior_taste_deviations,
)
from recsim_personas.baselines.mf import BiasedMF
from recsim_personas.envs.config import PersonaRecConfig
from recsim_personas.envs.evaluation import evaluate_policy, user_schedule
from recsim_personas.envs.features import item_features, user_features
from recsim_personas.envs.persona_rec import PersonaRecEnv
from recsim_personas.envs.policies import make_policy
from recsim_personas.envs.population import build_agent, simulator_ratings, synthetic_population
from recsim_personas.envs.simulate import SimulationConfig, run_simulation
from recsim_personas.envs.vector import PersonaRecVectorEnv
from recsim_personas.errors import ConfigError, EnvError
from tests.tolerances import FP32_EPS

pytestmark = pytest.mark.synthetic_population(n_users=30, n_items=90, seed=0)


@pytest.fixture(scope="module")
def mf_agent(population):
    return build_agent(PersonaRecConfig(agent="mf"), population)


# -- the latent-factor users -----------------------------------------------------------------------
def test_mf_agent_means_are_the_models_predictions_clipped_with_tastes_mean(population):
    agent = LatentFactorUserAgent.fit(population.train, population.scale, tastes="mean")
    users = np.repeat(population.user_ids[:5], 4)
    items = np.tile(population.item_ids[:4], 5)
    expected = np.clip(agent.model.predict(users, items), 0.999, 5.0)  # scale 1-5
    np.testing.assert_allclose(agent.mean_rating(users, items), np.clip(expected, 1, 5), atol=1e-12)
    assert not agent.taste_deviations.any()
    # A pair outside the dense table (unknown item) falls back as the model does.
    out = agent.mean_rating([population.user_ids[0]], [10_000])
    assert out.shape == (1,) and 1.0 <= out[0] <= 5.0


def test_posterior_tastes_add_each_users_draw_to_the_estimate(population, mf_agent):
    """Default users: estimate + b_dev + q_i . p_dev, one draw per user from the ridge posterior."""
    model, dev = mf_agent.model, mf_agent.taste_deviations
    users, items = population.user_ids, population.item_ids
    assert dev.shape == (len(users), model.n_factors + 1) and dev.std() > 0
    u, i = 3, np.arange(6)
    estimate = model.predict(np.full(6, users[u]), items[i])
    q = model.item_factors_[np.searchsorted(model.item_ids_, items[i])]
    expected = np.clip(estimate + dev[u, 0] + q @ dev[u, 1:], 1.0, 5.0)
    np.testing.assert_allclose(mf_agent.mean_rating(np.full(6, users[u]), items[i]), expected, atol=1e-12)
    # A user's draw depends on the seed and the user, not on which other users are simulated.
    alone = posterior_taste_deviations(model, simulator_ratings(population), users[u:u + 1],
                                       noise_var=mf_agent_noise_var(population), seed=0)
    np.testing.assert_allclose(alone[0], dev[u])
    other = LatentFactorUserAgent.fit(population.train, population.scale, seed=1)
    assert not np.allclose(other.taste_deviations, dev)
    # Tastes + noise keep the held-out spread: noise^2 = held-out MSE - the tastes' variance.
    held = heldout_residual_std(population.train, population.scale, seed=0)
    taste_var = np.mean((mf_agent.mean_table - mf_agent._estimate_table()) ** 2)
    assert mf_agent.noise_std == pytest.approx(np.sqrt(held**2 - taste_var))
    with pytest.raises(ConfigError, match="tastes must be one of posterior, mean"):
        LatentFactorUserAgent.fit(population.train, population.scale, tastes="sampled")


def mf_agent_noise_var(population):
    return heldout_residual_std(simulator_ratings(population), population.scale, seed=0) ** 2


def test_mf_users_have_different_favourites_unlike_the_bias_users(population, mf_agent):
    """Bias users all rank the catalogue the same way; latent-factor users do not."""
    bias = BiasUserAgent.fit(population.train, population.scale)
    items = population.item_ids

    def favourites(agent):
        return {
            int(np.argmax(agent.mean_rating(np.full(len(items), u), items))) for u in population.user_ids
        }

    assert len(favourites(bias)) == 1
    assert len(favourites(mf_agent)) > 3


def test_mf_noise_is_the_heldout_residual(population):
    train = population.train
    std = heldout_residual_std(train, population.scale, seed=0)
    agent = LatentFactorUserAgent.fit(train, population.scale, seed=0, tastes="mean")
    assert agent.noise_std == pytest.approx(std)
    # Held-out error is larger than the error on the ratings the model was fitted on.
    model = BiasedMF(scale=population.scale, n_factors=50, reg=0.1, seed=0).fit(train)
    fitted = np.sqrt(np.mean((model.predict(train.user_id, train.item_id) - train.rating) ** 2))
    assert std > fitted
    with pytest.raises(ConfigError, match="holdout must be in"):
        heldout_residual_std(train, population.scale, holdout=1.5)


def test_simulator_ratings_leave_out_the_test_split(population):
    class Data:
        interactions = pd.concat([population.train, population.test, population.train.assign(user_id=999)])

    pop = synthetic_population(n_users=30, n_items=90, seed=0)
    pop.dataset = Data()
    fit = simulator_ratings(pop)
    test_pairs = set(zip(pop.test.user_id, pop.test.item_id))
    assert not test_pairs & set(zip(fit.user_id, fit.item_id))
    assert len(fit) == 2 * len(pop.train)  # the other user's ratings are kept
    pop.dataset = None
    assert len(simulator_ratings(pop)) == len(pop.train)


def test_v1_defaults_to_the_latent_factor_users_and_v0_to_the_bias_users(population):
    v1 = gym.make("PersonaRec-v1", population=population).unwrapped
    v0 = gym.make("PersonaRec-v0", population=population).unwrapped
    assert type(v1.agent) is LatentFactorUserAgent
    assert type(v0.agent) is BiasUserAgent
    assert PersonaRecConfig(cheap_agent="mf").resolved_agent == "mf"
    assert PersonaRecConfig(cheap_agent="mf", run_dir="x").resolved_agent == "lm"


def test_oracle_beats_popularity_by_more_on_mf_users_than_on_bias_users(population, mf_agent):
    bias = BiasUserAgent.fit(population.train, population.scale)
    margins = {}
    for name, agent in (("bias", bias), ("mf", mf_agent)):
        cfg = SimulationConfig(policies=("popularity", "oracle"), episodes=120, horizon=10,
                               oracle_candidates=None)
        rows = {r["policy"]: r["return"] for r in run_simulation(cfg, agent=agent, population=population,
                                                                 progress=False).results}
        margins[name] = rows["oracle"] / rows["popularity"] - 1
    assert margins["mf"] > margins["bias"]


# -- what the policy sees --------------------------------------------------------------------------
def test_action_masks_match_the_info_mask_and_the_observation(population, mf_agent):
    env = gym.make("PersonaRec-v1", population=population, agent=mf_agent, mask_in_obs=True).unwrapped
    obs, info = env.reset(seed=0)
    for _ in range(5):
        mask = env.action_masks()
        assert mask.dtype == np.bool_
        np.testing.assert_array_equal(mask, info["action_mask"].astype(bool))
        np.testing.assert_array_equal(obs["action_mask"], info["action_mask"])
        assert env.observation_space.contains(obs)
        obs, _, term, trunc, info = env.step(int(np.flatnonzero(mask)[0]))
        if term or trunc:
            break
    venv = PersonaRecVectorEnv(3, population=population, agent=mf_agent)
    _, vinfo = venv.reset(seed=0)
    np.testing.assert_array_equal(venv.action_masks(), vinfo["action_mask"].astype(bool))


def test_flat_observation_holds_the_history_as_item_features(population, mf_agent):
    env = gym.make("PersonaRec-v1", population=population, agent=mf_agent, observation="flat",
                   history_len=3, seen_items="allow").unwrapped
    feats = env.item_features
    assert feats.shape[0] == population.n_items and feats.dtype == np.float32
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, _, _, _, info = env.step(7)
    dim, n_p, d = population.embedding_dim, population.n_personas, feats.shape[1]
    pos = population.user_position(info["user_id"])
    np.testing.assert_allclose(obs[:dim], population.profile_embeddings[pos], atol=FP32_EPS)
    users = user_features(population)
    np.testing.assert_allclose(obs[dim : dim + users.shape[1]], users[pos], atol=FP32_EPS)
    dim += users.shape[1]
    assert obs[dim + population.personas[pos]] == 1.0
    hist = obs[dim + n_p : dim + n_p + 3 * d].reshape(3, d)
    np.testing.assert_allclose(hist[0], feats[7], atol=FP32_EPS)
    assert not hist[1:].any()  # padding
    ratings = obs[dim + n_p + 3 * d : dim + n_p + 3 * d + 3]
    assert ratings[0] == pytest.approx(info["rating"] / population.scale.max)
    assert obs[-1] == pytest.approx(1 / env.config.horizon)
    # The published layout names the same parts.
    layout = env.observation_layout
    assert list(layout) == ["profile", "user", "persona", "history_items", "history_ratings", "step",
                            "action_mask"]
    assert layout["profile"].start == 0 and layout["action_mask"].stop == len(obs)
    assert all(a.stop == b.start for a, b in zip(list(layout.values()), list(layout.values())[1:]))
    np.testing.assert_array_equal(obs[layout["history_items"]].reshape(3, d), hist)
    np.testing.assert_array_equal(obs[layout["history_ratings"]], ratings)
    np.testing.assert_array_equal(obs[layout["user"]], users[pos])
    with pytest.raises(EnvError, match="observation_layout exists only with observation='flat'"):
        _ = gym.make("PersonaRec-v1", population=population, agent=mf_agent).unwrapped.observation_layout


def logged_population(other_rating: float | None = None):
    """A synthetic population whose dataset also holds 30 other users (ids + 1000; ``other_rating``)."""
    pop = synthetic_population(n_users=30, n_items=90, seed=0)
    other = pop.train.assign(user_id=pop.train["user_id"] + 1000)
    if other_rating is not None:
        other = other.assign(rating=other_rating)

    class Data:
        interactions = pd.concat([pop.train, pop.test, other], ignore_index=True)

    pop.dataset = Data()
    return pop


@pytest.mark.parametrize("embedding", ["mf", "svd"])
@pytest.mark.parametrize("source", ["logged", "train"])
def test_item_features_come_from_what_a_recommender_knows(source, embedding):
    population = logged_population()
    feats = item_features(population, source=source, embedding=embedding, dim=4)
    users = user_features(population, source=source, embedding=embedding, dim=4)
    emb = 5 if embedding == "mf" else 4  # mf: [bias, 4 factors]
    assert feats.shape == (90, 2 + emb) and users.shape == (30, emb)
    assert np.abs(feats).max() <= 1.0 and np.abs(users).max() <= 1.0
    known = population.recommender_ratings(source)
    counts = known.groupby("item_id").size().reindex(population.item_ids, fill_value=0).to_numpy()
    np.testing.assert_allclose(feats[:, 0], np.log1p(counts) / np.log1p(counts.max()), atol=FP32_EPS)
    # Changing a test rating changes nothing ...
    pop2 = logged_population()
    pop2.test = pop2.test.assign(rating=1.0)
    pop2.dataset.interactions = pd.concat([pop2.train, pop2.test, pop2.train.assign(user_id=pop2.train["user_id"] + 1000)])
    np.testing.assert_array_equal(item_features(pop2, source=source, embedding=embedding, dim=4), feats)
    np.testing.assert_array_equal(user_features(pop2, source=source, embedding=embedding, dim=4), users)
    # ... while other users' logged ratings count only with source="logged".
    pop3 = logged_population(other_rating=1.0)
    changed = not np.array_equal(item_features(pop3, source=source, embedding=embedding, dim=4), feats)
    assert changed == (source == "logged")


def test_the_mf_policy_ranks_by_the_recommenders_own_factorisation(mf_agent):
    population = logged_population()
    env = PersonaRecVectorEnv(4, population=population, agent=mf_agent, horizon=4)
    policy = make_policy("mf", env, seed=0)
    user = int(population.user_ids[0])
    model = policy.recommender()
    scores = model.score_items(user, population.item_ids)
    obs, info = env.reset(seed=0)
    action = policy.act(obs, info)
    allowed = info["action_mask"][0].astype(bool)
    row_user = int(info["user_id"][0])
    best = np.flatnonzero(allowed)[np.argmax(model.score_items(row_user, population.item_ids)[allowed])]
    assert action[0] == best
    assert model.n_factors == 32 and len(scores) == population.n_items
    fitted_on = len(population.logged_ratings())
    assert fitted_on > len(population.train)  # the default recommender data is the logged ratings
    train_only = make_policy("mf", PersonaRecVectorEnv(4, population=population, agent=mf_agent,
                                                        recommender_data="train"), seed=0)
    assert not np.allclose(train_only.recommender().score_items(user, population.item_ids), scores)


def test_rgb_array_draws_one_bar_per_step_and_other_modes_are_type_errors(population, mf_agent):
    env = gym.make("PersonaRec-v1", population=population, agent=mf_agent, render_mode="rgb_array",
                   exit="none", horizon=4, seen_items="allow")
    check_env(env.unwrapped)
    env.reset(seed=0)
    _, _, _, _, info = env.step(0)
    img = env.render()
    assert img.shape == (64, 4 * 8, 3) and img.dtype == np.uint8
    height = int((img[:, 3] != 255).any(axis=1).sum())
    assert height == round(64 * info["rating"] / population.scale.max)
    assert (img[:, 8:] == 255).all()  # steps not taken yet stay blank
    # SB3's make_vec_env retries without render_mode only on TypeError.
    with pytest.raises(TypeError, match="render_mode 'human' is not supported"):
        PersonaRecEnv(population=population, agent=mf_agent, render_mode="human")


# -- evaluate_policy -------------------------------------------------------------------------------
def test_evaluate_policy_matches_simulate_for_a_builtin_policy(population, mf_agent):
    cfg = SimulationConfig(policies=("popularity",), episodes=40, horizon=8, n_envs=8, seed=3)
    row = run_simulation(cfg, agent=mf_agent, population=population, progress=False).results[0]
    env = PersonaRecVectorEnv(8, population=population, agent=mf_agent, horizon=8)
    result = evaluate_policy(env, make_policy("popularity", env, seed=3), episodes=40, seed=3)
    assert result.summary["return"][0] == pytest.approx(row["return"])
    assert result.to_dict()["session_length"] == pytest.approx(row["session_length"])


def test_evaluate_policy_takes_any_callable(population, mf_agent):
    options = {"horizon": 6, "seen_items": "penalty"}
    env = PersonaRecVectorEnv(4, population=population, agent=mf_agent, **options)
    first_allowed = evaluate_policy(env, lambda obs, info: info["action_mask"].argmax(axis=1), 12, 1)
    always_zero = evaluate_policy(env, lambda obs: np.zeros(len(obs["step"]), dtype=np.int64), 12, 1)

    class Predictor:  # an SB3-like model
        def predict(self, obs, deterministic=False, action_masks=None):
            assert deterministic and action_masks is not None
            return action_masks.argmax(axis=1), None

    via_predict = evaluate_policy(env, Predictor(), 12, 1)
    assert via_predict.summary["return"] == first_allowed.summary["return"]
    # Repeating item 0 earns seen penalties.
    assert always_zero.summary["return"][0] < first_allowed.summary["return"][0]
    assert len(user_schedule(population.user_ids, 12, 1)) == 12
    with pytest.raises(ConfigError, match="episodes must be an integer"):
        evaluate_policy(env, Predictor(), 0, 1)
    with pytest.raises(ConfigError, match="policy must be"):
        evaluate_policy(env, 42, 4, 1)


# -- stable-baselines3 -----------------------------------------------------------------------------
def test_sb3_make_vec_env_and_check_env(population, mf_agent):
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_checker import check_env as sb3_check_env
    from stable_baselines3.common.env_util import make_vec_env

    kwargs = {"population": population, "agent": mf_agent}
    venv = make_vec_env("PersonaRec-v1", n_envs=2, seed=0, env_kwargs=kwargs)
    obs = venv.reset()
    assert obs["history_items"].shape == (2, 10)
    for observation in ("dict", "flat"):
        sb3_check_env(gym.make("PersonaRec-v1", observation=observation, **kwargs).unwrapped, warn=False)


def test_sb3_vec_env_adapter_follows_sb3_autoreset(population, mf_agent):
    pytest.importorskip("stable_baselines3")
    from recsim_personas.envs.sb3 import SB3VecEnv

    venv = SB3VecEnv.make(num_envs=4, population=population, agent=mf_agent, horizon=3,
                          observation="flat", exit="none")
    venv.seed(0)
    obs = venv.reset()
    assert obs.shape == (4, venv.observation_space.shape[0])
    for _ in range(3):
        masks = np.stack(venv.env_method("action_masks"))
        obs, rewards, dones, infos = venv.step(masks.argmax(axis=1))
        assert rewards.shape == (4,) and dones.dtype == np.bool_
    assert dones.all()  # horizon 3: every session ended at the third step ...
    for info in infos:
        assert info["terminal_observation"].shape == obs.shape[1:]
        assert "user_id" in info and "rating" in info
    # ... and was reset inside that step: the new sessions are at step 0.
    assert np.allclose(obs[:, -1], 0.0)


def test_maskable_ppo_trains_on_the_adapter_and_respects_masks(population, mf_agent):
    pytest.importorskip("sb3_contrib")
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.vec_env import VecMonitor

    from recsim_personas.envs.sb3 import SB3VecEnv

    venv = VecMonitor(SB3VecEnv.make(num_envs=4, population=population, agent=mf_agent, horizon=5,
                                     observation="flat"))
    model = MaskablePPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0,
                        policy_kwargs={"net_arch": [32]}, device="cpu")
    model.learn(total_timesteps=256)
    env = PersonaRecVectorEnv(4, population=population, agent=mf_agent, horizon=5, observation="flat")
    result = evaluate_policy(env, model, episodes=8, seed=0)
    # The masked policy never recommends a seen item, so no step pays the -1 penalty.
    assert result.summary["return"][0] > 0
    assert np.all(result.per_episode["return"] >= 0)


def test_module_doctests_run():
    import doctest

    import recsim_personas.agents.mf_agent as mf
    import recsim_personas.envs.choice as choice
    import recsim_personas.envs.evaluation as evaluation
    import recsim_personas.envs.features as features
    import recsim_personas.envs.rewards as rewards

    for module in (mf, evaluation, features, choice, rewards):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        assert result.attempted > 0, module.__name__


def test_choice_model_and_reward_are_swappable_seams(population, mf_agent):
    from recsim_personas.envs.choice import ConditionalLogitChoice

    env = gym.make("PersonaRec-v1", population=population, agent=mf_agent, slate_size=3,
                   seen_items="allow").unwrapped
    engine = env._engine
    assert isinstance(engine.choice_model, ConditionalLogitChoice)

    class FirstSlot:
        def probabilities(self, expected, allowed):
            probs = np.zeros((expected.shape[0], expected.shape[1] + 1))
            probs[:, 0] = 1.0
            return probs

    engine.choice_model = FirstSlot()
    engine.reward_fn = lambda rating, rated, n_penalised: np.where(rated, 10.0 * rating, -7.0)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.array([5, 6, 7]))
    assert info["chosen_slot"] == 0 and info["item_id"] == population.item_ids[5]
    assert reward == pytest.approx(10.0 * info["rating"])


# -- shared population and cheap users across gym.make calls ---------------------------------------
def test_envs_on_one_population_share_its_cheap_user_model(population):
    one = gym.make("PersonaRec-v1", population=population).unwrapped
    two = gym.make("PersonaRec-v1", population=population, observation="flat").unwrapped
    assert one.agent is two.agent  # fitted once, as SB3's make_vec_env builds n envs
    other = gym.make("PersonaRec-v1", population=population, noise_std=0.1).unwrapped
    assert other.agent is not one.agent and other.agent.noise_std == 0.1
    bias = gym.make("PersonaRec-v0", population=population).unwrapped
    assert type(bias.agent).__name__ == "BiasUserAgent"


def test_the_default_population_is_loaded_once_per_process(tmp_path, monkeypatch):
    from recsim_personas.envs import population as pop_module
    from recsim_personas.envs.config import PersonaRecConfig

    built = []
    run_dir = tmp_path / "default"

    def fake_default(dataset, data_dir):
        run_dir.mkdir(exist_ok=True)
        (run_dir / "personas.parquet").write_bytes(b"x")
        built.append(dataset)
        return synthetic_population(n_users=10, n_items=30, seed=len(built))

    monkeypatch.setattr(pop_module, "default_population", fake_default)
    monkeypatch.setattr(pop_module, "default_run_dir", lambda dataset, data_dir: run_dir)
    monkeypatch.setattr(pop_module, "_LOADED_DEFAULTS", {})
    first = pop_module.load_population(PersonaRecConfig())
    assert pop_module.load_population(PersonaRecConfig()) is first and len(built) == 1
    # A rebuilt cache folder (new personas file) is read again.
    (run_dir / "personas.parquet").unlink()
    assert pop_module.load_population(PersonaRecConfig()) is not first and len(built) == 2
