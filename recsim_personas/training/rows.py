"""Fine-tuning rows: one (prompt, target rating) pair per interaction.

A row is what the LoRA trainer sees and what the evaluation scores: the user's rating prompt
(:func:`recsim_personas.agents.prompts.build_rating_prompt`, the same builder the agent uses at
inference, so train and test prompts match token for token) split into ``prefix`` / ``suffix``, and
the ``target`` text, the rating as the prompt's scale spells it (``scale.format``: ``"4"``,
``"3.5"``).

Memory modes (Table 1 of the paper):

``ms``
    The profile M_s only.
``msml``
    M_s plus the top-``k`` memories (M_l) retrieved for the item with similarity >= ``delta``
    (the paper's RAFT). For **train** rows retrieval excludes the row's own item
    (``exclude_item=item_id``), so a row never shows the rating it is trained to predict; the
    memories come from the user's *other* train interactions. Test rows need no exclusion (the store
    holds train memories only, and a user rates an item once) but get it anyway, as the agent does.

No row sees its own label:

* **Item average.** A train row's item facts leave the row's own rating out of the item's average
  and count (:func:`recsim_personas.memory.statistics.leave_one_out`, ``leave_one_out=True``): the
  prompt states the average of everyone *else's* ratings, and an item whose only rating is the
  row's own shows no average at all. This is what a test row sees by construction (the rating
  pool never holds test ratings), so train and test prompts carry the same kind of number.
  Leave-one-out was chosen over "only ratings before the row's timestamp" because the test-time
  average is not time-restricted either: the catalog's pool holds every other known rating.
* **Memories.** Retrieval never returns the row's own item (below), and the M_l texts quote
  leave-one-out averages too (``memory.statistics``).
* **The collaborative cue** (``cue=``, off by default): the user's mean rating and count, the
  item's mean rating and count and a bias model's estimate
  (:class:`~recsim_personas.memory.cue.CueStatistics`). A train row's numbers leave the row's own
  rating out of every sum they are computed from (global, user and item: leave-one-out); a test
  row's come from the train rows and the rating pool, which hold no test rating.
* **Items the profile names.** The profile M_s lists a few films the user loved or disliked, with
  its rating implied ("Films I loved include ..."). A train row whose item the user's profile names
  (its ``"Title (year)"`` label, or its title, appears in the profile text) would be answered by
  the profile itself, so it is **dropped** from the training rows (``named_items="drop"``, the
  default for training; the frame's ``attrs["dropped_named"]`` counts them). Test rows are kept
  whatever the profile says (the profile is built from train ratings only, so it cannot state a
  test rating).

Per-user caps and sub-sampling live in :mod:`~recsim_personas.training.sampling` (``cap_per_user``
and ``subsample_to_size`` stay importable from here).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError, DataError, did_you_mean
from recsim_personas.training.sampling import cap_per_user as cap_per_user  # compatibility
from recsim_personas.training.sampling import (
    subsample_to_size as subsample_to_size,  # compatibility
)

if TYPE_CHECKING:
    from recsim_personas.memory.cue import CueStatistics

__all__ = [
    "ROW_COLUMNS",
    "build_rows",
    "build_test_rows",
    "build_training_rows",
    "profile_names_item",
    "rows_digest",
]

MemoryMode = Literal["ms", "msml"]
NamedItems = Literal["drop", "keep"]
#: Columns of a rows frame, in order.
ROW_COLUMNS: tuple[str, ...] = (
    "user_id", "item_id", "rating", "prefix", "suffix", "target", "n_memories", "truncated",
)


def _check_mode(memory_mode: str) -> None:
    if memory_mode not in ("ms", "msml"):
        raise ConfigError(f"memory_mode must be 'ms' or 'msml', got {memory_mode!r}.{did_you_mean(memory_mode, ('ms', 'msml'))}")


def profile_names_item(profile: str, info: Any) -> bool:
    """Whether a profile text names the item: its ``"Title (year)"`` label, or the bare title as
    a whole phrase (not inside a longer word), appears in it."""
    title = str(getattr(info, "title", "") or "")
    if not title:
        return False
    year = getattr(info, "year", None)
    if year is not None and f"{title} ({year})" in profile:
        return True
    return re.search(rf"(?<!\w){re.escape(title)}(?!\w)", profile) is not None


def build_rows(
    store: Any,
    catalog: Any,
    interactions: pd.DataFrame,
    *,
    memory_mode: MemoryMode = "ms",
    template: Any = "paper",
    scale: RatingScale,
    tokenizer: Any | None = None,
    max_tokens: int | None = None,
    k: int = 1,
    delta: float = 0.0,
    exclude_self: bool = True,
    per_user: int | float | None = None,
    seed: int = 0,
    leave_one_out: bool = False,
    named_items: NamedItems = "keep",
    cue: CueStatistics | None = None,
) -> pd.DataFrame:
    """Prompt + target rows for ``interactions`` (see :func:`build_training_rows`).

    Args:
        exclude_self: Never retrieve the row's own item (always True for training rows).
        leave_one_out: Show the row's item with the row's own rating left out of its average
            (train rows: the catalog's averages count them); with ``cue``, the cue's numbers
            leave it out too.
        cue: :class:`~recsim_personas.memory.cue.CueStatistics` whose numbers every prompt states
            (the collaborative cue), or ``None`` (default) for prompts without them.
        named_items: ``"drop"`` rows whose item the user's profile names, or ``"keep"`` them.

    Returns:
        A frame with :data:`ROW_COLUMNS`, one row per kept interaction, in input order.
    """
    from recsim_personas.agents.prompts import PromptTruncatedWarning

    _check_args(interactions, memory_mode, k, named_items)
    chosen = cap_per_user(interactions, per_user, seed=seed)
    users = chosen["user_id"].to_numpy(dtype=np.int64)
    items = chosen["item_id"].to_numpy(dtype=np.int64)
    ratings = chosen["rating"].to_numpy(dtype=np.float64)
    _check_scale(scale, users, items, ratings)
    if memory_mode == "msml":
        found = store.retrieve_batch(
            users, items, k=k, delta=delta, exclude_items=items if exclude_self else None
        )
    else:
        found = [[] for _ in users]
    numbers: list[Any] = (
        [None] * len(users) if cue is None else cue.numbers(users, items, ratings if leave_one_out else None)
    )
    with warnings.catch_warnings():
        # One summary warning below instead of one per row.
        warnings.simplefilter("ignore", PromptTruncatedWarning)
        records, n_named = _records(
            store, catalog, zip(users.tolist(), items.tolist(), ratings, found, numbers, strict=True),
            memory_mode=memory_mode, template=template, scale=scale, tokenizer=tokenizer,
            max_tokens=max_tokens, exclude_self=exclude_self, leave_one_out=leave_one_out,
            named_items=named_items,
        )
    n_truncated = sum(r[-1] for r in records)
    if n_truncated:
        warnings.warn(
            f"{n_truncated} of {len(records)} {memory_mode} prompts exceeded {max_tokens} tokens and "
            "were shortened (memories dropped first, then the summary)",
            PromptTruncatedWarning,
            stacklevel=3,
        )
    frame = pd.DataFrame.from_records(records, columns=list(ROW_COLUMNS))
    frame = frame.astype({"user_id": "int64", "item_id": "int64", "rating": "float64", "n_memories": "int64"})
    frame.attrs["dropped_named"] = n_named
    return frame


def _check_args(interactions: pd.DataFrame, memory_mode: str, k: int, named_items: str) -> None:
    _check_mode(memory_mode)
    if k < 1:
        raise ConfigError(f"k (memories per prompt) must be >= 1, got {k}")
    missing = [c for c in ("user_id", "item_id", "rating") if c not in interactions.columns]
    if missing:
        raise DataError(
            f"interactions lack column(s) {', '.join(missing)}; pass split.train / split.test frames"
        )
    if named_items not in ("drop", "keep"):
        raise ConfigError(f"named_items must be 'drop' or 'keep', got {named_items!r}")


def _check_scale(scale: RatingScale, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> None:
    off = np.flatnonzero(~scale.contains(ratings))
    if len(off):
        j = int(off[0])
        raise DataError(f"rating {ratings[j]} of user {users[j]}, item {items[j]} is not on the scale "
                        f"{scale.min}-{scale.max} step {scale.step}; pass the dataset's scale")


def _records(store: Any, catalog: Any, rows: Any, *, memory_mode: str, template: Any, scale: RatingScale,
             tokenizer: Any, max_tokens: int | None, exclude_self: bool, leave_one_out: bool,
             named_items: str) -> tuple[list[tuple[Any, ...]], int]:
    """One record per kept ``(user, item, rating, memories, cue numbers)`` (in :data:`ROW_COLUMNS`
    order), and the number of rows dropped because the profile names the item."""
    from recsim_personas.agents.prompts import PromptMemory, build_rating_prompt
    from recsim_personas.memory.statistics import leave_one_out as _without

    info_cache: dict[int, Any] = {}

    def info(item_id: int) -> Any:
        if item_id not in info_cache:
            info_cache[item_id] = catalog.info(item_id)
        return info_cache[item_id]

    profiles: dict[int, str] = {}
    records = []
    n_named = 0
    for user, item, rating, memories, numbers in rows:
        if exclude_self and any(int(m.item_id) == item for m in memories):
            raise DataError(
                f"retrieval returned the row's own item {item} for user {user}: the store ignores "
                "exclude_item, which would leak the target rating into the prompt"
            )
        if user not in profiles:
            profiles[user] = store.profile(user)
        item_info = info(item)
        if named_items == "drop" and profile_names_item(profiles[user], item_info):
            n_named += 1
            continue
        if leave_one_out:
            item_info = _without(item_info, float(rating))
        entries = [PromptMemory(info(int(m.item_id)), m.text) for m in memories]
        prompt = build_rating_prompt(
            template, profiles[user], item_info, entries, scale,
            memory_mode=memory_mode, tokenizer=tokenizer, max_tokens=max_tokens, numbers=numbers,
        )
        records.append(
            (user, item, float(rating), prompt.prefix, prompt.suffix, scale.format(float(rating)),
             len(entries), bool(prompt.truncated))
        )
    return records, n_named


def build_training_rows(
    store: Any, catalog: Any, train: pd.DataFrame, *, memory_mode: MemoryMode = "ms", template: Any = "paper",
    scale: RatingScale, tokenizer: Any | None = None, max_tokens: int | None = None, k: int = 1,
    delta: float = 0.0, per_user: int | float | None = None, seed: int = 0, named_items: NamedItems = "drop",
    cue: CueStatistics | None = None,
) -> pd.DataFrame:
    """One fine-tuning row per train interaction: the rating prompt and the rating as target text.

    Args:
        store: ``MemoryStore`` of the run folder (profiles, retrieval over train memories).
        catalog: ``ItemCatalog`` (item facts with the train-only average rating).
        train: Train interactions (``user_id, item_id, rating``), e.g. ``split.train``.
        memory_mode: ``"ms"`` (profile only) or ``"msml"`` (profile + retrieved memories).
        template: Prompt preset name or ``PromptTemplate`` (the agent must use the same).
        scale: The dataset's rating scale (targets are ``scale.format(rating)``).
        tokenizer: The model's tokenizer: applies its chat template (as the agent does) and measures
            length. ``None`` gives plain-text prompts, which only match an agent without one.
        max_tokens: Longest prompt; longer ones drop memories first (a warning counts them).
        k: Memories per prompt in ``msml`` mode (the paper: 1).
        delta: Minimum cosine similarity of a retrieved memory.
        per_user: Cap per user: ``None`` (all), an int (at most that many rows), or a fraction.
        seed: Seed of the per-user cap.
        named_items: ``"drop"`` (default) rows whose item the user's profile names, or ``"keep"``.
        cue: :class:`~recsim_personas.memory.cue.CueStatistics` fitted on the rating pool and the
            train rows (the collaborative cue; ``None``: none). Each row's numbers leave its own
            rating out (leave-one-out), so a row must be among the ratings the cue was fitted on.

    Returns:
        A frame with columns ``user_id, item_id, rating, prefix, suffix, target, n_memories,
        truncated``; retrieval never returns the row's own item, the item's average leaves the
        row's rating out, and ``attrs["dropped_named"]`` counts the rows dropped by ``named_items``.

    Raises:
        ConfigError: Unknown memory mode or template, bad ``k`` / ``per_user``.
        DataError: Unknown user or item, a rating off the scale, or a store that leaks the row's item.
    """
    return build_rows(
        store, catalog, train, memory_mode=memory_mode, template=template, scale=scale,
        tokenizer=tokenizer, max_tokens=max_tokens, k=k, delta=delta, exclude_self=True,
        per_user=per_user, seed=seed, leave_one_out=True, named_items=named_items, cue=cue,
    )


def build_test_rows(
    store: Any, catalog: Any, test: pd.DataFrame, *, memory_mode: MemoryMode = "ms", template: Any = "paper",
    scale: RatingScale, tokenizer: Any | None = None, max_tokens: int | None = None, k: int = 1,
    delta: float = 0.0, per_user: int | float | None = None, seed: int = 0, cue: CueStatistics | None = None,
) -> pd.DataFrame:
    """Rows for test interactions, built exactly as the agent builds its prompts.

    Same arguments and columns as :func:`build_training_rows`. The store holds train memories only, so
    test retrieval cannot see a test rating; the item itself is excluded too, as the agent does. The
    cue's numbers (``cue``) are the fitted sums as they are: no test rating is in them.
    """
    return build_rows(
        store, catalog, test, memory_mode=memory_mode, template=template, scale=scale,
        tokenizer=tokenizer, max_tokens=max_tokens, k=k, delta=delta, exclude_self=True,
        per_user=per_user, seed=seed, cue=cue,
    )


def rows_digest(rows: pd.DataFrame, columns: Sequence[str] = ("prefix", "suffix", "target")) -> str:
    """A content hash of rows (16 hex digits): the adapter's "data hash", stable across processes."""
    h = hashlib.sha256()
    for col in columns:
        if col not in rows.columns:
            raise DataError(f"rows lack column {col!r}; build them with build_training_rows")
        h.update(col.encode())
        for value in rows[col].astype(str):
            h.update(value.encode())
            h.update(b"\x00")
    h.update(str(len(rows)).encode())
    return h.hexdigest()[:16]
