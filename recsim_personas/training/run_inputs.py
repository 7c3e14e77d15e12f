"""The experiment's data from a run folder: its users, each adapter's interactions, the test rows.

:func:`load_inputs` reads the memory stage's split and ``personas.parquet``; :func:`select_users`
draws the users of a CPU budget per persona; :func:`train_interactions` / :func:`test_interactions`
apply the per-user caps; :func:`adapter_datasets` gives each adapter its interactions (the paper's
fair comparison of single and persona adapters).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas.adapter_names import persona_adapter
from recsim_personas.errors import ConfigError, DataError
from recsim_personas.training.experiment_config import ExperimentConfig
from recsim_personas.training.sampling import cap_per_user, subsample_to_size

__all__ = [
    "adapter_datasets",
    "evaluation_rows",
    "load_inputs",
    "persona_map",
    "persona_table",
    "select_users",
    "test_interactions",
    "train_interactions",
    "users_of",
    "validation_interactions",
]


def load_inputs(run_dir: Path) -> tuple[Any, pd.DataFrame]:
    """The run folder's split and personas frame (a missing one names the command that builds it)."""
    from recsim_personas.data.splits import Split

    if not (run_dir / "split" / "config.json").is_file():
        raise DataError(
            f"run folder {run_dir} has no split; build it first with "
            f"`recsim-personas memory --out {run_dir}`"
        )
    split = Split.load(run_dir / "split")
    path = run_dir / "personas.parquet"
    if not path.is_file():
        raise DataError(
            f"run folder {run_dir} has no personas.parquet; run the personas stage "
            f"(`recsim-personas memory --stages personas --out {run_dir}`)"
        )
    personas = pd.read_parquet(path)
    return split, personas


def persona_table(personas: pd.DataFrame) -> dict[int, int]:
    """``user_id -> persona`` of a personas frame."""
    return {int(u): int(p) for u, p in zip(personas["user_id"], personas["persona"], strict=True)}


def select_users(personas: dict[int, int], max_users: int | None, seed: int = 0) -> np.ndarray:
    """At most ``max_users`` user ids, drawn per persona in proportion to its size (at least one each).

    Shares are rounded by largest remainder; the draw within a persona is seeded. ``None``: everyone.
    """
    users = np.asarray(sorted(personas), dtype=np.int64)
    if max_users is None or max_users >= len(users):
        return users
    groups: dict[int, list[int]] = {}
    for u in users.tolist():
        groups.setdefault(personas[u], []).append(u)
    keys = sorted(groups)
    if max_users < len(keys):
        raise ConfigError(
            f"max_users={max_users} is fewer than the {len(keys)} personas; every persona needs a user"
        )
    exact = np.array([max_users * len(groups[p]) / len(users) for p in keys])
    quota = np.maximum(1, np.floor(exact).astype(int))
    for i in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if quota.sum() >= max_users:
            break
        if quota[i] < len(groups[keys[i]]):
            quota[i] += 1
    while quota.sum() > max_users:
        quota[int(np.argmax(quota))] -= 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(groups[p], size=int(q), replace=False) for p, q in zip(keys, quota, strict=True)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def users_of(split: Any, personas: dict[int, int], config: ExperimentConfig) -> np.ndarray:
    """Every user of ``personas`` the config keeps (a split user without a persona is an error)."""
    missing = sorted(set(split.train["user_id"].astype(int)) - set(personas))
    if missing:
        raise DataError(
            f"user(s) {missing[:5]} of the split have no persona; re-run the personas stage"
        )
    return select_users(personas, config.max_users, config.seed)


def train_interactions(split: Any, config: ExperimentConfig, users: np.ndarray) -> pd.DataFrame:
    """The train interactions of ``users``, capped per user by ``config.train_rows_per_user``.

    With ``config.calibrate`` the validation slice (:func:`validation_interactions`) is removed
    first: the cap draws from the rows that remain, so no validation row is ever trained on.
    """
    train = split.train[split.train["user_id"].isin(users)]
    if config.calibrate:
        from recsim_personas.data.validation import validation_slice

        train = validation_slice(train, config.validation_fraction).fit
    return cap_per_user(train, config.train_rows_per_user, seed=config.seed).reset_index(drop=True)


def validation_interactions(
    split: Any, config: ExperimentConfig, users: np.ndarray, *, capped: bool = True
) -> pd.DataFrame:
    """The validation slice of ``users``: the newest ``config.validation_fraction`` of each one's train rows.

    Every evaluated agent scores these rows to fit its temperature; ``config.validation_rows`` caps
    them (the same seeded share of every user's slice; ``capped=False``: the whole slice, which is
    what training leaves out). Ordered by user, then item.
    """
    from recsim_personas.data.validation import validation_slice

    train = split.train[split.train["user_id"].isin(users)]
    val = validation_slice(train, config.validation_fraction).validation.reset_index(drop=True)
    if capped and config.validation_rows is not None and len(val) > config.validation_rows:
        val = subsample_to_size(val, config.validation_rows, seed=config.seed + 2)
    return val.sort_values(["user_id", "item_id"], kind="stable").reset_index(drop=True)


def test_interactions(split: Any, config: ExperimentConfig, users: np.ndarray) -> pd.DataFrame:
    """The test interactions of ``users``, capped per user by ``config.test_rows_per_user``."""
    test = split.test[split.test["user_id"].isin(users)]
    return cap_per_user(test, config.test_rows_per_user, seed=config.seed).reset_index(drop=True)


def adapter_datasets(
    interactions: pd.DataFrame, personas: dict[int, int], kinds: Sequence[str], seed: int
) -> dict[str, pd.DataFrame]:
    """``{adapter name: its rows (or interactions)}`` for one memory mode."""
    if "persona" not in interactions.columns:
        interactions = interactions.assign(persona=[personas[int(u)] for u in interactions["user_id"]])
    by_persona = {int(p): part for p, part in interactions.groupby("persona", sort=True)}
    sizes = {p: len(part) for p, part in by_persona.items()}
    out: dict[str, pd.DataFrame] = {}
    if "persona" in kinds:
        for p, part in by_persona.items():
            out[persona_adapter(p)] = part.reset_index(drop=True)
    if "single_min" in kinds:
        out["single_min"] = subsample_to_size(interactions, min(sizes.values()), seed=seed)
    if "single_max" in kinds:
        out["single_max"] = subsample_to_size(interactions, max(sizes.values()), seed=seed + 1)
    return out


def evaluation_rows(run_dir: str | Path, config: ExperimentConfig) -> pd.DataFrame:
    """The test interactions the experiment evaluates (users and per-user caps of ``config`` applied)."""
    split, personas = load_inputs(Path(run_dir))
    pmap = persona_table(personas)
    return test_interactions(split, config, users_of(split, pmap, config))


def persona_map(run_dir: str | Path) -> dict[int, int]:
    """``user_id -> persona`` of a run folder (``personas.parquet``)."""
    return persona_table(load_inputs(Path(run_dir))[1])
