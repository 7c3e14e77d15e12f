"""The step types every text backend speaks: :class:`StepRequest` in, :class:`StepResponse` out.

See :mod:`recsim_personas.memory.backends` for the three steps (``update``, ``enrich``,
``reflect``) and the backends that answer them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from recsim_personas.data.item_catalog import title_with_year
from recsim_personas.errors import BackendError

if TYPE_CHECKING:  # pragma: no cover
    from recsim_personas.data.dataset import RatingScale
    from recsim_personas.data.item_catalog import ItemInfo
    from recsim_personas.memory.statistics import UserStatistics

__all__ = ["BatchRating", "StepContext", "StepKind", "StepRequest", "StepResponse", "TextBackend"]

StepKind = Literal["update", "enrich", "reflect"]


@dataclass(frozen=True)
class BatchRating:
    """One train rating of the batch being distilled, with the item's facts (``item``)."""

    item: ItemInfo
    rating: float
    timestamp: int

    @property
    def item_id(self) -> int:
        return self.item.item_id

    @property
    def item_label(self) -> str:
        """``"Title (year)"`` of the rated item, as M_l texts name it."""
        return title_with_year(self.item.title, self.item.year)


@dataclass(frozen=True)
class StepContext:
    """Everything a backend may use for one user's step on one batch.

    Attributes:
        user_id: The user.
        batch_index: 0-based index of the batch.
        n_batches: Number of batches of this user.
        ratings: The batch's ratings, chronological.
        stats: Statistics over the user's train ratings up to and including this batch.
        previous_stats: Statistics up to the previous batch (``None`` for the first batch).
        traits: ``(activity, conformity, diversity)`` trait texts (fixed per user).
        taste: The profile's taste description before this step (``""`` before the first update).
        reasons: For ``"reflect"``: the batch's reasons by item id (from the ``"enrich"`` step).
        scale: The rating scale.
        target_words: Length the prompts ask the taste description to stay under.
        memo: Backend-private state of this user, kept across steps (the template backend keeps its
            reflection notes here).
    """

    user_id: int
    batch_index: int
    n_batches: int
    ratings: tuple[BatchRating, ...]
    stats: UserStatistics
    previous_stats: UserStatistics | None
    traits: tuple[str, str, str]
    taste: str
    scale: RatingScale
    target_words: int = 300
    reasons: dict[int, str] | None = None
    memo: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def where(self) -> str:
        """``"user 3, batch 2/9"`` for messages."""
        return f"user {self.user_id}, batch {self.batch_index + 1}/{self.n_batches}"


@dataclass(frozen=True)
class StepRequest:
    """One step to generate: ``kind`` for ``context``.

    Attributes:
        kind: ``"update"``, ``"enrich"`` or ``"reflect"``.
        context: The user's batch context.
        attempt: 0 for the first try; retries count up.
        rejected: ``(previous answer, why it was rejected)`` of earlier attempts, oldest first; LLM
            backends show the last one to the model so that a retry is a different request.
    """

    kind: StepKind
    context: StepContext
    attempt: int = 0
    rejected: tuple[tuple[str, str], ...] = ()

    def retry(self, text: str, reason: str) -> StepRequest:
        return replace(self, attempt=self.attempt + 1, rejected=(*self.rejected, (text, reason)))


@dataclass(frozen=True)
class StepResponse:
    """A backend's answer to one :class:`StepRequest`.

    Attributes:
        text: The generated text (what the word limit is checked on).
        payload: Parsed output, if the backend parses itself: ``{"taste": str}`` for update and
            reflect, ``{"reasons": {item_id: str}}`` for enrich. ``None``: parse ``text``.
        error: The request failed (transport, endpoint); the user cannot continue.
        fatal: The failure will hit every user (unreachable endpoint, bad key): stop the run.
        cached: Answered from the on-disk cache.
    """

    text: str = ""
    payload: dict[str, Any] | None = None
    error: BackendError | None = None
    fatal: bool = False
    cached: bool = False


@runtime_checkable
class TextBackend(Protocol):
    """What the distiller needs from a backend."""

    #: ``"template"``, ``"openai"``, ``"hf"`` or a custom name.
    name: str
    #: Users the distiller advances together (thread-pool size, generation batch size).
    parallelism: int

    def run(self, requests: list[StepRequest]) -> list[StepResponse]:
        """Answer every request, in order. Per-request failures go in ``StepResponse.error``."""
        ...

    def identity(self) -> dict[str, Any]:
        """What determines the outputs (name, model, sampling): part of checkpoint keys."""
        ...

    def usage(self) -> dict[str, Any]:
        """Counters for reports (requests, tokens, cost, cache hits); ``{}`` if none."""
        ...
