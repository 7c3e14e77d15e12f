"""Loading the reproduction config: YAML plus overrides, then the checks that need the outside world.

:func:`load_reproduce_config` builds :class:`~recsim_personas.reproduce.config.ReproduceConfig` and
then checks what can be checked without heavy work (dataset folders, model paths and the hub,
every stage's own config rules via :func:`~recsim_personas.reproduce.stages.stage_configs`),
reporting all problems in one :class:`ConfigError`. It lives apart from the config types so that
``config`` (types) and ``stages`` (types -> library configs) import one way.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path

from recsim_personas.config import apply_overrides, read_yaml
from recsim_personas.errors import ConfigError, did_you_mean
from recsim_personas.reproduce.config import DATASETS, ReproduceConfig, preset_path
from recsim_personas.reproduce.stages import stage_configs

__all__ = ["embedder_problem", "load_reproduce_config", "model_problem"]


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
                errors.append(f"training.overrides.{key}: unknown LoRA setting.{did_you_mean(key, known)}")
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
        config = ReproduceConfig.from_dict(data, source=str(path))
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
    try:
        stage_configs(config)  # simulation, evaluation, training: every stage's own checks, now
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config
