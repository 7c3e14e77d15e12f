"""Per-user faiss retrieval: exactness, threshold, user isolation and the two leakage rules.

The leakage proofs (``test_training_rows_never_retrieve_their_own_interaction`` and
``test_test_time_retrieval_sees_only_train_memories``) run on a real split of the embedded
ml-latest-small data with a store built from a run folder, so they test the path the trainer and the
environment use, not a toy.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from recsim_personas.artifacts import atomic_write_npy, atomic_write_parquet
from recsim_personas.errors import ConfigError, DataError
from recsim_personas.memory.embeddings import HashingEmbedder, l2_normalize
from recsim_personas.memory.retrieval import MemoryIndex, faiss_device
from recsim_personas.memory.store import Memory, MemoryStore


def _random_unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).normal(size=(n, d)))


def test_search_matches_brute_force_cosine_and_only_sees_the_users_rows():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 5, size=200)
    items = np.arange(200) + 1000
    vecs = _random_unit(200, 16, seed=2)
    index = MemoryIndex(users, items, vecs, device="cpu")
    queries = _random_unit(30, 16, seed=3)
    q_users = rng.integers(0, 5, size=30)
    batch = index.search_batch(q_users, queries, k=4)
    for u, q, hits in zip(q_users, queries, batch):
        rows = np.flatnonzero(users == u)
        sims = vecs[rows] @ q
        best = rows[np.argsort(-sims)[:4]]
        assert [h.row for h in hits] == best.tolist()
        np.testing.assert_allclose([h.similarity for h in hits], np.sort(sims)[::-1][:4], atol=1e-5)
        assert all(users[h.row] == u for h in hits)
        single = index.search(int(u), q, k=4)
        assert single == hits, "batched and single queries agree"


def test_delta_threshold_and_k_limit():
    vecs = l2_normalize(np.array([[1, 0], [0.8, 0.6], [0, 1], [-1, 0]], dtype=np.float32))
    index = MemoryIndex([1, 1, 1, 1], [10, 11, 12, 13], vecs, device="cpu")
    q = np.array([1.0, 0.0], dtype=np.float32)
    assert [h.item_id for h in index.search(1, q, k=10, delta=-1.0)] == [10, 11, 12, 13]
    assert [h.item_id for h in index.search(1, q, k=10)] == [10, 11, 12], "default delta 0 drops cos -1"
    assert [h.item_id for h in index.search(1, q, k=10, delta=0.5)] == [10, 11]
    assert [h.item_id for h in index.search(1, q, k=1, delta=0.5)] == [10]
    assert index.search(1, -q, k=3, delta=0.99)[0].item_id == 13
    assert index.search(1, np.array([0.0, -1.0], dtype=np.float32), k=3, delta=0.5) == []


def test_exclude_item_still_returns_k_hits():
    vecs = _random_unit(6, 8)
    index = MemoryIndex([5] * 6, [1, 2, 3, 4, 5, 6], vecs, device="cpu")
    for item in range(1, 7):
        hits = index.search(5, vecs[item - 1], k=2, delta=-1.0, exclude_item=item)
        assert len(hits) == 2 and item not in [h.item_id for h in hits]
        # Without the exclusion the item itself is the best hit: the exclusion is what removes it.
        assert index.search(5, vecs[item - 1], k=1)[0].item_id == item


def test_index_errors():
    index = MemoryIndex([11, 12], [1, 2], _random_unit(2, 4), device="cpu")
    with pytest.raises(DataError, match=re.escape("user 13 has no memories in this index (2 users). Did you mean 12, 11?")):
        index.search(13, np.ones(4, dtype=np.float32))
    with pytest.raises(ConfigError, match="k must be >= 1"):
        index.search(11, np.ones(4, dtype=np.float32), k=0)
    with pytest.raises(DataError, match="dimension 4"):
        index.search_batch([11], np.ones((1, 5), dtype=np.float32))
    with pytest.raises(DataError, match="one length"):
        MemoryIndex([1, 2], [1], _random_unit(2, 4))
    with pytest.raises(DataError, match="NaN"):
        MemoryIndex([1], [1], np.full((1, 4), np.nan))
    with pytest.raises(ConfigError, match="Did you mean 'cuda'"):
        faiss_device("cudа")
    assert faiss_device("auto") in ("cpu", "cuda")


# -- a real run folder on ml-latest-small -------------------------------------------------------

def _write_run(root, train: pd.DataFrame, test: pd.DataFrame, titles: dict[int, str]):
    """A minimal run folder (what distill + embed write) with a hashing embedder over item titles."""
    users = np.unique(train["user_id"])
    emb = HashingEmbedder(dim=64)
    profiles = pd.DataFrame({
        "user_id": users, "activity": "a", "conformity": "c", "diversity": "d",
        "activity_level": 1, "conformity_level": 1, "diversity_level": 1,
        "taste": [f"taste of {u}" for u in users], "profile_text": [f"PERSONA user {u}" for u in users],
    })
    memories = train.assign(text=[f"M_l of user {u} item {i}" for u, i in zip(train["user_id"], train["item_id"])])
    items = np.unique(np.r_[train["item_id"], test["item_id"]])
    atomic_write_parquet(root / "profiles.parquet", profiles)
    atomic_write_parquet(root / "memories.parquet", memories)
    atomic_write_npy(root / "embeddings/profiles.npy", emb.embed(profiles["profile_text"].tolist()))
    atomic_write_npy(root / "embeddings/profile_user_ids.npy", users)
    atomic_write_npy(root / "embeddings/items.npy", emb.embed([titles[int(i)] for i in items]))
    atomic_write_npy(root / "embeddings/item_ids.npy", items)
    atomic_write_parquet(root / "personas.parquet", pd.DataFrame({"user_id": users, "persona": users % 2}))


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    from recsim_personas.data.registry import load_dataset
    from recsim_personas.data.splits import SplitConfig, make_split

    dataset = load_dataset("ml-latest-small")
    split = make_split(dataset, SplitConfig(method="temporal", train_fraction=0.6, min_interactions=40,
                                            max_interactions=80, n_users=12, seed=0))
    titles = {int(i): str(t) for i, t in dataset.items["title"].items()}
    root = tmp_path_factory.mktemp("run")
    _write_run(root, split.train, split.test, titles)
    return MemoryStore.from_run_dir(root, device="cpu"), split


def test_training_rows_never_retrieve_their_own_interaction(real_run):
    store, split = real_run
    train = split.train
    for k in (1, 3):
        got = store.retrieve_batch(train["user_id"], train["item_id"], k=k, exclude_items=train["item_id"])
        own = [(u, i) for u, i, mems in zip(train["user_id"], train["item_id"], got)
               if i in [m.item_id for m in mems]]
        assert own == [], f"k={k}: a training row retrieved its own interaction"
        assert all(len(m) == k for m in got), "every user has more than k train memories"
    # The same queries without the exclusion do return the row's own interaction first (identical
    # text, similarity 1): the exclusion is what prevents the leak, so this test can fail.
    unguarded = store.retrieve_batch(train["user_id"][:50], train["item_id"][:50], k=1)
    assert [m[0].item_id for m in unguarded] == train["item_id"][:50].tolist()
    one = store.retrieve(int(train["user_id"].iat[0]), int(train["item_id"].iat[0]), k=2,
                         exclude_item=int(train["item_id"].iat[0]))
    assert int(train["item_id"].iat[0]) not in [m.item_id for m in one]


def test_test_time_retrieval_sees_only_train_memories(real_run):
    store, split = real_run
    train_pairs = set(zip(split.train["user_id"], split.train["item_id"]))
    test_pairs = set(zip(split.test["user_id"], split.test["item_id"]))
    test = split.test
    got = store.retrieve_batch(test["user_id"], test["item_id"], k=5)
    n_hits = 0
    for u, mems in zip(test["user_id"], got):
        for m in mems:
            assert (u, m.item_id) in train_pairs, "a retrieved memory must be the user's own train row"
            assert (u, m.item_id) not in test_pairs
            assert m.text == f"M_l of user {u} item {m.item_id}"
            n_hits += 1
    assert n_hits == 5 * len(test)
    # And the ratings carried are the train ratings.
    rating = dict(zip(zip(split.train["user_id"], split.train["item_id"]), split.train["rating"]))
    m = got[0][0]
    assert m.rating == rating[(test["user_id"].iat[0], m.item_id)]


def test_store_lookups_and_unknown_user(real_run):
    store, split = real_run
    users = store.users
    assert users.tolist() == sorted(split.users.tolist())
    u = int(users[0])
    assert store.profile(u) == f"PERSONA user {u}"
    assert store.profile_row(u)["taste"] == f"taste of {u}"
    assert store.persona(u) == u % 2
    assert store.n_personas == 2
    np.testing.assert_allclose(np.linalg.norm(store.profile_embedding(u)), 1.0, atol=1e-5)
    assert len(store.memories(u)) == int((split.train["user_id"] == u).sum())
    assert isinstance(store.retrieve(u, int(split.test["item_id"].iat[0]))[0], Memory)
    bad = u + 1 if u + 1 not in users else 999_999
    with pytest.raises(DataError, match=re.escape(f"unknown user id {bad} in run folder")):
        store.profile(bad)
    with pytest.raises(DataError, match="Did you mean"):
        store.retrieve(int(str(u) + "0"), 1)
    with pytest.raises(DataError, match=r"has no embedding .* pass catalog="):
        store.retrieve(u, 10_000_000)


def test_store_embeds_unseen_items_with_a_catalog(real_run, tmp_path):
    store, _ = real_run

    class Catalog:
        def describe(self, item_id):
            return f"Title of item {item_id}"

        def summary(self, item_id):
            return ""

    fresh = MemoryStore.from_run_dir(store.path, catalog=Catalog(), embedder=HashingEmbedder(dim=64))
    u = int(fresh.users[0])
    mems = fresh.retrieve(u, 10_000_000, k=2)
    assert len(mems) == 2 and fresh.has_item_embedding(10_000_000)


def test_store_reports_missing_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        MemoryStore.from_run_dir(tmp_path / "nope")
    with pytest.raises(DataError, match=re.escape("lacks profiles.parquet")):
        MemoryStore.from_run_dir(tmp_path)
