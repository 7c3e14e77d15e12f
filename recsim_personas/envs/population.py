"""Where the users of ``PersonaRec`` come from: a run folder, or the embedded default population.

The population itself (users, catalogue, what the environment shows of them) is a
:class:`~recsim_personas.envs.user_population.UserPopulation`, and the user agent fitted on it comes
from :mod:`recsim_personas.envs.user_models`; both are re-exported here, the import path the
environment's users know. :func:`load_population` picks the source:

``run_dir`` set
    A run folder of the memory stage (see ``docs/design.md``): the split in ``split/``, the profiles
    (``profiles.parquet``: ``activity_level``), the persona of each user (``personas.parquet``) and
    the L2-normalised profile embeddings (``embeddings/profiles.npy``), read through
    :class:`~recsim_personas.memory.store.MemoryStore`. The language-model agent also needs one
    trained adapter per persona under ``adapters/persona_<k>__<memory_mode>``; a folder without them
    is an :class:`~recsim_personas.errors.EnvError` that names the missing adapters and the command
    that trains them.

``run_dir`` None: the embedded default
    ml-latest-small (shipped inside the package), the paper's split (users with 100-200 ratings,
    temporal 60:40, seed 0; all 115 qualifying users, as fewer than the paper's 200 qualify), and
    profiles from the memory stage's ``template`` backend (deterministic, no language model), K = 4
    personas and all-MiniLM-L6-v2 embeddings, computed on first use and cached under
    ``recsim_personas.paths.cache_dir("envs", ...)``. Later ``gym.make`` calls read the cache. The
    default user agent on this population is the cheap
    :class:`~recsim_personas.agents.bias_agent.BiasUserAgent` (no adapters are trained yet); point
    the environment at a trained run folder with ``gym.make("PersonaRec-v0", run_dir=...)`` to get
    the persona-LoRA language-model users.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recsim_personas.envs.user_models import (
    adapter_name,
    build_agent,
    build_lm_agent,
    missing_adapters,
    resolve_cue,
    simulator_ratings,
)
from recsim_personas.envs.user_population import UserPopulation, item_titles, synthetic_population
from recsim_personas.errors import EnvError, RecsimWarning

if TYPE_CHECKING:
    from recsim_personas.envs.config import PersonaRecConfig

__all__ = [
    "FIRST_BUILD_SECONDS_2_CORES",
    "FirstBuildWarning",
    "UserPopulation",
    "adapter_name",
    "build_agent",
    "build_lm_agent",
    "default_population",
    "default_run_dir",
    "default_split_config",
    "first_build_note",
    "item_titles",
    "load_population",
    "missing_adapters",
    "population_from_run_dir",
    "simulator_ratings",
    "synthetic_population",
]


#: Bump when the default population's construction changes (its cache folder name carries it).
_DEFAULT_VERSION = "2"  # 2: leave-one-out memories, whole-dataset item averages (issue 12)


# -- run folders ------------------------------------------------------------------------------------
#: Files the environment reads from a run folder (all written by `recsim-personas memory`).
_RUN_FILES = ("split/config.json", "profiles.parquet", "personas.parquet", "embeddings/profiles.npy")




def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise EnvError(
            f"run_dir {str(run_dir)!r} does not exist; make one with `recsim-personas memory --out "
            f"{run_dir}` (then `recsim-personas train` for the LM agent), or leave run_dir unset for "
            "the embedded default"
        )
    missing = [name for name in _RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        raise EnvError(
            f"run folder {run_dir} is incomplete: missing {', '.join(missing)}; run "
            f"`recsim-personas memory --out {run_dir}` first"
        )


def _dataset_for_run(dataset_name: str, data_dir: str | None) -> Any:
    """The dataset a run folder was built from (item titles, the LM agent's item text).

    ml-latest-small is embedded; other datasets come from ``data_dir`` or the download cache
    (``load_dataset`` names both fixes when neither has them).
    """
    from recsim_personas.data.registry import load_dataset

    return load_dataset(dataset_name, data_dir)


def population_from_run_dir(
    run_dir: str | Path,
    *,
    require_adapters: str | None = None,
    data_dir: str | None = None,
    dataset: Any = None,
    cue: bool | None = False,
) -> UserPopulation:
    """The population of a memory-stage run folder.

    Args:
        run_dir: The run folder (see the module docstring for the files it needs).
        require_adapters: A memory mode (``"ms"`` or ``"msml"``) whose persona adapters must exist
            (the LM agent needs them); ``None`` = no check.
        data_dir: Folder of the dataset files when the run was not built on the embedded dataset.
        dataset: The already loaded dataset (skips loading it again).
        cue: With ``require_adapters``: require the adapters trained with the collaborative cue
            (``persona_<k>_cue__<mode>``); ``None``: whichever the folder has (``resolve_cue``).

    Raises:
        EnvError: The folder is missing, incomplete, or lacks a persona's adapter.
    """
    from recsim_personas.data.splits import Split
    from recsim_personas.integrity import check_structure, verify_run_folder
    from recsim_personas.memory.store import MemoryStore

    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    # Damaged or stale files are refused with one line naming the file and the repairing command.
    verify_run_folder(run_dir, check=("memory",))
    check_structure(run_dir, ("personas.parquet",))
    if require_adapters is not None:
        # Checked before anything heavy loads: personas.parquet alone says which adapters are needed.
        n_personas = int(pd.read_parquet(run_dir / "personas.parquet")["persona"].max()) + 1
        use_cue = resolve_cue(run_dir, n_personas, require_adapters, cue)
        missing = missing_adapters(run_dir, n_personas, require_adapters, cue=use_cue)
        if missing:
            raise EnvError(
                f"run folder {run_dir} is missing persona adapter(s) {', '.join(missing)} under "
                f"{run_dir / 'adapters'} (the LM agent needs one per persona for memory mode "
                f"{require_adapters!r}); train them with `recsim-personas train {run_dir} "
                f"--memory {require_adapters} --adapters persona{' --cue' if use_cue else ''}`, or use the cheap agent: "
                "gym.make('PersonaRec-v0', run_dir=..., agent='bias')"
            )
        verify_run_folder(run_dir, adapters=[adapter_name(k, require_adapters, cue=use_cue) for k in range(n_personas)],
                          check=("memory",))
    check_structure(run_dir, (*_RUN_FILES, "memories.parquet", "split/train.parquet", "split/test.parquet"))
    split = Split.load(run_dir / "split")
    store = MemoryStore.from_run_dir(run_dir)
    users = np.unique(split.train["user_id"].to_numpy(np.int64))
    personas = {int(u): int(store.persona(int(u))) for u in users}
    if dataset is None:
        dataset = _dataset_for_run(split.dataset_name or "ml-latest-small", data_dir)
    from recsim_personas.memory.pipeline import run_item_catalog

    activity = {int(u): int(store.profile_row(int(u))["activity_level"]) for u in users}
    embeddings = {int(u): np.asarray(store.profile_embedding(int(u))) for u in users}
    return UserPopulation.from_split(
        split.train,
        split.test,
        split.scale or dataset.scale,
        name=f"{run_dir.name}",
        items=dataset.items,
        personas=personas,
        profile_embeddings=embeddings,
        activity_levels=activity,
        run_dir=run_dir,
        store=store,
        catalog=run_item_catalog(run_dir, dataset, split),
        dataset=dataset,
    )


def default_run_dir(dataset: str = "ml-latest-small", data_dir: str | None = None) -> Path:
    """The cached run folder of the default population (built on first use)."""
    from recsim_personas.artifacts import stable_hash
    from recsim_personas.paths import cache_dir

    tag = dataset if data_dir is None else f"{dataset}-{stable_hash(str(Path(data_dir).resolve()))[:8]}"
    return cache_dir("envs", f"default-v{_DEFAULT_VERSION}-{tag}")


def default_split_config(dataset: Any) -> Any:
    """The paper's split (100-200 ratings, temporal 60:40, seed 0), with at most 200 users.

    ml-latest-small has only 115 users with 100-200 ratings, so its default population is all of
    them (the paper samples 200 of the ML-1M users that qualify).
    """
    from recsim_personas.data.splits import PAPER_SPLIT, SplitConfig, eligible_users

    n_eligible = len(eligible_users(dataset.interactions, PAPER_SPLIT))
    if n_eligible == 0:
        raise EnvError(
            f"dataset {dataset.name!r} has no user with 100-200 ratings for the default population; "
            "build a run folder with your own split (`recsim-personas memory --out DIR`) and pass run_dir="
        )
    if PAPER_SPLIT.n_users is not None and n_eligible < PAPER_SPLIT.n_users:
        return SplitConfig.from_dict({**PAPER_SPLIT.to_dict(), "n_users": None})
    return PAPER_SPLIT


def default_population(dataset: str = "ml-latest-small", data_dir: str | None = None) -> UserPopulation:
    """The embedded default population: ``dataset``, the paper split, template profiles (cached).

    The first call runs the memory pipeline (:func:`~recsim_personas.memory.pipeline.build_memories`
    with the paper's settings: the deterministic ``template`` distillation backend, all-MiniLM-L6-v2
    embeddings shipped offline, K = 4 personas) on the paper split and writes a run folder under
    ``cache_dir("envs")``; later calls find every stage up to date and only read it.
    """
    from recsim_personas.data.registry import load_dataset
    from recsim_personas.memory.pipeline import MemoryPipelineConfig, build_memories

    run_dir = default_run_dir(dataset, data_dir)
    ds = load_dataset(dataset, data_dir)
    split = default_split_config(ds)
    first = not (run_dir / "personas.parquet").is_file()
    if first:
        warnings.warn(FirstBuildWarning(first_build_note(dataset, run_dir)), stacklevel=2)
    # Bars (profiles, embeddings) only on a terminal and only while something is being built.
    build_memories(ds, split, MemoryPipelineConfig.paper(), run_dir, progress=first)
    return population_from_run_dir(run_dir, data_dir=data_dir, dataset=ds)


class FirstBuildWarning(RecsimWarning):
    """The first ``gym.make`` on a dataset builds and caches its default population (once)."""


#: Wall time of a cold first ``gym.make("PersonaRec-v0")`` on 2 CPU cores (issue 13's measurement).
FIRST_BUILD_SECONDS_2_CORES = 175


def first_build_note(dataset: str, run_dir: Path) -> str:
    """The one line said before the default population of ``dataset`` is built into ``run_dir``."""
    minutes = max(1, round(FIRST_BUILD_SECONDS_2_CORES / 60))
    return (
        f"first use of PersonaRec on {dataset}: building and caching its default population once "
        f"(paper split, template profiles, memories, all-MiniLM-L6-v2 embeddings) in {run_dir}; "
        f"about {minutes} minutes on 2 CPU cores for ml-latest-small; later gym.make calls read the cache"
    )


#: Default populations already loaded in this process, by (dataset, data_dir): every ``gym.make``
#: after the first shares one (read-only) population and its derived tables (cheap user models,
#: features), so SB3's ``make_vec_env(n_envs=8)`` fits the simulator once, not eight times.
_LOADED_DEFAULTS: dict[tuple[Any, ...], UserPopulation] = {}


def _default_key(config: PersonaRecConfig) -> tuple[Any, ...] | None:
    """Identity of the default population's cached run folder (None while it is not built)."""
    run_dir = default_run_dir(config.dataset, config.data_dir)
    marker = run_dir / "personas.parquet"
    if not marker.is_file():
        return None
    return (config.dataset, config.data_dir, str(run_dir), marker.stat().st_mtime_ns)


def load_population(config: PersonaRecConfig) -> UserPopulation:
    """The population ``config`` names: its ``run_dir``, else the embedded default (loaded once per
    process and shared by every environment on it; treat it as read-only)."""
    if config.run_dir is None:
        key = _default_key(config)
        if key is not None and key in _LOADED_DEFAULTS:
            return _LOADED_DEFAULTS[key]
        population = default_population(config.dataset, config.data_dir)
        key = _default_key(config)
        _LOADED_DEFAULTS.clear()  # one default population held at a time
        if key is not None:
            _LOADED_DEFAULTS[key] = population
        return population
    require = config.memory_mode if config.resolved_agent == "lm" else None
    return population_from_run_dir(config.run_dir, require_adapters=require, data_dir=config.data_dir, cue=config.cue)
