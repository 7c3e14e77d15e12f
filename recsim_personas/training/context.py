"""What one experiment run holds loaded: the run folder's split, memories, catalog, the model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsim_personas.errors import ConfigError, DataError
from recsim_personas.training.experiment_config import ExperimentConfig
from recsim_personas.training.run_inputs import load_inputs, persona_table

__all__ = ["RunContext", "load_context"]


@dataclass
class RunContext:
    """A run folder's inputs with the base model, shared by training and evaluation.

    Attributes:
        run: The run folder.
        dataset: The dataset it was built from.
        split: Its split.
        personas: ``user_id -> persona``.
        catalog: The ``ItemCatalog`` (item facts for prompts).
        store: The ``MemoryStore`` (profiles, retrieval).
        model: The base causal LM.
        tokenizer: Its tokenizer.
        max_tokens: Longest prompt the model's context allows (a margin below it).
        cue: The collaborative cue's ``CueStatistics`` when ``config.cue`` (else ``None``).
    """

    run: Path
    dataset: Any
    split: Any
    personas: dict[int, int]
    catalog: Any
    store: Any
    model: Any
    tokenizer: Any
    max_tokens: int
    cue: Any = None


def load_context(run_dir: str | Path, dataset: Any, config: ExperimentConfig, model: Any, tokenizer: Any) -> RunContext:
    """Read the run folder and load the model (``config.model``) unless ``model`` is given.

    Raises:
        DataError: The run folder was built from another dataset, or lacks the split or personas.
        ConfigError: ``model`` without ``tokenizer``.
    """
    from recsim_personas.agents.llm import load_causal_lm
    from recsim_personas.memory.pipeline import run_cue_statistics, run_item_catalog
    from recsim_personas.memory.store import MemoryStore

    run = Path(run_dir)
    split, personas = load_inputs(run)
    if split.dataset_fingerprint and split.dataset_fingerprint != dataset.fingerprint():
        raise DataError(
            f"run folder {run} was built from dataset {split.dataset_name!r} (fingerprint "
            f"{split.dataset_fingerprint}), not from {dataset.name!r} ({dataset.fingerprint()}); pass the "
            "same dataset options as the memory command"
        )
    catalog = run_item_catalog(run, dataset, split)
    store = MemoryStore.from_run_dir(run, catalog=catalog)
    if model is None:
        model, tokenizer = load_causal_lm(config.model, device=config.device, dtype=config.train_config().dtype)
    elif tokenizer is None:
        raise ConfigError("pass tokenizer= together with model=")
    context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    cue = run_cue_statistics(run, dataset, split) if config.cue else None
    return RunContext(run, dataset, split, persona_table(personas), catalog, store, model, tokenizer, context - 8,
                      cue)
