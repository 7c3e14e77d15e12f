"""Per-row LoRA adapters in one forward pass, by batched matmuls over stacked adapter weights."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from recsim_personas.agents.adapters import BASE_ADAPTER
from recsim_personas.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["MAX_RUNS_PER_ADAPTER", "LoraRouter"]

#: A mixed batch whose rows fall into at most this many runs per adapter uses contiguous slices;
#: more scattered batches use the gathered-weights ``bmm`` path.
MAX_RUNS_PER_ADAPTER = 2


class LoraRouter:
    """Per-row LoRA adapters by batched matmuls over stacked weights (inference only, no dropout).

    peft's ``adapter_names`` path gathers each adapter's rows, runs that adapter's A and B on them
    and scatters the result back, per projection; on CPU the gathers and scatters cost more than the
    LoRA maths. Here every LoRA ``Linear`` gets its adapters stacked once, ``A`` as ``(n + 1, r, in)``
    and ``B * scaling`` as ``(n + 1, out, r)`` with index 0 all zeros for the base model (ranks are
    zero-padded to the largest), and a batch adds ``bmm(bmm(x, A[idx]^T), B[idx]^T)`` to the base
    output; a single-adapter batch uses two plain matmuls, and a batch whose rows come in runs of
    equal adapters (the scorer groups them) two plain matmuls per run on contiguous row slices.
    """

    def __init__(self, model: Any, names: tuple[str, ...]) -> None:
        import torch

        self.names = names
        self.index = {name: i + 1 for i, name in enumerate(names)}
        self.index[BASE_ADAPTER] = 0
        self.supported = True
        self.reason = ""
        self.layers: list[tuple[Any, torch.Tensor, torch.Tensor]] = []
        self._rows: torch.Tensor | None = None
        self._uniform: int | None = None
        self._runs: list[tuple[int, int, int]] | None = None
        try:
            from peft.tuners.lora.layer import Linear as LoraLinear
        except ImportError:  # pragma: no cover - peft is a dependency
            self.supported, self.reason = False, "peft LoRA layer class not found"
            return
        for module in model.modules():
            if not hasattr(module, "lora_A") or not hasattr(module, "base_layer"):
                continue
            if not isinstance(module, LoraLinear):
                self.supported, self.reason = False, f"non-Linear LoRA layer {type(module).__name__}"
                return
            if module.merged or getattr(module, "fan_in_fan_out", False):
                self.supported, self.reason = False, "merged or fan_in_fan_out adapters"
                return
            present = [n for n in names if n in module.lora_A]
            if any(module.use_dora.get(n, False) or n in getattr(module, "lora_variant", {}) for n in present) or any(
                getattr(module, "lora_bias", {}).get(n, False) for n in present
            ):
                self.supported, self.reason = False, "DoRA, LoRA variants or LoRA bias"
                return
            weight = module.get_base_layer().weight
            r_max = max((module.lora_A[n].weight.shape[0] for n in present), default=1)
            a_all = torch.zeros((len(names) + 1, r_max, weight.shape[1]), dtype=weight.dtype, device=weight.device)
            b_all = torch.zeros((len(names) + 1, weight.shape[0], r_max), dtype=weight.dtype, device=weight.device)
            with torch.no_grad():
                for n in present:
                    a = module.lora_A[n].weight
                    b = module.lora_B[n].weight * module.scaling[n]
                    a_all[self.index[n], : a.shape[0]] = a.to(weight.dtype)
                    b_all[self.index[n], :, : a.shape[0]] = b.to(weight.dtype)
            self.layers.append((module, a_all, b_all))

    @contextlib.contextmanager
    def route(self, names: Sequence[str], max_runs_per_adapter: int = MAX_RUNS_PER_ADAPTER) -> Iterator[None]:
        """Patch the LoRA layers' forwards for one batch whose row ``i`` uses adapter ``names[i]``.

        A batch whose rows fall into at most ``max_runs_per_adapter`` runs per adapter uses
        contiguous slices; more scattered batches use the gathered-weights ``bmm`` path.
        """
        import torch

        idx = [self.index[n] for n in names]
        self._uniform = idx[0] if len(set(idx)) == 1 else None
        self._rows = torch.tensor(idx, dtype=torch.long)
        # Runs of equal adapters (rows come grouped by adapter): contiguous slices need no gather.
        runs: list[tuple[int, int, int]] = []
        for i, k in enumerate(idx):
            if runs and runs[-1][2] == k:
                runs[-1] = (runs[-1][0], i + 1, k)
            else:
                runs.append((i, i + 1, k))
        self._runs = [r for r in runs if r[2] != 0] if len(runs) <= max_runs_per_adapter * len(set(idx)) else None
        patched = []
        try:
            for module, a_all, b_all in self.layers:
                module.forward = self._make_forward(module, a_all, b_all)
                patched.append(module)
            yield
        finally:
            for module in patched:
                del module.forward
            self._rows = None

    def _make_forward(self, module: Any, a_all: torch.Tensor, b_all: torch.Tensor) -> Callable[..., Any]:
        import torch
        import torch.nn.functional as F

        base = module.base_layer
        router = self

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            result = base(x, *args, **kwargs)
            k = router._uniform
            if k == 0:
                return result
            if not result.is_contiguous() or result.dtype != a_all.dtype:
                result = result.contiguous().to(a_all.dtype)
            x = x.to(a_all.dtype)
            width = x.shape[-1]
            out = result.shape[-1]
            # addmm_ accumulates B's product straight into the base output (one GEMM with beta=1):
            # no temporary of the output's size and no separate addition pass.
            if k is not None:
                result.view(-1, out).addmm_(F.linear(x.reshape(-1, width), a_all[k]), b_all[k].t())
                return result
            rows = router._rows
            bsz = x.shape[0]
            if rows is None or rows.shape[0] != bsz:
                raise ModelError(
                    f"LoRA router got a batch of {bsz} rows for {None if rows is None else len(rows)} adapters"
                )
            runs = router._runs
            if runs is not None:
                for start, stop, j in runs:
                    xa = F.linear(x[start:stop].reshape(-1, width), a_all[j])
                    result[start:stop].view(-1, out).addmm_(xa, b_all[j].t())
                return result
            xa = torch.bmm(x.reshape(bsz, -1, width), a_all[rows].transpose(1, 2))
            result.view(bsz, -1, out).baddbmm_(xa, b_all[rows].transpose(1, 2))
            return result

        return forward
