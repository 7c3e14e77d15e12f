"""LoRA fine-tuning of a frozen causal LM on rating rows, resumable, saved for peft and vLLM.

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
import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas.agents.llm import load_adapters
from recsim_personas.artifacts import (
    atomic_path,
    atomic_write_json,
    environment_info,
    git_info,
    stable_hash,
)
from recsim_personas.errors import AdapterError, ConfigError, DataError, ModelError, RecsimWarning
from recsim_personas.hf_compat import cache_kwargs, output_cache, peft_wrapping
from recsim_personas.interrupts import deferred_interrupts
from recsim_personas.training.config import LoraTrainConfig
from recsim_personas.training.rows import rows_digest

__all__ = [
    "ADAPTER_INFO",
    "TrainResult",
    "end_of_turn_text",
    "load_adapters",
    "load_train_result",
    "read_adapter_info",
    "train_adapter",
]

logger = logging.getLogger(__name__)

#: The JSON file written beside the peft files of a finished adapter.
ADAPTER_INFO = "recsim_adapter.json"
_FORMAT_VERSION = 1
_CHECKPOINT_DIR = "checkpoint"
_CHECKPOINT_FILE = "state.pt"
#: Files ``save_pretrained`` writes that make a usable adapter folder.
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class TrainResult:
    """What :func:`train_adapter` did.

    Attributes:
        name: The adapter's name.
        out_dir: Folder with the peft files and ``recsim_adapter.json``.
        steps: Optimizer steps taken in total (including those before a resume).
        epochs: Passes over the rows completed (fractional when ``max_steps`` cut the run).
        n_rows: Rows trained on (after skipping over-long ones).
        n_skipped: Rows longer than ``config.max_length`` tokens, left out.
        train_tokens: Tokens processed (forward) in total.
        curve: One dict per step: ``step``, ``loss`` (mean CE per answer token), ``lr``, ``rows``,
            ``seconds`` (since the start, across resumes).
        wall_seconds: Training wall time (across resumes; 0 for a cached adapter's new call, whose
            original time is in ``curve``).
        data_hash: Hash of the rows' prompts and targets.
        config: The training config.
        resumed_from_step: Step the run resumed from, or ``None``.
        cached: True when a finished adapter with the same config and rows was found and returned.
    """

    name: str
    out_dir: Path
    steps: int
    epochs: float
    n_rows: int
    n_skipped: int
    train_tokens: int
    curve: list[dict[str, float]]
    wall_seconds: float
    data_hash: str
    config: LoraTrainConfig
    resumed_from_step: int | None = None
    cached: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def _window(self) -> int:
        return max(1, min(10, len(self.curve) // 4))

    @property
    def final_loss(self) -> float | None:
        """Mean loss of the last ``max(1, min(10, steps // 4))`` steps (``None`` without steps)."""
        if not self.curve:
            return None
        return float(np.mean([c["loss"] for c in self.curve[-self._window():]]))

    @property
    def first_loss(self) -> float | None:
        """Mean loss of the first ``max(1, min(10, steps // 4))`` steps."""
        if not self.curve:
            return None
        return float(np.mean([c["loss"] for c in self.curve[: self._window()]]))


# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------
def end_of_turn_text(tokenizer: Any) -> str:
    """The text the chat template puts after an assistant message (``"<|im_end|>"`` for ChatML).

    Found by rendering a one-message conversation; without a chat template (or when it cannot be
    found) the EOS token, or ``""`` when the tokenizer has none.
    """
    marker = "XQZ7"
    template = getattr(tokenizer, "chat_template", None)
    if template:
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}],
                tokenize=False,
            )
            if isinstance(text, str) and marker in text:
                tail = text[text.rindex(marker) + len(marker):].strip()
                if tail:
                    return tail
        except Exception:  # any template failure: fall back to EOS
            pass
    return tokenizer.eos_token or ""


@dataclass
class _Row:
    prefix_key: str
    prefix: list[int]  # BOS + prefix tokens (empty when the prompt is not splittable)
    body: list[int]  # suffix tokens + answer tokens
    n_answer: int

    @property
    def length(self) -> int:
        return len(self.prefix) + len(self.body)


