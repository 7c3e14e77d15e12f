"""A frozen base model wrapped with a fresh LoRA adapter for the length of one training run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from recsim_personas.errors import ConfigError, ModelError, unknown_keys
from recsim_personas.hf_compat import peft_wrapping
from recsim_personas.training.adapter_folder import model_name
from recsim_personas.training.config import LoraTrainConfig

__all__ = ["check_target_modules", "peft_wrapped"]


def check_target_modules(model: Any, config: LoraTrainConfig) -> None:
    """Raise :class:`ConfigError` (with did-you-mean) for a target module ``model`` does not have."""
    import torch

    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    missing = unknown_keys(config.target_modules, linear)
    if missing:
        raise ConfigError(
            f"LoraTrainConfig.target_modules: {', '.join(missing)} not found in {model_name(model)}; its "
            f"linear modules are {', '.join(linear)}"
        )


def _layers_to_transform(model: Any, config: LoraTrainConfig) -> dict[str, Any]:
    if config.top_layers is None:
        return {}
    n_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    if n_layers < 1:
        raise ConfigError(f"top_layers needs config.num_hidden_layers, which {model_name(model)} lacks")
    return {"layers_to_transform": list(range(max(0, n_layers - config.top_layers), n_layers))}


@contextlib.contextmanager
def peft_wrapped(model: Any, config: LoraTrainConfig) -> Iterator[Any]:
    """Wrap ``model`` with a fresh LoRA adapter; restore the original modules and flags on exit.

    Raises:
        ModelError: ``model`` is already a ``PeftModel``.
        ConfigError: A target module the model lacks, or ``top_layers`` on a model without layers.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    if hasattr(model, "peft_config"):
        raise ModelError(
            "train_adapter needs the base model, not a PeftModel; pass the model from load_causal_lm "
            "(adapters are trained one at a time and loaded together with load_adapters)"
        )
    check_target_modules(model, config)
    lora = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        **_layers_to_transform(model, config),
    )
    grad_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    torch.manual_seed(config.seed)
    with peft_wrapping():
        peft_model = get_peft_model(model, lora)
    try:
        yield peft_model
    finally:
        peft_model.unload()
        for n, p in model.named_parameters():
            p.requires_grad_(grad_flags.get(n, p.requires_grad))
        model.train(was_training)
