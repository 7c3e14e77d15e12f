"""Personas: KMeans++ clusters, the elbow choice, distinctive words, rating stats, plots, files."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from recsim_personas.errors import ConfigError, DataError
from recsim_personas.memory.embeddings import HashingEmbedder
from recsim_personas.memory.persona_words import (
    content_words,
    distinctive_words,
    over_represented_words,
)
from recsim_personas.memory.personas import PAPER_PERSONAS, PersonaClusters, PersonaConfig, elbow_k

TOPICS = {
    0: "zombies gore slasher screams",
    1: "romance weddings kisses heartbreak",
    2: "spaceships aliens galaxies robots",
    3: "cowboys saloons outlaws horses",
}


def _blobs(sizes=(14, 11, 9, 6), dim=12, spread=0.05, seed=0):
    """Users in four well-separated groups of known sizes; returns ids, vectors, true group."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[: len(sizes)] * 3
    groups = np.repeat(np.arange(len(sizes)), sizes)
    vecs = centres[groups] + rng.normal(scale=spread, size=(len(groups), dim))
    user_ids = np.arange(len(groups)) * 7 + 100  # non-contiguous ids
    perm = rng.permutation(len(groups))  # users in no particular order
    return user_ids[perm], vecs[perm], groups[perm]


def _profiles(user_ids, groups):
    texts = [f"PERSONA: I like movies. I love {TOPICS[g]} and stories number {u}." for u, g in zip(user_ids, groups)]
    return pd.DataFrame({"user_id": user_ids, "profile_text": texts, "taste": texts,
                         "activity_level": groups % 3, "conformity_level": 1, "diversity_level": 2})


def test_config_validation_and_round_trip():
    cfg = PersonaConfig(k=3, k_max=8, seed=4, n_init=2, top_words=5, text_column="taste")
    assert PersonaConfig.from_dict(cfg.to_dict()) == cfg
    assert PAPER_PERSONAS.k == 4
    with pytest.raises(ConfigError, match=re.escape("k must be an integer >= 1 or None (elbow), got 0")):
        PersonaConfig(k=0)
    with pytest.raises(ConfigError, match=re.escape("text_column 'tastes' is not one of profile_text, taste (did you mean 'taste'?)")):
        PersonaConfig(text_column="tastes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=re.escape("unknown persona config key(s) 'kmax' (did you mean 'k_max'?)")):
        PersonaConfig.from_dict({"kmax": 3})
    with pytest.raises(ConfigError, match="n_init"):
        PersonaConfig(n_init=0)


@pytest.mark.parametrize(
    ("inertias", "expected"),
    [
        ([100, 40, 20, 15, 12, 10], 3),       # a clear bend at 3
        ([100, 20, 18, 16, 14, 12], 2),       # sharp drop then flat: 2
        ([100, 90, 80, 70, 60, 50], 1),       # straight line: no elbow, smallest K
        ([50, 50, 50, 50], 1),                # flat
    ],
)
def test_elbow_k(inertias, expected):
    assert elbow_k(list(range(1, len(inertias) + 1)), inertias) == expected


def test_elbow_k_short_curves_and_errors():
    assert elbow_k([1, 2], [10, 1]) == 1
    with pytest.raises(DataError, match="one inertia per K"):
        elbow_k([1, 2, 3], [1, 2])


def test_fit_recovers_groups_chooses_k_by_elbow_and_orders_by_size():
    users, vecs, groups = _blobs()
    clusters = PersonaClusters.fit(users, vecs, PersonaConfig(k=None, k_max=8, n_init=3))
    assert clusters.k == 4 and clusters.k_source == "elbow" and clusters.elbow == 4
    assert clusters.sizes.tolist() == [14, 11, 9, 6], "persona 0 is the largest"
    # Same partition as the true groups (group g has size sizes[g], so persona == group here).
    np.testing.assert_array_equal(clusters.labels, groups)
    assert clusters.ks == list(range(1, 9)) and len(clusters.inertias) == 8
    assert all(a >= b - 1e-9 for a, b in zip(clusters.inertias, clusters.inertias[1:]))
    np.testing.assert_array_equal(clusters.assign(vecs), clusters.labels)
    frame = clusters.assignments()
    assert frame["user_id"].is_monotonic_increasing and set(frame.columns) == {"user_id", "persona"}


def test_fit_is_seeded_and_k_overrides_the_elbow():
    users, vecs, _ = _blobs(spread=0.8, seed=3)
    a = PersonaClusters.fit(users, vecs, PersonaConfig(k=3, seed=1, n_init=2))
    b = PersonaClusters.fit(users, vecs, PersonaConfig(k=3, seed=1, n_init=2))
    assert a.k == 3 and a.k_source == "given"
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.inertias, b.inertias)


