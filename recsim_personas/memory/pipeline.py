"""The memory pipeline: split -> distill -> embed -> personas, written into one run folder.

:func:`build_memories` runs four stages and writes exactly the run-folder files of docs/design.md:

============ =====================================================================================
stage        writes
============ =====================================================================================
``split``    ``split/train.parquet``, ``split/test.parquet``, ``split/config.json``
``distill``  ``profiles.parquet``, ``memories.parquet`` (one M_l row per train interaction),
             ``distill_log.parquet``
``embed``    ``embeddings/profiles.npy`` + ``profile_user_ids.npy`` (profile_text),
             ``embeddings/items.npy`` + ``item_ids.npy`` (item text of every item in the split's
             train or test rows, or of the whole catalogue with ``item_scope="catalog"``)
``personas`` ``personas.parquet``, ``personas.json``, ``plots/elbow.png``,
             ``plots/persona_sizes.png``, ``plots/persona_words.png``
============ =====================================================================================

plus ``manifest.json`` (the pipeline config, each stage's inputs and their hash, package versions,
git commit, seconds per stage).

**Caching.** A stage's inputs are its config and the SHA-256 of the files it reads (so a re-distilled
profile re-runs the embeddings even when the distill config is unchanged). A stage whose inputs match
its manifest record and whose outputs exist is skipped; anything else re-runs it. Before a stage runs,
its record is removed from the manifest, so a crash mid-stage can never leave a mix of old and new
files marked as done. Every file is written atomically (temporary name + rename). The distill stage
keeps per-user checkpoints in ``distill_checkpoint/`` while it runs (an interrupted run resumes from
them) and deletes that folder when it finishes.

**Item text** embedded for retrieval (:func:`~recsim_personas.memory.item_text.item_embedding_text`): the item's MOVIE line
(``catalog.describe``: title, year, genres, historical average rating on train) plus its SUMMARY line
(``catalog.summary``: description and cast) when the dataset has one.

Example:
    >>> run = build_memories(dataset, PAPER_SPLIT, MemoryPipelineConfig.paper(), "runs/ml1m")  # doctest: +SKIP
    >>> run.timings["distill"].seconds                                                          # doctest: +SKIP
    >>> store = run.store()                                                                     # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from recsim_personas.artifacts import RunFolder, atomic_write_json, atomic_write_npy, file_digest
from recsim_personas.config import Config
from recsim_personas.data.dataset import RatingDataset
from recsim_personas.errors import ConfigError, DataError, closest, did_you_mean
from recsim_personas.memory.distill_config import DistillConfig
from recsim_personas.memory.embeddings import DEFAULT_EMBEDDER
from recsim_personas.memory.item_text import item_embedding_text
from recsim_personas.memory.personas import PAPER_PERSONAS, PersonaConfig

if TYPE_CHECKING:  # pragma: no cover
    from recsim_personas.data.splits import Split, SplitConfig
    from recsim_personas.memory.store import MemoryStore

__all__ = [
    "ITEM_TEXT_VERSION",
    "STAGES",
    "STAGE_OUTPUTS",
    "MemoryPipelineConfig",
    "MemoryRun",
    "StageTiming",
    "build_memories",
    "parse_stages",
    "run_cue_statistics",
    "run_item_catalog",
    "run_item_stats",
]

#: Stages in the order they run.
STAGES: tuple[str, ...] = ("split", "distill", "embed", "personas")
#: The files each stage writes, relative to the run folder.
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "split": ("split/train.parquet", "split/test.parquet", "split/config.json"),
    "distill": ("profiles.parquet", "memories.parquet", "distill_log.parquet"),
    "embed": ("embeddings/profiles.npy", "embeddings/profile_user_ids.npy", "embeddings/items.npy",
              "embeddings/item_ids.npy"),
    "personas": ("personas.parquet", "personas.json", "plots/elbow.png", "plots/persona_sizes.png",
                 "plots/persona_words.png"),
}
#: Bump when :func:`item_embedding_text` changes (re-runs the embed stage).
ITEM_TEXT_VERSION = "1"
_ITEM_SCOPES = ("split", "catalog")
_CHECKPOINTS = "distill_checkpoint"


def _frame_digest(frame: pd.DataFrame) -> str:
    h = hashlib.sha256(pd.util.hash_pandas_object(frame.astype(str), index=True).to_numpy().tobytes())
    h.update(",".join(map(str, frame.columns)).encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class MemoryPipelineConfig(Config):
    """Everything the memory stages depend on (the split comes separately).

    Attributes:
        distill: Distillation options, including ``backend`` (``template`` / ``openai`` / ``hf``),
            ``model`` and ``base_url``.
        embedder: Embedding spec for :func:`~recsim_personas.memory.embeddings.make_embedder`:
            ``"minilm"`` (default, offline all-MiniLM-L6-v2), ``"hashing"``, ``"openai:<model>"``, or a
            sentence-transformers id / path.
        embedding_base_url: Endpoint of an ``openai:<model>`` embedder.
        item_scope: Items to embed: ``"split"`` (every item in the split's train or test rows) or
            ``"catalog"`` (every item of the dataset, for environments that recommend any item).
        personas: Clustering options; ``personas.k=None`` chooses K by the elbow method.
        item_stats: Ratings behind every item average and count that memories and prompts quote:
            ``"dataset"`` (every rating of the dataset except the split's test rows) or ``"train"``
            (the split's train rows only). See :func:`~recsim_personas.memory.statistics.rating_pool`.
    """

    distill: DistillConfig = field(default_factory=DistillConfig)
    embedder: str = DEFAULT_EMBEDDER
    embedding_base_url: str | None = None
    item_scope: Literal["split", "catalog"] = "split"
    personas: PersonaConfig = field(default_factory=PersonaConfig)
    item_stats: Literal["dataset", "train"] = "dataset"

    config_name = "memory pipeline config"

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.distill, DistillConfig):
            problems.append(f"distill must be a DistillConfig, got {type(self.distill).__name__}")
        if not isinstance(self.personas, PersonaConfig):
            problems.append(f"personas must be a PersonaConfig, got {type(self.personas).__name__}")
        if not isinstance(self.embedder, str) or not self.embedder.strip():
            problems.append(f"embedder must be a non-empty spec such as 'minilm', got {self.embedder!r}")
        if self.item_scope not in _ITEM_SCOPES:
            close = closest(self.item_scope, _ITEM_SCOPES)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"item_scope {self.item_scope!r} is not one of {', '.join(_ITEM_SCOPES)}{hint}")
        if self.item_stats not in ("dataset", "train"):
            problems.append(f"item_stats {self.item_stats!r} is not one of dataset, train")
        if problems:
            raise ConfigError("invalid MemoryPipelineConfig: " + "; ".join(problems))

    @classmethod
    def paper(cls, **overrides: Any) -> MemoryPipelineConfig:
        """The paper's setting with the offline defaults: batches of 10, 2,000 words, K = 4."""
        return cls(**{"personas": PAPER_PERSONAS, **overrides})


@dataclass(frozen=True)
class StageTiming:
    """How one stage went in the last :func:`build_memories` call.

    Attributes:
        stage: The stage name.
        ran: True if it ran, False if its cached outputs were reused.
        seconds: Wall time of the stage (0 when skipped).
        detail: Stage-specific counts (users, memories, embedder, K ...).
    """

    stage: str
    ran: bool
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)


class MemoryRun(RunFolder):
    """A :class:`~recsim_personas.artifacts.RunFolder` plus what the last build did per stage."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        #: Per stage of the last :func:`build_memories` call (stages it did not reach are absent).
        self.timings: dict[str, StageTiming] = {}

    def store(self, **kwargs: Any) -> MemoryStore:
        """Open the folder as a :class:`~recsim_personas.memory.store.MemoryStore`."""
        from recsim_personas.memory.store import MemoryStore

        return MemoryStore.from_run_dir(self.path, **kwargs)

    def forget(self, stage: str) -> None:
        """Drop ``stage``'s manifest record (it will re-run); called before a stage starts."""
        manifest = self.manifest()
        if manifest["stages"].pop(stage, None) is not None:
            atomic_write_json(self.manifest_path, manifest)

    def set_manifest_fields(self, **values: Any) -> None:
        """Set top-level manifest fields (the pipeline config, the dataset)."""
        manifest = self.manifest()
        manifest.update(values)
        atomic_write_json(self.manifest_path, manifest)


def parse_stages(stages: Sequence[str] | str | None) -> list[str]:
    """The stages to run, in order, ``split`` included: ``"embed,personas"`` -> ``[split, embed, personas]``.

    Raises:
        ConfigError: An unknown or empty stage list (with a did-you-mean).
    """
    if stages is None:
        return list(STAGES)
    names = [s.strip() for s in (stages.split(",") if isinstance(stages, str) else stages) if s.strip()]
    if not names:
        raise ConfigError(f"no stage given; choose from {', '.join(STAGES[1:])}")
    for name in names:
        if name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}.{did_you_mean(name, STAGES)}")
    return sorted({"split", *names}, key=STAGES.index)


def build_memories(
    dataset: RatingDataset,
    split: Split | SplitConfig,
    config: MemoryPipelineConfig | None = None,
    run_dir: str | Path = "runs/memory",
    *,
    stages: Sequence[str] | str | None = None,
    progress: bool = True,
    on_stage: Callable[[StageTiming], None] | None = None,
) -> MemoryRun:
    """Run the memory stages into ``run_dir``, skipping stages whose inputs did not change.

    Args:
        dataset: The dataset (items and ratings).
        split: A :class:`~recsim_personas.data.splits.Split`, or a ``SplitConfig`` to make one.
        config: Pipeline options (default :class:`MemoryPipelineConfig()`; the paper's preset is
            :meth:`MemoryPipelineConfig.paper`).
        run_dir: The run folder (created if missing).
        stages: Stages to (re-)run, e.g. ``["distill", "embed"]`` or ``"personas"``; ``None`` = all.
            ``split`` is always included; the last named stage is where the build stops. A stage
            before it that is not named must already be up to date, else :class:`ConfigError`.
        progress: Show progress bars.
        on_stage: Called after each stage with its :class:`StageTiming` (for live reports).

    Returns:
        The run folder, with :attr:`MemoryRun.timings`.

    Raises:
        ConfigError: Unknown stage, or an unnamed stage that would need to re-run.
        DataError: The split belongs to another dataset, or distillation did not cover every user /
            train interaction.
        BackendError: A distillation or embedding backend failed (finished users are checkpointed).
    """
    config = config or MemoryPipelineConfig()
    if not isinstance(config, MemoryPipelineConfig):
        raise ConfigError(f"config must be a MemoryPipelineConfig, got {type(config).__name__}")
    selected = parse_stages(stages)
    last = max(STAGES.index(s) for s in selected)
    build = _Build(dataset, split, config, MemoryRun(run_dir), progress)
    run = build.run
    for stage in STAGES[: last + 1]:
        inputs = build.inputs_for(stage)
        if run.is_done(stage, inputs):
            rec = run.stage_record(stage) or {}
            timing = StageTiming(stage, False, 0.0, dict(rec.get("detail", {})))
        elif stage not in selected:
            raise ConfigError(
                f"stage {stage!r} of run folder {run.path} is not up to date (never ran, or its "
                f"inputs changed), but the requested stages were {', '.join(s for s in selected if s != 'split')}; "
                f"add {stage} (e.g. --stages {','.join(s for s in STAGES[1:last + 1])})"
            )
        else:
            run.forget(stage)
            t0 = time.perf_counter()
            detail = getattr(build, f"build_{stage}")() or {}
            seconds = round(time.perf_counter() - t0, 3)
            run.mark_done(stage, inputs, list(STAGE_OUTPUTS[stage]), extra={"seconds": seconds, "detail": detail})
            timing = StageTiming(stage, True, seconds, detail)
        run.timings[stage] = timing
        if on_stage is not None:
            on_stage(timing)
    return run


class _Build:
    """One :func:`build_memories` call: each stage's inputs and its builder (``build_<stage>``)."""

    def __init__(self, dataset: RatingDataset, split: Split | SplitConfig, config: MemoryPipelineConfig,
                 run: MemoryRun, progress: bool) -> None:
        self.dataset, self.split, self.config, self.run, self.progress = dataset, split, config, run, progress
        self.fingerprint = dataset.fingerprint()
        self.split_inputs = self._split_inputs()
        run.set_manifest_fields(config=config.to_dict(),
                                dataset={"name": dataset.name, "fingerprint": self.fingerprint})
        self.items_digest = _frame_digest(dataset.items)
        self._state: dict[str, Any] = {}

    def _split_inputs(self) -> dict[str, Any]:
        from recsim_personas.data.splits import Split, SplitConfig

        split, dataset, fingerprint = self.split, self.dataset, self.fingerprint
        if isinstance(split, Split):
            if split.dataset_fingerprint and split.dataset_fingerprint != fingerprint:
                raise DataError(
                    f"the split was made from dataset {split.dataset_name!r} (fingerprint "
                    f"{split.dataset_fingerprint}), not from {dataset.name!r} ({fingerprint}); make it "
                    "with make_split(dataset, config)"
                )
            return {"dataset": fingerprint, "split": split.config.to_dict(),
                    "rows": [_frame_digest(split.train), _frame_digest(split.test)]}
        if isinstance(split, SplitConfig):
            return {"dataset": fingerprint, "split": split.to_dict()}
        raise ConfigError(f"split must be a Split or SplitConfig, got {type(split).__name__}")

    # -- what the stages read --------------------------------------------------------------------
    def split_obj(self) -> Split:
        from recsim_personas.data.splits import Split

        if "split" not in self._state:
            self._state["split"] = Split.load(self.run / "split")
        return self._state["split"]

    def catalog(self) -> Any:
        if "catalog" not in self._state:
            from recsim_personas.data.item_catalog import ItemCatalog
            from recsim_personas.memory.statistics import rating_pool

            sp = self.split_obj()
            pool = rating_pool(self.dataset, sp.train, sp.test, self.config.item_stats)
            self._state["catalog"] = ItemCatalog(self.dataset, pool)
        return self._state["catalog"]

    def _digest(self, *names: str) -> list[str | None]:
        return [file_digest(self.run / n) for n in names]

    def inputs_for(self, stage: str) -> dict[str, Any]:
        """What ``stage``'s outputs depend on (its manifest record is valid while these match)."""
        config = self.config
        split_files = self._digest("split/train.parquet", "split/test.parquet")
        if stage == "split":
            return self.split_inputs
        if stage == "distill":
            return {"split": split_files, "items": self.items_digest, "distill": config.distill.output_dict(),
                    "versions": _distill_versions(), **_stats_inputs(config, self.fingerprint)}
        if stage == "embed":
            return {"profiles": self._digest("profiles.parquet"), "split": split_files, "items": self.items_digest,
                    "embedder": {"spec": config.embedder, "base_url": config.embedding_base_url},
                    "item_scope": config.item_scope, "item_text": ITEM_TEXT_VERSION,
                    **_stats_inputs(config, self.fingerprint)}
        return {"profiles": self._digest("profiles.parquet"), "split": split_files,
                "embeddings": self._digest("embeddings/profiles.npy", "embeddings/profile_user_ids.npy"),
                "personas": config.personas.to_dict(), "word_method": _word_method()}

    # -- the stages ------------------------------------------------------------------------------
    def build_split(self) -> dict[str, Any]:
        from recsim_personas.data.splits import Split

        made = self.split if isinstance(self.split, Split) else _make_split(self.dataset, self.split)
        made.save(self.run / "split")
        self._state.pop("split", None)
        self._state.pop("catalog", None)
        return {"users": len(made.users), "train_rows": len(made.train), "test_rows": len(made.test)}

    def build_distill(self) -> dict[str, Any]:
        from recsim_personas.memory.distill import distill_users

        sp = self.split_obj()
        ckpt = self.run / _CHECKPOINTS
        result = distill_users(self.dataset, self.catalog(), sp.train, None, self.config.distill,
                               progress=self.progress, checkpoint_dir=ckpt)
        _check_distill(result.profiles, result.memories, sp)
        result.save(self.run.path)
        shutil.rmtree(ckpt, ignore_errors=True)
        return {"users": len(result.profiles), "memories": len(result.memories),
                "rejected": len(result.log), "usage": _jsonable(result.usage)}

    def build_embed(self) -> dict[str, Any]:
        from recsim_personas.memory.embeddings import make_embedder

        config, run, net = self.config, self.run, self.config.distill
        embedder = make_embedder(
            config.embedder, base_url=config.embedding_base_url, progress=self.progress,
            network={"timeout": net.timeout, "max_retries": net.request_retries,
                     "retry_after_max": net.retry_after_max},
        )
        profiles = pd.read_parquet(run / "profiles.parquet").sort_values("user_id", kind="stable")
        p_vecs = embedder.embed(profiles["profile_text"].astype(str).tolist())
        item_ids = self._item_ids()
        cat = self.catalog()
        i_vecs = embedder.embed([item_embedding_text(cat, int(i)) for i in item_ids])
        atomic_write_npy(run / "embeddings/profiles.npy", p_vecs.astype(np.float32))
        atomic_write_npy(run / "embeddings/profile_user_ids.npy", profiles["user_id"].to_numpy(np.int64))
        atomic_write_npy(run / "embeddings/items.npy", i_vecs.astype(np.float32))
        atomic_write_npy(run / "embeddings/item_ids.npy", item_ids)
        detail: dict[str, Any] = {"embedder": embedder.name, "dim": int(p_vecs.shape[1]),
                                  "profiles": len(p_vecs), "items": len(i_vecs)}
        if hasattr(embedder, "hits"):
            detail.update(cache_hits=int(embedder.hits), cache_misses=int(embedder.misses))
        return detail

    def _item_ids(self) -> np.ndarray:
        """The items to embed: the catalogue's, or those of the split's train and test rows."""
        if self.config.item_scope == "catalog":
            return np.asarray(sorted(int(i) for i in self.catalog().item_ids), dtype=np.int64)
        sp = self.split_obj()
        return np.unique(np.r_[sp.train["item_id"].to_numpy(), sp.test["item_id"].to_numpy()]).astype(np.int64)

    def build_personas(self) -> dict[str, Any]:
        from recsim_personas.memory.personas import PersonaClusters

        run = self.run
        users = np.load(run / "embeddings/profile_user_ids.npy")
        vecs = np.load(run / "embeddings/profiles.npy")
        clusters = PersonaClusters.fit(users, vecs, self.config.personas)
        clusters.describe(pd.read_parquet(run / "profiles.parquet"), self.split_obj().train)
        clusters.save(run.path)
        return {"k": clusters.k, "k_source": clusters.k_source, "elbow_k": clusters.elbow,
                "sizes": clusters.sizes.tolist()}


def _make_split(dataset: RatingDataset, config: SplitConfig) -> Split:
    from recsim_personas.data.splits import make_split

    return make_split(dataset, config)


def _distill_versions() -> dict[str, str]:
    from recsim_personas.memory.backends.template import TEMPLATE_VERSION
    from recsim_personas.memory.distill_checkpoint import CHECKPOINT_VERSION
    from recsim_personas.memory.prompts import PROMPT_VERSION

    return {"template": TEMPLATE_VERSION, "prompts": PROMPT_VERSION, "distill": CHECKPOINT_VERSION}


def _word_method() -> str:
    from recsim_personas.memory.persona_words import word_method

    return word_method()


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))


