"""The state and dynamics of ``n`` PersonaRec sessions in arrays: :class:`SessionEngine`.

The single environment (:mod:`recsim_personas.envs.persona_rec`) runs it with ``n = 1``, the vector
environment (:mod:`recsim_personas.envs.vector`) with ``n = num_envs``, so both share one ``reset``
and one ``step``: the slate choice (:mod:`~recsim_personas.envs.choice`), the rating, the reward
(:mod:`~recsim_personas.envs.rewards`), the state update and the exit, with one user-agent call per
step for all sessions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from recsim_personas.agents.exits import PatienceExitRule
from recsim_personas.agents.protocol import SessionEvent, UserAgent
from recsim_personas.envs.choice import ChoiceModel, ConditionalLogitChoice, draw_choice
from recsim_personas.envs.config import PersonaRecConfig
from recsim_personas.envs.features import FlatObservation, item_features, user_features
from recsim_personas.envs.population import UserPopulation
from recsim_personas.envs.rewards import RewardFunction, StepReward
from recsim_personas.errors import EnvError

__all__ = ["SessionEngine", "check_agent", "parse_actions"]


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
                users=user_features(population, **self._feature_options()),
            )

    @property
    def item_features(self) -> np.ndarray:
        """``(n_items, d)`` float32 item feature vectors (:func:`~recsim_personas.envs.features.item_features`)."""
        if self._item_features is None:
            self._item_features = self.population.derived(
                ("item_features", *self._feature_options().values()),
                lambda: item_features(self.population, **self._feature_options()),
            )
        return self._item_features

    def _feature_options(self) -> dict[str, str]:
        return {"source": self.config.recommender_data, "embedding": self.config.item_embedding}

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