class _Tokens:
    """Tokenizes rows the way the scorer does (BOS rule, prefix/suffix split check)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        bos = tokenizer.bos_token_id
        probe = tokenizer("a")["input_ids"]
        self.bos = [int(bos)] if bos is not None and probe and probe[0] == bos else []
        self.eot = end_of_turn_text(tokenizer)
        self._prefix: dict[str, tuple[list[int], bool]] = {}

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _with_bos(self, text: str, ids: list[int]) -> list[int]:
        if self.bos and not text.startswith(self.tokenizer.bos_token or "\0"):
            return self.bos + ids
        return ids

    def row(self, prefix: str, suffix: str, target: str) -> _Row:
        suffix_ids = self.encode(suffix)
        full = self.encode(suffix + target + self.eot)
        if full[: len(suffix_ids)] != suffix_ids or len(full) == len(suffix_ids):
            raise ModelError(
                f"the target {target!r} merges with the end of the prompt ({suffix[-20:]!r}) when "
                "tokenized; prompts must end with a newline or a special token (chat templates do)"
            )
        answer = full[len(suffix_ids):]
        if prefix not in self._prefix:
            pids = self.encode(prefix)
            splittable = bool(prefix) and self.encode(prefix + suffix) == pids + suffix_ids
            self._prefix[prefix] = (self._with_bos(prefix, pids), splittable)
        pids, splittable = self._prefix[prefix]
        if splittable:
            return _Row(prefix, pids, suffix_ids + answer, len(answer))
        # Tokens would differ at the seam: train on the whole prompt as one piece (no sharing).
        whole = self._with_bos(prefix + suffix, self.encode(prefix + suffix))
        return _Row("", [], whole + answer, len(answer))


# ---------------------------------------------------------------------------------------------
# Batch schedule
# ---------------------------------------------------------------------------------------------
def _groups_for_epoch(rows: Sequence[_Row], config: LoraTrainConfig, epoch: int) -> list[list[list[int]]]:
    """Steps of one epoch: each step is a list of groups, each group a list of row indices.

    With prefix sharing a group holds rows with the same prefix (at most ``batch_size``, split
    evenly); without it, groups are chunks of ``batch_size`` shuffled rows. Groups are packed into
    steps of at most ``batch_size * grad_accumulation`` rows in a seeded order.
    """
    rng = np.random.default_rng([config.seed, epoch])
    cap = config.batch_size
    groups: list[list[int]] = []
    if config.prefix_sharing:
        by_prefix: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            key = r.prefix_key if r.prefix else f"\0row{i}"
            by_prefix.setdefault(key, []).append(i)
        singles: list[int] = []
        for key in sorted(by_prefix):
            members = list(rng.permutation(by_prefix[key]))
            if key.startswith("\0row"):
                singles.extend(int(m) for m in members)
                continue
            n_groups = math.ceil(len(members) / cap)
            for part in np.array_split(np.asarray(members, dtype=np.int64), n_groups):
                groups.append([int(x) for x in part])
        singles = [int(x) for x in rng.permutation(singles)] if singles else []
        groups.extend(singles[i : i + cap] for i in range(0, len(singles), cap))
    else:
        order = [int(x) for x in rng.permutation(len(rows))]
        groups = [order[i : i + cap] for i in range(0, len(order), cap)]
    order = rng.permutation(len(groups))
    per_step = config.effective_batch_size
    steps: list[list[list[int]]] = []
    current: list[list[int]] = []
    size = 0
    for g in order:
        group = groups[int(g)]
        if current and size + len(group) > per_step:
            steps.append(current)
            current, size = [], 0
        current.append(group)
        size += len(group)
    if current:
        steps.append(current)
    return steps


class _Schedule:
    """Lazy per-epoch step lists; step ``s`` is a pure function of (rows, config, s)."""

    def __init__(self, rows: Sequence[_Row], config: LoraTrainConfig) -> None:
        self.rows = rows
        self.config = config
        self._epochs: dict[int, list[list[list[int]]]] = {}
        self.steps_per_epoch = len(self.epoch(0))
        total = max(1, math.ceil(config.epochs * self.steps_per_epoch))
        self.total_steps = min(total, config.max_steps) if config.max_steps is not None else total

    def epoch(self, e: int) -> list[list[list[int]]]:
        if e not in self._epochs:
            self._epochs[e] = _groups_for_epoch(self.rows, self.config, e)
        return self._epochs[e]

    def step(self, s: int) -> list[list[int]]:
        e, i = divmod(s, self.steps_per_epoch)
        return self.epoch(e)[i]


# ---------------------------------------------------------------------------------------------
# Forward passes
# ---------------------------------------------------------------------------------------------
def _answer_loss(logits: Any, targets: Any) -> Any:
    import torch

    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")


def _forward_shared(model: Any, rows: Sequence[_Row], device: Any) -> tuple[Any, int, int]:
    """Sum of answer-token CE for rows sharing one prefix; returns (loss_sum, n_answer, tokens)."""
    import torch

    prefix = rows[0].prefix
    p_len = len(prefix)
    out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True)
    cache = output_cache(out)
    n = len(rows)
    if n > 1:
        cache.batch_repeat_interleave(n)
    width = max(len(r.body) for r in rows)
    ids = torch.zeros((n, width), dtype=torch.long, device=device)
    mask = torch.zeros((n, p_len + width), dtype=torch.long, device=device)
    mask[:, :p_len] = 1
    positions, targets, row_of = [], [], []
    for j, r in enumerate(rows):
        body = r.body
        ids[j, : len(body)] = torch.tensor(body, device=device)
        mask[j, p_len : p_len + len(body)] = 1
        start = len(body) - r.n_answer  # index of the first answer token within the body
        for t in range(start, len(body)):
            positions.append(t - 1)  # the logit at t-1 predicts token t
            targets.append(body[t])
            row_of.append(j)
    keep = sorted(set(positions))
    if keep[0] < 0:
        raise DataError("a row has an empty suffix: the answer cannot follow the prefix directly")
    col = {p: c for c, p in enumerate(keep)}
    pos_ids = torch.arange(p_len, p_len + width, device=device).unsqueeze(0).expand(n, -1)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=pos_ids,
        **cache_kwargs(cache),
        use_cache=True,
        logits_to_keep=torch.tensor(keep, device=device),
    )
    logits = out.logits[torch.tensor(row_of, device=device), torch.tensor([col[p] for p in positions], device=device)]
    loss = _answer_loss(logits, torch.tensor(targets, device=device))
    return loss, len(targets), p_len + sum(len(r.body) for r in rows)


def _forward_full(model: Any, rows: Sequence[_Row], device: Any, pad_id: int) -> tuple[Any, int, int]:
    """Sum of answer-token CE for full sequences, left-padded so all answers end at the right edge."""
    import torch

    seqs = [r.prefix + r.body for r in rows]
    width = max(len(s) for s in seqs)
    n = len(rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((n, width), dtype=torch.long, device=device)
    for j, s in enumerate(seqs):
        ids[j, width - len(s):] = torch.tensor(s, device=device)
        mask[j, width - len(s):] = 1
    n_keep = max(r.n_answer for r in rows) + 1
    pos_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos_ids, logits_to_keep=n_keep)
    logits = out.logits  # (n, n_keep, V): positions width-n_keep .. width-1
    sel_rows, sel_cols, targets = [], [], []
    for j, r in enumerate(rows):
        for a in range(r.n_answer):
            # answer token a sits at width - n_answer + a; predicted by the logit one before it
            pos = width - r.n_answer + a - 1
            sel_rows.append(j)
            sel_cols.append(pos - (width - n_keep))
            targets.append(seqs[j][len(seqs[j]) - r.n_answer + a])
    logits = logits[torch.tensor(sel_rows, device=device), torch.tensor(sel_cols, device=device)]
    loss = _answer_loss(logits, torch.tensor(targets, device=device))
    return loss, len(targets), int(mask.sum())


# ---------------------------------------------------------------------------------------------
# Checkpoints and output
# ---------------------------------------------------------------------------------------------
def _trainable(model: Any) -> dict[str, Any]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, run_key: str) -> dict[str, Any] | None:
    import torch

    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a damaged file: start over rather than crash
        warnings.warn(f"ignoring unreadable checkpoint {path} ({exc}); training from step 0",
                      RecsimWarning, stacklevel=3)
        return None
    if state.get("run_key") != run_key:
        warnings.warn(
            f"ignoring checkpoint {path}: it belongs to another config or other rows; training from "
            "step 0",
            RecsimWarning,
            stacklevel=3,
        )
        return None
    return state


def read_adapter_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``recsim_adapter.json`` of a finished adapter folder.

    Raises:
        AdapterError: The folder holds no finished adapter (missing or unreadable JSON or weights).
    """
    folder = Path(path)
    info_path = folder / ADAPTER_INFO
    if not info_path.is_file():
        raise AdapterError(
            f"{folder} holds no finished adapter ({ADAPTER_INFO} missing); train it with "
            "`recsim-personas train`"
        )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{info_path} line {exc.lineno}: not valid JSON; re-train the adapter") from None
    missing = [f for f in _ADAPTER_FILES if not (folder / f).is_file()]
    if missing:
        raise AdapterError(f"{folder} lacks {', '.join(missing)}; re-train the adapter")
    return info


