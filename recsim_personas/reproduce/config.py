"""The reproduction config: one YAML file per preset under ``configs/``, validated as a whole.

Every section is a frozen :class:`~recsim_personas.config.Config` dataclass. Where a section has
the fields of a library config it *is* that config: ``split`` is the library's
:class:`~recsim_personas.data.splits.SplitConfig` (with the paper's protocol as its defaults). The
other sections gather, under the keys the presets use, options that the library spreads over
several configs (``model`` and ``training`` both feed ``ExperimentConfig``; ``memory`` feeds
``DistillConfig``, ``PersonaConfig`` and ``MemoryPipelineConfig``); :mod:`.stages` builds those
library configs from them. :func:`load_reproduce_config` builds the tree from YAML plus
``key=value`` overrides and then checks what can be checked without heavy work (dataset folders,
model paths, every stage's own rules), reporting all problems in one :class:`ConfigError`.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, get_args

from recsim_personas.config import Config
from recsim_personas.data.splits import PAPER_SPLIT, SplitConfig
from recsim_personas.errors import ConfigError, did_you_mean

__all__ = [
    "PRESETS",
    "DatasetSection",
    "EvaluationSection",
    "MemorySection",
    "ModelSection",
    "ReproduceConfig",
    "SimulationSection",
    "SplitSection",
    "TrainingSection",
    "preset_path",
]

PRESETS = ("demo", "cpu", "full", "paper")
DatasetName = Literal["ml-latest-small", "ml-100k", "ml-1m"]
DATASETS: tuple[str, ...] = get_args(DatasetName)


@dataclass(frozen=True)
class DatasetSection(Config):
    """Which ratings to use: ``name`` (``ml-latest-small`` is embedded), ``data_dir`` for the others."""

    name: DatasetName = "ml-latest-small"
    data_dir: str | None = None
    enrichment: str | None = None


@dataclass(frozen=True)
class SplitSection(SplitConfig, Config):
    """``split``: the library's :class:`SplitConfig`, defaulting to the paper's protocol (users with
    100-200 ratings, 200 sampled, the oldest 60% of each to train)."""

    min_interactions: int | None = PAPER_SPLIT.min_interactions
    max_interactions: int | None = PAPER_SPLIT.max_interactions
    n_users: int | None = PAPER_SPLIT.n_users

    def __post_init__(self) -> None:
        low, high = self.min_interactions, self.max_interactions
        if isinstance(low, int) and isinstance(high, int) and low > high:
            # The wording this config has always reported (SplitConfig says "exceeds").
            raise ConfigError(f"min_interactions ({low}) > max_interactions ({high})")
        super().__post_init__()

    def to_split_config(self) -> SplitConfig:
        """The same settings as a plain :class:`SplitConfig` (what a run folder records)."""
        return SplitConfig(**{f.name: getattr(self, f.name) for f in fields(SplitConfig)})


@dataclass(frozen=True)
class MemorySection(Config):
    """Distillation backend, embeddings, personas and retrieval."""

    backend: Literal["template", "openai", "hf"] = "template"
    model: str | None = None
    base_url: str | None = None
    batch_size: int = 10
    max_words: int = 2000
    embedder: str = "minilm"
    personas: int | None = 4
    retrieval_k: int = 1
    delta: float = 0.0
    #: openai backend: seconds a request waits for its answer, attempts per request, and the
    #: longest Retry-After honoured (a longer one stops the run).
    request_timeout: float = 30.0
    request_attempts: int = 3
    retry_after_max: float = 30.0
    #: Ratings behind item averages / counts in memories and prompts, and the classic baselines'
    #: training data: dataset (all but the evaluated users' test rows) or train (split rows only).
    item_stats: Literal["dataset", "train"] = "dataset"

    def __post_init__(self) -> None:
        # The options named as in DistillConfig (batch_size, retry_after_max, ...) are checked by it
        # (``stage_configs``); these are the ones this section names its own way.
        if self.request_timeout <= 0:
            raise ConfigError(f"request_timeout must be > 0 seconds, got {self.request_timeout}")
        if self.request_attempts < 1:
            raise ConfigError(f"request_attempts must be >= 1, got {self.request_attempts}")
        if self.personas is not None and self.personas < 1:
            raise ConfigError(f"personas must be >= 1 or null (elbow), got {self.personas}")
        if self.backend == "openai" and not self.model:
            raise ConfigError("backend openai needs model (e.g. gpt-4o) and usually base_url")


@dataclass(frozen=True)
class ModelSection(Config):
    """The small language model: ``name`` null = SmolLM2-135M-Instruct shipped offline."""

    name: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    #: URL of a vLLM server serving ``name`` and the run's trained adapters (``recsim-personas serve
    #: RUN --launch``): evaluation and the LM simulation score through it; null = in this process.
    server: str | None = None

    def __post_init__(self) -> None:
        if self.server is not None and not str(self.server).startswith(("http://", "https://")):
            raise ConfigError(f"server must be an http(s) URL such as http://127.0.0.1:8000/v1, got {self.server!r}")


@dataclass(frozen=True)
class TrainingSection(Config):
    """LoRA fine-tuning: a preset of ``LoraTrainConfig`` plus field overrides."""

    preset: Literal["cpu", "paper"] = "cpu"
    overrides: dict = field(default_factory=dict)
    memory_modes: list[Literal["ms", "msml"]] = field(default_factory=lambda: ["ms", "msml"])
    adapters: list[Literal["persona", "single_min", "single_max"]] = field(
        default_factory=lambda: ["persona", "single_min", "single_max"]
    )
    train_rows_per_user: int | None = None
    #: At most this many of the split's users are trained on and evaluated (a seeded sample drawn per
    #: persona in proportion to its size); null = all of them.
    max_users: int | None = None
    #: Measure this machine's per-token costs (about a minute) and print the time the experiment
    #: will take before training starts (what is finished counts zero).
    estimate_first: bool = False


@dataclass(frozen=True)
class EvaluationSection(Config):
    """How the agents are scored on the test split."""

    mode: Literal["score", "generate"] = "score"
    test_rows_per_user: int | None = None
    base_model_rows: bool = True
    #: Rating prompt preset (training rows and evaluation use the same): paper (Appendix C) or compact.
    template: Literal["paper", "compact"] = "paper"
    #: The fidelity report's agent rows on more test rows than Table 1 (a cheap preset's Table 1
    #: scores a few rows per user): Table-1 row numbers re-scored into ``fidelity_results/`` ...
    fidelity_rows: list[int] = field(default_factory=list)
    #: ... on at most this many test rows per user (null: all of them).
    fidelity_test_rows_per_user: int | None = None
    #: Hold out the newest ``validation_fraction`` of each user's train rows from every adapter's
    #: training, score them with each evaluated agent and fit a temperature of its rating
    #: distribution there: the fidelity report gets a calibrated row beside each raw one.
    calibrate: bool = True
    validation_fraction: float = 0.1
    #: At most this many validation rows scored per evaluated agent (seeded; null: the whole slice).
    validation_rows: int | None = None
    #: Table-1 rows whose temperature is fitted (one scoring pass over the validation rows each);
    #: null: the rows the fidelity report shows (``fidelity_rows`` when set, else every row).
    calibrate_rows: list[int] | None = None


@dataclass(frozen=True)
class SimulationSection(Config):
    """The baseline policies in simulation (PersonaRec-v0) after the fidelity table."""

    enabled: bool = True
    policies: list[Literal["random", "popularity", "als", "mf", "oracle", "bandit"]] = field(
        default_factory=lambda: ["random", "popularity", "als", "mf", "oracle"]
    )
    episodes: int = 20
    horizon: int = 10
    agent: Literal["lm", "bias"] = "lm"
    oracle_candidates: int | None = 50


@dataclass(frozen=True)
class ReproduceConfig(Config):
    """Everything ``recsim-personas reproduce`` runs: split, memories, training, evaluation, simulation."""

    preset: Literal["demo", "cpu", "full", "paper", "custom"] = "custom"
    out: str = "runs/demo"
    seed: int = 0
    dataset: DatasetSection = field(default_factory=DatasetSection)
    split: SplitSection = field(default_factory=SplitSection)
    memory: MemorySection = field(default_factory=MemorySection)
    model: ModelSection = field(default_factory=ModelSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    simulation: SimulationSection = field(default_factory=SimulationSection)


def preset_path(preset: str) -> Path:
    """The YAML file of a preset: ``configs/<preset>.yaml`` in a checkout, else the packaged copy."""
    if preset not in PRESETS:
        raise ConfigError(
            f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.{did_you_mean(preset, PRESETS)}"
        )
    packaged = importlib.resources.files("recsim_personas.reproduce") / "configs" / f"{preset}.yaml"
    return Path(str(packaged))
