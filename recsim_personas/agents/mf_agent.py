"""The cheap simulated user with tastes: biased matrix factorisation, calibrated noise, patience exit.

:class:`LatentFactorUserAgent` implements the :class:`~recsim_personas.agents.protocol.UserAgent`
protocol without a language model (numpy only), like
:class:`~recsim_personas.agents.bias_agent.BiasUserAgent`, but what a user likes best differs between
users, so a recommender that personalises can beat one global list.

Responding to an item
    The model is :class:`~recsim_personas.baselines.mf.BiasedMF` ``mu + b_u + b_i + p_u . q_i``
    (:data:`DEFAULT_MF_PARAMS`). The environment fits it on every rating of the dataset except the
    population's test ratings (:func:`~recsim_personas.envs.population.simulator_ratings`): the 115
    default users' 9.6k train ratings alone do not pin down tastes (there the interaction term
    predicts held-out ratings worse than the biases), the 94k ratings of all 610 users do.

    A simulated user's tastes are **one draw from the posterior** of their ``[b_u, p_u]``, not the
    point estimate (``tastes="posterior"``, :func:`posterior_taste_deviations`). The estimate is a
    ridge (posterior-mean) fit: as a predictor it is right (held-out slope 0.95), but as a
    population of tastes it is shrunk towards the item means, because whatever the data do not pin
    down is set to zero. Users simulated at the estimate therefore agree with each other more than
    real users do, and one global list is nearly as good as personalising: with the estimate, the
    oracle is 12% above popularity and 6% above the best global list (``results/rl-user-models.json``,
    row ``mf-mean``). A draw keeps each user's tastes consistent with their ratings and restores
    the spread the data leave open. The mean rating ``mu + b_u + b_i + p_u . q_i`` with the drawn
    ``[b_u, p_u]`` is clipped to the scale and held as one dense ``(users, items)`` table (a step
    is a table look-up). The rating is that mean plus ``N(0, noise_std^2)`` noise, rounded to the
    nearest level of the scale (the end levels take the tails), as in the bias agent.

Calibrating the noise
    A copy of the model is fitted on a seeded random ``1 - holdout`` of each user's ratings and
    scored on the rest (:func:`heldout_residual_std`): that held-out RMSE is the honest spread of a
    rating around the estimate, as the simulator rates unseen items. With posterior tastes that
    spread is tastes plus noise, so ``noise_std^2`` is the held-out MSE minus the mean squared taste
    deviation over the table; with ``tastes="mean"`` it is the held-out MSE itself.

Deciding to leave
    The patience rule of :mod:`recsim_personas.agents.exits`, exactly as in the bias agent (the two
    agents share that code).

Example:
    >>> import pandas as pd
    >>> from recsim_personas.data.dataset import RatingScale
    >>> train = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 2], "item_id": [10, 11, 12, 10, 11, 12],
    ...                       "rating": [5.0, 1.0, 3.0, 1.0, 5.0, 3.0]})
    >>> agent = LatentFactorUserAgent.fit(train, RatingScale(1, 5, 1), noise_std=0.5)
    >>> agent.rate([1, 2], [10, 10]).probs.shape
    (2, 5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from recsim_personas.agents.bias_agent import BiasUserAgent, pair_ids
from recsim_personas.agents.exits import ExitRuleConfig, train_activity_levels
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

    from recsim_personas.baselines.mf import BiasedMF

__all__ = [
    "DEFAULT_MF_PARAMS",
    "LatentFactorUserAgent",
    "TasteMode",
    "heldout_residual_std",
    "posterior_taste_deviations",
]

#: How a simulated user's tastes relate to the fitted model: ``posterior`` = one draw from the
#: ridge posterior of the user's ``[b_u, p_u]`` (the default), ``mean`` = the point estimate itself.
TasteMode = Literal["posterior", "mean"]

#: The model of the default users: chosen among 20/50 factors and reg 0.05-0.4 by the held-out RMSE
#: of the default population's users, fitted on ml-latest-small without their test ratings (0.868
#: against 0.897 for user + item biases; a least-squares slope of 0.95 of the held-out residuals on
#: the predicted interaction ``p_u . q_i``, so the tastes are neither over- nor under-shrunk).
DEFAULT_MF_PARAMS: dict[str, Any] = {"n_factors": 50, "reg": 0.1}


def heldout_residual_std(
    train: pd.DataFrame,
    scale: RatingScale,
    *,
    holdout: float = 0.2,
    seed: int = 0,
    mf_params: Mapping[str, Any] | None = None,
) -> float:
    """RMSE of a :class:`~recsim_personas.baselines.mf.BiasedMF` on a held-out part of ``train``.

    Each user with at least two ratings keeps a seeded random ``holdout`` share of them (at least
    one) out of the fit; the model (``mf_params``, default :data:`DEFAULT_MF_PARAMS`) is scored on
    those. Predictions are clipped to the scale.

    Raises:
        ConfigError: ``holdout`` outside (0, 1).
        DataError: No user has two ratings, so nothing can be held out.
    """
    from recsim_personas.baselines.mf import BiasedMF

    if not 0.0 < holdout < 1.0:
        raise ConfigError(f"holdout must be in (0, 1), got {holdout!r}")
    rng = np.random.default_rng(seed)
    keys = rng.random(len(train))
    frame = train.assign(_key=keys)
    rank = frame.groupby("user_id")["_key"].rank(method="first")
    size = frame.groupby("user_id")["_key"].transform("size")
    n_out = np.maximum(np.floor(size * holdout), 1)
    held = (rank <= n_out) & (size >= 2)
    if not held.any():
        raise DataError("heldout_residual_std: no user has two train ratings, nothing to hold out")
    fit_part = train[~held.to_numpy()]
    test_part = train[held.to_numpy()]
    params = {"seed": seed, **dict(DEFAULT_MF_PARAMS if mf_params is None else mf_params)}
    model = BiasedMF(scale=scale, **params).fit(fit_part)
    pred = np.clip(
        model.predict(test_part["user_id"].to_numpy(), test_part["item_id"].to_numpy()),
        scale.min,
        scale.max,
    )
    return float(np.sqrt(np.mean((pred - test_part["rating"].to_numpy(np.float64)) ** 2)))


def posterior_taste_deviations(
    model: BiasedMF,
    train: pd.DataFrame,
    user_ids: Sequence[int] | np.ndarray,
    *,
    noise_var: float,
    seed: int = 0,
) -> np.ndarray:
    """One draw per user of ``[b_u, p_u]`` minus its estimate, from the ridge posterior.

    With the item side fixed, the user's ALS step is a ridge regression of ``r - mu - b_i`` on
    ``[1, q_i]`` over the user's ratings, with penalty ``diag(reg_bias, reg * n_u, ...)``. Its
    posterior covariance is ``noise_var * (X^T X + penalty)^-1``; the draw is taken with the
    generator ``default_rng([seed, user_id])``, so a user's tastes do not depend on which other users
    are simulated. Users the model does not know get zeros.

    Returns:
        ``(len(user_ids), n_factors + 1)``: column 0 the bias deviation, then the factor deviation.
    """
    users = np.asarray(user_ids, dtype=np.int64).ravel()
    known_users = np.asarray(model.user_ids_, dtype=np.int64)
    known_items = np.asarray(model.item_ids_, dtype=np.int64)
    feats = np.hstack([np.ones((len(known_items), 1)), np.asarray(model.item_factors_, np.float64)])
    d = feats.shape[1]
    frame = train[train["user_id"].isin(users)]
    by_user = dict(tuple(frame.groupby("user_id")["item_id"]))
    out = np.zeros((len(users), d))
    for row, uid in enumerate(users.tolist()):
        pos = int(np.searchsorted(known_users, uid))
        if uid not in by_user or pos >= len(known_users) or known_users[pos] != uid:
            continue
        idx = np.searchsorted(known_items, by_user[uid].to_numpy(np.int64))
        x = feats[idx]
        penalty = np.full(d, model.reg * len(idx))
        penalty[0] = model.reg_bias
        chol = np.linalg.cholesky(x.T @ x + np.diag(penalty))
        z = np.random.default_rng([seed, uid]).standard_normal(d)
        # L^-T z has covariance (L L^T)^-1 = (X^T X + penalty)^-1.
        out[row] = np.sqrt(noise_var) * np.linalg.solve(chol.T, z)
    return out


class LatentFactorUserAgent(BiasUserAgent):
    """Biased-MF ratings with posterior-drawn tastes, held-out-calibrated noise and the patience exit.

    See the module docstring.

    Build one with :meth:`fit`. Unknown users or items fall back as the model does (item bias only,
    user bias only, or the global mean).

    Args:
        model: A fitted :class:`~recsim_personas.baselines.mf.BiasedMF`.
        scale, noise_std, activity_levels, exit_rule: As in
            :class:`~recsim_personas.agents.bias_agent.BiasUserAgent`.
        table_users: Users of the dense mean table (default: every user the model knows); other
            users are predicted on demand.
        table_items: Items of the dense mean table (default: every item the model knows).
        taste_deviations: ``(len(table_users), n_factors + 1)`` deviation of each table user's
            ``[b_u, p_u]`` from the model's estimate (:func:`posterior_taste_deviations`), added to
            the table's means; ``None`` = the estimate itself. Users outside the table are
            predicted by the estimate.
    """

    # The bias agent's parameters, then the mean table's.
    def __init__(
        self, model: BiasedMF, scale: RatingScale, *, noise_std: float,
        activity_levels: Mapping[int, int] | None = None, exit_rule: ExitRuleConfig | None = None,
        table_users: Sequence[int] | np.ndarray | None = None,
        table_items: Sequence[int] | np.ndarray | None = None,
        taste_deviations: np.ndarray | None = None,
    ) -> None:
        if getattr(model, "user_factors_", None) is None:
            raise ConfigError(
                "LatentFactorUserAgent needs a fitted BiasedMF (missing user_factors_); call "
                "model.fit(train) first or use LatentFactorUserAgent.fit(train, scale)"
            )
        # The bias agent's bookkeeping (ids, activity, exit rule) reads the same attribute names.
        super().__init__(
            _BiasView(model), scale, noise_std=noise_std, activity_levels=activity_levels,
            exit_rule=exit_rule,
        )
        self.model = model
        users = self._user_ids if table_users is None else np.unique(np.asarray(table_users, np.int64))
        items = self._item_ids if table_items is None else np.unique(np.asarray(table_items, np.int64))
        self._table_users, self._table_items = users, items
        grid_u = np.repeat(users, len(items))
        grid_i = np.tile(items, len(users))
        mean = model.predict(grid_u, grid_i).reshape(len(users), len(items))
        if taste_deviations is not None:
            dev = np.asarray(taste_deviations, dtype=np.float64)
            if dev.shape != (len(users), model.n_factors + 1):
                raise ConfigError(
                    f"taste_deviations must have shape (table users={len(users)}, n_factors + 1="
                    f"{model.n_factors + 1}), got {dev.shape}"
                )
            known_items = np.asarray(model.item_ids_, dtype=np.int64)
            pos = np.minimum(np.searchsorted(known_items, items), len(known_items) - 1)
            item_factors = np.where(
                (known_items[pos] == items)[:, None], np.asarray(model.item_factors_)[pos], 0.0
            )
            mean = mean + dev[:, :1] + dev[:, 1:] @ item_factors.T
        #: ``(n_table_users, n_factors + 1)`` taste deviations (zeros for ``tastes="mean"``).
        self.taste_deviations = (
            np.zeros((len(users), model.n_factors + 1)) if taste_deviations is None else dev
        )
        #: ``(n_users, n_items)`` mean rating of every known (user, item), clipped to the scale.
        self.mean_table = np.clip(mean, self._lo, self._hi)

    @classmethod
    def fit(  # type: ignore[override]
        cls, train: pd.DataFrame, scale: RatingScale, *, noise_std: float | None = None,
        activity_levels: Mapping[int, int] | None = None, exit_rule: ExitRuleConfig | None = None,
        mf_params: Mapping[str, Any] | None = None,
        holdout: float = 0.2,
        seed: int = 0,
        table_users: Sequence[int] | np.ndarray | None = None,
        table_items: Sequence[int] | np.ndarray | None = None,
        tastes: TasteMode = "posterior",
    ) -> LatentFactorUserAgent:
        """Fit biased MF on ``train`` and build the agent.

        Args:
            train: Train interactions (``user_id, item_id, rating``).
            scale: The rating scale.
            noise_std: Rating noise in stars; ``None`` = :func:`heldout_residual_std`.
            activity_levels: ``{user_id: level}``; ``None`` = terciles of train rating counts.
            exit_rule: Parameters of the patience exit rule.
            mf_params: Keyword arguments of :class:`~recsim_personas.baselines.mf.BiasedMF`
                (default: :data:`DEFAULT_MF_PARAMS`, ``seed`` = ``seed``).
            holdout: Share of each user's ratings held out to calibrate the noise.
            seed: Seed of the model's initialisation and of the held-out draw.
            table_users: Users of the dense mean table (see the class).
            table_items: Items of the dense mean table.
            tastes: ``posterior``: each table user's tastes are one draw of
                :func:`posterior_taste_deviations` (variance from the held-out residual), and the
                default noise is what is left of the held-out residual variance after the tastes'
                share; ``mean``: the model's estimate, noise = the held-out residual.

        Raises:
            ConfigError: ``tastes`` is not one of ``posterior``, ``mean``.
        """
        from recsim_personas.baselines.mf import BiasedMF

        if tastes not in get_args(TasteMode):
            raise ConfigError(f"tastes must be one of posterior, mean, got {tastes!r}")
        params = {"seed": seed, **dict(DEFAULT_MF_PARAMS if mf_params is None else mf_params)}
        model = BiasedMF(scale=scale, **params).fit(train)
        heldout_std = None
        if noise_std is None or tastes == "posterior":
            heldout_std = heldout_residual_std(train, scale, holdout=holdout, seed=seed, mf_params=params)
        deviations = None
        if tastes == "posterior":
            assert heldout_std is not None
            users = model.user_ids_ if table_users is None else np.unique(np.asarray(table_users, np.int64))
            deviations = posterior_taste_deviations(model, train, users, noise_var=heldout_std**2, seed=seed)
        if activity_levels is None:
            activity_levels = train_activity_levels(train)
        agent = cls(
            model, scale, noise_std=0.0 if noise_std is None else noise_std,
            activity_levels=activity_levels, exit_rule=exit_rule,
            table_users=table_users, table_items=table_items, taste_deviations=deviations,
        )
        if noise_std is None:
            assert heldout_std is not None
            # The held-out spread around the estimate is tastes + noise; keep their sum calibrated.
            taste_var = float(np.mean((agent.mean_table - agent._estimate_table()) ** 2)) if deviations is not None else 0.0
            agent.noise_std = float(np.sqrt(max(heldout_std**2 - taste_var, 0.0)))
        return agent

    def _estimate_table(self) -> np.ndarray:
        """The model's point estimates on the table grid, clipped (what ``tastes="mean"`` holds)."""
        users, items = self._table_users, self._table_items
        grid = self.model.predict(np.repeat(users, len(items)), np.tile(items, len(users)))
        return np.clip(grid.reshape(len(users), len(items)), self._lo, self._hi)

    def mean_rating(
        self, user_ids: Sequence[int] | np.ndarray, item_ids: Sequence[int] | np.ndarray
    ) -> np.ndarray:
        """The biased-MF mean, clipped to the scale (one table look-up per known pair)."""
        users, items = pair_ids(user_ids, item_ids, "LatentFactorUserAgent.rate")
        known_u, known_i = self._table_users, self._table_items
        pu = np.minimum(np.searchsorted(known_u, users), max(len(known_u) - 1, 0))
        pi = np.minimum(np.searchsorted(known_i, items), max(len(known_i) - 1, 0))
        found = (known_u[pu] == users) & (known_i[pi] == items)
        if found.all():
            return self.mean_table[pu, pi]
        out = np.empty(len(users))
        out[found] = self.mean_table[pu[found], pi[found]]
        rest = ~found
        out[rest] = np.clip(self.model.predict(users[rest], items[rest]), self._lo, self._hi)
        return out

    def __repr__(self) -> str:
        return (
            f"LatentFactorUserAgent(users={len(self._user_ids)}, items={len(self._item_ids)}, "
            f"factors={self.model.n_factors}, noise_std={self.noise_std:.3f}, "
            f"scale={self.scale.min}-{self.scale.max})"
        )


class _BiasView:
    """The attributes :class:`BiasUserAgent` reads, taken from a fitted :class:`BiasedMF`."""

    def __init__(self, model: Any) -> None:
        self.global_mean_ = model.global_mean_
        self.user_ids_ = model.user_ids_
        self.item_ids_ = model.item_ids_
        self._bu = np.asarray(model.user_bias_, dtype=np.float64)
        self._bi = np.asarray(model.item_bias_, dtype=np.float64)

    def user_bias(self, user_ids: np.ndarray) -> np.ndarray:
        return self._bu

    def item_bias(self, item_ids: np.ndarray) -> np.ndarray:
        return self._bi
