"""Recommendation policies that act in ``PersonaRec-v0``: baselines in simulation and a learner.

A :class:`Policy` maps the environment's observation and ``info`` (which carries ``user_id`` and
``action_mask``) to an action. Policies work on **batches** in the vector environment's layout
(leading dimension ``num_envs``; ``info`` keys with ``_key`` masks, as after an autoreset) and also
accept a single environment's unbatched observation and info. Every policy respects
``info["action_mask"]``: it recommends only items the user has not seen, as long as any are left.

- :class:`RandomPolicy`: uniform over the allowed items.
- :class:`PopularityPolicy`: the most-rated items first.
- :class:`ALSPolicy`: implicit-feedback ALS (``implicit``), per-user scores.
- :class:`MFPolicy`: the recommender's biased matrix factorisation, highest predicted rating first.

The fitted ones are fitted on the env's ``recommender_data``: by default the logged ratings (every
rating of the dataset except the population's test rows, the log the cheap users are fitted on);
``recommender_data="train"`` restricts them to the population's train split.
- :class:`OraclePolicy`: asks the simulator's own user agent for the expected rating of candidate
  items and recommends the best: the upper bound of what a policy can get from this simulator. By
  default the candidates are a fresh random sample of ``n_candidates = 200`` allowed items per step
  (the LM agent pays one prompt per candidate); ``n_candidates=None`` scores the whole catalogue
  (exact, and cheap with the bias agent).
- :class:`EpsilonGreedyBandit`: a simple learning policy, one running-mean reward estimate per
  (persona, item); explores uniformly with probability ``epsilon``, else exploits.

:func:`make_policy` builds any of them by name from an environment; :meth:`Policy.recommender`
returns the fitted ranking model behind a policy, so that ``simulate`` can score the same policy
offline on the held-out split.

Example:
    >>> env = gym.make("PersonaRec-v0", agent="bias")                         # doctest: +SKIP
    >>> policy = make_policy("popularity", env)                                # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                                          # doctest: +SKIP
    >>> obs, reward, term, trunc, info = env.step(policy.act(obs, info))       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from recsim_personas.data.dataset import RatingScale
from recsim_personas.envs.config import DEFAULT_POLICIES, POLICY_NAMES
from recsim_personas.errors import ConfigError, EnvError, did_you_mean

__all__ = [
    "DEFAULT_POLICIES",
    "POLICY_NAMES",
    "ALSPolicy",
    "AgentRecommender",
    "EpsilonGreedyBandit",
    "MFPolicy",
    "OraclePolicy",
    "Policy",
    "PolicyContext",
    "PopularityPolicy",
    "RandomPolicy",
    "make_policy",
]



@runtime_checkable
class Policy(Protocol):
    """A recommender acting in the environment."""

    name: str

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray:
        """Actions for a batch (``(n,)`` or ``(n, slate_size)``), or one action for a single env."""
        ...

    def update(
        self,
        observation: Mapping[str, Any],
        action: np.ndarray,
        reward: np.ndarray,
        next_observation: Mapping[str, Any],
        info: Mapping[str, Any],
    ) -> None:
        """Learn from a transition (no-op for fixed policies)."""
        ...

    def recommender(self) -> Any | None:
        """The fitted :class:`~recsim_personas.baselines.protocol.Recommender` behind the policy
        (for offline metrics), or None when it has none."""
        ...


@dataclass(frozen=True)
class PolicyContext:
    """What a policy knows about the environment: catalogue, ratings, slate size, scale.

    ``train`` holds the ratings the built-in recommenders are fitted on: the env's
    ``recommender_data`` (``logged``: every rating of the dataset but the population's test rows;
    ``train``: the population's train split).
    """

    item_ids: np.ndarray
    train: pd.DataFrame
    slate_size: int
    scale: RatingScale
    n_personas: int
    agent: Any = None
    population: Any = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def from_env(cls, env: Any) -> PolicyContext:
        """From a single or vector ``PersonaRec-v0`` (wrapped or not)."""
        base = env.unwrapped
        pop = getattr(base, "population", None)
        if pop is None:
            raise EnvError(
                f"{type(base).__name__} is not a PersonaRec-v0 environment (no population); build "
                "policies from gym.make('PersonaRec-v0') or gym.make_vec('PersonaRec-v0')"
            )
        return cls(
            item_ids=pop.item_ids,
            train=pop.recommender_ratings(base.config.recommender_data),
            slate_size=base.config.slate_size,
            scale=pop.scale,
            n_personas=pop.n_personas,
            agent=base.agent,
            population=pop,
        )


def _batched(observation: Mapping[str, Any], info: Mapping[str, Any]) -> tuple[bool, np.ndarray, np.ndarray]:
    """``(single, user_ids (n,), action_mask (n, n_items))`` from a single or a batched step."""
    users = np.asarray(info["user_id"])
    mask = np.asarray(info["action_mask"])
    if users.ndim == 0:
        return True, users.reshape(1).astype(np.int64), mask.reshape(1, -1)
    return False, users.astype(np.int64), mask


def _top_k(scores: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Best ``k`` allowed columns per row (all columns if a row has fewer than ``k`` allowed)."""
    allowed = mask.astype(bool)
    short = allowed.sum(axis=1) < k
    if short.any():
        allowed = allowed.copy()
        allowed[short] = True
    s = np.where(allowed, scores, -np.inf)
    if k == 1:
        return np.argmax(s, axis=1)[:, None]
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


class _BasePolicy:
    name = "base"

    def __init__(self, context: PolicyContext, seed: int = 0) -> None:
        self.context = context
        self.rng = np.random.default_rng(seed)

    def _scores(self, users: np.ndarray, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray:
        single, users, mask = _batched(observation, info)
        actions = _top_k(self._scores(users, observation, info), mask, self.context.slate_size)
        if self.context.slate_size == 1:
            actions = actions[:, 0]
        return actions[0] if single else actions

    def update(self, observation: Any, action: Any, reward: Any, next_observation: Any, info: Any) -> None:
        return None

    def recommender(self) -> Any | None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(items={self.context.n_items}, slate_size={self.context.slate_size})"


class RandomPolicy(_BasePolicy):
    """Uniformly random allowed items (its own seeded generator)."""

    name = "random"

    def __init__(self, context: PolicyContext, seed: int = 0) -> None:
        super().__init__(context, seed)
        self._seed = seed

    def _scores(self, users: np.ndarray, observation: Any, info: Any) -> np.ndarray:
        return self.rng.random((len(users), self.context.n_items))

    def recommender(self) -> Any:
        from recsim_personas.baselines.registry import make_baseline

        return make_baseline("random", seed=self._seed).fit(self.context.train)


class _RecommenderPolicy(_BasePolicy):
    """Scores from a fitted baseline ranker, one catalogue row per user (cached)."""

    baseline = "popularity"

    def __init__(self, context: PolicyContext, seed: int = 0, **params: Any) -> None:
        super().__init__(context, seed)
        from recsim_personas.baselines.registry import get_baseline_spec, make_baseline

        if get_baseline_spec(self.baseline).seeded:
            params.setdefault("seed", seed)
        self.model = make_baseline(self.baseline, **params).fit(context.train)
        self._rows: dict[int, np.ndarray] = {}

    def _row(self, user_id: int) -> np.ndarray:
        row = self._rows.get(user_id)
        if row is None:
            row = np.asarray(self.model.score_items(user_id, self.context.item_ids), dtype=np.float64)
            self._rows[user_id] = row
        return row

    def _scores(self, users: np.ndarray, observation: Any, info: Any) -> np.ndarray:
        return np.stack([self._row(int(u)) for u in users])

    def recommender(self) -> Any:
        return self.model


class PopularityPolicy(_RecommenderPolicy):
    """The most-rated train items the user has not seen (ties: lower item index first)."""

    name = "popularity"
    baseline = "popularity"


class MFPolicy(_RecommenderPolicy):
    """The recommender's biased matrix factorisation: highest predicted rating first.

    Fitted on the env's ``recommender_data`` with
    :data:`~recsim_personas.envs.features.RECOMMENDER_MF`'s factors and regularisation (seed: the
    policy's seed), the model behind the default ``item_embedding="mf"`` features.
    """

    name = "mf"
    baseline = "biased-mf"

    def __init__(self, context: PolicyContext, seed: int = 0, **params: Any) -> None:
        from recsim_personas.envs.features import RECOMMENDER_MF

        defaults = {k: v for k, v in RECOMMENDER_MF.items() if k != "seed"}
        super().__init__(context, seed, **{**defaults, **params})


class ALSPolicy(_RecommenderPolicy):
    """Implicit-feedback ALS (``implicit``) fitted on train; per-user scores over the catalogue."""

    name = "als"
    baseline = "als"


class AgentRecommender:
    """A :class:`~recsim_personas.baselines.protocol.RatingPredictor` view of a user agent.

    ``predict`` is the agent's expected rating; ``recommend`` ranks the catalogue (or candidates) by
    it. This is the oracle's model for offline metrics: it knows the simulator, not the test set.
    """

    name = "oracle"
    ranks_items = True

    def __init__(self, agent: Any, item_ids: np.ndarray, train: pd.DataFrame, *, batch: int = 8192) -> None:
        self.agent = agent
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.fallback_count = 0
        self._batch = batch
        self._seen = {int(u): g.to_numpy() for u, g in train.groupby("user_id")["item_id"]}

    def fit(self, train: pd.DataFrame) -> AgentRecommender:
        return self

    def predict(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        users = np.asarray(user_ids, dtype=np.int64).ravel()
        items = np.asarray(item_ids, dtype=np.int64).ravel()
        out = np.empty(len(users))
        for start in range(0, len(users), self._batch):
            sl = slice(start, start + self._batch)
            out[sl] = self.agent.rate(users[sl], items[sl]).expectation(self.agent.scale)
        return out

    def score_items(self, user_id: int, item_ids: Any) -> np.ndarray:
        items = np.asarray(item_ids, dtype=np.int64).ravel()
        return self.predict(np.full(len(items), int(user_id)), items)

    def recommend(self, user_id: int, k: int, exclude_seen: bool = True, candidates: Any = None) -> np.ndarray:
        cand = self.item_ids if candidates is None else np.unique(np.asarray(candidates, dtype=np.int64))
        if exclude_seen:
            cand = cand[~np.isin(cand, self._seen.get(int(user_id), []))]
        scores = self.score_items(user_id, cand)
        order = np.lexsort((cand, -scores))[:k]
        return cand[order]


class OraclePolicy(_BasePolicy):
    """Recommends the candidates with the highest expected rating under the simulator's own agent.

    Args:
        context: The environment context (its ``agent`` is asked).
        seed: Seed of the candidate sample.
        n_candidates: Allowed items scored per session and step (a fresh uniform sample); ``None``
            = the whole catalogue. One ``agent.rate`` call per step covers the whole batch.
    """

    name = "oracle"

    def __init__(self, context: PolicyContext, seed: int = 0, n_candidates: int | None = 200) -> None:
        super().__init__(context, seed)
        if context.agent is None:
            raise ConfigError("OraclePolicy needs the environment's agent (PolicyContext.agent)")
        if n_candidates is not None and (not isinstance(n_candidates, int) or n_candidates < 1):
            raise ConfigError(f"n_candidates must be a positive integer or None, got {n_candidates!r}")
        self.n_candidates = n_candidates
        self.agent = context.agent

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray:
        single, users, mask = _batched(observation, info)
        n, n_items, k = len(users), self.context.n_items, self.context.slate_size
        c = n_items if self.n_candidates is None else min(self.n_candidates, n_items)
        if c == n_items:
            cand = np.broadcast_to(np.arange(n_items), (n, n_items))
        else:
            # A uniform sample of allowed items per row: random keys, masked items last.
            keys = self.rng.random((n, n_items)) + (1 - mask.astype(bool)) * 2.0
            cand = np.argpartition(keys, c - 1, axis=1)[:, :c]
        cand_mask = np.take_along_axis(mask, cand, axis=1)
        batch = self.agent.rate(
            np.repeat(users, cand.shape[1]), self.context.item_ids[cand].ravel()
        )
        expected = batch.expectation(self.agent.scale).reshape(n, -1)
        pick = _top_k(expected, cand_mask, k)
        actions = np.take_along_axis(cand, pick, axis=1)
        if k == 1:
            actions = actions[:, 0]
        return actions[0] if single else actions

    def recommender(self) -> AgentRecommender:
        return AgentRecommender(self.agent, self.context.item_ids, self.context.train)


class EpsilonGreedyBandit(_BasePolicy):
    """Epsilon-greedy over items, one shrunken mean-reward estimate per (persona, item).

    With probability ``epsilon`` a row recommends uniformly random allowed items, else the allowed
    items with the highest estimate. The estimate of an item is its mean reward shrunk towards the
    mean reward of everything seen so far, ``(sum + prior_weight * global_mean) / (count +
    prior_weight)``, so that one lucky rating does not make an item the favourite (untried items sit
    at the global mean). ``update`` credits the reward to the item the user rated (slates: the picked
    item gets the reward, the other slate items 0).

    Args:
        context: The environment context.
        seed: Seed of exploration and tie-breaking.
        epsilon: Exploration probability per decision, in [0, 1].
        prior_weight: Pseudo-count of the shrinkage towards the global mean (>= 0).
    """

    name = "bandit"

    def __init__(
        self,
        context: PolicyContext,
        seed: int = 0,
        epsilon: float = 0.1,
        prior_weight: float = 2.0,
    ) -> None:
        super().__init__(context, seed)
        if not 0.0 <= epsilon <= 1.0:
            raise ConfigError(f"epsilon must be in [0, 1], got {epsilon!r}")
        if not prior_weight >= 0:
            raise ConfigError(f"prior_weight must be >= 0, got {prior_weight!r}")
        self.epsilon = float(epsilon)
        self.prior_weight = float(prior_weight)
        shape = (max(context.n_personas, 1), context.n_items)
        self.sums = np.zeros(shape)
        self.counts = np.zeros(shape, dtype=np.int64)

    @property
    def values(self) -> np.ndarray:
        """``(n_personas, n_items)`` current estimates."""
        total = self.counts.sum()
        prior = self.sums.sum() / total if total else 0.0
        return (self.sums + self.prior_weight * prior) / (self.counts + self.prior_weight + 1e-12)

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray:
        single, users, mask = _batched(observation, info)
        persona = np.asarray(observation["persona"]).reshape(-1).astype(np.int64)
        n = len(users)
        scores = self.values[persona] + 1e-9 * self.rng.random((n, self.context.n_items))
        explore = self.rng.random(n) < self.epsilon
        if explore.any():
            scores[explore] = self.rng.random((int(explore.sum()), self.context.n_items))
        actions = _top_k(scores, mask, self.context.slate_size)
        if self.context.slate_size == 1:
            actions = actions[:, 0]
        return actions[0] if single else actions

    def update(
        self,
        observation: Mapping[str, Any],
        action: np.ndarray,
        reward: np.ndarray,
        next_observation: Mapping[str, Any],
        info: Mapping[str, Any],
    ) -> None:
        reward = np.asarray(reward, dtype=np.float64).reshape(-1)
        n = len(reward)
        stepped = info.get("_item_id")
        rows = np.ones(n, dtype=bool) if stepped is None else np.asarray(stepped, dtype=bool).reshape(-1)
        persona = np.asarray(info["persona"]).reshape(-1).astype(np.int64)
        actions = np.asarray(action).reshape(n, -1)
        k = actions.shape[1]
        if k == 1:
            credit = reward[:, None]
        else:
            slot = np.asarray(info["chosen_slot"]).reshape(-1)
            credit = np.where(np.arange(k)[None, :] == slot[:, None], reward[:, None], 0.0)
        p = np.repeat(persona[rows], k)
        a = actions[rows].ravel()
        np.add.at(self.sums, (p, a), credit[rows].ravel())
        np.add.at(self.counts, (p, a), 1)


def make_policy(name: str, env: Any, *, seed: int = 0, **params: Any) -> Policy:
    """Build the policy ``name`` (one of :data:`POLICY_NAMES`) for ``env``.

    Raises:
        ConfigError: Unknown name (with a did-you-mean) or parameter.
    """
    classes = {
        "random": RandomPolicy,
        "popularity": PopularityPolicy,
        "als": ALSPolicy,
        "mf": MFPolicy,
        "oracle": OraclePolicy,
        "bandit": EpsilonGreedyBandit,
    }
    if name not in classes:
        raise ConfigError(f"unknown policy {name!r}; choose from {', '.join(classes)}.{did_you_mean(name, classes)}")
    context = env if isinstance(env, PolicyContext) else PolicyContext.from_env(env)
    try:
        return classes[name](context, seed=seed, **params)
    except TypeError as exc:
        raise ConfigError(f"policy {name!r}: {exc}") from None
