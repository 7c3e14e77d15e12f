"""What the single and the vector PersonaRec environment share before the first step.

Resolving the config from a config object, a dict and keyword options; the render-mode check;
loading the population and building the user agent; the spaces; and the catalogue look-ups both
environments expose (:class:`CatalogueViews`). Keeping them here means ``gym.make`` and
``gym.make_vec`` validate and build in exactly the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from recsim_personas.agents.protocol import UserAgent
from recsim_personas.envs.config import PersonaRecConfig
from recsim_personas.envs.engine import SessionEngine, check_agent
from recsim_personas.envs.population import UserPopulation, build_agent, load_population
from recsim_personas.envs.prefix_cache import prepare_prefix_cache
from recsim_personas.errors import ConfigError, EnvError

__all__ = [
    "CatalogueViews",
    "SessionParts",
    "UnsupportedRenderModeError",
    "build_session_parts",
    "check_render_mode",
    "check_scale_options",
    "make_spaces",
    "resolve_config",
]


class UnsupportedRenderModeError(EnvError, TypeError):
    """A ``render_mode`` the environment does not draw.

    Also a ``TypeError``: stable-baselines3's ``make_vec_env`` asks for ``render_mode="rgb_array"``
    and retries without it only on ``TypeError``, as for an environment without the keyword.
    """


def check_render_mode(render_mode: str | None, modes: Sequence[str]) -> None:
    """Raise :class:`UnsupportedRenderModeError` unless ``render_mode`` is None or in ``modes``."""
    if render_mode is not None and render_mode not in modes:
        raise UnsupportedRenderModeError(
            f"render_mode {render_mode!r} is not supported; PersonaRec renders 'ansi' (text), "
            "'rgb_array' (one bar per step) or nothing (None)"
        )


def resolve_config(
    config: PersonaRecConfig | dict[str, Any] | None, agent: Any, options: dict[str, Any]
) -> tuple[PersonaRecConfig, Any]:
    if isinstance(agent, str):
        options = {**options, "agent": agent}
        agent = None
    if config is None:
        cfg = PersonaRecConfig()
    elif isinstance(config, dict):
        cfg = PersonaRecConfig.from_dict(config)
    elif isinstance(config, PersonaRecConfig):
        cfg = config
    else:
        raise ConfigError(f"config must be a PersonaRecConfig or a dict, got {type(config).__name__}")
    if options:
        cfg = cfg.replace(**options)
    return cfg, agent


def check_scale_options(cfg: PersonaRecConfig, population: UserPopulation) -> None:
    """Options given in stars must lie on the population's scale."""
    scale = population.scale
    problems = [
        f"{name}={getattr(cfg, name)} lies outside the rating scale {scale.min}-{scale.max}"
        for name in ("like_threshold", "no_choice_utility")
        if not scale.min <= getattr(cfg, name) <= scale.max
    ]
    if problems:
        raise ConfigError("; ".join(problems) + f" of {population.name!r}; pick a value on the scale")


def make_spaces(
    cfg: PersonaRecConfig, population: UserPopulation, engine: SessionEngine | None = None
) -> tuple[spaces.Space, spaces.Space]:
    """The single-session action and observation spaces (``engine`` sizes the flat observation)."""
    n_items, hist = population.n_items, cfg.history_len
    if cfg.slate_size == 1:
        action_space: spaces.Space = spaces.Discrete(n_items)
    else:
        action_space = spaces.MultiDiscrete(np.full(cfg.slate_size, n_items, dtype=np.int64))
    observation_space = spaces.Dict(
        {
            "persona": spaces.Discrete(population.n_personas),
            "profile": spaces.Box(-1.0, 1.0, (population.embedding_dim,), dtype=np.float32),
            "history_items": spaces.MultiDiscrete(np.full(hist, n_items + 1, dtype=np.int64)),
            "history_ratings": spaces.Box(
                0.0, float(population.scale.max), (hist,), dtype=np.float32
            ),
            "step": spaces.Discrete(cfg.horizon + 1),
        }
    )
    if cfg.mask_in_obs:
        observation_space["action_mask"] = spaces.MultiBinary(n_items)
    if cfg.observation == "flat":
        if engine is None or engine.flat is None:
            engine = SessionEngine(1, population, None, cfg)  # type: ignore[arg-type]
        assert engine.flat is not None
        return action_space, engine.flat.space
    return action_space, observation_space



@dataclass
class SessionParts:
    """The validated config, population, agent, engine and single-session spaces of an environment."""

    config: PersonaRecConfig
    population: UserPopulation
    agent: UserAgent
    engine: SessionEngine
    action_space: spaces.Space
    observation_space: spaces.Space


def build_session_parts(
    n: int,
    config: PersonaRecConfig | dict[str, Any] | None,
    agent: UserAgent | str | None,
    population: UserPopulation | None,
    render_mode: str | None,
    render_modes: Sequence[str],
    options: dict[str, Any],
) -> SessionParts:
    """Validate, load and build in the one order both environments use (module docstring).

    Raises:
        ConfigError: Invalid options (all reported at once) or options off the rating scale.
        EnvError: An unsupported render mode, an agent that is not a user agent or on another scale.
    """
    cfg, agent = resolve_config(config, agent, options)
    check_render_mode(render_mode, render_modes)
    population = population if population is not None else load_population(cfg)
    agent = agent if agent is not None else shared_agent(cfg, population)
    check_agent(agent, population)
    check_scale_options(cfg, population)
    prepare_prefix_cache(agent, n, population.user_ids, warm=cfg.warm_cache, exits=cfg.exit == "agent")
    engine = SessionEngine(n, population, agent, cfg)
    engine.record_log = render_mode is not None
    action_space, observation_space = make_spaces(cfg, population, engine)
    return SessionParts(cfg, population, agent, engine, action_space, observation_space)


def shared_agent(cfg: PersonaRecConfig, population: UserPopulation) -> UserAgent:
    """The user agent ``cfg`` names on ``population``; a cheap one (bias, mf) is fitted once per
    population and these parameters and shared by the environments built on it (it keeps no state
    between calls that a second environment could disturb); LM agents are built each time."""
    kind = cfg.resolved_agent
    if kind == "lm":
        return build_agent(cfg, population)
    key = ("agent", kind, cfg.noise_std, repr(cfg.exit_rule.to_dict()))
    return population.derived(key, lambda: build_agent(cfg, population))


class CatalogueViews:
    """The catalogue look-ups of both environments (they set ``population`` and ``_engine``)."""

    population: UserPopulation
    _engine: SessionEngine

    @property
    def item_ids(self) -> np.ndarray:
        """Item id of each action index (the sorted train catalogue)."""
        return self.population.item_ids

    def item_index(self, item_id: int) -> int:
        """Action index of ``item_id``; ``EnvError`` if it is not in the catalogue."""
        return self.population.item_index(item_id)

    @property
    def observation_layout(self) -> dict[str, slice]:
        """Where each part of the flat observation sits (``observation="flat"``): ``{name: slice}``
        for profile, user, persona, history_items, history_ratings, step and action_mask.

        Raises:
            EnvError: The environment's observation is the ``Dict`` one.
        """
        if self._engine.flat is None:
            raise EnvError("observation_layout exists only with observation='flat'; gym.make(..., observation='flat')")
        return dict(self._engine.flat.layout)

    @property
    def item_features(self) -> np.ndarray:
        """``(n_items, d)`` float32 feature vector of each action index, from the item table and the
        env's ``recommender_data`` (genres, popularity, shrunk mean rating, MF or SVD embedding;
        :mod:`recsim_personas.envs.features`)."""
        return self._engine.item_features
