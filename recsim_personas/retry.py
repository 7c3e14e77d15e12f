"""Bounded retries of network calls: the retryable failure, the backoff delay, ``Retry-After``.

Every client of a remote endpoint in the package (the served rating scorer in ``agents``, the
OpenAI distillation backend in ``memory``) retries the same way: a failed attempt that may succeed
later raises :class:`Retryable`; the next attempt waits :func:`backoff_delay` seconds, which is the
server's ``Retry-After`` when it sent one (:func:`retry_after_seconds`), else exponential backoff
(``base * 2**attempt``, capped) with equal jitter (half fixed, half uniform), so that many clients
that failed together do not retry together. The loops themselves stay with each client: one is
async, the other threaded, and each maps the final failure to its own one-line error.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

__all__ = ["Retryable", "backoff_delay", "one_line", "retry_after_seconds"]


class Retryable(Exception):
    """A failed attempt that may succeed later.

    Attributes:
        reason: One line saying what failed (it ends up in the final error).
        retry_after: Seconds the server asked to wait (``Retry-After``), or None.
        unreachable: A timeout or a failed connection: the endpoint hangs or is down.
    """

    def __init__(self, reason: str, retry_after: float | None = None, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.unreachable = unreachable


def one_line(text: object, limit: int = 200) -> str:
    """``text`` with its whitespace runs collapsed to single spaces, cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    rng: random.Random,
    retry_after: float | None = None,
    retry_after_cap: float | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    Args:
        attempt: Retries made so far.
        base: First delay in seconds (doubling per retry).
        cap: Longest backoff delay in seconds.
        rng: Source of the jitter (seeded by the caller; guard it with a lock if threads share it).
        retry_after: The server's ``Retry-After`` in seconds; when given it replaces the backoff.
        retry_after_cap: Longest ``Retry-After`` honoured (default ``2 * cap``).

    Example:
        >>> backoff_delay(0, base=1.0, cap=4.0, rng=random.Random(0), retry_after=30.0)
        8.0
        >>> 0.5 <= backoff_delay(0, base=1.0, cap=4.0, rng=random.Random(0)) <= 1.0
        True
    """
    if retry_after is not None:
        limit = 2 * cap if retry_after_cap is None else retry_after_cap
        return max(0.0, min(retry_after, limit))
    delay = min(cap, base * (2**attempt))
    return delay / 2 + rng.uniform(0.0, delay / 2)


def retry_after_seconds(headers: Mapping[str, Any] | None) -> float | None:
    """The wait a response asks for: ``retry-after-ms`` or ``retry-after`` (seconds) in ``headers``;
    None when absent or an HTTP date (the caller then backs off on its own)."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except (TypeError, ValueError):
            continue
    return None