def _publish_adapter(peft_model: Any, out_dir: Path) -> None:
    """``save_pretrained`` into a temporary folder, then move each file into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".save-", dir=out_dir))
    try:
        peft_model.save_pretrained(str(tmp))
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():
            # Temporary files are private (0600); a published adapter is readable like any other file.
            os.chmod(f, 0o666 & ~umask)
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _model_name(model: Any) -> str:
    return str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)


def _target_module_check(model: Any, config: LoraTrainConfig) -> None:
    import difflib

    import torch

    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    missing = [t for t in config.target_modules if t not in linear]
    if missing:
        hints = []
        for t in missing:
            close = difflib.get_close_matches(t, linear, n=1)
            hints.append(f"{t!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"LoraTrainConfig.target_modules: {', '.join(hints)} not found in {_model_name(model)}; its "
            f"linear modules are {', '.join(linear)}"
        )


@contextlib.contextmanager
def _peft_wrapped(model: Any, config: LoraTrainConfig) -> Iterator[Any]:
    """Wrap ``model`` with a fresh LoRA adapter; restore the original modules and flags on exit."""
    import torch
    from peft import LoraConfig, get_peft_model

    if hasattr(model, "peft_config"):
        raise ModelError(
            "train_adapter needs the base model, not a PeftModel; pass the model from load_causal_lm "
            "(adapters are trained one at a time and loaded together with load_adapters)"
        )
    _target_module_check(model, config)
    kwargs: dict[str, Any] = {}
    if config.top_layers is not None:
        n_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
        if n_layers < 1:
            raise ConfigError(f"top_layers needs config.num_hidden_layers, which {_model_name(model)} lacks")
        kwargs["layers_to_transform"] = list(range(max(0, n_layers - config.top_layers), n_layers))
    lora = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        **kwargs,
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


def _lr_lambda(config: LoraTrainConfig, total: int) -> Callable[[int], float]:
    warmup = round(config.warmup_ratio * total)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if config.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
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
    import torch

    if not isinstance(config, LoraTrainConfig):
        raise ConfigError(f"config must be a LoraTrainConfig, got {type(config).__name__}")
    missing = [c for c in ("prefix", "suffix", "target") if c not in rows.columns]
    if missing:
        raise DataError(
            f"training rows lack column(s) {', '.join(missing)}; build them with build_training_rows"
        )
    if len(rows) == 0:
        raise DataError(f"adapter {name!r}: no training rows")
    out = Path(out_dir)
    data_hash = rows_digest(rows)
    run_key = stable_hash({"config": config.to_dict(), "data": data_hash, "base": _model_name(model),
                           "format": _FORMAT_VERSION})
    if (out / ADAPTER_INFO).is_file():
        with contextlib.suppress(AdapterError):
            info = read_adapter_info(out)
            if info.get("run_key") == run_key:
                return _result_from_info(info, out, config, cached=True)

    t_start = time.perf_counter()
    tok = _Tokens(tokenizer)
    all_rows = [tok.row(p, s, t) for p, s, t in zip(rows["prefix"], rows["suffix"], rows["target"], strict=True)]
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
            stacklevel=2,
        )
    if not config.prefix_sharing:
        kept = [_Row("", [], r.prefix + r.body, r.n_answer) for r in kept]
    schedule = _Schedule(kept, config)
    total = schedule.total_steps
    t_tokenized = time.perf_counter()
    device = next(model.parameters()).device
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    ckpt_path = out / _CHECKPOINT_DIR / _CHECKPOINT_FILE

    # Ctrl-C / SIGTERM only set `stop` here; the loop stops at the end of the step in progress.
    with _peft_wrapped(model, config) as peft_model, deferred_interrupts() as stop:
        params = _trainable(peft_model)
        optimizer = torch.optim.AdamW(
            list(params.values()), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, total))
        start, curve, tokens, elapsed_before, resumed_from = 0, [], 0, 0.0, None
        state = _load_checkpoint(ckpt_path, run_key) if resume else None
        if state is not None:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(state["lora"][n])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            if torch.cuda.is_available() and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            start, curve = int(state["step"]), list(state["curve"])
            tokens, elapsed_before = int(state["tokens"]), float(state["elapsed"])
            resumed_from = start
            logger.info("adapter %s: resuming at step %d of %d", name, start, total)
        if config.gradient_checkpointing:
            peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.train()
        t_run = time.perf_counter()

        def snapshot(step: int) -> dict[str, Any]:
            return {
                "run_key": run_key,
                "step": step,
                "lora": {n: p.detach().cpu().clone() for n, p in params.items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "curve": curve,
                "tokens": tokens,
                "elapsed": elapsed_before + time.perf_counter() - t_run,
            }

        from recsim_personas.progress import progress_bar

        bar = progress_bar(total=total, initial=start, desc=f"train {name}", unit="step", leave=False,
                           enabled=progress)
        step = start
        at_boundary = True  # the state is exactly an uninterrupted run's after `step` steps
        try:
            while step < total:
                at_boundary = False
                groups = schedule.step(step)
                n_answer = sum(kept[i].n_answer for g in groups for i in g)
                loss_total = 0.0
                for g in groups:
                    members = [kept[i] for i in g]
                    if members[0].prefix:
                        loss_sum, _, n_tok = _forward_shared(peft_model, members, device)
                    else:
                        loss_sum, _, n_tok = _forward_full(peft_model, members, device, pad_id)
                    (loss_sum / n_answer).backward()
                    loss_total += float(loss_sum.detach())
                    tokens += n_tok
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(list(params.values()), config.max_grad_norm)
                lr = float(optimizer.param_groups[0]["lr"])
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                loss = loss_total / n_answer
                if not math.isfinite(loss):
                    raise ModelError(
                        f"adapter {name!r}: loss became {loss} at step {step}; lower the learning rate "
                        f"(now {config.learning_rate}) or use float32 weights"
                    )
                curve.append({
                    "step": step, "loss": round(loss, 6), "lr": lr,
                    "rows": sum(len(g) for g in groups),
                    "seconds": round(elapsed_before + time.perf_counter() - t_run, 3),
                })
                at_boundary = True
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
                if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total:
                    _save_checkpoint(ckpt_path, snapshot(step))
                if callback is not None:
                    callback(step, loss)
                stop.check()  # Ctrl-C / SIGTERM arrived during the step: stop here, at its end
        except BaseException:
            # Stopped at a step boundary (a signal, the callback): keep the finished steps, so the
            # resumed run is bit-identical. Mid-step (an error, a second signal) the last periodic
            # checkpoint stays: its RNG and weights are consistent, a half step's are not.
            if step > start and at_boundary:
                _save_checkpoint(ckpt_path, snapshot(step))
            raise
        finally:
            bar.close()
            if config.gradient_checkpointing:
                peft_model.gradient_checkpointing_disable()
        wall = elapsed_before + time.perf_counter() - t_run
        peft_model.eval()
        _publish_adapter(peft_model, out)

    info = {
        "format_version": _FORMAT_VERSION,
        "name": name,
        "run_key": run_key,
        "base_model": _model_name(model),
        "base_dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": str(device),
        "config": config.to_dict(),
        "data_hash": data_hash,
        "n_rows": len(kept),
        "n_skipped": n_skipped,
        "n_users": int(rows["user_id"].nunique()) if "user_id" in rows.columns else None,
        "target_counts": {str(k): int(v) for k, v in rows["target"].value_counts().sort_index().items()},
        "steps": step,
        "steps_per_epoch": schedule.steps_per_epoch,
        "epochs": round(step / schedule.steps_per_epoch, 4),
        "train_tokens": tokens,
        "wall_seconds": round(wall, 3),
        "tokenize_seconds": round(t_tokenized - t_start, 3),
        "resumed_from_step": resumed_from,
        "curve": curve,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "git": git_info(),
        **environment_info(),
    }
    atomic_write_json(out / ADAPTER_INFO, info)
    shutil.rmtree(out / _CHECKPOINT_DIR, ignore_errors=True)
    return _result_from_info(info, out, config, cached=False)


def _result_from_info(info: dict[str, Any], out: Path, config: LoraTrainConfig, *, cached: bool) -> TrainResult:
    return TrainResult(
        name=str(info["name"]),
        out_dir=out,
        steps=int(info["steps"]),
        epochs=float(info["epochs"]),
        n_rows=int(info["n_rows"]),
        n_skipped=int(info["n_skipped"]),
        train_tokens=int(info["train_tokens"]),
        curve=list(info["curve"]),
        wall_seconds=float(info["wall_seconds"]),
        data_hash=str(info["data_hash"]),
        config=config,
        resumed_from_step=info.get("resumed_from_step"),
        cached=cached,
        info=info,
    )


def load_train_result(path: str | os.PathLike[str]) -> TrainResult:
    """The :class:`TrainResult` of a finished adapter folder (from its ``recsim_adapter.json``).

    Raises:
        AdapterError: The folder holds no finished adapter.
    """
    folder = Path(path)
    info = read_adapter_info(folder)
    return _result_from_info(info, folder, LoraTrainConfig.from_dict(info["config"]), cached=True)
