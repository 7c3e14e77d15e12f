"""Rating-level maths shared by every scorer: level token sequences, their probabilities, parsing.

A rating level is scored as the probability of its token sequence after the prompt. When every
level is one token ("1" ... "5" for SmolLM2) that is the next-token probability at the answer
position; when a level needs several tokens (half stars: ``"3.5"`` -> ``"3" "." "5"``) it is the
product of the probabilities of its tokens, each given the prompt and the tokens before it. The
tokens fed after the answer position form a trie of *stems* (proper prefixes of the levels):
:func:`level_stems` lists them, :func:`continuation_rows` the maximal ones (one row per branch for
the in-process tree pass), and :func:`level_logp` sums each level's log-probabilities from the
first-token distribution and the distributions after each stem, whoever computed them (the
in-process :class:`~recsim_personas.agents.scoring.RatingScorer` or the served one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from recsim_personas.agents.protocol import RatingBatch
from recsim_personas.data.dataset import RatingScale

__all__ = [
    "continuation_rows",
    "generated_batch",
    "level_distribution",
    "level_logp",
    "level_stems",
    "parse_rating",
]

_NUMBER = re.compile(r"(?<![\d.])\d+(?:\.\d+)?")


def parse_rating(text: str, scale: RatingScale) -> float | None:
    """The rating in a generated answer: the first number in ``text``, if it lies on ``scale``.

    ``"4"`` -> 4, ``"A 5."`` -> 5, ``"I'd say 3.5 stars"`` -> 3.5 on half stars (None on 1-5),
    ``"five"``, ``""`` and ``"6"`` (off the 1-5 scale) -> None. Number words are not read: the prompt
    asks for digits, and an answer in words counts as unparsable, as with the paper's regex.
    """
    match = _NUMBER.search(text or "")
    if match is None:
        return None
    value = float(match.group(0))
    if not bool(scale.contains(value)):
        return None
    return float(scale.snap(value))


def generated_batch(texts: Sequence[str], scale: RatingScale) -> RatingBatch:
    """The :class:`RatingBatch` of sampled answers: one-hot at the parsed level, uniform with
    ``outside_mass`` 1 and ``valid`` False where the answer is unparsable or off the scale (URR)."""
    parsed = [parse_rating(t, scale) for t in texts]
    valid = np.array([p is not None for p in parsed], dtype=bool)
    k = scale.n_levels
    probs = np.full((len(texts), k), 1.0 / k)
    levels = scale.levels
    for i, p in enumerate(parsed):
        if p is not None:
            probs[i] = 0.0
            probs[i, int(np.argmin(np.abs(levels - p)))] = 1.0
    outside = np.where(valid, 0.0, 1.0)
    return RatingBatch(probs=probs, outside_mass=outside, valid=valid)


def level_stems(seqs: Sequence[Sequence[int]]) -> dict[tuple[int, ...], list[int]]:
    """Every proper prefix (stem) of a multi-token level, with the tokens that follow it in some
    level (sorted); empty when every level is one token."""
    stems: dict[tuple[int, ...], set[int]] = {}
    for s in seqs:
        for t in range(1, len(s)):
            stems.setdefault(tuple(s[:t]), set()).add(int(s[t]))
    return {stem: sorted(nxt) for stem, nxt in sorted(stems.items(), key=lambda kv: (len(kv[0]), kv[0]))}


def continuation_rows(seqs: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """The token rows fed after the answer position: the maximal proper prefixes of the levels
    (each level without its last token), deduplicated; empty when every level is one token."""
    stems = sorted({tuple(s[:-1]) for s in seqs if len(s) > 1}, key=lambda t: (-len(t), t))
    rows: list[tuple[int, ...]] = []
    for stem in stems:
        if not any(len(r) >= len(stem) and r[: len(stem)] == stem for r in rows):
            rows.append(stem)
    return rows


def level_logp(
    seqs: Sequence[Sequence[int]],
    first: Callable[[int], np.ndarray],
    after: Callable[[tuple[int, ...], int], np.ndarray],
) -> np.ndarray:
    """``(B, n_levels)`` log-probability of each level's token sequence.

    Args:
        seqs: Token sequence of each level (closed with the end token where one prefixes another).
        first: ``token -> (B,)`` log-probability of ``token`` at the answer position.
        after: ``(stem, token) -> (B,)`` log-probability of ``token`` after the answer ``stem``.
    """
    cols = []
    for s in seqs:
        total = np.asarray(first(int(s[0])), dtype=np.float64).copy()
        for t in range(1, len(s)):
            total += np.asarray(after(tuple(int(x) for x in s[:t]), int(s[t])), dtype=np.float64)
        cols.append(total)
    return np.stack(cols, axis=1)


def level_distribution(logp: np.ndarray, first_mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(probs (B, n_levels), outside (B,))``: the levels' log-probabilities renormalised over the
    levels (float64 softmax), and the answer-position mass on tokens that start no level."""
    logp = np.asarray(logp, dtype=np.float64)
    z = logp - logp.max(axis=1, keepdims=True)
    p = np.exp(z)
    probs = p / p.sum(axis=1, keepdims=True)
    outside = np.clip(1.0 - np.asarray(first_mass, dtype=np.float64), 0.0, 1.0)
    return probs, outside
