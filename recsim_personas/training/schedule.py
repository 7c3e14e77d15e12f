"""The schedule of LoRA training: which rows each optimizer step sees, at which learning rate.

The schedule is a pure function of the rows, the config and the step, so a resumed run sees
exactly the batches an uninterrupted run would see; :func:`steps_per_epoch` lets a plan count steps
without tokenizing anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from recsim_personas.training.config import LoraTrainConfig
from recsim_personas.training.tokens import TrainRow

__all__ = ["BatchSchedule", "groups_for_epoch", "lr_factor", "steps_per_epoch"]

#: One step: a list of groups, each group a list of row indices (one forward pass).
Step = list[list[int]]


def _prefix_groups(rows: Sequence[TrainRow], cap: int, rng: np.random.Generator) -> list[list[int]]:
    """Groups of rows sharing a prefix (at most ``cap``, split evenly), then the unshared rows in chunks."""
    by_prefix: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        key = r.prefix_key if r.prefix else f"\0row{i}"
        by_prefix.setdefault(key, []).append(i)
    groups: list[list[int]] = []
    singles: list[int] = []
    for key in sorted(by_prefix):
        members = list(rng.permutation(by_prefix[key]))
        if key.startswith("\0row"):
            singles.extend(int(m) for m in members)
            continue
        n_groups = math.ceil(len(members) / cap)
        for part in np.array_split(np.asarray(members, dtype=np.int64), n_groups):
            groups.append([int(x) for x in part])
    singles = [int(x) for x in rng.permutation(singles)] if singles else []
    groups.extend(singles[i : i + cap] for i in range(0, len(singles), cap))
    return groups


def _pack(groups: list[list[int]], per_step: int, rng: np.random.Generator) -> list[Step]:
    """Groups in a seeded order, packed into steps of at most ``per_step`` rows."""
    steps: list[Step] = []
    current: Step = []
    size = 0
    for g in rng.permutation(len(groups)):
        group = groups[int(g)]
        if current and size + len(group) > per_step:
            steps.append(current)
            current, size = [], 0
        current.append(group)
        size += len(group)
    if current:
        steps.append(current)
    return steps


def groups_for_epoch(rows: Sequence[TrainRow], config: LoraTrainConfig, epoch: int) -> list[Step]:
    """Steps of one epoch: each step is a list of groups, each group a list of row indices.

    With prefix sharing a group holds rows with the same prefix (at most ``batch_size``, split
    evenly); without it, groups are chunks of ``batch_size`` shuffled rows. Groups are packed into
    steps of at most ``batch_size * grad_accumulation`` rows in a seeded order.
    """
    rng = np.random.default_rng([config.seed, epoch])
    cap = config.batch_size
    if config.prefix_sharing:
        groups = _prefix_groups(rows, cap, rng)
    else:
        order = [int(x) for x in rng.permutation(len(rows))]
        groups = [order[i : i + cap] for i in range(0, len(order), cap)]
    return _pack(groups, config.effective_batch_size, rng)


class BatchSchedule:
    """Lazy per-epoch step lists; step ``s`` is a pure function of (rows, config, s).

    Attributes:
        steps_per_epoch: Optimizer steps of one pass over the rows.
        total_steps: Steps of the whole run (``epochs`` of them, capped by ``max_steps``).
    """

    def __init__(self, rows: Sequence[TrainRow], config: LoraTrainConfig) -> None:
        self.rows = rows
        self.config = config
        self._epochs: dict[int, list[Step]] = {}
        self.steps_per_epoch = len(self.epoch(0))
        total = max(1, math.ceil(config.epochs * self.steps_per_epoch))
        self.total_steps = min(total, config.max_steps) if config.max_steps is not None else total

    def epoch(self, e: int) -> list[Step]:
        """The steps of epoch ``e`` (computed once)."""
        if e not in self._epochs:
            self._epochs[e] = groups_for_epoch(self.rows, self.config, e)
        return self._epochs[e]

    def step(self, s: int) -> Step:
        """The groups of step ``s`` (counting from 0 across epochs)."""
        e, i = divmod(s, self.steps_per_epoch)
        return self.epoch(e)[i]


def steps_per_epoch(rows_per_user: Sequence[int] | np.ndarray, config: LoraTrainConfig) -> int:
    """Optimizer steps of one epoch for users with these row counts: the trainer's own schedule."""
    rows = [TrainRow(f"user{u}", [0], [0], 1) for u, c in enumerate(rows_per_user) for _ in range(int(c))]
    return BatchSchedule(rows, config).steps_per_epoch if rows else 0


def lr_factor(config: LoraTrainConfig, total: int) -> Callable[[int], float]:
    """The learning-rate multiplier per step: linear warm-up, then ``config.scheduler``."""
    warmup = round(config.warmup_ratio * total)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if config.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor
