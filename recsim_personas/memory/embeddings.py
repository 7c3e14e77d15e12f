"""Embedders by name: :func:`make_embedder` builds one from a short spec string.

Specs: ``"minilm"`` (all-MiniLM-L6-v2 from the offline package,
:class:`~recsim_personas.memory.sentence_embedder.SentenceTransformerEmbedder`), ``"hashing"`` /
``"hashing:<dim>"`` (:class:`~recsim_personas.memory.hashing_embedder.HashingEmbedder`),
``"openai:<model>"`` (:class:`~recsim_personas.memory.openai_embedder.OpenAIEmbedder`; the paper
used ``text-embedding-ada-002``), or a sentence-transformers id/path. Every embedder returns
L2-normalised float32 rows (:class:`~recsim_personas.memory.embedder.Embedder`) and is wrapped in the
on-disk :class:`~recsim_personas.memory.embedding_cache.CachedEmbedder` unless ``cache=False``.

Example:
    >>> emb = make_embedder("hashing:64", cache=False)
    >>> vecs = emb.embed(["a quiet drama", "a loud action film"])
    >>> vecs.shape, vecs.dtype.name, bool(abs((vecs**2).sum(1) - 1).max() < 1e-5)
    ((2, 64), 'float32', True)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from recsim_personas.errors import ConfigError
from recsim_personas.memory.embedder import EXAMPLE_SPECS, Embedder
from recsim_personas.memory.embedder import l2_normalize as l2_normalize  # compatibility re-export
from recsim_personas.memory.embedding_cache import CachedEmbedder
from recsim_personas.memory.hashing_embedder import HashingEmbedder
from recsim_personas.memory.openai_embedder import OpenAIEmbedder
from recsim_personas.memory.sentence_embedder import SentenceTransformerEmbedder
from recsim_personas.memory.sentence_embedder import (
    default_minilm_path as default_minilm_path,  # compatibility
)

__all__ = ["DEFAULT_EMBEDDER", "make_embedder"]

#: The spec :func:`make_embedder` uses by default: all-MiniLM-L6-v2 from the offline package.
DEFAULT_EMBEDDER = "minilm"


def make_embedder(spec: str = DEFAULT_EMBEDDER, *, base_url: str | None = None,
                  api_key: str | None = None, device: str = "auto", batch_size: int | None = None,
                  cache: bool | str | os.PathLike[str] = True, progress: bool = False,
                  network: Mapping[str, float] | None = None) -> Embedder:
    """Build an embedder from a spec string.

    Args:
        spec: ``"minilm"`` (all-MiniLM-L6-v2 from the offline package), ``"hashing"`` or
            ``"hashing:<dim>"``, ``"openai:<model>"`` (with ``base_url`` for a local server), or any
            sentence-transformers hub id or local folder.
        base_url: Endpoint of the ``openai`` embedder.
        api_key: Key of the ``openai`` embedder (default ``$OPENAI_API_KEY``).
        device: Device of a sentence-transformers model.
        batch_size: Texts per forward pass / request (embedder's default when ``None``).
        cache: ``True`` for the default on-disk cache, a path for a specific SQLite file, ``False``
            for none.
        progress: Progress bar while filling the cache.
        network: ``openai`` embedder's bounds: ``timeout``, ``max_retries``, ``retry_after_max``
            (the memory stage passes the distiller's settings, so one set of options bounds both).

    Returns:
        The embedder, wrapped in :class:`CachedEmbedder` unless ``cache`` is false.

    Raises:
        ConfigError: A malformed spec (e.g. ``"hashing:x"``, ``"openai:"``).
    """
    spec = str(spec).strip()
    if not spec:
        raise ConfigError(f"empty embedder spec; use one of {', '.join(EXAMPLE_SPECS)}")
    inner: Embedder
    kw: dict[str, Any] = {} if batch_size is None else {"batch_size": batch_size}
    if spec == "minilm":
        inner = SentenceTransformerEmbedder(None, device=device, **kw)
    elif spec == "hashing" or spec.startswith("hashing:"):
        dim = spec.partition(":")[2] or "256"
        if not dim.isdigit():
            raise ConfigError(f"embedder spec {spec!r}: the dimension after 'hashing:' must be an integer")
        inner = HashingEmbedder(int(dim))
    elif spec.startswith("openai:"):
        model = spec.partition(":")[2]
        if not model:
            raise ConfigError(f"embedder spec {spec!r} names no model; e.g. 'openai:text-embedding-3-small'")
        inner = OpenAIEmbedder(model, base_url, api_key=api_key, **kw, **dict(network or {}))
    elif spec in ("openai", "sentence-transformers", "st"):
        raise ConfigError(
            f"embedder spec {spec!r} needs a model: 'openai:<model>' or a sentence-transformers id/path"
        )
    else:
        inner = SentenceTransformerEmbedder(spec, device=device, **kw)
    if cache is False:
        return inner
    path = None if cache is True else cache
    return CachedEmbedder(inner, path, progress=progress)
