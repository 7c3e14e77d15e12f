"""An on-disk cache of LLM requests: a re-run with the same requests makes no HTTP calls.

The key is the sha256 of everything that defines the answer, as canonical JSON (sorted keys, no
whitespace): the endpoint URL and the request body (model, messages, sampling parameters). Two
endpoints never share an entry, even under the same model name: an answer one server gave is never
replayed as another's. Only answers the caller accepted are stored (the openai backend validates an
answer with the distiller's rules before :meth:`RequestCache.put`), so a rejected answer is never
cached and a re-run asks again.

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


def request_key(request: dict[str, Any], endpoint: str = "") -> str:
    """sha256 hex digest of ``{"endpoint": endpoint, "request": request}`` as canonical JSON."""
    keyed = {"endpoint": endpoint.rstrip("/"), "request": request}
    canonical = json.dumps(keyed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class RequestCache:
    """Request -> response entries under ``root`` (see the module docstring).

    Args:
        root: The cache folder.
        endpoint: The endpoint URL the answers come from; part of every key.

    Attributes:
        hits, misses, corrupt: Counters since construction.
    """

    def __init__(self, root: str | os.PathLike[str], endpoint: str = "") -> None:
        self.root = Path(root)
        self.endpoint = endpoint.rstrip("/")
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
        key = request_key(request, self.endpoint)
        path = self.path(key)
        if not path.exists():
            self._count(misses=1)
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(entry, dict) or entry.get("key") != key:
                raise ValueError("entry has no matching key")
            if entry.get("endpoint", "") != self.endpoint:
                raise ValueError("entry belongs to another endpoint")
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

    def discard(self, request: dict[str, Any]) -> None:
        """Delete the entry of ``request`` (an answer the caller no longer accepts); no-op if absent."""
        with contextlib.suppress(OSError):
            self.path(request_key(request, self.endpoint)).unlink()

    def put(self, request: dict[str, Any], response: dict[str, Any]) -> Path:
        """Store ``response`` (must have a ``"content"`` string) for ``request``; returns the file."""
        if not isinstance(response.get("content"), str):
            raise ValueError("a cache entry needs a 'content' string")
        key = request_key(request, self.endpoint)
        path = self.path(key)
        entry = {"key": key, "endpoint": self.endpoint, "request": request, "response": response}
        atomic_write_text(path, json.dumps(entry, ensure_ascii=False, sort_keys=True))
        return path
