"""The language-model user agent: persona-LoRA small LM rating items as a given user would.

:class:`LMUserAgent` implements :class:`~recsim_personas.agents.protocol.UserAgent`:

* ``rate(user_ids, item_ids)`` builds each request's rating prompt (the user's M_s as the PERSONA
  system message; with ``memory_mode="msml"`` also the ``k`` retrieved M_l memories with similarity
  >= ``delta``), picks each user's adapter with ``adapter_for`` and scores all requests with the
  :class:`~recsim_personas.agents.scoring.RatingScorer` in batches that mix adapters and reuse each
  user's prefix cache. ``mode="score"`` returns the level distribution (URR 0 by construction);
  ``mode="generate"`` samples the paper's 4-token answer and marks unparsable rows invalid.
* ``leave_probability(user_ids, sessions)`` asks the exit prompt (session so far with its ratings
  and the user's activity trait) and returns P(leave) from the two option tokens.

Exit calibration
----------------
A language model asked "stay or leave?" after every item has no notion of a per-step hazard: the
default SmolLM2-135M answers "leave" with probability ~0.7 whatever the session holds, which ends
sessions after one or two items. With ``exit_calibration="anchored"`` (the default) the model's
answer is read *relative to its own answer before the session started*::

    logit P(leave | session) = logit h[activity] + logit P_LM(leave | session) - logit P_LM(leave | empty session)

``h = exit_hazard[activity_level]`` is the per-step leave probability of a user whose model says
nothing beyond its prior (activity level from ``profiles.parquet``: 0 low, 1 mid, 2 high; defaults
0.25 / 0.15 / 0.10, i.e. about 4, 7 and 10 items per session). A model that grows readier to leave
after bad items raises the hazard above ``h``; one that does not respond to the session leaves the
geometric session length of the activity trait. The empty-session answer is scored once per
(user, adapter) and cached. ``exit_calibration="raw"`` returns the model's probability unchanged.

Retrieval excludes the item being rated (as the training rows do), so a user never "remembers" the
rating they are asked to give.

Example:
    >>> from recsim_personas.agents.llm import load_causal_lm, load_adapters    # doctest: +SKIP
    >>> model, tok = load_causal_lm()                                           # doctest: +SKIP
    >>> model = load_adapters(model, {f"persona_{p}__ms": run / "adapters" / f"persona_{p}__ms"
    ...                              for p in range(4)})                        # doctest: +SKIP
    >>> scorer = RatingScorer(model, tok, dataset.scale)                        # doctest: +SKIP
    >>> agent = LMUserAgent(scorer, store, catalog,
    ...                     adapter_for=adapter_naming(store, "persona", "ms"))  # doctest: +SKIP
    >>> agent.rate([1, 2], [1193, 858]).expectation(agent.scale)               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from recsim_personas.adapter_names import adapter_name, persona_adapter_name
from recsim_personas.agents.prompts import (
    EXIT_OPTIONS,
    PromptMemory,
    PromptTemplate,
    RatingPrompt,
    build_exit_prompt,
    build_rating_prompt,
    get_template,
)
from recsim_personas.agents.protocol import RatingBatch, Scorer, SessionEvent
from recsim_personas.agents.scoring import BASE_ADAPTER, RatingScorer
from recsim_personas.errors import ConfigError, DataError, did_you_mean

if TYPE_CHECKING:
    from recsim_personas.memory.cue import CueStatistics

__all__ = ["DEFAULT_EXIT_HAZARD", "LMUserAgent", "adapter_naming"]

_MODES = ("score", "generate")
_MEMORY_MODES = ("ms", "msml")
_EXIT_CALIBRATIONS = ("anchored", "raw")
#: Per-step leave probability by activity level (low, mid, high) before the session says anything.
DEFAULT_EXIT_HAZARD = (0.25, 0.15, 0.10)
_P_CLIP = 1e-6
_ADAPTER_KINDS = ("persona", "single_min", "single_max", "base")


def _choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{what} must be one of {list(allowed)}, got {value!r}.{did_you_mean(value, allowed)}")
    return value


def adapter_naming(
    store: Any, kind: Literal["persona", "single_min", "single_max", "base"], memory_mode: str, *,
    cue: bool = False,
) -> Callable[[int], str | None]:
    """``adapter_for`` callable following the run folder's names (docs/design.md).

    ``persona`` -> ``persona_<store.persona(user)>__<mode>``; ``single_min`` / ``single_max`` ->
    ``single_min__<mode>`` for every user; ``base`` -> ``None`` (no adapter). With ``cue`` the
    adapters trained with the collaborative cue: ``persona_<p>_cue__<mode>``, ``single_min_cue__<mode>``.
    """
    _choice(kind, _ADAPTER_KINDS, "adapter kind")
    _choice(memory_mode, _MEMORY_MODES, "memory_mode")
    if kind == "base":
        return lambda user_id: None
    if kind == "persona":
        return lambda user_id: persona_adapter_name(store.persona(int(user_id)), memory_mode, cue=cue)
    name = adapter_name(kind, memory_mode, cue=cue)
    return lambda user_id: name


class LMUserAgent:
    """A simulated user population backed by a (LoRA-adapted) causal LM.

    Unrated session events (``rating=NaN``: an already-seen item, a slate the user picked nothing
    from) reach :meth:`leave_probability` and appear as "not rated" in the exit prompt.

    Args:
        scorer: The :class:`RatingScorer` wrapping the model, or a
            :class:`~recsim_personas.agents.served.ServedRatingScorer` asking a model server (any
            :class:`~recsim_personas.agents.protocol.Scorer`; its ``scale`` is the agent's scale).
        store: ``MemoryStore``: ``profile(user)``, ``profile_row(user)``, ``retrieve_batch(...)``.
        catalog: ``ItemCatalog``: ``info(item_id)`` for the prompts.
        memory_mode: ``"ms"`` (profile only) or ``"msml"`` (profile + retrieved memories).
        k: Memories per prompt in ``msml`` mode (the paper: 1).
        delta: Minimum cosine similarity of a retrieved memory.
        adapter_for: ``user_id -> adapter name`` (``None`` = base model); default base for all.
            See :func:`adapter_naming`.
        template: Prompt preset name or :class:`PromptTemplate`.
        mode: ``"score"`` (distribution from one pass) or ``"generate"`` (the paper's sampling).
        seed: Seed of generate-mode sampling and of :meth:`sample`.
        exit_with_adapter: Score the exit prompt with the user's adapter (default: the base model;
            the adapters are trained on ratings only).
        exit_calibration: ``"anchored"`` (default) or ``"raw"``; see the module docstring.
        exit_hazard: Anchored per-step leave probability for activity level low, mid, high.
        cue: :class:`~recsim_personas.memory.cue.CueStatistics` (fitted on the rating pool and the
            train rows) whose numbers every rating prompt states (the collaborative cue), or
            ``None`` (default): prompts without them. An adapter trained with the cue needs it.

    Raises:
        ConfigError: unknown mode, memory mode or template.
        AdapterError: ``adapter_for`` names an adapter the model does not hold (did-you-mean).
    """

    accepts_unrated_events = True

    def __init__(
        self,
        scorer: Scorer | RatingScorer,
        store: Any,
        catalog: Any,
        *,
        memory_mode: Literal["ms", "msml"] = "ms",
        k: int = 1,
        delta: float = 0.0,
        adapter_for: Callable[[int], str | None] | None = None,
        template: str | PromptTemplate = "paper",
        mode: Literal["score", "generate"] = "score",
        seed: int = 0,
        exit_with_adapter: bool = False,
        exit_calibration: Literal["anchored", "raw"] = "anchored",
        exit_hazard: Sequence[float] = DEFAULT_EXIT_HAZARD,
        cue: CueStatistics | None = None,
    ) -> None:
        self.scorer = scorer
        self.scale = scorer.scale
        self.store = store
        self.catalog = catalog
        self.memory_mode = _choice(memory_mode, _MEMORY_MODES, "memory_mode")
        self.mode = _choice(mode, _MODES, "mode")
        if k < 1:
            raise ConfigError(f"k (memories per prompt) must be >= 1, got {k}")
        self.k = int(k)
        self.delta = float(delta)
        self.template = get_template(template)
        self.cue = cue
        self.adapter_for = adapter_for
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self.exit_with_adapter = bool(exit_with_adapter)
        self.exit_calibration = _choice(exit_calibration, _EXIT_CALIBRATIONS, "exit_calibration")
        hazard = tuple(float(h) for h in exit_hazard)
        if len(hazard) != 3 or not all(0.0 < h < 1.0 for h in hazard):
            raise ConfigError(
                f"exit_hazard must be three probabilities strictly between 0 and 1 (activity low, mid, "
                f"high), got {tuple(exit_hazard)!r}"
            )
        self.exit_hazard = hazard
        self._exit_anchor: dict[tuple[int, str | None], float] = {}  # (user, adapter) -> logit shift
        self.last_texts: list[str] = []
        self._calls = 0
        self._items: dict[int, Any] = {}
        if adapter_for is not None:
            users = getattr(store, "users", None)
            if users is not None and len(users):
                # Fail now, not in the middle of a simulation, when a persona has no adapter.
                names = sorted({adapter_for(int(u)) or BASE_ADAPTER for u in users})
                scorer.check_adapters(names)

    # -- prompts -----------------------------------------------------------------------------------
    def _item(self, item_id: int) -> Any:
        info = self._items.get(item_id)
        if info is None:
            info = self.catalog.info(item_id)
            if len(self._items) > 100_000:
                self._items.clear()
            self._items[item_id] = info
        return info

    def adapters(self, user_ids: Sequence[int]) -> list[str | None]:
        """The adapter of each user (``None`` = base model)."""
        if self.adapter_for is None:
            return [None] * len(user_ids)
        return [self.adapter_for(int(u)) for u in user_ids]

    def prompts(self, user_ids: Sequence[int], item_ids: Sequence[int]) -> list[RatingPrompt]:
        """The rating prompts of the requests (memories retrieved in ``msml`` mode)."""
        users = [int(u) for u in user_ids]
        items = [int(i) for i in item_ids]
        if len(users) != len(items):
            raise DataError(
                f"LMUserAgent.rate: {len(users)} user ids but {len(items)} item ids; pass one user and one "
                "item per request"
            )
        if self.memory_mode == "msml":
            found = self.store.retrieve_batch(users, items, k=self.k, delta=self.delta, exclude_items=items)
        else:
            found = [[] for _ in users]
        numbers: list[Any] = (
            [None] * len(users) if self.cue is None
            else self.cue.numbers(np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64))
        )
        out = []
        tokenizer = self.scorer.tokenizer
        for u, i, memories, cue_numbers in zip(users, items, found, numbers, strict=True):
            entries = [PromptMemory(self._item(int(m.item_id)), m.text) for m in memories]
            out.append(
                build_rating_prompt(
                    self.template,
                    self.store.profile(u),
                    self._item(i),
                    entries,
                    self.scale,
                    memory_mode=self.memory_mode,
                    tokenizer=tokenizer,
                    max_tokens=self.scorer.max_prompt_tokens,
                    numbers=cue_numbers,
                )
            )
        return out

    # -- UserAgent ---------------------------------------------------------------------------------
    def rate(self, user_ids: Sequence[int], item_ids: Sequence[int]) -> RatingBatch:
        """Rating distributions of ``user_ids[j]`` for ``item_ids[j]`` (batched, adapters mixed)."""
        prompts = self.prompts(user_ids, item_ids)
        adapters = self.adapters(user_ids)
        if self.mode == "score":
            return self.scorer.score(prompts, adapters)
        texts, batch = self.scorer.generate(prompts, adapters, seed=self.seed + self._calls)
        self._calls += 1
        self.last_texts = texts
        return batch

    def sample(self, batch: RatingBatch) -> np.ndarray:
        """One rating per row of ``batch``, drawn with the agent's seeded generator."""
        return batch.sample(self.scale, self.rng)

    def _session_lines(self, session: Sequence[SessionEvent]) -> list[tuple[str, float]]:
        lines = []
        for event in session:
            info = self._item(int(event.item_id))
            title = f"{info.title} ({info.year})" if getattr(info, "year", None) else info.title
            lines.append((title, float(event.rating)))
        return lines

    def exit_prompts(
        self, user_ids: Sequence[int], sessions: Sequence[Sequence[SessionEvent]]
    ) -> list[RatingPrompt]:
        """The leave-or-stay prompts of the users after their sessions so far."""
        if len(user_ids) != len(sessions):
            raise DataError(
                f"LMUserAgent.leave_probability: {len(user_ids)} users but {len(sessions)} sessions"
            )
        out = []
        for u, session in zip(user_ids, sessions, strict=True):
            row = self.store.profile_row(int(u)) if hasattr(self.store, "profile_row") else {}
            activity = str(row.get("activity", "") or "")
            out.append(
                build_exit_prompt(
                    self.store.profile(int(u)),
                    activity,
                    self._session_lines(session),
                    self.scale,
                    template=self.template,
                    tokenizer=self.scorer.tokenizer,
                    options=EXIT_OPTIONS,
                )
            )
        return out

    def _activity_level(self, user_id: int) -> int:
        row = self.store.profile_row(int(user_id)) if hasattr(self.store, "profile_row") else {}
        level = row.get("activity_level")
        try:
            level = int(level)
        except (TypeError, ValueError):
            return 1  # no activity trait: the middle level
        return min(max(level, 0), 2)

    def _raw_leave(self, prompts: list[RatingPrompt], adapters: list[str | None] | None) -> np.ndarray:
        probs, _ = self.scorer.choice_probs(prompts, adapters, options=EXIT_OPTIONS)
        p_leave = probs[:, 1] if len(probs) else np.zeros(0)
        return np.where(np.isfinite(p_leave), p_leave, 0.5)

    def leave_probability(
        self, user_ids: Sequence[int], sessions: Sequence[Sequence[SessionEvent]]
    ) -> np.ndarray:
        """P(leave now) per user: the leave option's share of the two option tokens' mass, anchored
        to the activity trait's hazard unless ``exit_calibration="raw"`` (module docstring)."""
        users = [int(u) for u in user_ids]
        prompts = self.exit_prompts(users, sessions)
        adapters = self.adapters(users) if self.exit_with_adapter else [None] * len(users)
        if self.exit_calibration == "raw":
            return self._raw_leave(prompts, adapters if self.exit_with_adapter else None)
        keys = [(u, a) for u, a in zip(users, adapters, strict=True)]
        todo = list(dict.fromkeys(k for k in keys if k not in self._exit_anchor))
        # The missing anchors (empty session) go into the same scoring call as the real prompts.
        anchor_prompts = self.exit_prompts([u for u, _ in todo], [[] for _ in todo])
        names = adapters + [a for _, a in todo]
        raw = self._raw_leave(prompts + anchor_prompts, names if self.exit_with_adapter else None)
        self._store_anchors(todo, raw[len(users) :])
        shift = np.array([self._exit_anchor[k] for k in keys])
        return 1.0 / (1.0 + np.exp(-(_logit(raw[: len(users)]) + shift)))

    def _store_anchors(self, keys: Sequence[tuple[int, str | None]], raw_empty: np.ndarray) -> None:
        """Cache per (user, adapter): logit h[activity] - logit P_LM(leave | empty session)."""
        if not len(keys):
            return
        hazard = np.array([self.exit_hazard[self._activity_level(u)] for u, _ in keys])
        for key, shift in zip(keys, _logit(hazard) - _logit(raw_empty), strict=True):
            self._exit_anchor[key] = float(shift)

    def warm_cache(
        self, user_ids: Sequence[int], *, exits: bool = True, batch: int = 16, progress: bool = True
    ) -> int:
        """Compute the users' profile-prefix caches up front (and, with ``exits``, their exit prompts'
        prefixes and anchors), so that later steps of any session pay only for the item and
        session tokens.

        Without this each prefix is computed the first time a user is asked (a session start costs
        about 1,100 prompt tokens with the paper prompt); an RL run that steps the same users again
        and again can pay it once, here, with a progress bar. The scorer's cache must hold the
        users (``recsim_personas.envs.prefix_cache.reserve_prefix_cache`` sizes it).

        Returns:
            Prefixes computed (cached ones are skipped).
        """
        from recsim_personas.progress import progress_bar

        users = [int(u) for u in user_ids]
        if not users:
            return 0
        item = int(self.catalog.item_ids[0]) if hasattr(self.catalog, "item_ids") else None
        computed = 0
        bar = progress_bar(total=len(users), desc="warming LM prefix caches", unit="user", enabled=progress)
        for start in range(0, len(users), batch):
            chunk = users[start : start + batch]
            if item is not None:  # the prefix depends on the user only: any item will do
                prompts = self.prompts(chunk, [item] * len(chunk))
                computed += self.scorer.warm(prompts, self.adapters(chunk))
            if exits:
                adapters = self.adapters(chunk) if self.exit_with_adapter else [None] * len(chunk)
                empty = self.exit_prompts(chunk, [[] for _ in chunk])
                keys = zip(chunk, adapters, strict=True)
                todo = [i for i, key in enumerate(keys) if key not in self._exit_anchor]
                if self.exit_calibration == "anchored" and todo:
                    # The anchor is the answer on the empty session: scoring it caches the prefix too.
                    before = self.scorer.stats["prefix_misses"]
                    names = [adapters[i] for i in todo] if self.exit_with_adapter else None
                    raw = self._raw_leave([empty[i] for i in todo], names)
                    self._store_anchors([(chunk[i], adapters[i]) for i in todo], raw)
                    computed += self.scorer.stats["prefix_misses"] - before
                computed += self.scorer.warm(empty, adapters)  # the rest (cached ones cost nothing)
            bar.update(len(chunk))
        bar.close()
        return computed


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _P_CLIP, 1 - _P_CLIP)
    return np.log(p / (1 - p))

