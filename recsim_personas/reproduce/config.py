"""The reproduction config: one YAML file per preset under ``configs/``, validated as a whole.

Every section is a frozen dataclass; :func:`load_reproduce_config` builds the tree from YAML plus
``key=value`` overrides and then checks what can be checked without heavy work (dataset folders,
model paths, cross-field rules), reporting all problems in one :class:`ConfigError`.
"""

from __future__ import annotations

import difflib
import importlib.resources
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from recsim_personas.config import apply_overrides, build_dataclass, read_yaml
from recsim_personas.errors import ConfigError

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
    "embedder_problem",
    "load_reproduce_config",
    "model_problem",
    "preset_path",
]

PRESETS = ("demo", "cpu", "full", "paper")
DATASETS = ("ml-latest-small", "ml-100k", "ml-1m")


@dataclass(frozen=True)
class DatasetSection:
    """Which ratings to use: ``name`` (``ml-latest-small`` is embedded), ``data_dir`` for the others."""

    name: Literal["ml-latest-small", "ml-100k", "ml-1m"] = "ml-latest-small"
    data_dir: str | None = None
    enrichment: str | None = None


@dataclass(frozen=True)
class SplitSection:
    """The paper's protocol: users with 100-200 ratings, N sampled, oldest 60% of each to train."""

    method: Literal["temporal", "random", "last"] = "temporal"
    train_fraction: float = 0.6
    last_n: int = 1
    min_interactions: int | None = 100
    max_interactions: int | None = 200
    n_users: int | None = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(f"train_fraction must be in (0, 1), got {self.train_fraction}")
        if self.n_users is not None and self.n_users < 1:
            raise ConfigError(f"n_users must be >= 1 or null (all), got {self.n_users}")
        if (
            self.min_interactions is not None
            and self.max_interactions is not None
            and self.min_interactions > self.max_interactions
        ):
            raise ConfigError(
                f"min_interactions ({self.min_interactions}) > max_interactions ({self.max_interactions})"
            )


