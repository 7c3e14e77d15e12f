"""The in-process prefix KV cache: a bounded LRU of per-(adapter, prefix) keys/values, and the
cache objects a batch of prefixes continues from.

Each entry holds one prefix's keys and values as one ``(layers, 2, kv_heads, length, head_dim)``
tensor. :meth:`PrefixKVCache.batch_cache` copies the entries of a batch's rows, left-padded to a
common length, into one preallocated buffer per layer (with room for the suffixes and any
continuation tokens), which the forward passes then fill in place (:func:`buffer_layer`) instead of
concatenating a fresh cache per layer and pass. The cache is per adapter because LoRA on the k/v
projections changes the keys and values. Forward calls name the cache through
:mod:`recsim_personas.hf_compat`.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["PrefixEntry", "PrefixKVCache", "buffer_layer", "cache_layers"]

#: Cache key: (adapter name, prefix text).
PrefixKey = tuple[str, str]


@dataclass
class PrefixEntry:
    """One cached prefix: keys/values ``(layers, 2, kv_heads, length, head_dim)``, length, bytes."""

    kv: torch.Tensor
    length: int
    nbytes: int

    @classmethod
    def from_layers(cls, layers: Sequence[tuple[torch.Tensor, torch.Tensor]], row: int, length: int) -> PrefixEntry:
        """Row ``row``'s first ``length`` positions of a batch's per-layer ``(keys, values)``."""
        import torch

        kv = torch.stack(
            [torch.stack((key[row, :, :length], val[row, :, :length])) for key, val in layers]
        ).contiguous()
        return cls(kv=kv, length=length, nbytes=kv.numel() * kv.element_size())


class PrefixKVCache:
    """A bounded LRU of :class:`PrefixEntry` by (adapter, prefix): at most ``max_entries`` entries
    and ``max_bytes`` bytes (the newest entry is always kept)."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[PrefixKey, PrefixEntry] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: PrefixKey) -> PrefixEntry | None:
        """The entry of ``key`` (marked most recently used), or None."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: PrefixKey, entry: PrefixEntry) -> None:
        """Store ``entry``, evicting the least recently used past the limits."""
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes
        self._entries[key] = entry
        self.nbytes += entry.nbytes
        while len(self._entries) > 1 and (len(self._entries) > self.max_entries or self.nbytes > self.max_bytes):
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= evicted.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    @staticmethod
    def batch_cache(
        entries: Sequence[PrefixEntry | None], p_max: int, width: int, device: Any
    ) -> Any:
        """A ``DynamicCache`` holding row ``i``'s entry right-aligned in the first ``p_max`` slots
        (zeros before it, masked by the caller) in buffers ``width`` slots wide."""
        import torch
        from transformers import DynamicCache

        first = next(e for e in entries if e is not None)
        n_layers, _, heads, _, dim = first.kv.shape
        kv = torch.empty((n_layers, 2, len(entries), heads, width, dim), dtype=first.kv.dtype, device=device)
        for i, entry in enumerate(entries):
            length = entry.length if entry is not None else 0
            # Padding slots are masked, but must be finite: 0 x NaN would still poison the sum.
            kv[:, :, i, :, : p_max - length].zero_()
            if entry is not None:
                kv[:, :, i, :, p_max - length : p_max] = entry.kv
        past = DynamicCache()
        past.layers = [buffer_layer(kv[layer, 0], kv[layer, 1], p_max) for layer in range(n_layers)]
        return past


@functools.cache
def _buffer_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        """A ``DynamicLayer`` over a preallocated ``(B, H, width, D)`` buffer: ``update`` writes the new
        keys and values in place after the ``filled`` slots (a view is returned) instead of
        concatenating a fresh copy of the whole cache; past the buffer's end it concatenates."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, filled: int) -> None:
            super().__init__()
            self._buf_k, self._buf_v, self._filled = keys, values, filled
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True
            self.keys, self.values = keys[:, :, :filled], values[:, :, :filled]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            end = self._filled + key_states.shape[-2]
            if self._buf_k is None or end > self._buf_k.shape[-2]:
                self._buf_k = self._buf_v = None  # from now on a plain DynamicLayer
                return super().update(key_states, value_states, *args, **kwargs)
            self._buf_k[:, :, self._filled : end] = key_states
            self._buf_v[:, :, self._filled : end] = value_states
            self._filled = end
            self.keys, self.values = self._buf_k[:, :, :end], self._buf_v[:, :, :end]
            return self.keys, self.values

    return BufferLayer


def buffer_layer(keys: torch.Tensor, values: torch.Tensor, filled: int) -> Any:
    """A cache layer over a preallocated buffer (``_buffer_layer_class``, built on first use so that
    importing this module does not import transformers)."""
    return _buffer_layer_class()(keys, values, filled)


def cache_layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(keys, values), ...]`` per layer of a transformers cache (each ``(B, H, T, D)``)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):  # older transformers
        return list(zip(cache.key_cache, cache.value_cache, strict=True))
    return [(k, v) for k, v in cache]
