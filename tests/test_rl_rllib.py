"""RLlib: one PPO iteration with one env runner on the cheap users (about 100 s: Ray's start-up)."""

from __future__ import annotations

import pytest

from recsim_personas.envs.population import synthetic_population


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_one_rllib_ppo_iteration_with_one_env_runner():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.rllib")
    from ray.rllib.algorithms.ppo import PPOConfig

    from recsim_personas.envs.rllib import register_rllib_env

    name = register_rllib_env("PersonaRec-test")
    population = synthetic_population(n_users=20, n_items=60, seed=0)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        config = (
            PPOConfig()
            .environment(name, env_config={"population": population, "horizon": 5})
            .env_runners(num_env_runners=1, num_envs_per_env_runner=1, rollout_fragment_length=64)
            .training(train_batch_size_per_learner=64, minibatch_size=32, num_epochs=1)
            .learners(num_learners=0)
        )
        algo = config.build_algo()
        result = algo.train()
        algo.stop()
    finally:
        ray.shutdown()
    runners = result["env_runners"]
    assert runners["num_env_steps_sampled_lifetime"] >= 64
    # Returns on this population lie between all-penalties and all-5-star sessions.
    assert -5.0 <= runners["episode_return_mean"] <= 25.0