def test_fit_errors():
    users, vecs, _ = _blobs()
    with pytest.raises(DataError, match=re.escape("k=50 personas need at least 50 users with profiles; the run has 40")):
        PersonaClusters.fit(users, vecs, PersonaConfig(k=50))
    with pytest.raises(DataError, match="one embedding row per user"):
        PersonaClusters.fit(users[:-1], vecs)
    bad = vecs.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        PersonaClusters.fit(users, bad)


def test_content_words_fallback_drops_stopwords_and_possessives():
    words = content_words(["I really love Schindler's List and the sci-fi movies; I don't like Horror."])[0]
    assert words == ["love", "schindler", "list", "sci-fi", "horror"]


def test_distinctive_words_is_a_one_vs_all_set_difference():
    counts = {0: Counter({"shared": 9, "zombie": 3, "gore": 1}), 1: Counter({"shared": 2, "kiss": 2, "gore": 4}),
              2: Counter({"shared": 1})}
    out = distinctive_words(counts, top_n=5)
    assert out == {0: [("zombie", 3)], 1: [("kiss", 2)], 2: []}
    assert distinctive_words({0: Counter({"b": 2, "a": 2, "c": 5}), 1: Counter()}, top_n=2)[0] == [("c", 5), ("a", 2)]


def test_over_represented_words_prefers_words_used_by_many_members():
    docs = {0: [{"zombie", "common"}, {"zombie", "common"}, {"rare"}], 1: [{"common"}, {"common", "kiss"}, {"kiss"}]}
    out = over_represented_words(docs, top_n=3)
    assert out[0][0][0] == "zombie" and out[1][0][0] == "kiss"
    assert "rare" not in [w for w, _ in out[0]], "a word of one user is not a persona trait"


def test_describe_words_sizes_and_rating_stats():
    users, vecs, groups = _blobs()
    clusters = PersonaClusters.fit(users, vecs, PersonaConfig(k=4, n_init=2))
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"user_id": np.repeat(users, 5), "item_id": np.tile(np.arange(5), len(users)),
                          "rating": rng.integers(1, 6, size=5 * len(users)).astype(float)})
    descs = clusters.describe(_profiles(users, groups), train)
    assert [d.size for d in descs] == [14, 11, 9, 6]
    for d in descs:
        topic = set(TOPICS[d.persona].split())  # persona == group (see test above)
        assert topic <= {w for w, _ in d.top_words}, f"persona {d.persona} words {d.top_words}"
        assert not ({"love", "stories", "persona"} & {w for w, _ in d.top_words}), "shared words are not distinct"
        members = users[groups == d.persona]
        r = train[train["user_id"].isin(members)]["rating"]
        assert d.n_ratings == len(r)
        assert d.rating_mean == pytest.approx(r.mean(), abs=1e-4)
        assert d.rating_std == pytest.approx(r.std(ddof=0), abs=1e-4)
        assert sum(d.rating_distribution.values()) == pytest.approx(1.0, abs=1e-3)
        assert d.trait_levels["activity"] == pytest.approx(d.persona % 3)
    with pytest.raises(DataError, match="no profile row for clustered user"):
        clusters.describe(_profiles(users, groups).iloc[1:], train)


def test_save_load_round_trip_and_plots(tmp_path):
    users, vecs, groups = _blobs()
    clusters = PersonaClusters.fit(users, vecs, PersonaConfig(k=None, k_max=6, n_init=2))
    clusters.describe(_profiles(users, groups))
    written = clusters.save(tmp_path)
    assert sorted(written) == sorted(["personas.parquet", "personas.json", "plots/elbow.png",
                                      "plots/persona_sizes.png", "plots/persona_words.png"])
    for name in written:
        if name.endswith(".png"):
            data = (tmp_path / name).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert not list(tmp_path.rglob("*.tmp")), "no temporary files left behind"
    back = PersonaClusters.load(tmp_path)
    assert back.k == clusters.k and back.elbow == clusters.elbow
    np.testing.assert_array_equal(back.assignments(), clusters.assignments())
    assert [d.top_words for d in back.descriptions] == [d.top_words for d in clusters.descriptions]
    np.testing.assert_allclose(back.centroids, clusters.centroids, atol=1e-6)
    with pytest.raises(DataError, match=re.escape("personas.parquet is missing")):
        PersonaClusters.load(tmp_path / "empty")


def test_text_embeddings_cluster_by_topic():
    """End to end on texts: hashing embeddings of topic profiles separate into their topics."""
    users = np.arange(24)
    groups = users % 4
    profiles = _profiles(users, groups)
    vecs = HashingEmbedder(dim=256).embed(profiles["profile_text"].tolist())
    clusters = PersonaClusters.fit(users, vecs, PersonaConfig(k=4, n_init=5))
    # Each persona holds exactly one topic.
    for p in range(4):
        assert len(set(groups[clusters.labels == p])) == 1
