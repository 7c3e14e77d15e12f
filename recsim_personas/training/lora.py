"""LoRA fine-tuning of a frozen causal LM on rating rows, resumable, saved for peft / vLLM.

:func:`train_adapter` trains one named adapter on the rows of
:func:`~recsim_personas.training.rows.build_training_rows`:

* **Sequence.** ``prefix + suffix`` is the chat-templated prompt, ending after the assistant header;
  the target (``"4"``) and the model's end-of-turn token (``<|im_end|>`` for ChatML; read from the
  chat template, EOS without one) are appended. The tokens are built exactly as the
  :class:`~recsim_personas.agents.scoring.RatingScorer` builds them at inference (BOS handling, prefix
  and suffix tokenized apart).
* **Loss** on the answer tokens only (target + end-of-turn): every prompt position is masked, the
  loss is the mean cross-entropy per answer token of a step. The LM head runs only at the positions
  that predict answer tokens.
* **Prefix sharing** (``config.prefix_sharing``): a user's rows share the long profile prefix, so each
  group of up to ``batch_size`` rows of one user encodes the prefix once (batch 1, with gradients) and
  runs the item parts against its key/value cache. The loss and the gradients equal those of the
  full sequences (the test suite checks it); only LoRA-dropout masks on the prefix are shared within
  a group. With ~490 profile tokens and ~55 item tokens (the paper prompt, M_s) a step is about 4x
  cheaper.
* **Base frozen.** ``get_peft_model`` wraps the model for training and ``unload()`` restores the
  original modules afterwards (also after an error or Ctrl-C), so one loaded base model trains one
  adapter after another.
* **Resume.** Every ``checkpoint_every`` steps, and on Ctrl-C or SIGTERM (deferred to the end of
  the step in progress), ``out_dir/checkpoint/state.pt`` is
  written atomically: LoRA weights, optimizer and scheduler state, the step, the torch RNG state and
  the loss curve. The batch order is a pure function of the seed and the epoch, so a resumed run sees
  exactly the batches an uninterrupted run would see (and, on the same machine, ends with the same
  weights). A checkpoint from another config or other rows is discarded with a warning.
* **Output.** ``save_pretrained`` files (``adapter_config.json``, ``adapter_model.safetensors``: what
  peft's ``load_adapter`` and vLLM's ``LoRARequest`` read) plus ``recsim_adapter.json`` (config, data
  hash, loss curve, wall time, rows, versions), written last: a folder with it is a finished adapter,
  and :func:`train_adapter` returns it without training when the config and rows are unchanged.

Example:
    >>> model, tok = load_causal_lm()                                          # doctest: +SKIP
    >>> rows = build_training_rows(store, catalog, split.train, scale=scale, tokenizer=tok)  # doctest: +SKIP
    >>> result = train_adapter(model, tok, rows, LoraTrainConfig.preset("cpu"),
    ...                        "runs/x/adapters/single_max__ms", name="single_max__ms")  # doctest: +SKIP
    >>> peft_model = load_adapters(model, {"single_max__ms": result.out_dir})  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from recsim_personas.agents.llm import load_adapters as load_adapters  # compatibility re-export
from recsim_personas.artifacts import atomic_write_json, environment_info, git_info, stable_hash
from recsim_personas.errors import AdapterError, ConfigError, DataError, ModelError, RecsimWarning
from recsim_personas.interrupts import deferred_interrupts
from recsim_personas.progress import progress_bar
from recsim_personas.training.adapter_folder import (
    ADAPTER_INFO,
    FORMAT_VERSION,
    TrainResult,
    model_name,
    publish_adapter,
    read_adapter_info,
    result_from_info,
)
from recsim_personas.training.adapter_folder import (
    load_train_result as load_train_result,  # compatibility
)
from recsim_personas.training.checkpoint import (
    CHECKPOINT_DIR,
    CHECKPOINT_FILE,
    load_checkpoint,
    restore_state,
    save_checkpoint,
    training_state,
)
from recsim_personas.training.config import LoraTrainConfig
from recsim_personas.training.forward import group_loss
from recsim_personas.training.peft_setup import peft_wrapped
from recsim_personas.training.rows import rows_digest
from recsim_personas.training.schedule import BatchSchedule, lr_factor
from recsim_personas.training.tokens import TrainRow, TrainTokenizer
from recsim_personas.training.tokens import end_of_turn_text as end_of_turn_text  # compatibility

# ADAPTER_INFO, TrainResult, read_adapter_info, load_train_result (training.adapter_folder),
# end_of_turn_text (training.tokens) and load_adapters (agents.llm) stay importable from here.
__all__ = ["train_adapter"]

logger = logging.getLogger(__name__)


@dataclass
class _Prepared:
    """The rows of one adapter as ids, and the key of this run (config, rows, base model)."""

    rows: list[TrainRow]
    n_skipped: int
    data_hash: str
    run_key: str
    tokenize_seconds: float


@dataclass
class _Loop:
    """The training state the step loop advances (what a checkpoint saves)."""

    model: Any
    params: dict[str, Any]
    optimizer: Any
    scheduler: Any
    schedule: BatchSchedule
    prepared: _Prepared
    config: LoraTrainConfig
    device: Any
    pad_id: int
    step: int = 0
    start: int = 0
    curve: list[dict[str, float]] = field(default_factory=list)
    tokens: int = 0
    elapsed_before: float = 0.0
    resumed_from: int | None = None
    t_run: float = 0.0

    def elapsed(self) -> float:
        """Training seconds so far, across resumes."""
        return self.elapsed_before + time.perf_counter() - self.t_run

    def state(self) -> dict[str, Any]:
        """The checkpoint of this moment."""
        progress = {"curve": self.curve, "tokens": self.tokens, "elapsed": self.elapsed()}
        return training_state(self.prepared.run_key, self.step, self.params, self.optimizer, self.scheduler,
                              progress)


def train_adapter(
    model: Any,
    tokenizer: Any,
    rows: pd.DataFrame,
    config: LoraTrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    progress: bool = True,
    resume: bool = True,
    callback: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train one LoRA adapter on ``rows`` and save it in ``out_dir``.

    Args:
        model: The base causal LM (not a ``PeftModel``), on its device and in its dtype (as
            :func:`~recsim_personas.agents.llm.load_causal_lm` returns it). It is restored unchanged
            when the function returns or raises.
        tokenizer: Its tokenizer.
        rows: Frame with ``prefix``, ``suffix``, ``target`` (and ``user_id``), from
            :func:`~recsim_personas.training.rows.build_training_rows`.
        config: Training settings.
        out_dir: The adapter folder (created); holds ``checkpoint/`` while training.
        name: The adapter's name (recorded; ``load_adapters`` uses the name you give it there).
        progress: Show a tqdm bar with the running loss.
        resume: Continue from ``out_dir/checkpoint`` when it matches this config and these rows.
        callback: Called as ``callback(step, loss)`` after every optimizer step (``step`` counts from
            1). An exception it raises stops training after a checkpoint is written (used by tests to
            simulate an interruption).

    Returns:
        :class:`TrainResult`. A finished adapter with the same config, rows and base model is returned
        as is (``cached=True``), without training.

    Raises:
        ConfigError: A target module the model does not have (did-you-mean), or an invalid config.
        DataError: No rows, missing columns, or every row longer than ``config.max_length``.
        ModelError: ``model`` is already a ``PeftModel``, or a target merges with the prompt.
    """
    _check_inputs(rows, config, name)
    out = Path(out_dir)
    data_hash = rows_digest(rows)
    run_key = stable_hash({"config": config.to_dict(), "data": data_hash, "base": model_name(model),
                           "format": FORMAT_VERSION})
    finished = _finished_adapter(out, run_key, config)
    if finished is not None:
        return finished
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    prepared = _prepare(tokenizer, rows, config, name, data_hash, run_key)
    schedule = BatchSchedule(prepared.rows, config)
    ckpt_path = out / CHECKPOINT_DIR / CHECKPOINT_FILE
    # Ctrl-C / SIGTERM only set `stop` here; the loop stops at the end of the step in progress.
    with peft_wrapped(model, config) as peft_model, deferred_interrupts() as stop:
        loop = _setup(peft_model, schedule, prepared, config, pad_id)
        if resume:
            _resume(loop, ckpt_path, name)
        _run_steps(loop, ckpt_path, stop, name=name, progress=progress, callback=callback)
        wall = loop.elapsed()
        peft_model.eval()
        publish_adapter(peft_model, out)
    info = _adapter_info(model, name, loop, rows, wall)
    atomic_write_json(out / ADAPTER_INFO, info)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    return result_from_info(info, out, config, cached=False)


# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------
def _check_inputs(rows: pd.DataFrame, config: LoraTrainConfig, name: str) -> None:
    if not isinstance(config, LoraTrainConfig):
        raise ConfigError(f"config must be a LoraTrainConfig, got {type(config).__name__}")
    missing = [c for c in ("prefix", "suffix", "target") if c not in rows.columns]
    if missing:
        raise DataError(
            f"training rows lack column(s) {', '.join(missing)}; build them with build_training_rows"
        )
    if len(rows) == 0:
        raise DataError(f"adapter {name!r}: no training rows")


def _finished_adapter(out: Path, run_key: str, config: LoraTrainConfig) -> TrainResult | None:
    """The finished adapter in ``out`` when it was trained with this run key."""
    if not (out / ADAPTER_INFO).is_file():
        return None
    with contextlib.suppress(AdapterError):
        info = read_adapter_info(out)
        if info.get("run_key") == run_key:
            return result_from_info(info, out, config, cached=True)
    return None


def _prepare(tokenizer: Any, rows: pd.DataFrame, config: LoraTrainConfig, name: str, data_hash: str,
             run_key: str) -> _Prepared:
    """Tokenize the rows and leave out those longer than ``config.max_length`` (warned)."""
    t_start = time.perf_counter()
    all_rows = TrainTokenizer(tokenizer).rows(rows["prefix"], rows["suffix"], rows["target"])
    kept = [r for r in all_rows if r.length <= config.max_length]
    n_skipped = len(all_rows) - len(kept)
    if not kept:
        longest = max(r.length for r in all_rows)
        raise DataError(
            f"adapter {name!r}: all {len(all_rows)} rows exceed max_length={config.max_length} tokens "
            f"(longest {longest}); raise LoraTrainConfig.max_length or build rows with max_tokens="
        )
    if n_skipped:
        warnings.warn(
            f"adapter {name!r}: skipped {n_skipped} of {len(all_rows)} rows longer than "
            f"max_length={config.max_length} tokens",
            RecsimWarning,
            stacklevel=3,
        )
    if not config.prefix_sharing:
        kept = [r.unshared() for r in kept]
    return _Prepared(kept, n_skipped, data_hash, run_key, time.perf_counter() - t_start)


