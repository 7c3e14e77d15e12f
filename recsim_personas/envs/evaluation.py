"""Evaluate any recommendation policy in ``PersonaRec`` on the user schedule of the built-in ones.

:func:`evaluate_policy` runs ``episodes`` sessions in the vector environment and returns per-episode
metrics and their means with 95% confidence intervals. The users come from :func:`user_schedule`
(a seeded permutation of the population, repeated), the sessions are reset with ``seed + start`` per
batch, exactly as ``recsim-personas simulate`` runs the built-in policies, so a learned policy and a
baseline face the same users and random streams.

A policy may be

* a :class:`~recsim_personas.envs.policies.Policy` (``act(observation, info)``);
* an object with ``predict(observation, ...)`` returning ``(actions, state)``, such as an SB3 model:
  it is called with ``deterministic=True`` and, when its ``predict`` takes ``action_masks`` (sb3-contrib
  ``MaskablePPO``), with the sessions' masks;
* a callable ``policy(observation)`` or ``policy(observation, info)`` returning ``(num_envs,)`` (or
  ``(num_envs, slate_size)``) actions.

The observation is the vector environment's batch (leading dimension ``num_envs``); ``info`` carries
``user_id`` and ``action_mask`` per session.

Example:
    >>> from recsim_personas.envs.population import synthetic_population
    >>> from recsim_personas.agents.bias_agent import BiasUserAgent
    >>> pop = synthetic_population(n_users=20, n_items=60, seed=0)
    >>> agent = BiasUserAgent.fit(pop.train, pop.scale)
    >>> first_allowed = lambda obs, info: info["action_mask"].argmax(axis=1)
    >>> result = evaluate_policy({"horizon": 5}, first_allowed, episodes=8, seed=0,
    ...                          population=pop, agent=agent)
    >>> result.episodes, len(result.per_episode["return"])
    (8, 8)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsim_personas.errors import ConfigError

__all__ = ["EPISODE_METRICS", "EvaluationResult", "evaluate_policy", "run_episodes", "user_schedule"]

#: Per-episode metrics :func:`evaluate_policy` reports.
EPISODE_METRICS: tuple[str, ...] = ("return", "mean_rating", "like_rate", "session_length", "exit_rate")


@dataclass
class EvaluationResult:
    """What :func:`evaluate_policy` measured.

    Attributes:
        episodes: Sessions run.
        per_episode: ``{metric: (episodes,) array}`` (``mean_rating`` is NaN for a session
            without a rating).
        summary: ``{metric: (mean, ci_low, ci_high)}`` (95% t interval, NaNs ignored).
        steps: Steps taken in all.
    """

    episodes: int
    per_episode: dict[str, np.ndarray]
    summary: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the summary as ``{metric: mean, metric_ci: [lo, hi]}``."""
        out: dict[str, Any] = {"episodes": self.episodes, "steps": self.steps}
        for key, (mean, lo, hi) in self.summary.items():
            out[key], out[f"{key}_ci"] = mean, [lo, hi]
        return out


def user_schedule(user_ids: np.ndarray, episodes: int, seed: int) -> np.ndarray:
    """The users of ``episodes`` sessions: seeded permutations of the population, one after another."""
    rng = np.random.default_rng(seed)
    reps = math.ceil(episodes / max(len(user_ids), 1))
    return np.concatenate([rng.permutation(user_ids) for _ in range(reps)])[:episodes]


def _actor(policy: Any) -> Callable[[Any, Mapping[str, Any]], np.ndarray]:
    """A function ``(obs, info) -> actions`` for any of the accepted policy kinds."""
    if hasattr(policy, "act") and callable(policy.act):
        return policy.act
    predict = getattr(policy, "predict", None)
    if callable(predict):
        try:
            takes_masks = "action_masks" in inspect.signature(predict).parameters
        except (TypeError, ValueError):
            takes_masks = False

        def act(obs: Any, info: Mapping[str, Any]) -> np.ndarray:
            kwargs: dict[str, Any] = {"deterministic": True}
            if takes_masks:
                kwargs["action_masks"] = np.asarray(info["action_mask"]).astype(bool)
            return np.asarray(predict(obs, **kwargs)[0])

        return act
    if callable(policy):
        try:
            params = [
                p for p in inspect.signature(policy).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
            ]
        except (TypeError, ValueError):
            params = []
        if len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params):
            return lambda obs, info: np.asarray(policy(obs, info))
        return lambda obs, info: np.asarray(policy(obs))
    raise ConfigError(
        f"policy must be a Policy (act(obs, info)), an object with predict(obs) such as an SB3 "
        f"model, or a callable policy(obs[, info]); got {type(policy).__name__}"
    )


