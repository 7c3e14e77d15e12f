"""``PersonaRec-v0``: one simulated user's session with a recommender, as a Gymnasium environment.

:class:`PersonaRecEnv` is the single environment; :class:`SessionEngine` holds the state of one or
many sessions and does the work of ``reset`` and ``step`` in arrays, so that the vector environment
(:mod:`recsim_personas.envs.vector`) runs the same code on ``N`` sessions with one agent call per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from recsim_personas.agents.exits import PatienceExitRule
from recsim_personas.agents.protocol import SessionEvent, UserAgent
from recsim_personas.envs.choice import ChoiceModel, ConditionalLogitChoice, draw_choice
from recsim_personas.envs.config import PersonaRecConfig
from recsim_personas.envs.features import FlatObservation, item_features, user_features
from recsim_personas.envs.population import UserPopulation, build_agent, load_population
from recsim_personas.envs.prefix_cache import prepare_prefix_cache
from recsim_personas.envs.rewards import RewardFunction, StepReward
from recsim_personas.errors import ConfigError, EnvError

__all__ = ["PersonaRecEnv", "SessionEngine", "UnsupportedRenderModeError", "check_agent", "parse_actions"]


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

def check_agent(agent: Any, population: UserPopulation) -> None:
    """Raise :class:`EnvError` unless ``agent`` implements the user-agent protocol on the population's scale."""
    missing = [name for name in ("scale", "rate", "leave_probability") if not hasattr(agent, name)]
    if missing or not isinstance(agent, UserAgent):
        raise EnvError(
            f"agent {type(agent).__name__} does not implement the UserAgent protocol "
            f"(recsim_personas.agents.protocol: scale, rate, leave_probability; missing "
            f"{', '.join(missing) or 'none'}); pass agent='bias', agent='lm' or such an object"
        )
    if agent.scale != population.scale:
        raise EnvError(
            f"agent rates on the scale {agent.scale.to_dict()} but the population {population.name!r} "
            f"uses {population.scale.to_dict()}; build the agent on the same dataset"
        )


def parse_actions(action: Any, n: int, slate_size: int, n_items: int, *, batched: bool) -> np.ndarray:
    """Validate an action (or a batch of ``n``) and return it as an ``(n, slate_size)`` int64 array.

    Raises:
        EnvError: Not integers, the wrong shape / slate length, or an index out of range.
    """
    arr = np.asarray(action)
    k = slate_size
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        if k == 1 and not batched:
            raise EnvError(
                f"action must be an integer item index (int or numpy integer) in 0..{n_items - 1}, "
                f"got {type(action).__name__} {action!r}; env.unwrapped.item_index(item_id) maps an "
                "item id to its index"
            )
        shape = f"({n},)" if k == 1 else (f"({n}, {k})" if batched else f"({k},)")
        raise EnvError(
            f"action must be an integer array of shape {shape} holding item indices in "
            f"0..{n_items - 1}, got dtype {arr.dtype}"
        )
    if batched:
        expected = (n,) if k == 1 else (n, k)
        if arr.shape != expected:
            if k > 1 and arr.ndim == 2 and arr.shape[0] == n:
                raise EnvError(
                    f"actions have {arr.shape[1]} items per slate but slate_size is {k}: pass an "
                    f"integer array of shape {expected}"
                )
            raise EnvError(f"actions must have shape {expected} (num_envs, slate), got {arr.shape}")
        arr = arr.reshape(n, k)
    else:
        size = arr.size
        if k == 1 and size != 1:
            raise EnvError(f"action has {size} items but slate_size is 1: pass one integer item index")
        if k > 1 and (arr.ndim != 1 or size != k):
            raise EnvError(
                f"action has {size} items but slate_size is {k}: pass an integer array of shape ({k},)"
            )
        arr = arr.reshape(1, k)
    arr = arr.astype(np.int64, copy=False)
    bad = (arr < 0) | (arr >= n_items)
    if bad.any():
        value = int(arr[bad][0])
        raise EnvError(
            f"action {value} is out of range: the catalogue has {n_items} items, so valid indices "
            f"are 0..{n_items - 1} (env.unwrapped.item_ids[i] is the item id of index i)"
        )
    return arr


