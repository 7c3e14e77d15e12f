"""LoRA fine-tuning settings as data: :class:`LoraTrainConfig`, with named presets.

Two presets ship with the library:

``paper``
    Appendix A of Thakur et al. (2025): LoRA on the attention query and key projections, rank 256,
    alpha 32, dropout 0.1, learning rate 3e-4, 2 epochs, AdamW. Meant for a GPU and a 3.8B model.

``cpu``
    For SmolLM2-135M on a 2-core CPU (see ``benchmarks/fidelity.py``): LoRA on all seven linear
    projections of each block at rank 16, a higher learning rate, one epoch and a step cap, with the
    profile prefix shared within each user's group of rows (``prefix_sharing``). Weights stay float32
    (``dtype="auto"`` resolves to float32 on CPU): on the project's AMD EPYC (AVX2, no AVX-512 BF16 or
    AMX) one training step of this preset cost 15 ms per token in float32 and 378 ms per token in
    bfloat16 (1 thread, 128-token rows), because torch emulates bf16 matmuls there.

Example:
    >>> cfg = LoraTrainConfig.preset("cpu", max_steps=20)
    >>> cfg.r, cfg.max_steps
    (16, 20)
    >>> LoraTrainConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from recsim_personas.config import Config, help_text
from recsim_personas.errors import ConfigError, did_you_mean, not_one_of

__all__ = ["PRESETS", "LoraTrainConfig", "preset_names"]

Optimizer = Literal["adamw"]
Scheduler = Literal["constant", "linear", "cosine"]
DType = Literal["auto", "float32", "bfloat16", "float16"]

#: All linear projections of a llama-style block (Llama, SmolLM2, Phi-3 after its fused-qkv split,
#: Mistral, Qwen2). peft matches these names as suffixes of module names.
ALL_LINEAR_LLAMA: tuple[str, ...] = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
)



@dataclass(frozen=True)
class LoraTrainConfig(Config):
    """How one LoRA adapter is trained on rating rows (the base model stays frozen).

    Every field carries help text in ``dataclasses.fields(LoraTrainConfig)[i].metadata["help"]``
    (the CLI shows it; :meth:`field_help` lists it). Build one with :meth:`preset` and keyword
    overrides, or from a JSON dict with :meth:`from_dict`; :meth:`to_dict` round-trips.
    """

    config_name: ClassVar[str] = "LoraTrainConfig"

    target_modules: tuple[str, ...] = field(default=("q_proj", "k_proj"), metadata=help_text(
        "Names (suffixes) of the linear modules that get LoRA weights, e.g. q_proj,k_proj "
        "(the paper) or all seven projections of a llama block."))
    r: int = field(default=256, metadata=help_text("LoRA rank."))
    alpha: float = field(default=32.0, metadata=help_text("LoRA alpha; the update is scaled by alpha/r."))
    dropout: float = field(default=0.1, metadata=help_text("Dropout on the LoRA input, in [0, 1)."))
    top_layers: int | None = field(default=None, metadata=help_text(
        "Put LoRA only in the last N transformer blocks (None: all blocks). The backward pass then "
        "stops at the lowest adapted block, which makes a training step cheaper."))
    learning_rate: float = field(default=3e-4, metadata=help_text("Peak learning rate of AdamW."))
    weight_decay: float = field(default=0.0, metadata=help_text("AdamW weight decay."))
    optimizer: Optimizer = field(default="adamw", metadata=help_text("Optimizer (only AdamW, as the paper)."))
    scheduler: Scheduler = field(default="linear", metadata=help_text(
        "Learning-rate schedule after warm-up: constant, linear decay to 0, or cosine."))
    warmup_ratio: float = field(default=0.03, metadata=help_text(
        "Share of the optimizer steps spent warming up linearly, in [0, 1)."))
    epochs: float = field(default=2.0, metadata=help_text(
        "Passes over the rows (may be fractional); max_steps caps it."))
    max_steps: int | None = field(default=None, metadata=help_text(
        "Cap on optimizer steps (None: epochs decide). The CPU budget uses it."))
    batch_size: int = field(default=8, metadata=help_text("Rows per forward pass."))
    grad_accumulation: int = field(default=1, metadata=help_text(
        "Forward passes per optimizer step (effective batch = product)."))
    max_length: int = field(default=1024, metadata=help_text(
        "Longest prompt+answer in tokens; longer rows are skipped and counted (the prompt "
        "builder truncates memories first, so this should rarely happen)."))
    max_grad_norm: float | None = field(default=1.0, metadata=help_text("Gradient-norm clip (None: no clipping)."))
    prefix_sharing: bool = field(default=True, metadata=help_text(
        "Encode the user prefix (the profile system prompt, identical in all of a user's rows) once "
        "per group of that user's rows and attend to it from each row's item part. Gradients are "
        "exact; LoRA dropout masks on the prefix are shared within the group. Several times faster "
        "when the profile is most of the prompt."))
    gradient_checkpointing: bool = field(default=False, metadata=help_text(
        "Recompute activations in the backward pass: less memory, about 30% slower."))
    dtype: DType = field(default="auto", metadata=help_text(
        "dtype of the frozen base weights when the trainer loads the model "
        "(auto: bfloat16 on CUDA, the measured best on CPU). LoRA weights stay float32."))
    checkpoint_every: int = field(default=50, metadata=help_text(
        "Optimizer steps between resumable checkpoints in <out_dir>/checkpoint (0: only on Ctrl-C)."))
    seed: int = field(default=0, metadata=help_text("Seed of the LoRA init, data order and dropout."))

    def __post_init__(self) -> None:
        # Lists from JSON/YAML become tuples so the config stays hashable and frozen.
        if isinstance(self.target_modules, str):
            object.__setattr__(
                self, "target_modules", tuple(m.strip() for m in self.target_modules.split(",") if m.strip())
            )
        elif not isinstance(self.target_modules, tuple):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        errors = self._field_errors()
        if self.gradient_checkpointing and self.prefix_sharing:
            # The shared prefix is a key/value cache that the suffix pass attends to; checkpointed
            # layers run without a cache, so the two cannot be combined.
            errors.append(
                "gradient_checkpointing=True needs prefix_sharing=False (checkpointed layers run "
                "without the key/value cache that prefix sharing relies on)"
            )
        if not errors and self.alpha / self.r > 64:
            # Cross-field: a tiny rank with a huge alpha multiplies the update until training diverges.
            errors.append(
                f"alpha/r = {self.alpha / self.r:g} is implausibly large (alpha={self.alpha}, r={self.r}); "
                "keep alpha/r <= 64"
            )
        if errors:
            raise ConfigError("invalid LoraTrainConfig: " + "; ".join(errors))

    def _field_errors(self) -> list[str]:
        """What is wrong with single fields (ranges, choices), in field order."""
        errors: list[str] = []
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            errors.append("target_modules must name at least one module, e.g. ('q_proj', 'k_proj')")
        if len(set(self.target_modules)) != len(self.target_modules):
            errors.append(f"target_modules has duplicates: {list(self.target_modules)}")
        for name in ("r", "batch_size", "grad_accumulation", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                errors.append(f"{name} must be an integer >= 1, got {value!r}")
        if not self.alpha > 0:
            errors.append(f"alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            errors.append(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.learning_rate > 0:
            errors.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            errors.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            errors.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not self.epochs > 0:
            errors.append(f"epochs must be > 0, got {self.epochs}")
        if self.max_steps is not None and (
            not isinstance(self.max_steps, int) or isinstance(self.max_steps, bool) or self.max_steps < 1
        ):
            errors.append(f"max_steps must be an integer >= 1 or None, got {self.max_steps!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            errors.append(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            errors.append(f"checkpoint_every must be an integer >= 0, got {self.checkpoint_every!r}")
        for name, kind in (("optimizer", Optimizer), ("scheduler", Scheduler), ("dtype", DType)):
            value = getattr(self, name)
            if value not in get_args(kind):
                errors.append(not_one_of(name, value, get_args(kind)))
        if self.top_layers is not None and (
            not isinstance(self.top_layers, int) or isinstance(self.top_layers, bool) or self.top_layers < 1
        ):
            errors.append(f"top_layers must be an integer >= 1 or None, got {self.top_layers!r}")
        return errors

    @property
    def effective_batch_size(self) -> int:
        """Rows per optimizer step."""
        return self.batch_size * self.grad_accumulation

    def total_steps(self, n_rows: int) -> int:
        """Optimizer steps for ``n_rows`` training rows: ``ceil(epochs * n / effective batch)``, capped."""
        import math

        steps = max(1, math.ceil(self.epochs * n_rows / self.effective_batch_size)) if n_rows else 0
        return min(steps, self.max_steps) if self.max_steps is not None else steps

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LoraTrainConfig:
        """The preset ``name`` (``paper`` or ``cpu``) with field ``overrides`` applied."""
        if name not in PRESETS:
            raise ConfigError(
                f"unknown LoRA training preset {name!r}; choose one of {', '.join(PRESETS)}."
                + did_you_mean(name, PRESETS)
            )
        return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


#: Named presets. ``paper`` = Appendix A of the paper; ``cpu`` = tuned for SmolLM2-135M on 2 CPU cores.
PRESETS: dict[str, LoraTrainConfig] = {
    "paper": LoraTrainConfig(),
    "cpu": LoraTrainConfig(
        target_modules=ALL_LINEAR_LLAMA, r=16, alpha=32.0, dropout=0.05, learning_rate=1e-3,
        scheduler="linear", warmup_ratio=0.05, epochs=1.0, max_steps=200, batch_size=8,
        grad_accumulation=1, max_length=1024, dtype="auto", checkpoint_every=25,
    ),
}


def preset_names() -> tuple[str, ...]:
    """Names of the shipped presets."""
    return tuple(PRESETS)
