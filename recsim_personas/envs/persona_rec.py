"""``PersonaRec-v0``: one simulated user's session with a recommender, as a Gymnasium environment.

:class:`PersonaRecEnv` is the single environment. The work of ``reset`` and ``step`` is done in
arrays by :class:`~recsim_personas.envs.engine.SessionEngine` (re-exported here), so that the vector
environment (:mod:`recsim_personas.envs.vector`) runs the same code on ``N`` sessions with one agent
call per step; what both environments do before the first step is in
:mod:`recsim_personas.envs.session_setup`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from recsim_personas.agents.protocol import UserAgent
from recsim_personas.envs.config import PersonaRecConfig
from recsim_personas.envs.engine import SessionEngine, check_agent, parse_actions
from recsim_personas.envs.population import UserPopulation
from recsim_personas.envs.session_setup import (
    CatalogueViews,
    UnsupportedRenderModeError,
    build_session_parts,
)
from recsim_personas.errors import EnvError

__all__ = ["PersonaRecEnv", "SessionEngine", "UnsupportedRenderModeError", "check_agent", "parse_actions"]


class PersonaRecEnv(CatalogueViews, gym.Env):
    r"""A recommender talks to one simulated user for one session.

    ## Description

    Each episode is one user's session. The user is a simulated recommender-system user from
    *Personas within Parameters* (Thakur, Agrawal, Mukund, arXiv 2509.09689, 2025): a small language
    model with the LoRA adapter of the user's persona, prompted with the user's distilled profile
    (and, in ``msml`` mode, the memories of similar past ratings), answers with a distribution over
    the rating scale. A cheap stand-in with the same interface, the user + item bias model with noise
    (:class:`~recsim_personas.agents.bias_agent.BiasUserAgent`), serves tests and RL runs that need
    millions of steps. At every step the policy recommends an item (or a slate); the user rates it,
    and may leave.

    With no arguments the environment runs offline on the **embedded default**: ml-latest-small, the
    paper's split (users with 100-200 ratings: all 115 of them here, as fewer than the paper's 200
    qualify; temporal 60:40, seed 0) and deterministic template profiles with K = 4 personas,
    computed on the first ``make`` (a minute or more on a small CPU, mostly embedding item texts) and
    cached under ``recsim_personas.paths.cache_dir()``.
    The default user is then a **cheap agent** (no adapters have been trained): in ``PersonaRec-v1``
    the latent-factor users (biased MF with held-out-calibrated noise: users differ in what they
    like best), in ``PersonaRec-v0`` the user + item bias users (one global ranking is best for all). Point the env
    at a trained run folder to get the language-model users:
    ``gym.make("PersonaRec-v0", run_dir="runs/ml1m")`` (``agent="auto"`` picks the LM agent when
    ``run_dir`` is set; ``agent="bias"`` keeps the cheap one on that folder's users).

    ## Action Space

    Index ``i`` recommends catalogue item ``env.unwrapped.item_ids[i]``: the catalogue is every item
    in the split's train part, sorted by item id (``env.unwrapped.item_index(item_id)`` maps back).

    - ``slate_size == 1``: ``Discrete(n_items)``; the user rates the item.
    - ``slate_size == k > 1``: ``MultiDiscrete([n_items] * k)``. **Choice model:** the user rates
      every slate item (one agent call), then picks one by a conditional logit over the expected
      ratings, ``P(i) ∝ exp(E[r_i] / choice_temperature)``, against a "pick nothing" option worth
      ``no_choice_utility`` stars. The picked item's rating is drawn from its distribution and gives
      the reward; picking nothing gives reward 0. Duplicate items in a slate are allowed (each copy
      competes separately).

    Invalid actions (not integers, wrong slate length, out of range) raise
    :class:`~recsim_personas.errors.EnvError` naming the fix.

    **Seen items.** An item is *seen* when the user rated it in train or picked it earlier in the
    session. ``seen_items="penalty"`` (default): a seen item is not rated and adds ``seen_penalty``
    (-1) to the reward (in a slate it cannot be picked); ``"mask"``: recommending a seen item raises
    ``EnvError``; ``"allow"``: seen items are rated like any other. ``info["action_mask"]`` (int8,
    ``n_items``) is 1 for the items that are neither penalised nor forbidden; pass it to
    ``action_space.sample(mask=...)`` for a random valid action.

    ## Observation Space

    A ``Dict`` (``gymnasium.spaces.flatten`` turns it into one vector):

    | Key | Space | Content |
    |---|---|---|
    | ``persona`` | ``Discrete(n_personas)`` | the user's persona id |
    | ``profile`` | ``Box(-1, 1, (dim,), float32)`` | L2-normalised profile embedding (zeros without profiles) |
    | ``history_items`` | ``MultiDiscrete([n_items + 1] * history_len)`` | last items shown, most recent first; ``n_items`` pads |
    | ``history_ratings`` | ``Box(0, max_rating, (history_len,), float32)`` | their ratings; 0 = padding or not rated |
    | ``step`` | ``Discrete(horizon + 1)`` | steps taken in this session |

    A step where the user rated nothing (a seen item, or an empty pick from a slate) enters the
    history as the shown item (the slate's first) with rating 0.

    ``mask_in_obs=True`` adds ``action_mask`` (``MultiBinary(n_items)``, 1 = allowed). The mask is
    also ``env.unwrapped.action_masks()`` (bool; sb3-contrib's ``MaskablePPO`` reads it) and
    ``info["action_mask"]``.

    ``observation="flat"``: one ``Box(-1, 1, (size,), float32)`` for MLP policies: the profile
    embedding, the user's collaborative embedding, the persona one-hot, each history item as its item
    feature vector (zeros for padding), the history ratings over the scale's maximum, the step over
    the horizon, and with ``mask_in_obs`` the ``n_items`` mask
    (:mod:`recsim_personas.envs.features`). ``env.unwrapped.item_features`` is the ``(n_items, d)``
    float32 feature matrix (genres, popularity, shrunk mean rating, the recommender's own MF or SVD
    embedding, all from ``recommender_data``: by default the logged ratings, every rating of the
    dataset but the population's test rows; nothing from the simulated user model or the test
    split), for policies that score items.

    ## Rewards

    ``reward="rating"`` (default): the rating given, on the dataset's scale (0.5-5 on
    ml-latest-small; with ``seen_penalty`` -1 a step's reward lies in [-1, 5], an episode's return
    in [-horizon, 5 * horizon]: about 45-65 for the baselines at horizon 20); ``"normalized"``:
    ``(rating - min) / (max - min)`` in [0, 1] (the penalty stays -1); ``"like"``: 1.0 if the
    rating is at least ``like_threshold`` (4) else 0.0.
    A step without a rating gives 0, plus ``seen_penalty`` per penalised seen item. With
    ``rating="sample"`` (default) the rating is drawn from the agent's distribution with the env's
    ``np_random``; with ``rating="expectation"`` it is the distribution's mean.

    ## Starting State

    ``reset(seed=..., options={"user_id": u})`` starts a session of user ``u``; without ``user_id``
    the user is drawn uniformly from the population with ``np_random``. An unknown id raises
    ``EnvError`` with the closest ids. The history is empty (padded) and the step count 0.

    ## Episode End

    - **Termination**: the user leaves after a step. ``exit="agent"`` (default) asks the user agent
      (the LM agent scores a leave/stay prompt with the session so far and the activity trait and,
      with ``exit_calibration="anchored"`` (default), reads the answer relative to its answer on
      an empty session around the activity level's per-step hazard ``exit_hazard``, see
      :mod:`recsim_personas.agents.lm_agent`; the bias agent applies the patience rule); ``exit="rule"`` applies the patience rule of
      :mod:`recsim_personas.agents.exits` (patience set by the activity trait, dropping with
      unsatisfying items); ``exit="none"`` never leaves. The step's reward is still paid. The agent
      sees the session as ``SessionEvent(item_id, rating)`` items; a step without a rating comes as
      ``rating=NaN`` to agents that set ``accepts_unrated_events = True`` (the bias agent counts it
      as unsatisfying) and is left out for others.
    - **Truncation**: ``horizon`` steps (default 20) were taken without an exit.

    ``info`` after a step: ``user_id``, ``persona``, ``step``, ``item_id`` and ``item_title`` of the
    rated item (-1 and "" if none), ``rated``, ``rating`` (0 if none), ``expected_rating``,
    ``rating_probs`` (over ``scale.levels``), ``exit_probability``, ``n_seen``, ``action_mask``;
    for slates also ``slate_item_ids``, ``slate_expected_ratings``, ``choice_probs`` (last = pick
    nothing) and ``chosen_slot`` (-1 = nothing).

    ## Arguments

    Every field of :class:`~recsim_personas.envs.config.PersonaRecConfig` is a keyword of
    ``gym.make`` (``horizon``, ``slate_size``, ``reward``, ``like_threshold``, ``rating``,
    ``seen_items``, ``seen_penalty``, ``exit``, ``exit_rule``, ``exit_calibration``,
    ``exit_hazard``, ``choice_temperature``,
    ``no_choice_utility``, ``history_len``, ``agent``, ``run_dir``, ``dataset``, ``data_dir``,
    ``memory_mode``, ``model``, ``device``, ``dtype``, ``noise_std``), plus the objects
    ``agent=`` (any :class:`~recsim_personas.agents.protocol.UserAgent`, e.g. an ``LMUserAgent`` you
    built), ``population=`` (a :class:`~recsim_personas.envs.population.UserPopulation`) and
    ``render_mode="ansi"`` (``render()`` returns the session as text) or ``"rgb_array"`` (a picture
    with one bar per step: the rating's height, green when liked, red when nothing was rated). ``gym.make_vec`` builds the
    batched :class:`~recsim_personas.envs.vector.PersonaRecVectorEnv` (one agent call per step).

    >>> import gymnasium as gym
    >>> import pandas as pd
    >>> import recsim_personas.envs
    >>> from recsim_personas.agents.bias_agent import BiasUserAgent
    >>> from recsim_personas.data.dataset import RatingScale
    >>> from recsim_personas.envs.population import UserPopulation
    >>> train = pd.DataFrame({"user_id": [1, 1, 2, 2, 3], "item_id": [10, 11, 11, 12, 10],
    ...                       "rating": [5.0, 3.0, 4.0, 2.0, 4.0], "timestamp": [0, 1, 0, 1, 0]})
    >>> scale = RatingScale(1, 5, 1)
    >>> population = UserPopulation.from_split(train, None, scale)
    >>> agent = BiasUserAgent.fit(train, scale)
    >>> env = gym.make("PersonaRec-v0", population=population, agent=agent, horizon=3,
    ...                seen_items="allow", render_mode="ansi")
    >>> obs, info = env.reset(seed=0, options={"user_id": 2})
    >>> info["user_id"], obs["history_items"].tolist()[:3]
    (2, [3, 3, 3])
    >>> obs, reward, terminated, truncated, info = env.step(0)
    >>> info["item_id"], info["rated"], reward == info["rating"]
    (10, True, True)
    >>> print(env.render().splitlines()[0])
    PersonaRec-v0 | user 2 | persona 0 | activity mid | step 1/3

    The embedded default needs no arguments (the first call builds and caches the profiles):

    >>> env = gym.make("PersonaRec-v0")  # doctest: +SKIP

    ## Version History

    * v0: Initial release (recsim-personas 0.1.0): the cheap users are the user + item bias model
      (``cheap_agent="bias"``).
    * v1: The cheap users have tastes: ``agent="auto"`` without ``run_dir`` builds the
      latent-factor agent (:class:`~recsim_personas.agents.mf_agent.LatentFactorUserAgent`,
      ``cheap_agent="mf"``). Everything else as v0 (same options, spaces and dynamics). Changed
      while v1 was unreleased (issue 13): each simulated user's tastes became one draw from
      the posterior of their biased-MF factors instead of the shrunk point estimate, with the noise
      recalibrated so that tastes plus noise keep the held-out residual: the oracle's margin over
      popularity went from 11.8% to 20.9% (``results/rl-user-models.json``).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        config: PersonaRecConfig | dict[str, Any] | None = None,
        *,
        agent: UserAgent | str | None = None,
        population: UserPopulation | None = None,
        render_mode: str | None = None,
        **options: Any,
    ) -> None:
        parts = build_session_parts(
            1, config, agent, population, render_mode, self.metadata["render_modes"], options
        )
        self.config, self.population, self.agent = parts.config, parts.population, parts.agent
        self.render_mode = render_mode
        self._engine = parts.engine
        self.action_space, self.observation_space = parts.action_space, parts.observation_space
        self._reset_called = False

    # -- catalogue helpers ----------------------------------------------------------------------------
    @property
    def user_id(self) -> int | None:
        """The current session's user (None before the first reset)."""
        return int(self._engine.user_id[0]) if self._reset_called else None

    def action_masks(self) -> np.ndarray:
        """``(n_items,)`` bool: True where recommending the item is neither penalised nor forbidden.

        sb3-contrib's ``MaskablePPO`` calls this (``ActionMasker`` is not needed); the same as
        ``info["action_mask"]``. With ``slate_size > 1`` the mask applies to every slot.
        """
        if not self._reset_called:
            return np.ones(self.population.n_items, dtype=bool)
        return self._engine.action_mask(np.zeros(1, dtype=np.int64))[0].astype(bool)

    # -- Gymnasium API --------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"user_id"}
        if unknown:
            raise EnvError(
                f"unknown reset option(s) {sorted(unknown)}; PersonaRec-v0 accepts options={{'user_id': id}}"
            )
        if options.get("user_id") is not None:
            pos = np.array([self.population.user_position(options["user_id"])], dtype=np.int64)
        else:
            pos = self._engine.sample_users([self.np_random])
        idx = np.zeros(1, dtype=np.int64)
        self._engine.reset(idx, pos)
        self._reset_called = True
        return _single_obs(self._engine.observation(idx)), _single_info(self._engine.reset_info(idx))

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if not self._reset_called:
            raise EnvError("call reset() before step(): PersonaRec-v0 has no session yet")
        if self._engine.ended[0]:
            raise EnvError(
                "the session has ended (terminated or truncated); call reset() to start the next one"
            )
        actions = parse_actions(
            action, 1, self.config.slate_size, self.population.n_items, batched=False
        )
        idx = np.zeros(1, dtype=np.int64)
        uniforms = self.np_random.random((1, 3))
        reward, terminated, truncated, info = self._engine.step(idx, actions, uniforms)
        return (
            _single_obs(self._engine.observation(idx)),
            float(reward[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            _single_info(info),
        )

    def render(self) -> str | None:
        if self.render_mode is None:
            gym.logger.warn(
                "render() needs a render mode: gym.make('PersonaRec-v0', render_mode='ansi')"
            )
            return None
        if self.render_mode == "rgb_array":
            return self._engine.render_image(0)
        if not self._reset_called:
            return "PersonaRec-v0 | no session yet (call reset())\n"
        return self._engine.render_session(0)

    def __repr__(self) -> str:
        return (
            f"PersonaRecEnv(population={self.population.name!r}, agent={type(self.agent).__name__}, "
            f"horizon={self.config.horizon}, slate_size={self.config.slate_size})"
        )


# -- row 0 of the engine's batched arrays --------------------------------------------------------------
def _single_obs(batch: dict[str, np.ndarray] | np.ndarray) -> dict[str, Any] | np.ndarray:
    """Row 0 of a batched observation: arrays stay arrays, ``persona`` and ``step`` are np.int64."""
    if isinstance(batch, np.ndarray):
        return batch[0].copy()
    return {key: (value[0].copy() if value.ndim > 1 else np.int64(value[0])) for key, value in batch.items()}


def _single_info(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Row 0 of a batched info dict, with Python scalars for scalar fields."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        row = value[0]
        if isinstance(row, np.ndarray):
            out[key] = row.copy()
        elif isinstance(row, (np.bool_, bool)):
            out[key] = bool(row)
        elif isinstance(row, np.integer):
            out[key] = int(row)
        elif isinstance(row, np.floating):
            out[key] = float(row)
        else:
            out[key] = row
    return out
