"""An on-disk cache of LLM requests: a re-run with the same requests makes no HTTP calls.

The key is the sha256 of the request body as canonical JSON (sorted keys, no whitespace): model,
messages, sampling parameters. The endpoint URL is *not* part of the key, so a local server that
restarts on another port keeps its cache; two endpoints serving different weights under the same
model name would share entries (give them different cache folders).

One file per entry, ``<root>/<key[:2]>/<key>.json``, written atomically (temporary file + rename),
so parallel threads and processes never see half an entry. An unreadable entry (truncated, not
JSON, wrong shape) counts as a miss: it is logged, deleted and fetched again, never a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from recsim_personas.artifacts import atomic_write_text

__all__ = ["RequestCache", "request_key"]

logger = logging.getLogger(__name__)


def request_key(request: dict[str, Any]) -> str:
    """sha256 hex digest of ``request`` as canonical JSON."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class RequestCache:
    """Request -> response entries under ``root`` (see the module docstring).

    Attributes:
        hits, misses, corrupt: Counters since construction.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self._lock = threading.Lock()  # counters are bumped from the backend's worker threads

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The stored response of ``request``, or ``None`` (missing or corrupt entry)."""
        key = request_key(request)
        path = self.path(key)
        if not path.exists():
            self._count(misses=1)
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(entry, dict) or entry.get("key") != key:
                raise ValueError("entry has no matching key")
            response = entry["response"]
            if not isinstance(response, dict) or not isinstance(response.get("content"), str):
                raise ValueError("entry has no response content")
        except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
            self._count(corrupt=1, misses=1)
            logger.warning("corrupt cache entry %s (%s); fetching it again", path, exc)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        self._count(hits=1)
        return response

    def put(self, request: dict[str, Any], response: dict[str, Any]) -> Path:
        """Store ``response`` (must have a ``"content"`` string) for ``request``; returns the file."""
        key = request_key(request)
        path = self.path(key)
        entry = {"key": key, "request": request, "response": response}
        atomic_write_text(path, json.dumps(entry, ensure_ascii=False, sort_keys=True))
        return path
