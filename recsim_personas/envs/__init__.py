"""``PersonaRec-v0``: simulated recommender-system users as a Gymnasium environment.

Importing this package only registers the environment (string entry points): torch, transformers
and the data load when ``gym.make`` / ``gym.make_vec`` runs. ``import recsim_personas`` imports it,
so ``gym.make("PersonaRec-v0")`` works after that, and ``gym.make("recsim_personas:PersonaRec-v0")``
works without any import.

Example:
    >>> import gymnasium as gym
    >>> import recsim_personas.envs
    >>> gym.spec("PersonaRec-v0").entry_point
    'recsim_personas.envs.persona_rec:PersonaRecEnv'
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

__all__ = ["ENV_IDS"]

#: Every environment id this package registers (tests run ``check_env`` on each).
ENV_IDS: tuple[str, ...] = ("PersonaRec-v0", "PersonaRec-v1")

#: What each id changes from the config's defaults. v0 is frozen: its cheap users are the user + item
#: bias model. v1's cheap users have tastes (the latent-factor agent, ``cheap_agent="mf"``).
_ID_KWARGS: dict[str, dict[str, str]] = {"PersonaRec-v0": {}, "PersonaRec-v1": {"cheap_agent": "mf"}}

for _env_id, _kwargs in _ID_KWARGS.items():
    if _env_id not in registry:
        register(
            id=_env_id,
            entry_point="recsim_personas.envs.persona_rec:PersonaRecEnv",
            vector_entry_point="recsim_personas.envs.vector:PersonaRecVectorEnv",
            # The env truncates at its own `horizon` option; no TimeLimit wrapper.
            max_episode_steps=None,
            nondeterministic=False,
            kwargs=dict(_kwargs),
        )
