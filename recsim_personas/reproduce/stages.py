"""Every stage's config of a reproduction, built from the :class:`ReproduceConfig` up front.

:func:`load_reproduce_config` calls :func:`stage_configs`, so an invalid simulation or evaluation
section fails before any model loads; the pipeline runs each stage with the configs built here.
This module imports the reproduce config only for type checking (it sits below ``config``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsim_personas.reproduce.config import ReproduceConfig

__all__ = [
    "StageConfigs", "adapter_inputs", "experiment_config", "memory_config", "simulation_config",
    "split_config", "stage_configs",
]


def _same_named(section: Any, *names: str) -> dict[str, Any]:
    """``{name: section.<name>}``: the options a section shares, by name and meaning, with a library config."""
    return {name: getattr(section, name) for name in names}


def memory_config(config: ReproduceConfig) -> Any:
    """``memory`` (with the top-level seed) as the library's ``MemoryPipelineConfig``."""
    from recsim_personas.memory.distill import DistillConfig
    from recsim_personas.memory.personas import PersonaConfig
    from recsim_personas.memory.pipeline import MemoryPipelineConfig

    mem = config.memory
    distill = DistillConfig(
        **_same_named(mem, "backend", "model", "base_url", "batch_size", "max_words", "retry_after_max"),
        seed=config.seed, timeout=mem.request_timeout, request_retries=mem.request_attempts - 1,
    )
    return MemoryPipelineConfig(distill=distill, personas=PersonaConfig(k=mem.personas, seed=config.seed),
                                **_same_named(mem, "embedder", "item_stats"))


def split_config(config: ReproduceConfig) -> Any:
    """``split`` as a plain ``SplitConfig`` (the section is one, with the paper's defaults)."""
    return config.split.to_split_config()


def experiment_config(config: ReproduceConfig) -> Any:
    """``model``, ``training``, ``evaluation`` and the retrieval options of ``memory`` as an ``ExperimentConfig``."""
    from recsim_personas.training.experiment import ExperimentConfig

    training, evaluation = config.training, config.evaluation
    return ExperimentConfig(
        model=config.model.name, device=config.model.device, seed=config.seed,
        train_preset=training.preset, train_overrides=dict(training.overrides),
        memory_modes=tuple(training.memory_modes), adapters=tuple(training.adapters),
        base_rows=evaluation.base_model_rows, eval_mode=evaluation.mode,
        k=config.memory.retrieval_k, delta=config.memory.delta, server=config.model.server,
        **_same_named(training, "max_users", "train_rows_per_user"),
        calibrate_rows=_calibrate_rows(evaluation),
        **_same_named(evaluation, "test_rows_per_user", "template", "calibrate", "validation_fraction",
                      "validation_rows"),
    )


def _calibrate_rows(evaluation: Any) -> tuple[int, ...] | None:
    """The rows given a temperature: ``calibrate_rows``, else the fidelity report's (``fidelity_rows``)."""
    if evaluation.calibrate_rows is not None:
        return tuple(evaluation.calibrate_rows)
    return tuple(evaluation.fidelity_rows) or None


def simulation_config(config: ReproduceConfig) -> Any:
    """``simulation`` as the library's ``SimulationConfig`` (PersonaRec-v0 on the run folder)."""
    from recsim_personas.envs.simulate import SimulationConfig

    sim = config.simulation
    memory_mode = "msml" if "msml" in config.training.memory_modes else "ms"
    env = {"agent": sim.agent, "run_dir": str(config.out), "memory_mode": memory_mode}
    if sim.agent == "lm" and config.model.server is not None:
        env["server"] = config.model.server
    if config.dataset.data_dir is not None:
        env["data_dir"] = config.dataset.data_dir
    episodes = sim.episodes if isinstance(sim.episodes, int) else 1
    return SimulationConfig(
        n_envs=max(1, min(episodes, 32)), seed=config.seed, env=env,
        **_same_named(sim, "policies", "episodes", "horizon", "oracle_candidates"),
    )


@dataclass(frozen=True)
class StageConfigs:
    """The configs every stage of a reproduction runs with, built (and so validated) up front."""

    split: Any
    memory: Any
    experiment: Any
    simulation: Any | None


def stage_configs(config: ReproduceConfig) -> StageConfigs:
    """Build every stage's config from ``config``, reporting all their errors in one ConfigError.

    ``load_reproduce_config`` calls it, so an invalid simulation or evaluation section fails before
    any model loads, not after hours of training.
    """
    from recsim_personas.errors import ConfigError

    errors: list[str] = []
    built: dict[str, Any] = {}
    makers: list[tuple[str, str, Callable[[ReproduceConfig], Any]]] = [
        ("split", "split", split_config), ("memory", "memory", memory_config),
        ("experiment", "training / evaluation", experiment_config),
    ]
    if config.simulation.enabled:
        makers.append(("simulation", "simulation", simulation_config))
    for key, section, make in makers:
        try:
            built[key] = make(config)
        except ConfigError as exc:
            errors.append(f"{section}: {' '.join(str(exc).split())}")
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise ConfigError(f"{len(errors)} error(s) in the stage settings:\n{lines}")
    return StageConfigs(split=built["split"], memory=built["memory"], experiment=built["experiment"],
                        simulation=built.get("simulation"))


def adapter_inputs(config: Any) -> dict[str, Any]:
    """What an adapter's rows and weights depend on besides the memories (see ``record_adapters``)."""
    settings = {"lora": config.train_config().to_dict(), "model": config.model, "template": config.template,
                "k": config.k, "delta": config.delta, "max_users": config.max_users,
                "train_rows_per_user": config.train_rows_per_user, "seed": config.seed}
    if getattr(config, "cue", False):
        settings["cue"] = True
    if config.calibrate:  # the validation slice leaves the training rows (absent: the settings of before)
        settings["validation_fraction"] = config.validation_fraction
    return settings
