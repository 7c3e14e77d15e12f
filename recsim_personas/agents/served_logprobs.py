"""Next-token log-probabilities from a completions server, exact where it can, bounded where not.

:class:`NextTokenLogprobs` asks for the log-probabilities of given tokens at the answer position of
token-id prompts: ``max_tokens: 1, logprobs: 1, logprob_token_ids: [...]`` (vLLM returns exactly
those tokens). A server without ``logprob_token_ids`` is detected on the first answer and asked for
its top ``top_logprobs`` instead; a wanted token missing from them gets at most the smallest listed
probability (the unlisted mass shared among the missing tokens), and when the listed tokens cover
less than ``min_covered_mass`` while a token is missing a :class:`LogprobCoverageWarning` says how
much (once per scorer; ``low_coverage_rows`` counts the rows).
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np

from recsim_personas.agents.completions_client import CompletionsClient
from recsim_personas.errors import BackendError, RecsimWarning

__all__ = ["LogprobCoverageWarning", "NextTokenLogprobs", "top_logprobs"]

logger = logging.getLogger(__name__)


class LogprobCoverageWarning(RecsimWarning):
    """The top log-probabilities a server returned leave too much mass unaccounted for."""


def top_logprobs(choice: dict[str, Any]) -> dict[int, float]:
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


class NextTokenLogprobs:
    """Log-probabilities of wanted next tokens through one :class:`CompletionsClient`.

    Args:
        client: The server's client (its stats get ``low_coverage_rows``).
        top_logprobs: Top log-probabilities asked for without ``logprob_token_ids``.
        min_covered_mass: Warn below this covered mass when a wanted token is missing.
    """

    def __init__(self, client: CompletionsClient, *, top_logprobs: int, min_covered_mass: float) -> None:
        self.client = client
        self.top_k = int(top_logprobs)
        self.min_covered_mass = float(min_covered_mass)
        self.client.stats.setdefault("low_coverage_rows", 0)
        #: None until the first answer; then whether the server honours ``logprob_token_ids``.
        self.token_ids_supported: bool | None = None
        self._warned_coverage = False

    async def __call__(self, model: str, prompts: list[list[int]], wanted: list[int]) -> np.ndarray:
        """``(len(prompts), len(wanted))`` log-probabilities of the ``wanted`` next tokens."""
        base_url = self.client.base_url
        if self.token_ids_supported is not False:
            choices = await self.client.complete(
                model, prompts, max_tokens=1, temperature=0.0, logprobs=1,
                logprob_token_ids=wanted, return_tokens_as_token_ids=True,
            )
            found = [top_logprobs(c) for c in choices]
            if all(all(t in f for t in wanted) for f in found):
                self.token_ids_supported = True
                return np.array([[f[t] for t in wanted] for f in found], dtype=np.float64)
            if self.token_ids_supported is True:
                raise BackendError(
                    f"the model server at {base_url} left out requested token log-probabilities "
                    "(logprob_token_ids) in one answer; restart it"
                )
            logger.info("%s ignores logprob_token_ids; using the top %d log-probabilities", base_url, self.top_k)
            self.token_ids_supported = False
        choices = await self.client.complete(
            model, prompts, max_tokens=1, temperature=0.0, logprobs=self.top_k, return_tokens_as_token_ids=True
        )
        out = np.empty((len(prompts), len(wanted)))
        for i, choice in enumerate(choices):
            top = top_logprobs(choice)
            if not top:
                raise BackendError(f"the model server at {base_url} returned no log-probabilities; is logprobs supported?")
            out[i] = self._bounded(top, wanted)
        return out

    def _bounded(self, top: dict[int, float], wanted: list[int]) -> list[float]:
        """The wanted tokens' log-probabilities from a top list (missing ones bounded), warning once
        when the list covers too little."""
        covered = float(sum(math.exp(v) for v in top.values()))
        floor = min(min(math.exp(v) for v in top.values()), max(1.0 - covered, 0.0))
        missing = [t for t in wanted if t not in top]
        row = [top[t] if t in top else math.log(max(floor / max(len(missing), 1), 1e-300)) for t in wanted]
        if missing and covered < self.min_covered_mass:
            self.client.stats["low_coverage_rows"] += 1
            if not self._warned_coverage:
                warnings.warn(
                    f"the server's top {self.top_k} log-probabilities cover {covered:.1%} of the mass and miss "
                    f"{len(missing)} of the {len(wanted)} answer tokens (need {self.min_covered_mass:.0%}); "
                    "their probabilities are bounded, not known: serve with vLLM (logprob_token_ids) "
                    "or raise --max-logprobs",
                    LogprobCoverageWarning,
                    stacklevel=3,
                )
                self._warned_coverage = True
        return row