def _setup(peft_model: Any, schedule: BatchSchedule, prepared: _Prepared, config: LoraTrainConfig,
           pad_id: int) -> _Loop:
    """AdamW and the learning-rate schedule over the trainable (LoRA) parameters."""
    import torch

    params = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(list(params.values()), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, schedule.total_steps))
    device = next(peft_model.parameters()).device
    return _Loop(peft_model, params, optimizer, scheduler, schedule, prepared, config, device, pad_id)


def _resume(loop: _Loop, ckpt_path: Path, name: str) -> None:
    """Continue from the checkpoint of this run key, if there is one."""
    state = load_checkpoint(ckpt_path, loop.prepared.run_key, stacklevel=3)
    if state is None:
        return
    restore_state(state, loop.params, loop.optimizer, loop.scheduler)
    loop.step = loop.start = loop.resumed_from = int(state["step"])
    loop.curve = list(state["curve"])
    loop.tokens, loop.elapsed_before = int(state["tokens"]), float(state["elapsed"])
    logger.info("adapter %s: resuming at step %d of %d", name, loop.start, loop.schedule.total_steps)


# ---------------------------------------------------------------------------------------------
# The step loop
# ---------------------------------------------------------------------------------------------
def _run_steps(loop: _Loop, ckpt_path: Path, stop: Any, *, name: str, progress: bool,
               callback: Callable[[int, float], None] | None) -> None:
    """Train to ``total_steps``, checkpointing every ``checkpoint_every`` steps and when stopped."""
    config, total = loop.config, loop.schedule.total_steps
    if config.gradient_checkpointing:
        loop.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    loop.model.train()
    loop.t_run = time.perf_counter()
    bar = progress_bar(total=total, initial=loop.start, desc=f"train {name}", unit="step", leave=False,
                       enabled=progress)
    at_boundary = True  # the state is exactly an uninterrupted run's after `loop.step` steps
    try:
        while loop.step < total:
            at_boundary = False
            loss = _train_step(loop, name)
            at_boundary = True
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if config.checkpoint_every and loop.step % config.checkpoint_every == 0 and loop.step < total:
                save_checkpoint(ckpt_path, loop.state())
            if callback is not None:
                callback(loop.step, loss)
            stop.check()  # Ctrl-C / SIGTERM arrived during the step: stop here, at its end
    except BaseException:
        # Stopped at a step boundary (a signal, the callback): keep the finished steps, so the
        # resumed run is bit-identical. Mid-step (an error, a second signal) the last periodic
        # checkpoint stays: its RNG and weights are consistent, a half step's are not.
        if loop.step > loop.start and at_boundary:
            save_checkpoint(ckpt_path, loop.state())
        raise
    finally:
        bar.close()
        if config.gradient_checkpointing:
            loop.model.gradient_checkpointing_disable()


