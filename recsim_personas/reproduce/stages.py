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


def memory_config(config: ReproduceConfig) -> Any:
    from recsim_personas.memory.distill import DistillConfig
    from recsim_personas.memory.personas import PersonaConfig
    from recsim_personas.memory.pipeline import MemoryPipelineConfig

    mem = config.memory
    return MemoryPipelineConfig(
        distill=DistillConfig(
            backend=mem.backend,
            model=mem.model,
            base_url=mem.base_url,
            batch_size=mem.batch_size,
            max_words=mem.max_words,
            seed=config.seed,
            timeout=mem.request_timeout,
            request_retries=mem.request_attempts - 1,
            retry_after_max=mem.retry_after_max,
        ),
        embedder=mem.embedder,
        personas=PersonaConfig(k=mem.personas, seed=config.seed),
        item_stats=mem.item_stats,
    )


def split_config(config: ReproduceConfig) -> Any:
    from recsim_personas.data.splits import SplitConfig

    s = config.split
    return SplitConfig(
        method=s.method,
        train_fraction=s.train_fraction,
        last_n=s.last_n,
        min_interactions=s.min_interactions,
        max_interactions=s.max_interactions,
        n_users=s.n_users,
        seed=s.seed,
    )


def experiment_config(config: ReproduceConfig) -> Any:
    from recsim_personas.training.experiment import ExperimentConfig

    return ExperimentConfig(
        model=config.model.name,
        device=config.model.device,
        train_preset=config.training.preset,
        train_overrides=dict(config.training.overrides),
        memory_modes=tuple(config.training.memory_modes),
        adapters=tuple(config.training.adapters),
        base_rows=config.evaluation.base_model_rows,
        max_users=config.training.max_users,
        train_rows_per_user=config.training.train_rows_per_user,
        test_rows_per_user=config.evaluation.test_rows_per_user,
        eval_mode=config.evaluation.mode,
        template=config.evaluation.template,
        k=config.memory.retrieval_k,
        delta=config.memory.delta,
        seed=config.seed,
        server=config.model.server,
    )


def simulation_config(config: ReproduceConfig) -> Any:
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
        policies=tuple(sim.policies),
        episodes=sim.episodes,
        horizon=sim.horizon,
        n_envs=max(1, min(episodes, 32)),
        seed=config.seed,
        oracle_candidates=sim.oracle_candidates,
        env=env,
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
    return {"lora": config.train_config().to_dict(), "model": config.model, "template": config.template,
            "k": config.k, "delta": config.delta, "max_users": config.max_users,
            "train_rows_per_user": config.train_rows_per_user, "seed": config.seed}