class SessionEngine:
    """The state and dynamics of ``n`` sessions (the single env uses ``n = 1``).

    All randomness comes from the ``uniforms`` the caller draws, three per session per step, from
    that session's generator (the single env's ``np_random``): ``u[0]`` picks from the slate, ``u[1]``
    samples the rating, ``u[2]`` decides the exit. The caller draws them even when a mode does not
    use one, so the random stream does not depend on the options.
    """

    def __init__(
        self, n: int, population: UserPopulation, agent: UserAgent, config: PersonaRecConfig
    ) -> None:
        self.n = n
        self.population = population
        self.agent = agent
        self.config = config
        n_items, hist = population.n_items, config.history_len
        self.levels = np.asarray(population.scale.levels, dtype=np.float64)
        self.user_pos = np.zeros(n, dtype=np.int64)
        self.user_id = np.zeros(n, dtype=np.int64)
        self.t = np.zeros(n, dtype=np.int64)
        self.hist_items = np.full((n, hist), n_items, dtype=np.int64)
        self.hist_ratings = np.zeros((n, hist), dtype=np.float32)
        self.seen = np.zeros((n, n_items), dtype=bool)
        self.patience = np.zeros(n)
        self.patience0 = np.zeros(n)
        self.ended = np.ones(n, dtype=bool)
        self.exited = np.zeros(n, dtype=bool)
        self.events: list[list[SessionEvent]] = [[] for _ in range(n)]
        self.log: list[list[tuple[Any, ...]]] = [[] for _ in range(n)]
        self.rule = PatienceExitRule(config.exit_rule)
        #: The seams a user can swap (RecSim's choice model and reward function): any object with
        #: ``probabilities(expected, allowed)`` (recsim_personas.envs.choice) and any callable
        #: ``(rating, rated, n_penalised) -> reward`` (recsim_personas.envs.rewards).
        self.choice_model: ChoiceModel = ConditionalLogitChoice(
            config.choice_temperature, config.no_choice_utility
        )
        self.reward_fn: RewardFunction = StepReward(
            config.reward, config.like_threshold, config.seen_penalty, population.scale
        )
        #: Keep a per-step log for render(); environments turn it on with render_mode="ansi".
        self.record_log = False
        # Steps without a rating reach the agent's leave decision as SessionEvent(item, NaN) when the
        # agent declares `accepts_unrated_events = True` (the bias agent counts them as unsatisfying);
        # other agents see only the items the user rated.
        self.pass_unrated = bool(getattr(agent, "accepts_unrated_events", False))
        #: ``(n_items, d)`` float32 item features (recsim_personas.envs.features), built on first use.
        self._item_features: np.ndarray | None = None
        self.flat: FlatObservation | None = None
        if config.observation == "flat":
            self.flat = FlatObservation(
                population, self.item_features, hist, config.horizon, config.mask_in_obs,
                users=user_features(population),
            )

    @property
    def item_features(self) -> np.ndarray:
        """``(n_items, d)`` float32 item feature vectors (:func:`~recsim_personas.envs.features.item_features`)."""
        if self._item_features is None:
            self._item_features = item_features(self.population)
        return self._item_features

    # -- reset --------------------------------------------------------------------------------------
    def sample_users(self, rngs: Sequence[np.random.Generator]) -> np.ndarray:
        """One population row per generator, uniformly."""
        n_users = self.population.n_users
        return np.array([int(rng.integers(n_users)) for rng in rngs], dtype=np.int64)

    def reset(self, idx: np.ndarray, user_pos: np.ndarray) -> None:
        """Start new sessions ``idx`` for the users at population rows ``user_pos``."""
        pop = self.population
        self.user_pos[idx] = user_pos
        self.user_id[idx] = pop.user_ids[user_pos]
        self.t[idx] = 0
        self.hist_items[idx] = pop.n_items
        self.hist_ratings[idx] = 0.0
        self.seen[idx] = False
        for j, pos in zip(idx.tolist(), user_pos.tolist(), strict=True):
            self.seen[j, pop.seen_items(pos)] = True
            self.events[j] = []
            self.log[j] = []
        self.patience0[idx] = self.rule.initial(pop.activity_levels[user_pos])
        self.patience[idx] = self.patience0[idx]
        self.ended[idx] = False
        self.exited[idx] = False

    def observation(self, idx: np.ndarray) -> dict[str, np.ndarray] | np.ndarray:
        """Batched observations (fresh arrays) of sessions ``idx``: a dict, or ``(m, size)`` if flat."""
        pos = self.user_pos[idx]
        mask = self.action_mask(idx) if self.config.mask_in_obs else None
        if self.flat is not None:
            return self.flat.build(pos, self.hist_items[idx], self.hist_ratings[idx], self.t[idx], mask)
        obs = {
            "persona": self.population.personas[pos].copy(),
            "profile": self.population.profile_embeddings[pos].copy(),
            "history_items": self.hist_items[idx].copy(),
            "history_ratings": self.hist_ratings[idx].copy(),
            "step": self.t[idx].copy(),
        }
        if mask is not None:
            obs["action_mask"] = mask
        return obs

    def action_mask(self, idx: np.ndarray) -> np.ndarray:
        """``(m, n_items)`` int8: 1 where recommending the item is neither penalised nor forbidden."""
        if self.config.seen_items == "allow":
            return np.ones((len(idx), self.population.n_items), dtype=np.int8)
        return (~self.seen[idx]).astype(np.int8)

    def reset_info(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        pos = self.user_pos[idx]
        return {
            "user_id": self.user_id[idx].copy(),
            "persona": self.population.personas[pos].copy(),
            "step": self.t[idx].copy(),
            "action_mask": self.action_mask(idx),
        }

    def empty_step_info(self) -> dict[str, np.ndarray]:
        """A step info dict for zero sessions (the keys, dtypes and shapes of :meth:`step`'s info)."""
        k, n_levels, n_items = self.config.slate_size, len(self.levels), self.population.n_items
        info: dict[str, np.ndarray] = {
            "user_id": np.zeros(0, np.int64),
            "persona": np.zeros(0, np.int64),
            "step": np.zeros(0, np.int64),
            "item_id": np.zeros(0, np.int64),
            "item_title": np.zeros(0, object),
            "rated": np.zeros(0, bool),
            "rating": np.zeros(0),
            "expected_rating": np.zeros(0),
            "rating_probs": np.zeros((0, n_levels)),
            "exit_probability": np.zeros(0),
            "n_seen": np.zeros(0, np.int64),
            "action_mask": np.zeros((0, n_items), np.int8),
        }
        if k > 1:
            info["slate_item_ids"] = np.zeros((0, k), np.int64)
            info["slate_expected_ratings"] = np.zeros((0, k))
            info["choice_probs"] = np.zeros((0, k + 1))
            info["chosen_slot"] = np.zeros(0, np.int64)
        return info

    # -- step ---------------------------------------------------------------------------------------
    def step(
        self,
        idx: np.ndarray,
        actions: np.ndarray,
        uniforms: np.ndarray,
        *,
        session_info: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Advance sessions ``idx`` by one recommendation each.

        Args:
            idx: ``(m,)`` session indices (none of them ended).
            actions: ``(m, slate_size)`` valid catalogue indices.
            uniforms: ``(m, 3)`` uniforms in [0, 1) (slate choice, rating, exit).
            session_info: Include the keys of :meth:`reset_info` (``user_id``, ``persona``,
                ``step``, ``action_mask``); the vector env computes those for all sessions at once.

        Returns:
            ``(rewards, terminated, truncated, info)`` with batched arrays.
        """
        cfg, pop = self.config, self.population
        m, k = actions.shape
        levels, n_levels = self.levels, len(self.levels)
        users = self.user_id[idx]
        seen = self.seen[idx[:, None], actions]
        any_seen = bool(seen.any())
        if cfg.seen_items == "mask" and any_seen:
            j, s = np.argwhere(seen)[0]
            item = int(actions[j, s])
            raise EnvError(
                f"item index {item} (item id {pop.item_ids[item]}, {pop.item_titles[item]!r}) is "
                f"masked: user {users[j]} has already seen it; choose among the items where "
                "info['action_mask'] == 1, or make the env with seen_items='penalty'"
            )
        penalise = cfg.seen_items == "penalty" and any_seen
        choice_probs = chosen = expected = None

        if k == 1:
            # One agent call for the sessions whose item is rated (all of them unless penalised).
            shown = actions[:, 0]
            if penalise:
                rated = ~seen[:, 0]
                chosen_probs = np.zeros((m, n_levels))
                if rated.any():
                    batch = self.agent.rate(users[rated], pop.item_ids[shown[rated]])
                    chosen_probs[rated] = batch.probs
            else:
                rated = np.ones(m, dtype=bool)
                chosen_probs = np.array(self.agent.rate(users, pop.item_ids[shown]).probs, dtype=np.float64)
            expected_chosen = chosen_probs @ levels
        else:
            # The user rates every slate item (one agent call), then picks one by a conditional
            # logit over the expected ratings against the "pick nothing" option.
            rows = np.arange(m)
            to_rate = ~seen if penalise else np.ones((m, k), dtype=bool)
            probs = np.zeros((m, k, n_levels))
            if to_rate.any():
                flat_users = np.broadcast_to(users[:, None], (m, k))[to_rate]
                batch = self.agent.rate(flat_users, pop.item_ids[actions[to_rate]])
                probs[to_rate] = batch.probs
            expected = probs @ levels
            choice_probs = self.choice_model.probabilities(expected, to_rate)
            chosen = draw_choice(choice_probs, uniforms[:, 0])
            rated = chosen >= 0
            slot = np.maximum(chosen, 0)
            chosen_probs = probs[rows, slot] * rated[:, None]
            expected_chosen = expected[rows, slot] * rated
            shown = np.where(rated, actions[rows, slot], actions[:, 0])

        if cfg.rating == "sample":
            level = (np.cumsum(chosen_probs, axis=1) < uniforms[:, 1:2]).sum(axis=1)
            rating = levels[np.minimum(level, n_levels - 1)]
        else:
            rating = expected_chosen.copy()
        all_rated = bool(rated.all())
        if not all_rated:
            rating[~rated] = 0.0

        n_seen = seen.sum(axis=1)
        reward = self.reward_fn(rating, rated, n_seen if penalise else np.zeros_like(n_seen))

        # State: the picked item (or the slate's first) enters the history; picked items become seen.
        if all_rated:
            self.seen[idx, shown] = True
        else:
            self.seen[idx[rated], shown[rated]] = True
        hist = self.hist_items[idx]
        hist[:, 1:] = hist[:, :-1]
        hist[:, 0] = shown
        self.hist_items[idx] = hist
        hist_r = self.hist_ratings[idx]
        hist_r[:, 1:] = hist_r[:, :-1]
        hist_r[:, 0] = rating
        self.hist_ratings[idx] = hist_r
        self.t[idx] += 1
        shown_ids = pop.item_ids[shown]
        # NaN marks "not rated" for the exit models (the info and observation show 0).
        rating_or_nan = rating if all_rated else np.where(rated, rating, np.nan)

        # Exit.
        if cfg.exit == "none":
            p_exit = np.zeros(m)
        elif cfg.exit == "rule":
            patience = self.rule.update(self.patience[idx], rating_or_nan, self.patience0[idx])
            self.patience[idx] = patience
            p_exit = self.rule.leave_probability(patience)
        else:
            events = self.events
            for j, sid, r in zip(idx.tolist(), shown_ids.tolist(), rating_or_nan.tolist(), strict=True):
                events[j].append(SessionEvent(sid, r))
            sessions = [events[j] for j in idx.tolist()]
            if not self.pass_unrated:
                sessions = [[e for e in s if not math.isnan(e.rating)] for s in sessions]
            p_exit = np.asarray(self.agent.leave_probability(users, sessions), dtype=np.float64)
            if p_exit.shape != (m,) or not np.all((p_exit >= 0) & (p_exit <= 1)):
                raise EnvError(
                    f"agent {type(self.agent).__name__}.leave_probability returned {p_exit!r}; it must "
                    f"return {m} probabilities in [0, 1]"
                )
        terminated = uniforms[:, 2] < p_exit
        t_now = self.t[idx]
        truncated = (t_now >= cfg.horizon) & ~terminated
        self.ended[idx] = terminated | truncated
        self.exited[idx] = terminated

        titles = pop.item_titles[shown]
        item_ids = shown_ids
        if not all_rated:
            titles[~rated] = ""
            item_ids = np.where(rated, shown_ids, -1)
        info: dict[str, np.ndarray] = {
            "item_id": item_ids,
            "item_title": titles,
            "rated": rated,
            "rating": rating,
            "expected_rating": expected_chosen,
            "rating_probs": chosen_probs,
            "exit_probability": p_exit,
            "n_seen": n_seen,
        }
        if session_info:
            info = {**self.reset_info(idx), **info}
        if k > 1:
            info["slate_item_ids"] = pop.item_ids[actions]
            info["slate_expected_ratings"] = expected
            info["choice_probs"] = choice_probs
            info["chosen_slot"] = chosen

        if self.record_log:
            for row, j in enumerate(idx.tolist()):
                self.log[j].append(
                    (
                        int(t_now[row]),
                        int(shown[row]),
                        float(rating_or_nan[row]),
                        float(reward[row]),
                        float(p_exit[row]),
                        int(n_seen[row]),
                        tuple(actions[row].tolist()) if k > 1 else None,
                    )
                )
        return reward, terminated, truncated, info

    # -- render -------------------------------------------------------------------------------------
    def render_image(self, j: int, height: int = 64, bar: int = 8) -> np.ndarray:
        """The session so far as an ``(height, horizon * bar, 3)`` uint8 picture (``rgb_array``).

        One column per step: its height is the rating over the scale's maximum, green for a liked
        item (at least ``like_threshold``), grey otherwise, red (full height) for a step without a
        rating; a white background.
        """
        cfg = self.config
        img = np.full((height, cfg.horizon * bar, 3), 255, dtype=np.uint8)
        top = float(self.population.scale.max)
        for t, _shown, rating, _reward, _p, _n_seen, _slate in self.log[j]:
            x = slice((t - 1) * bar + 1, t * bar - 1)
            if math.isnan(rating):
                img[:, x] = (214, 39, 40)
                continue
            h = max(1, round(height * rating / top))
            img[height - h :, x] = (44, 160, 44) if rating >= cfg.like_threshold else (127, 127, 127)
        return img

    def render_session(self, j: int) -> str:
        """The session so far as text: user, persona, items, ratings, exit."""
        pop, cfg = self.population, self.config
        pos = int(self.user_pos[j])
        level = ("low", "mid", "high")[int(np.clip(pop.activity_levels[pos], 0, 2))]
        lines = [
            f"PersonaRec-v0 | user {self.user_id[j]} | persona {pop.personas[pos]} | "
            f"activity {level} | step {self.t[j]}/{cfg.horizon}"
        ]
        scale = pop.scale
        titles = pop.item_titles
        for t, shown, rating, reward, p_exit, n_seen, slate in self.log[j]:
            title = titles[shown]
            if slate is not None:
                lines.append(f"  {t:>3}. slate: {' | '.join(titles[a] for a in slate)}")
            if math.isnan(rating):
                what = "already seen, not rated" if n_seen and slate is None else "picked nothing"
                lines.append(f"  {t:>3}. {title}: {what} (reward {reward:+.2f}, leave p={p_exit:.2f})")
            else:
                stars = scale.format(rating) if cfg.rating == "sample" else f"{rating:.2f}"
                lines.append(
                    f"  {t:>3}. {title}: rated {stars} (reward {reward:+.2f}, leave p={p_exit:.2f})"
                )
        if self.ended[j] and self.log[j]:
            lines.append("  -> the user left" if self.exited[j] else "  -> horizon reached")
        return "\n".join(lines) + "\n"


class PersonaRecEnv(gym.Env):
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
    embedding, the user's train-SVD embedding, the persona one-hot, each history item as its item
    feature vector (zeros for padding), the history ratings over the scale's maximum, the step over
    the horizon, and with ``mask_in_obs`` the ``n_items`` mask
    (:mod:`recsim_personas.envs.features`). ``env.unwrapped.item_features`` is the ``(n_items, d)``
    float32 feature matrix (genres, popularity, shrunk mean train rating, train SVD; nothing from
    the simulated user model or the test split), for policies that score items.

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
      ``cheap_agent="mf"``). Everything else as v0 (same options, spaces and dynamics).
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
        cfg, agent = _resolve_config(config, agent, options)
        check_render_mode(render_mode, self.metadata["render_modes"])
        self.config = cfg
        self.render_mode = render_mode
        self.population = population if population is not None else load_population(cfg)
        self.agent = agent if agent is not None else build_agent(cfg, self.population)
        check_agent(self.agent, self.population)
        prepare_prefix_cache(
            self.agent, 1, self.population.user_ids, warm=cfg.warm_cache, exits=cfg.exit == "agent"
        )
        check_scale_options(cfg, self.population)
        self._engine = SessionEngine(1, self.population, self.agent, cfg)
        self.action_space, self.observation_space = make_spaces(cfg, self.population, self._engine)
        self._engine.record_log = render_mode is not None
        self._reset_called = False

    # -- catalogue helpers ----------------------------------------------------------------------------
    @property
    def item_ids(self) -> np.ndarray:
        """Item id of each action index (the sorted train catalogue)."""
        return self.population.item_ids

    def item_index(self, item_id: int) -> int:
        """Action index of ``item_id``; ``EnvError`` if it is not in the catalogue."""
        return self.population.item_index(item_id)

    @property
    def user_id(self) -> int | None:
        """The current session's user (None before the first reset)."""
        return int(self._engine.user_id[0]) if self._reset_called else None

    @property
    def item_features(self) -> np.ndarray:
        """``(n_items, d)`` float32 feature vector of each action index, from the item table and the
        train split only (genres, popularity, shrunk mean rating, SVD; :mod:`recsim_personas.envs.features`)."""
        return self._engine.item_features

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


# -- shared helpers (the vector env uses them too) ----------------------------------------------------
def _resolve_config(
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
