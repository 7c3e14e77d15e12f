"""Embeddings from any OpenAI-compatible ``/v1/embeddings`` endpoint, batched, with bounded retries."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from recsim_personas.errors import BackendError, ConfigError
from recsim_personas.memory.embedder import l2_normalize

__all__ = ["OpenAIEmbedder"]


class OpenAIEmbedder:
    """An OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, vLLM, llama.cpp, TEI, ...).

    Requests go out in batches of ``batch_size`` texts. Rate limits (429), server errors (5xx),
    timeouts, connection failures and malformed bodies are retried up to ``max_retries`` times with
    exponential backoff (``backoff * 2**attempt`` seconds plus jitter, or the server's
    ``Retry-After``); other HTTP errors (400, 401, 404) fail at once, and so does a ``Retry-After``
    longer than ``retry_after_max``. The defaults match the distiller's (30 s per request, 3
    attempts, Retry-After up to 30 s): seconds, not minutes, to the first error. Failures raise
    :class:`BackendError` naming the URL.

    Args:
        model: The embedding model name, e.g. ``"text-embedding-ada-002"``.
        base_url: Endpoint root ending in ``/v1``; ``None`` = ``$OPENAI_BASE_URL`` or OpenAI's.
        api_key: ``None`` = ``$OPENAI_API_KEY`` (a placeholder is sent to a custom ``base_url``,
            since local servers need none).
        batch_size: Texts per request.
        max_retries: Retries per request after the first attempt.
        timeout: Seconds per request.
        backoff: Base of the exponential backoff, in seconds.
        retry_after_max: Longest ``Retry-After`` (seconds) honoured; a longer one fails at once.
    """

    def __init__(self, model: str, base_url: str | None = None, *, api_key: str | None = None,
                 batch_size: int = 128, max_retries: int = 2, timeout: float = 30.0,
                 backoff: float = 0.5, retry_after_max: float = 30.0) -> None:
        if not model:
            raise ConfigError("OpenAIEmbedder needs a model name, e.g. 'text-embedding-3-small'")
        if batch_size < 1 or max_retries < 0 or timeout <= 0 or backoff < 0 or retry_after_max < 0:
            raise ConfigError(
                "OpenAIEmbedder: need batch_size >= 1, max_retries >= 0, timeout > 0, backoff >= 0, "
                f"retry_after_max >= 0; got {batch_size}, {max_retries}, {timeout}, {backoff}, "
                f"{retry_after_max}"
            )
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self._api_key = api_key
        self.batch_size = int(batch_size)
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self.backoff = float(backoff)
        self.retry_after_max = float(retry_after_max)
        #: Prompt tokens reported by the server (``usage.prompt_tokens``), summed over requests.
        self.tokens_used = 0
        #: Requests sent, including retries.
        self.requests_sent = 0
        self._client: Any = None

    @property
    def name(self) -> str:
        return f"openai:{self.model}@{self.base_url}"

    def _get_client(self) -> Any:
        if self._client is None:
            try:
                import openai
            except ImportError as exc:  # pragma: no cover - a hard dependency
                raise BackendError("the openai embedder needs the openai package (pip install openai)") from exc
            key = self._api_key or os.environ.get("OPENAI_API_KEY")
            if not key:
                if "api.openai.com" in self.base_url:
                    raise BackendError(
                        f"embedding endpoint {self.base_url} needs an API key: set OPENAI_API_KEY"
                    )
                key = "EMPTY"
            self._client = openai.OpenAI(
                base_url=self.base_url, api_key=key, max_retries=0, timeout=self.timeout
            )
        return self._client

    def _request(self, batch: list[str]) -> np.ndarray:
        import openai

        client = self._get_client()
        url = f"{self.base_url}/embeddings"
        last = ""
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            self.requests_sent += 1
            try:
                resp = client.embeddings.create(model=self.model, input=batch, encoding_format="float")
                vecs = self._parse(resp, len(batch))
                usage = getattr(resp, "usage", None)
                self.tokens_used += int(getattr(usage, "prompt_tokens", 0) or 0)
                return vecs
            except openai.APIStatusError as exc:
                status = exc.status_code
                last = f"HTTP {status}: {str(exc.message).splitlines()[0] if exc.message else ''}"
                if status != 429 and status < 500:
                    raise BackendError(f"embedding request to {url} failed with {last}") from exc
                with contextlib.suppress(TypeError, ValueError, AttributeError):
                    retry_after = float(exc.response.headers.get("retry-after"))
                if retry_after is not None and retry_after > self.retry_after_max:
                    raise BackendError(
                        f"embedding endpoint {url} asked to retry after {retry_after:g} s, longer than "
                        f"retry_after_max={self.retry_after_max:g} s; try again later or raise "
                        "--max-retry-after"
                    ) from exc
            except openai.APITimeoutError:
                last = f"timed out after {self.timeout:g} s"
            except openai.APIConnectionError as exc:
                last = f"cannot connect ({type(exc.__cause__ or exc).__name__})"
            except (_MalformedResponse, openai.APIResponseValidationError, ValueError) as exc:
                last = f"malformed response: {exc}"
            if attempt < self.max_retries:
                delay = retry_after if retry_after is not None else self.backoff * 2**attempt
                time.sleep(min(delay, self.retry_after_max) + random.uniform(0, self.backoff / 4))
        raise BackendError(
            f"embedding endpoint {url} failed after {self.max_retries + 1} attempts: {last}"
        )

    @staticmethod
    def _parse(resp: Any, n: int) -> np.ndarray:
        data = getattr(resp, "data", None)
        if not isinstance(data, list) or len(data) != n:
            got = len(data) if isinstance(data, list) else type(data).__name__
            raise _MalformedResponse(f"expected {n} embeddings, got {got}")
        rows: list[Any] = [None] * n
        for pos, item in enumerate(data):
            idx = getattr(item, "index", pos)
            idx = pos if idx is None else int(idx)
            if not 0 <= idx < n or rows[idx] is not None:
                raise _MalformedResponse(f"bad or repeated index {idx}")
            rows[idx] = getattr(item, "embedding", None)
        try:
            arr = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise _MalformedResponse(f"embeddings are not equal-length number lists ({exc})") from exc
        if arr.ndim != 2 or arr.shape[1] == 0 or not np.isfinite(arr).all():
            raise _MalformedResponse(f"embeddings of shape {arr.shape} with non-finite values or no dims")
        return l2_normalize(arr)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        # Some servers reject empty strings; a single space embeds the same "nothing".
        texts = [t if str(t).strip() else " " for t in texts]
        parts = [self._request(list(texts[i:i + self.batch_size]))
                 for i in range(0, len(texts), self.batch_size)]
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        dims = {p.shape[1] for p in parts}
        if len(dims) > 1:
            raise BackendError(f"embedding endpoint {self.base_url} returned mixed dimensions {sorted(dims)}")
        return np.concatenate(parts, axis=0)

    def __repr__(self) -> str:
        return f"OpenAIEmbedder({self.model!r}, base_url={self.base_url!r})"


class _MalformedResponse(ValueError):
    """A 200 response whose body is not a valid embeddings answer (retried)."""