def run_episodes(
    env: Any,
    policy: Any,
    schedule: np.ndarray,
    seed: int,
    *,
    on_steps: Callable[[int], Any] | None = None,
) -> dict[str, np.ndarray]:
    """Per-episode metrics of ``policy`` on the sessions of ``schedule`` (users) in the vector ``env``.

    Sessions run ``num_envs`` at a time; batch ``start`` is reset with ``seed + start``. Policies with
    an ``update`` method learn from every transition (the bandit).
    """
    act = _actor(policy)
    update = getattr(policy, "update", None)
    like_threshold = env.config.like_threshold
    n = env.num_envs
    episodes = len(schedule)
    out = {name: np.full(episodes, np.nan) for name in EPISODE_METRICS}
    for start in range(0, episodes, n):
        b = min(n, episodes - start)
        users = np.concatenate([schedule[start : start + b], np.repeat(schedule[start], n - b)])
        obs, info = env.reset(seed=seed + start, options={"user_id": users.tolist()})
        alive = np.zeros(n, dtype=bool)
        alive[:b] = True
        steps, rated, rating_sum, likes, ret = (np.zeros(n) for _ in range(5))
        exited = np.zeros(n, dtype=bool)
        while alive.any():
            action = act(obs, info)
            next_obs, reward, terminated, truncated, next_info = env.step(action)
            if callable(update):
                update(obs, action, reward, next_obs, next_info)
            live = alive & next_info["_item_id"]
            steps += live
            if on_steps is not None:
                on_steps(int(live.sum()))
            r = next_info["rating"]
            got = live & next_info["rated"]
            rated += got
            rating_sum += np.where(got, r, 0.0)
            likes += got & (r >= like_threshold)
            ret += np.where(live, reward, 0.0)
            exited |= live & terminated
            alive &= ~(terminated | truncated)
            obs, info = next_obs, next_info
        sl = slice(start, start + b)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["mean_rating"][sl] = np.where(rated > 0, rating_sum / np.maximum(rated, 1), np.nan)[:b]
        out["like_rate"][sl] = (likes / np.maximum(steps, 1))[:b]
        out["session_length"][sl] = steps[:b]
        out["exit_rate"][sl] = exited[:b].astype(float)
        out["return"][sl] = ret[:b]
    return out


def evaluate_policy(
    env_or_config: Any,
    policy: Any,
    episodes: int = 200,
    seed: int = 0,
    *,
    num_envs: int = 32,
    population: Any = None,
    agent: Any = None,
) -> EvaluationResult:
    """Run ``policy`` for ``episodes`` sessions on the schedule of the built-in policies (module docstring).

    Args:
        env_or_config: A :class:`~recsim_personas.envs.vector.PersonaRecVectorEnv` (used as is; its
            ``NEXT_STEP`` autoreset is what the loop expects), or a
            :class:`~recsim_personas.envs.config.PersonaRecConfig` / dict of options to build one.
        policy: A policy of any accepted kind (module docstring).
        episodes: Sessions to run (>= 1).
        seed: Seed of the user schedule and the sessions' random streams.
        num_envs: Sessions stepped together when the env is built here.
        population: A population for the env built here (default: from the config).
        agent: A user agent for the env built here (default: the one the config names).

    Returns:
        An :class:`EvaluationResult`.
    """
    from gymnasium.vector import AutoresetMode

    from recsim_personas.envs.config import PersonaRecConfig
    from recsim_personas.envs.vector import PersonaRecVectorEnv
    from recsim_personas.eval.intervals import mean_ci

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ConfigError(f"episodes must be an integer >= 1, got {episodes!r}")
    if isinstance(env_or_config, (PersonaRecConfig, dict)) or env_or_config is None:
        env = PersonaRecVectorEnv(
            num_envs=min(num_envs, episodes), config=env_or_config, agent=agent, population=population
        )
    else:
        env = getattr(env_or_config, "unwrapped", env_or_config)
        if not isinstance(env, PersonaRecVectorEnv):
            raise ConfigError(
                f"evaluate_policy needs a PersonaRecVectorEnv (gym.make_vec('PersonaRec-v1', ...)) or "
                f"a config, got {type(env_or_config).__name__}; a single env runs one session at a "
                "time: pass its config instead"
            )
        if env.autoreset_mode != AutoresetMode.NEXT_STEP:
            raise ConfigError(
                "evaluate_policy needs the vector env's default autoreset_mode NextStep; pass the "
                "config instead and it builds one"
            )
    schedule = user_schedule(env.population.user_ids, episodes, seed)
    per_episode = run_episodes(env, policy, schedule, seed)
    summary = {m: mean_ci(per_episode[m]) for m in EPISODE_METRICS}
    return EvaluationResult(
        episodes=episodes,
        per_episode=per_episode,
        summary=summary,
        steps=int(per_episode["session_length"].sum()),
    )