@dataclass(frozen=True)
class MemorySection:
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
        if self.request_timeout <= 0:
            raise ConfigError(f"request_timeout must be > 0 seconds, got {self.request_timeout}")
        if self.request_attempts < 1:
            raise ConfigError(f"request_attempts must be >= 1, got {self.request_attempts}")
        if self.retry_after_max < 0:
            raise ConfigError(f"retry_after_max must be >= 0 seconds, got {self.retry_after_max}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.personas is not None and self.personas < 1:
            raise ConfigError(f"personas must be >= 1 or null (elbow), got {self.personas}")
        if self.backend == "openai" and not self.model:
            raise ConfigError("backend openai needs model (e.g. gpt-4o) and usually base_url")


@dataclass(frozen=True)
class ModelSection:
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
class TrainingSection:
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
class EvaluationSection:
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


@dataclass(frozen=True)
class SimulationSection:
    """The baseline policies in simulation (PersonaRec-v0) after the fidelity table."""

    enabled: bool = True
    policies: list[Literal["random", "popularity", "als", "oracle"]] = field(
        default_factory=lambda: ["random", "popularity", "als", "oracle"]
    )
    episodes: int = 20
    horizon: int = 10
    agent: Literal["lm", "bias"] = "lm"
    oracle_candidates: int | None = 50


@dataclass(frozen=True)
class ReproduceConfig:
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
        hint = difflib.get_close_matches(preset, PRESETS, n=1)
        raise ConfigError(
            f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"
            + (f". Did you mean {hint[0]!r}?" if hint else "")
        )
    packaged = importlib.resources.files("recsim_personas.reproduce") / "configs" / f"{preset}.yaml"
    return Path(str(packaged))


def _hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


#: Embedder specs that name no hub model (see ``make_embedder``).
_EMBEDDER_SPECS = ("minilm", "hashing", "openai", "sentence-transformers", "st")


def embedder_problem(spec: str | None, what: str = "memory.embedder") -> str | None:
    """Why the embedder ``spec`` cannot be loaded offline (a hub id not cached, a missing folder)."""
    if not isinstance(spec, str) or spec.split(":")[0] in _EMBEDDER_SPECS:
        return None
    return model_problem(spec, what)


def model_problem(name: str | None, what: str) -> str | None:
    """Why ``name`` cannot be loaded, checked without loading it (None when it looks loadable).

    A hub id is checked against the local Hugging Face cache first; when it is not cached and the
    hub is unreachable this returns the error at once (instead of the hub client's retries), and
    ``HF_HUB_OFFLINE=1`` is set for the process so that no later load waits on the network.
    """
    if name is None:
        return None
    path = Path(name).expanduser()
    looks_local = name.startswith((".", "/", "~")) or path.exists() or name.count("/") != 1
    if looks_local:
        if not path.exists():
            return f"{what}: model path {name!r} does not exist (give a local folder or a hub id like org/name)"
        if path.is_dir() and not (path / "config.json").exists() and not list(path.glob("*.gguf")):
            return f"{what}: {name!r} holds no config.json or .gguf: not a transformers model folder"
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # any hub-client failure just means "not cached"
        cached = None
    if isinstance(cached, str):
        return None
    if not _hub_reachable():
        os.environ["HF_HUB_OFFLINE"] = "1"
        return (
            f"{what}: hub model {name!r} is not in the local Hugging Face cache and the hub is "
            "unreachable (no network); pass a local folder instead"
        )
    return None


def _section(data: dict, name: str) -> dict:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def _validate(data: dict) -> list[str]:
    """Checks that need the filesystem, the hub or other modules; run on the raw mapping so that
    they are reported even when the typed build found errors too."""
    errors: list[str] = []
    ds = _section(data, "dataset")
    name, data_dir, enrichment = ds.get("name", "ml-latest-small"), ds.get("data_dir"), ds.get("enrichment")
    if name in DATASETS and name != "ml-latest-small" and data_dir is None:
        from recsim_personas.data.download import cached_dataset_dir

        try:
            cached = cached_dataset_dir(name)
        except Exception:  # the cache lookup itself failing means "not downloaded"
            cached = None
        if cached is None or not Path(cached).exists():
            errors.append(
                f"dataset.data_dir: {name} is not embedded; set dataset.data_dir=DIR or run "
                f"`recsim-personas data download {name}`"
            )
    if isinstance(data_dir, str) and not Path(data_dir).expanduser().is_dir():
        errors.append(f"dataset.data_dir: folder {data_dir!r} does not exist")
    if isinstance(enrichment, str) and not Path(enrichment).expanduser().is_file():
        errors.append(f"dataset.enrichment: file {enrichment!r} does not exist")
    model_name = _section(data, "model").get("name")
    if isinstance(model_name, str):
        problem = model_problem(model_name, "model.name")
        if problem:
            errors.append(problem)
    memory = _section(data, "memory")
    if memory.get("backend") == "hf" and isinstance(memory.get("model"), str):
        problem = model_problem(memory["model"], "memory.model")
        if problem:
            errors.append(problem)
    problem = embedder_problem(memory.get("embedder"))
    if problem:
        errors.append(problem)
    overrides = _section(data, "training").get("overrides")
    if isinstance(overrides, dict) and overrides:
        from recsim_personas.training.config import LoraTrainConfig

        known = sorted(LoraTrainConfig.__dataclass_fields__)
        for key in overrides:
            if key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                errors.append(
                    f"training.overrides.{key}: unknown LoRA setting"
                    + (f". Did you mean {hint[0]!r}?" if hint else "")
                )
        if not errors:
            try:
                preset = _section(data, "training").get("preset", "cpu")
                LoraTrainConfig.preset(str(preset), **overrides)
            except ConfigError as exc:
                errors.append(f"training.overrides: {exc}")
    if _section(data, "model").get("device") == "cuda":
        import torch

        if not torch.cuda.is_available():
            errors.append("model.device: cuda requested but no CUDA device is available; use auto")
    return errors


def load_reproduce_config(
    preset: str | None = None,
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    extra: dict | None = None,
) -> ReproduceConfig:
    """Read a preset (or a YAML file), apply overrides, validate everything, report all errors at once."""
    path = Path(config_path) if config_path is not None else preset_path(preset or "demo")
    data = read_yaml(path)
    if extra:
        data = apply_overrides(data, [f"{k}={v}" for k, v in extra.items() if v is not None])
    data = apply_overrides(data, overrides)
    errors = _validate(data)
    try:
        config = build_dataclass(ReproduceConfig, data, source=str(path))
    except ConfigError as exc:
        # Report the typed errors and the filesystem / model errors together.
        if not errors:
            raise
        rest = str(exc).partition("\n")[2]
        n_typed = rest.count("\n  - ") + (1 if rest.strip() else 0)
        lines = rest.splitlines() + [f"  - {e}" for e in errors]
        raise ConfigError(f"{path}: {n_typed + len(errors)} error(s):\n" + "\n".join(lines)) from None
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise ConfigError(f"{path}: {len(errors)} error(s):\n{lines}")
    from recsim_personas.reproduce.stages import stage_configs

    try:
        stage_configs(config)  # simulation, evaluation, training: every stage's own checks, now
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config
