"""Forward passes of LoRA training: the summed answer-token cross-entropy of one group of rows.

:func:`forward_shared` encodes a group's shared user prefix once (batch 1, with gradients) and runs
the rows' bodies against its key/value cache; :func:`forward_full` runs whole sequences, left-padded
so every answer ends at the right edge. Both run the LM head only at the positions that predict
answer tokens, and their losses and gradients equal those of the full sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recsim_personas.errors import DataError
from recsim_personas.hf_compat import cache_kwargs, output_cache
from recsim_personas.training.tokens import TrainRow

__all__ = ["forward_full", "forward_shared", "group_loss"]


def _answer_loss(logits: Any, targets: Any) -> Any:
    import torch

    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")


def forward_shared(model: Any, rows: Sequence[TrainRow], device: Any) -> tuple[Any, int, int]:
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


def forward_full(model: Any, rows: Sequence[TrainRow], device: Any, pad_id: int) -> tuple[Any, int, int]:
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


def group_loss(model: Any, rows: Sequence[TrainRow], device: Any, pad_id: int) -> tuple[Any, int]:
    """``(loss_sum, tokens)`` of one group: rows with a shared prefix, or whole sequences."""
    if rows[0].prefix:
        loss_sum, _, n_tok = forward_shared(model, rows, device)
    else:
        loss_sum, _, n_tok = forward_full(model, rows, device, pad_id)
    return loss_sum, n_tok
