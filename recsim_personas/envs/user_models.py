"""The simulated user behind a population: which agent answers, fitted on which ratings.

:func:`build_agent` turns a config's ``agent`` choice into a user agent on a population: the cheap
bias or latent-factor users (fitted on :func:`simulator_ratings`) or the persona-LoRA language-model
users of a run folder (:func:`build_lm_agent`, one named adapter per persona: :func:`adapter_name`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from recsim_personas.adapter_names import persona_adapter_name
from recsim_personas.errors import EnvError

if TYPE_CHECKING:
    from recsim_personas.envs.config import PersonaRecConfig
    from recsim_personas.envs.user_population import UserPopulation

__all__ = [
    "adapter_name", "build_agent", "build_lm_agent", "missing_adapters", "resolve_cue", "simulator_ratings",
]


def adapter_name(persona: int, memory_mode: str, *, cue: bool = False) -> str:
    """Folder name of persona ``persona``'s adapter for ``memory_mode`` (``persona_2__ms``;
    ``persona_2_cue__ms`` when trained with the collaborative cue)."""
    return persona_adapter_name(persona, memory_mode, cue=cue)


def missing_adapters(run_dir: str | Path, n_personas: int, memory_mode: str, *, cue: bool = False) -> list[str]:
    """Names of persona adapters the LM agent needs that ``run_dir/adapters/`` lacks."""
    root = Path(run_dir) / "adapters"
    return [
        adapter_name(k, memory_mode, cue=cue)
        for k in range(n_personas)
        if not (root / adapter_name(k, memory_mode, cue=cue) / "adapter_config.json").is_file()
    ]


def resolve_cue(run_dir: str | Path, n_personas: int, memory_mode: str, cue: bool | None) -> bool:
    """Whether the LM agent states the collaborative cue: ``cue`` itself, or for ``None`` as the run
    folder's persona adapters were trained (True only when it has every cue adapter of the memory
    mode and not every plain one), so an adapter trained with the cue is served with it."""
    if cue is not None:
        return bool(cue)
    plain = missing_adapters(run_dir, n_personas, memory_mode)
    return bool(plain) and not missing_adapters(run_dir, n_personas, memory_mode, cue=True)


def simulator_ratings(population: UserPopulation) -> pd.DataFrame:
    """The ratings a cheap user model is fitted on: :meth:`UserPopulation.logged_ratings`.

    With the population's dataset known (the embedded default, run folders), that is every rating
    of the dataset (other users' too) except the population's test interactions, so the test split
    stays unseen by the simulator as by the policies; otherwise the population's train split.
    """
    return population.logged_ratings()


def build_agent(config: PersonaRecConfig, population: UserPopulation) -> Any:
    """The user agent ``config.agent`` names, on ``population``.

    ``bias``: :class:`~recsim_personas.agents.bias_agent.BiasUserAgent` fitted on the population's
    train split, with the population's activity levels and ``config.exit_rule``. ``mf``:
    :class:`~recsim_personas.agents.mf_agent.LatentFactorUserAgent` fitted on
    :func:`simulator_ratings`. ``lm``: :func:`build_lm_agent`.
    """
    kind = config.resolved_agent
    activity = dict(zip(population.user_ids.tolist(), population.activity_levels.tolist(), strict=True))
    if kind == "mf":
        from recsim_personas.agents.mf_agent import LatentFactorUserAgent

        return LatentFactorUserAgent.fit(
            simulator_ratings(population),
            population.scale,
            noise_std=config.noise_std,
            activity_levels=activity,
            exit_rule=config.exit_rule,
            table_users=population.user_ids,
            table_items=population.item_ids,
        )
    if kind == "bias":
        from recsim_personas.agents.bias_agent import BiasUserAgent

        return BiasUserAgent.fit(
            population.train,
            population.scale,
            noise_std=config.noise_std,
            activity_levels=activity,
            exit_rule=config.exit_rule,
        )
    return build_lm_agent(config, population)


def build_lm_agent(config: PersonaRecConfig, population: UserPopulation) -> Any:
    """The persona-LoRA language-model agent of a run folder.

    Loads the base model (``config.model``; None = the default SmolLM2-135M-Instruct) on
    ``config.device`` in ``config.dtype``, puts every persona's adapter
    ``adapters/persona_<k>__<memory_mode>`` on it by name, and wraps it in a
    :class:`~recsim_personas.agents.scoring.RatingScorer` (batched scoring, mixed adapters, prefix
    cache) and a :class:`~recsim_personas.agents.lm_agent.LMUserAgent` that gives each user their
    persona's adapter. With the collaborative cue (``config.cue``, or for ``None`` when the run folder's
    adapters were trained with it: :func:`resolve_cue`) the adapters ``persona_<k>_cue__<mode>`` and
    prompts that state the cue's numbers (fitted on the run folder's rating pool and train rows). With
    ``config.server`` no model is loaded here: a
    :class:`~recsim_personas.agents.served.ServedRatingScorer` asks that server (which must serve the
    base model and every persona adapter under the run's names) and only the tokenizer is loaded.
    """
    if population.run_dir is None or population.store is None or population.catalog is None:
        raise EnvError(
            "the LM agent needs a run folder with profiles, memories and trained adapters: "
            "gym.make('PersonaRec-v0', run_dir=...); this population has none, use agent='bias'"
        )
    from recsim_personas.agents.llm import load_adapters, load_causal_lm
    from recsim_personas.agents.lm_agent import LMUserAgent, adapter_naming
    from recsim_personas.agents.scoring import RatingScorer

    run_dir, mode = population.run_dir, config.memory_mode
    cue = resolve_cue(run_dir, population.n_personas, mode, config.cue)
    missing = missing_adapters(run_dir, population.n_personas, mode, cue=cue)
    if missing:  # population_from_run_dir checked already; this covers hand-built populations
        raise EnvError(
            f"run folder {run_dir} is missing persona adapter(s) {', '.join(missing)}; train them "
            f"with `recsim-personas train {run_dir} --memory {mode} --adapters persona"
            f"{' --cue' if cue else ''}`"
        )
    cue_stats = None
    if cue:
        from recsim_personas.memory.pipeline import run_cue_statistics

        cue_stats = run_cue_statistics(run_dir, population.dataset)
    if config.server is not None:
        from recsim_personas.agents.llm import load_tokenizer, served_model_path
        from recsim_personas.agents.served import ServedRatingScorer

        scorer: Any = ServedRatingScorer(
            config.server, load_tokenizer(config.model), population.scale,
            base_model=served_model_path(config.model),
        )
    else:
        model, tokenizer = load_causal_lm(config.model, device=config.device, dtype=config.dtype)
        names = {
            adapter_name(k, mode, cue=cue): run_dir / "adapters" / adapter_name(k, mode, cue=cue)
            for k in range(population.n_personas)
        }
        model = load_adapters(model, names)
        scorer = RatingScorer(model, tokenizer, population.scale)
    return LMUserAgent(
        scorer,
        population.store,
        population.catalog,
        memory_mode=mode,
        adapter_for=adapter_naming(population.store, "persona", mode, cue=cue),
        exit_calibration=config.exit_calibration,
        exit_hazard=config.exit_hazard,
        cue=cue_stats,
    )
