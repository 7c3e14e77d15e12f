"""Ctrl-C and SIGTERM as one exception, delivered where the work can stop cleanly.

``recsim-personas`` turns SIGTERM into :class:`Interrupted` (a ``KeyboardInterrupt``), so ``kill``
unwinds like Ctrl-C: temporary files are removed and finished work stays. Inside
:func:`deferred_interrupts` (the training loop) both signals only set a flag; the loop calls
``stop.check()`` at a step boundary, where the checkpoint it writes holds exactly the state an
uninterrupted run has at that step. A second signal while one is pending interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Interrupted", "StopRequest", "deferred_interrupts", "terminate_as_interrupt"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def terminate_as_interrupt() -> None:
    """Make SIGTERM raise :class:`Interrupted` like Ctrl-C (main thread only; the CLI calls it)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise)


class StopRequest:
    """The flag :func:`deferred_interrupts` sets; :meth:`check` raises at a safe point."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def check(self) -> None:
        """Raise :class:`Interrupted` if a signal arrived since the block began."""
        if self.signum is not None:
            raise Interrupted(self.signum)


@contextmanager
def deferred_interrupts() -> Iterator[StopRequest]:
    """Within the block, SIGINT / SIGTERM set ``stop.signum`` instead of raising (main thread only;
    elsewhere signals keep their handlers and ``check`` never raises)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.signum is not None:  # a second signal: stop now
            raise Interrupted(signum)
        stop.signum = signum

    # A signal the process ignores (SIGINT of a background job) stays ignored.
    previous = {s: signal.signal(s, handler) for s in _SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    stop.check()  # a signal after the last check point still stops the program
