"""The ``openai`` backend: any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server).

* Client: the ``openai`` SDK with ``base_url`` and ``model`` from the config; the API key comes from
  the environment variable ``config.api_key_env`` (``OPENAI_API_KEY``). Local endpoints
  (``localhost``, ``127.0.0.1``, ``::1``) get a dummy key when the variable is unset.
* Concurrency: a thread pool of ``config.concurrency`` workers answers the requests of one distiller
  step (one request per user), so at most that many HTTP calls are in flight.
* Retries: the SDK's own retries are off (``max_retries=0``) and this module retries instead, so the
  policy is explicit and testable: 429, 5xx, timeouts, connection errors and malformed bodies are
  retried up to ``config.request_retries`` times with exponential backoff
  (``backoff_base * 2**attempt``, capped at ``backoff_max``) and equal jitter (half fixed, half
  uniform); a 429's ``Retry-After`` header (seconds) is honoured instead when present, up to
  ``config.retry_after_max`` seconds: a longer one stops the run at once instead of waiting. Other
  4xx (bad key, unknown model) are not retried and stop the run.
* Bounded waits: a request waits at most ``config.timeout`` seconds for the answer (5 s to
  connect); a request whose every attempt timed out or could not connect means the endpoint hangs
  or is down, which would fail every user the same way, so it stops the run (seconds, not one wait
  per user). The first retry prints one :class:`BackendRetryWarning` note.
* Cache: an answer is stored in a :class:`RequestCache` keyed by the endpoint and the request body
  only after it passed the distiller's checks (word limit, format), so a re-run, or the resumption of
  an interrupted run, sends no request it has sent before, and a rejected answer is asked again.
* Usage: prompt and completion tokens, requests, retries and cache hits are counted; the cost uses
  ``config.price_per_million`` (USD per 1M input / output tokens) or the :data:`PRICES` entry of
  the model (GPT-4o by default), 0 for unknown models.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

from recsim_personas.errors import BackendError, RecsimWarning
from recsim_personas.memory.backends.cache import RequestCache
from recsim_personas.memory.backends.steps import StepRequest, StepResponse
from recsim_personas.memory.prompts import PROMPT_VERSION, build_messages
from recsim_personas.memory.step_output import parse_step_output
from recsim_personas.retry import Retryable, backoff_delay, one_line, retry_after_seconds

__all__ = ["DEFAULT_OPENAI_MODEL", "PRICES", "BackendRetryWarning", "OpenAIBackend", "UsageCounter"]


class BackendRetryWarning(RecsimWarning):
    """The endpoint failed a request and it is being retried (issued once per backend)."""

#: The paper's distillation model.
DEFAULT_OPENAI_MODEL = "gpt-4o"
#: USD per 1M (input, output) tokens, from OpenAI's price list (checked 2025); override with
#: ``DistillConfig.price_per_million``.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-2024-08-06": (2.50, 10.00),
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
}
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
_DEFAULT_BASE_URL = "https://api.openai.com/v1"


class UsageCounter:
    """Thread-safe counters of one backend's traffic and cost."""

    def __init__(self, price_per_million: tuple[float, float]) -> None:
        self.price_per_million = price_per_million
        self._lock = threading.Lock()
        self.requests = 0
        self.http_requests = 0
        self.cache_hits = 0
        self.retries = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + int(value))

    @property
    def cost_usd(self) -> float:
        p_in, p_out = self.price_per_million
        return (self.prompt_tokens * p_in + self.completion_tokens * p_out) / 1e6

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "http_requests": self.http_requests,
                "cache_hits": self.cache_hits,
                "retries": self.retries,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "cost_usd": round(self.cost_usd, 6),
                "price_per_million": list(self.price_per_million),
            }


class _Failed(Exception):
    """Internal: the request failed for good; ``fatal`` when every user would fail the same way."""

    def __init__(self, reason: str, fatal: bool) -> None:
        super().__init__(reason)
        self.fatal = fatal