def _train_step(loop: _Loop, name: str) -> float:
    """One optimizer step over the step's groups; returns its mean loss per answer token."""
    import torch

    groups = loop.schedule.step(loop.step)
    rows = loop.prepared.rows
    n_answer = sum(rows[i].n_answer for g in groups for i in g)
    loss_total = 0.0
    for g in groups:
        loss_sum, n_tok = group_loss(loop.model, [rows[i] for i in g], loop.device, loop.pad_id)
        (loss_sum / n_answer).backward()
        loss_total += float(loss_sum.detach())
        loop.tokens += n_tok
    if loop.config.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(list(loop.params.values()), loop.config.max_grad_norm)
    lr = float(loop.optimizer.param_groups[0]["lr"])
    loop.optimizer.step()
    loop.scheduler.step()
    loop.optimizer.zero_grad(set_to_none=True)
    loop.step += 1
    loss = loss_total / n_answer
    if not math.isfinite(loss):
        raise ModelError(
            f"adapter {name!r}: loss became {loss} at step {loop.step}; lower the learning rate "
            f"(now {loop.config.learning_rate}) or use float32 weights"
        )
    loop.curve.append({"step": loop.step, "loss": round(loss, 6), "lr": lr, "rows": sum(len(g) for g in groups),
                       "seconds": round(loop.elapsed(), 3)})
    return loss


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
def _adapter_info(model: Any, name: str, loop: _Loop, rows: pd.DataFrame, wall: float) -> dict[str, Any]:
    """The content of ``recsim_adapter.json``."""
    prepared, schedule = loop.prepared, loop.schedule
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "run_key": prepared.run_key,
        "base_model": model_name(model),
        "base_dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": str(loop.device),
        "config": loop.config.to_dict(),
        "data_hash": prepared.data_hash,
        "n_rows": len(prepared.rows),
        "n_skipped": prepared.n_skipped,
        "n_users": int(rows["user_id"].nunique()) if "user_id" in rows.columns else None,
        "target_counts": {str(k): int(v) for k, v in rows["target"].value_counts().sort_index().items()},
        "steps": loop.step,
        "steps_per_epoch": schedule.steps_per_epoch,
        "epochs": round(loop.step / schedule.steps_per_epoch, 4),
        "train_tokens": loop.tokens,
        "wall_seconds": round(wall, 3),
        "tokenize_seconds": round(prepared.tokenize_seconds, 3),
        "resumed_from_step": loop.resumed_from,
        "curve": loop.curve,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "git": git_info(),
        **environment_info(),
    }