def _check_distill(profiles: pd.DataFrame, memories: pd.DataFrame, split: Split) -> None:
    """Distillation must cover every split user and give one memory per train interaction."""
    users = set(split.users.tolist())
    got = set(profiles["user_id"].astype(int).tolist())
    if users - got:
        missing = sorted(users - got)
        raise DataError(f"distillation returned no profile for {len(missing)} split user(s), e.g. {missing[:5]}")
    want = set(zip(split.train["user_id"].astype(int), split.train["item_id"].astype(int)))
    have = list(zip(memories["user_id"].astype(int), memories["item_id"].astype(int)))
    if len(have) != len(set(have)) or set(have) != want:
        lost = sorted(want - set(have))[:5]
        extra = sorted(set(have) - want)[:5]
        raise DataError(
            f"memories.parquet must hold one row per train interaction ({len(want)}); got {len(have)} rows "
            f"(missing e.g. {lost}, not in train e.g. {extra})"
        )


def _stats_inputs(config: MemoryPipelineConfig, fingerprint: str) -> dict[str, Any]:
    # Older run folders recorded no item_stats (train-only averages): their stage hashes stay valid.
    if config.item_stats == "train":
        return {}
    return {"item_stats": config.item_stats, "dataset": fingerprint}


def run_item_stats(run_dir: str | Path) -> str:
    """The ``item_stats`` source a run folder's memories were built with (``"train"`` for folders
    made before the option existed, which used train-only averages)."""
    manifest = RunFolder(run_dir).manifest()
    return str((manifest.get("config") or {}).get("item_stats", "train"))