class OpenAIBackend:
    """Distillation text from an OpenAI-compatible chat endpoint (see the module docstring).

    Args:
        config: A :class:`~recsim_personas.memory.distill_config.DistillConfig` (``model``, ``base_url``,
            ``concurrency``, ``request_retries``, ``backoff_base``, ``backoff_max``, ``timeout``,
            ``temperature``, ``seed``, ``max_new_tokens``, ``json_mode``, ``cache``, ``cache_dir``,
            ``api_key_env``, ``price_per_million``). ``None``: the defaults.
        api_key: Overrides the environment variable.
        client: A ready ``openai.OpenAI`` client (tests); built from the config when ``None``.

    Raises:
        BackendError: the ``openai`` package is missing, or no API key for a remote endpoint.
    """

    name = "openai"

    def __init__(self, config: Any = None, *, api_key: str | None = None, client: Any = None) -> None:
        import os

        if config is None:
            from recsim_personas.memory.distill_config import DistillConfig

            config = DistillConfig(backend="openai")
        self.config = config
        self.model = config.model or DEFAULT_OPENAI_MODEL
        self.base_url = (config.base_url or _DEFAULT_BASE_URL).rstrip("/")
        self.parallelism = int(config.concurrency)
        price = config.price_per_million or PRICES.get(self.model, (0.0, 0.0))
        self.counter = UsageCounter(tuple(price))
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()
        self._warned = False
        self.cache: RequestCache | None = None
        if config.cache:
            from recsim_personas.paths import cache_dir

            root = config.cache_dir or cache_dir("llm-requests", "openai")
            self.cache = RequestCache(root, endpoint=self.base_url)
        if client is None:
            try:
                from openai import OpenAI
            except ImportError as exc:  # pragma: no cover - openai is a hard dependency
                raise BackendError(
                    "the openai backend needs the 'openai' package: pip install 'openai>=1.40'"
                ) from exc
            key = api_key or os.environ.get(config.api_key_env)
            if not key:
                host = urlparse(self.base_url).hostname or ""
                if host in _LOCAL_HOSTS:
                    key = "sk-local-dummy"
                else:
                    raise BackendError(
                        f"no API key for {self.base_url}: set the {config.api_key_env} environment "
                        "variable (local servers on localhost need none)"
                    )
            from openai import Timeout

            timeout = float(config.timeout)
            client = OpenAI(
                base_url=self.base_url, api_key=key, max_retries=0,
                timeout=Timeout(timeout, connect=min(5.0, timeout)),
            )
        self.client = client

    # -- protocol --------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "temperature": self.config.temperature,
            "seed": self.config.seed,
            "max_tokens": self.config.max_new_tokens,
            "json_mode": self.config.json_mode,
            "prompt_version": PROMPT_VERSION,
        }

    def usage(self) -> dict[str, Any]:
        out = self.counter.to_dict()
        out["model"] = self.model
        out["base_url"] = self.base_url
        if self.cache is not None:
            out["cache_dir"] = str(self.cache.root)
            out["cache_corrupt_refetched"] = self.cache.corrupt
        return out

    def run(self, requests: list[StepRequest]) -> list[StepResponse]:
        if len(requests) <= 1 or self.parallelism == 1:
            return [self._answer(r) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.parallelism, len(requests))) as pool:
            return list(pool.map(self._answer, requests))

    # -- one request -----------------------------------------------------------------------------
    def request_body(self, req: StepRequest) -> dict[str, Any]:
        """The JSON body sent to ``/chat/completions`` (also the cache key)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": build_messages(req),
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_new_tokens,
            "seed": self.config.seed,
        }
        if self.config.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def _answer(self, req: StepRequest) -> StepResponse:
        body = self.request_body(req)
        self.counter.add(requests=1)
        if self.cache is not None:
            hit = self.cache.get(body)
            if hit is not None and self._acceptable(req, hit["content"]):
                self.counter.add(cache_hits=1)
                return StepResponse(text=hit["content"], cached=True)
            if hit is not None:  # stored under other rules (e.g. a larger max_words): ask again
                self.cache.discard(body)
        try:
            content, usage = self._post_with_retries(body)
        except _Failed as exc:
            if exc.fatal:
                return StepResponse(error=BackendError(str(exc)), fatal=True)
            message = f"{req.context.where}, step {req.kind}: {exc}"
            return StepResponse(error=BackendError(message))
        self.counter.add(
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
        )
        if self.cache is not None and self._acceptable(req, content):
            self.cache.put(body, {"content": content, "usage": usage, "model": self.model})
        return StepResponse(text=content)

    def _acceptable(self, req: StepRequest, content: str) -> bool:
        """Whether the distiller will accept ``content`` (its word limit and format checks)."""
        if len(content.split()) > self.config.max_words:
            return False
        try:
            parse_step_output(req.kind, content, req.context)
        except BackendError:
            return False
        return True

    def _post_with_retries(self, body: dict[str, Any]) -> tuple[str, dict[str, int]]:
        cfg = self.config
        last: Retryable | None = None
        attempts = cfg.request_retries + 1
        all_unreachable = True
        for attempt in range(attempts):
            if attempt:
                assert last is not None
                self.counter.add(retries=1)
                self._note_retry(last, attempt, attempts)
                time.sleep(self._delay(attempt - 1, last.retry_after))
            try:
                return self._post_once(body)
            except Retryable as exc:
                last = exc
                all_unreachable = all_unreachable and exc.unreachable
                if exc.retry_after is not None and exc.retry_after > cfg.retry_after_max:
                    # Waiting that long would hold every user: stop now, say how to wait longer.
                    raise _Failed(
                        f"{self.base_url} asks to retry after {exc.retry_after:g} s ({exc.reason}), "
                        f"longer than retry_after_max={cfg.retry_after_max:g} s; try again later or "
                        "raise --max-retry-after",
                        fatal=True,
                    ) from None
        assert last is not None
        if all_unreachable:
            # A hanging or unreachable endpoint fails every user the same way: stop the run.
            raise _Failed(
                f"cannot reach the OpenAI-compatible endpoint {self.base_url} ({attempts} "
                f"attempts: {last.reason}); check --base-url and that the server is running, or "
                "raise --request-timeout / --request-attempts",
                fatal=True,
            )
        raise _Failed(f"{self.base_url} failed after {attempts} attempts: {last.reason}", fatal=False)

    def _note_retry(self, last: Retryable, attempt: int, attempts: int) -> None:
        """One note on the first retry, so a slow or failing endpoint is visible at once."""
        with self._rng_lock:
            if self._warned:
                return
            self._warned = True
        import warnings

        warnings.warn(
            f"{self.base_url}: {last.reason}; retrying (attempt {attempt + 1} of {attempts}, "
            f"--request-timeout {self.config.timeout:g} s)",
            BackendRetryWarning,
            stacklevel=2,
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        with self._rng_lock:
            return backoff_delay(attempt, base=cfg.backoff_base, cap=cfg.backoff_max, rng=self._rng,
                                 retry_after=retry_after, retry_after_cap=cfg.retry_after_max)

    def _post_once(self, body: dict[str, Any]) -> tuple[str, dict[str, int]]:
        import json

        import openai

        self.counter.add(http_requests=1)
        try:
            completion = self.client.chat.completions.create(**body)
        except openai.RateLimitError as exc:
            raise Retryable(f"HTTP 429: {one_line(exc)}", _retry_after(exc)) from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status == 408 or status >= 500:
                raise Retryable(f"HTTP {status}: {one_line(exc)}", _retry_after(exc)) from exc
            raise _Failed(
                f"{self.base_url} refused the request with HTTP {status}: {one_line(exc)}"
                + (" (check the API key)" if status in (401, 403) else "")
                + (f" (check the model name {self.model!r})" if status == 404 else ""),
                fatal=True,
            ) from exc
        except openai.APITimeoutError as exc:
            raise Retryable(f"no answer within {self.config.timeout:g} s", unreachable=True) from exc
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise Retryable(f"connection failed: {one_line(cause)}", unreachable=True) from exc
        except (openai.APIResponseValidationError, json.JSONDecodeError, ValueError) as exc:
            raise Retryable(f"malformed response body: {one_line(exc)}") from exc
        choices = getattr(completion, "choices", None)
        if not choices or choices[0].message is None or not isinstance(choices[0].message.content, str):
            raise Retryable("malformed response: no message content in 'choices'")
        usage = getattr(completion, "usage", None)
        counts = {
            "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
            "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
        }
        return choices[0].message.content, counts


def _retry_after(exc: Any) -> float | None:
    return retry_after_seconds(getattr(getattr(exc, "response", None), "headers", None))
