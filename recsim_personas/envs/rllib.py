"""RLlib on ``PersonaRec``: an env creator that works inside RLlib's env runners.

RLlib builds environments in separate worker processes that have not imported this package, so
``config.environment("PersonaRec-v1")`` fails there with ``NameNotFound``; and RLlib has no default
encoder for the ``Dict`` observation. :func:`register_rllib_env` registers a creator that imports
the package in the worker and builds the flat ``Box`` observation (``observation="flat"``), so no
connector is needed::

    from ray.rllib.algorithms.ppo import PPOConfig
    from recsim_personas.envs.rllib import register_rllib_env

    name = register_rllib_env()                       # "PersonaRec-v1", latent-factor users
    config = (PPOConfig().environment(name, env_config={"horizon": 20})
              .env_runners(num_env_runners=1))
    algo = config.build_algo()
    print(algo.train()["env_runners"]["episode_return_mean"])

``env_config`` holds ``PersonaRec`` options (and may hold ``population=`` / ``agent=`` objects,
which RLlib pickles to the workers). Needs the ``rl`` extra for ``ray[rllib]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["register_rllib_env", "rllib_env_creator"]


def rllib_env_creator(env_config: Mapping[str, Any] | None = None) -> Any:
    """A ``PersonaRecEnv`` from RLlib's ``env_config``: flat observation and the v1 users by default."""
    from recsim_personas.envs.persona_rec import PersonaRecEnv

    options = {"observation": "flat", "cheap_agent": "mf", **dict(env_config or {})}
    return PersonaRecEnv(**options)


def register_rllib_env(name: str = "PersonaRec-v1") -> str:
    """Register :func:`rllib_env_creator` with ``ray.tune`` under ``name``; returns ``name``."""
    from recsim_personas.errors import ConfigError

    try:
        from ray.tune.registry import register_env
    except ImportError as exc:
        raise ConfigError("register_rllib_env needs ray[rllib]: pip install 'recsim-personas[rl]'") from exc
    register_env(name, rllib_env_creator)
    return name