def run_item_catalog(run_dir: str | Path, dataset: RatingDataset, split: Split | None = None) -> Any:
    """The :class:`~recsim_personas.data.item_catalog.ItemCatalog` every stage of a run folder uses:
    item averages from the same rating pool the memories quote (:func:`run_item_stats`)."""
    from recsim_personas.data.item_catalog import ItemCatalog
    from recsim_personas.data.splits import Split
    from recsim_personas.memory.statistics import rating_pool

    split = split if split is not None else Split.load(Path(run_dir) / "split")
    return ItemCatalog(dataset, rating_pool(dataset, split.train, split.test, run_item_stats(run_dir)))


def run_cue_statistics(run_dir: str | Path, dataset: RatingDataset, split: Split | None = None) -> Any:
    """The collaborative cue's :class:`~recsim_personas.memory.cue.CueStatistics` of a run folder:
    item numbers over the rating pool the item averages come from (:func:`run_item_stats`), user
    numbers over the split's train rows. No test rating is in either."""
    from recsim_personas.data.splits import Split
    from recsim_personas.memory.cue import CueStatistics
    from recsim_personas.memory.statistics import rating_pool

    split = split if split is not None else Split.load(Path(run_dir) / "split")
    pool = rating_pool(dataset, split.train, split.test, run_item_stats(run_dir))
    return CueStatistics.fit(pool, split.train, split.scale or dataset.scale)
