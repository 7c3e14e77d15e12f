"""Split invariants: temporal order, every user in train and test, seed determinism, save/load."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from recsim_personas.data.dataset import RatingDataset, RatingScale
from recsim_personas.data.splits import (
    PAPER_SPLIT,
    Split,
    SplitConfig,
    eligible_users,
    make_split,
)
from recsim_personas.errors import ConfigError, DataError


def make_dataset(counts: dict[int, int], seed: int = 0, tie_every: int = 3) -> RatingDataset:
    """Users with the given interaction counts; timestamps with deliberate ties, rows shuffled."""
    rng = np.random.default_rng(seed)
    rows = []
    for user, n in counts.items():
        items = rng.choice(10_000, size=n, replace=False)
        # Every ``tie_every`` consecutive rows share a timestamp, so ties cross split boundaries.
        ts = 1_000_000 + (np.arange(n) // tie_every) * 60
        for item, t in zip(items, ts, strict=True):
            rows.append((user, int(item), float(rng.integers(1, 6)), int(t)))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    frame = frame.astype({"user_id": "int64", "item_id": "int64", "rating": "float64",
                          "timestamp": "int64"})
    items = pd.DataFrame(index=pd.Index(np.unique(frame["item_id"]), name="item_id"))
    return RatingDataset("toy", frame, items, pd.DataFrame(), RatingScale(1, 5, 1))


@pytest.fixture(scope="module")
def dataset() -> RatingDataset:
    rng = np.random.default_rng(1)
    counts = {u: int(rng.integers(1, 40)) for u in range(1, 61)}
    counts.update({100: 1, 101: 2, 102: 5, 103: 10})
    return make_dataset(counts)


def _key(frame: pd.DataFrame) -> list[tuple]:
    return sorted(map(tuple, frame[["user_id", "item_id"]].to_numpy().tolist()))


@pytest.mark.parametrize("spec", ["temporal:0.6", "random:0.8", "last:3"])
def test_split_partitions_each_kept_users_rows(dataset, spec):
    split = make_split(dataset, SplitConfig.from_spec(spec))
    inter = dataset.interactions
    kept = inter[inter["user_id"].isin(split.users)]
    assert _key(pd.concat([split.train, split.test])) == _key(kept)
    assert set(split.train["user_id"]) == set(split.test["user_id"]) == set(split.users)
    # No (user, item) pair in both parts.
    both = split.train.merge(split.test, on=["user_id", "item_id"])
    assert both.empty
    assert list(split.train.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert split.train["user_id"].dtype == np.int64 and split.test["rating"].dtype == np.float64


def test_users_too_small_to_split_are_left_out(dataset):
    split = make_split(dataset, SplitConfig.from_spec("temporal:0.6"))
    counts = dataset.interactions.groupby("user_id").size()
    assert set(split.users) == set(counts[counts >= 2].index)
    assert 100 not in split.users  # one interaction: cannot have both train and test
    last = make_split(dataset, SplitConfig.from_spec("last:3"))
    assert set(last.users) == set(counts[counts >= 4].index)


def test_temporal_split_keeps_oldest_fraction_with_deterministic_ties(dataset):
    split = make_split(dataset, SplitConfig.from_spec("temporal:0.6"))
    for user, rows in dataset.interactions.groupby("user_id"):
        if user not in split.users:
            continue
        ordered = rows.sort_values(["timestamp", "item_id"])
        n = len(rows)
        n_train = min(max(int(np.floor(0.6 * n + 1e-9)), 1), n - 1)
        train = split.train[split.train["user_id"] == user]
        test = split.test[split.test["user_id"] == user]
        assert list(train["item_id"]) == list(ordered["item_id"][:n_train])
        assert list(test["item_id"]) == list(ordered["item_id"][n_train:])
        # Temporal order, ties broken by item id.
        assert (train["timestamp"].max(), train.iloc[-1]["item_id"]) <= (
            test["timestamp"].min(), test.iloc[0]["item_id"])


def test_train_count_is_floor_of_fraction_clipped():
    ds = make_dataset({1: 2, 2: 5, 3: 10, 4: 3})
    split = make_split(ds, SplitConfig.from_spec("temporal:0.6"))
    n_train = split.train.groupby("user_id").size().to_dict()
    # floor(0.6 * n): 2 -> 1, 5 -> 3 (not 3.0000000000000004 -> 3 by luck), 10 -> 6, 3 -> 1.
    assert n_train == {1: 1, 2: 3, 3: 6, 4: 1}
    # floor(0.1 * n) is 0 for n < 10: clipped up so that every user keeps one train row.
    low = make_split(ds, SplitConfig.from_spec("temporal:0.1"))
    assert low.train.groupby("user_id").size().to_dict() == {1: 1, 2: 1, 3: 1, 4: 1}


def test_last_n_puts_newest_rows_in_test(dataset):
    split = make_split(dataset, SplitConfig.from_spec("last:3"))
    assert (split.test.groupby("user_id").size() == 3).all()
    for user, test in split.test.groupby("user_id"):
        train = split.train[split.train["user_id"] == user]
        assert train["timestamp"].max() <= test["timestamp"].min()


def test_random_split_is_seeded_and_differs_from_temporal(dataset):
    cfg = SplitConfig.from_spec("random:0.6", seed=3)
    a, b = make_split(dataset, cfg), make_split(dataset, cfg)
    pd.testing.assert_frame_equal(a.train, b.train)
    pd.testing.assert_frame_equal(a.test, b.test)
    temporal = make_split(dataset, SplitConfig.from_spec("temporal:0.6", seed=3))
    assert _key(a.test) != _key(temporal.test)
    # Same per-user counts as the temporal split.
    pd.testing.assert_series_equal(
        a.train.groupby("user_id").size(), temporal.train.groupby("user_id").size()
    )
    other = make_split(dataset, SplitConfig.from_spec("random:0.6", seed=4))
    assert _key(other.test) != _key(a.test)


def test_split_does_not_depend_on_input_row_order(dataset):
    shuffled = RatingDataset(
        "toy",
        dataset.interactions.sample(frac=1.0, random_state=9).reset_index(drop=True),
        dataset.items, dataset.users, dataset.scale,
    )
    for spec in ("temporal:0.6", "random:0.7"):
        cfg = SplitConfig.from_spec(spec, n_users=20, seed=5)
        a, b = make_split(dataset, cfg), make_split(shuffled, cfg)
        pd.testing.assert_frame_equal(a.train, b.train)
        pd.testing.assert_frame_equal(a.test, b.test)


def test_filter_is_inclusive_and_sample_is_seeded(dataset):
    cfg = SplitConfig(min_interactions=10, max_interactions=30, n_users=15, seed=0)
    counts = dataset.interactions.groupby("user_id").size()
    eligible = set(counts[(counts >= 10) & (counts <= 30)].index)
    assert set(eligible_users(dataset.interactions, cfg)) == eligible
    assert 103 in eligible  # exactly 10 interactions: the bound is inclusive
    a = make_split(dataset, cfg)
    assert len(a.users) == 15 and set(a.users) <= eligible
    assert np.array_equal(a.users, make_split(dataset, cfg).users)
    other = make_split(dataset, SplitConfig(min_interactions=10, max_interactions=30, n_users=15,
                                            seed=1))
    assert not np.array_equal(a.users, other.users)
    # The random split of the same config picks the same users (independent seed streams).
    rand = make_split(dataset, SplitConfig(method="random", min_interactions=10,
                                           max_interactions=30, n_users=15, seed=0))
    assert np.array_equal(rand.users, a.users)


def test_too_few_users_is_an_error_not_a_silent_shrink(dataset):
    cfg = SplitConfig(min_interactions=10, max_interactions=30, n_users=500)
    with pytest.raises(DataError, match=r"has only \d+ users that qualify .* fewer than "
                       r"n_users=500; lower n_users \(--users\)"):
        make_split(dataset, cfg)
    with pytest.raises(DataError, match="no user of dataset 'toy' qualifies"):
        make_split(dataset, SplitConfig(min_interactions=1000))


def test_paper_split_constant():
    assert PAPER_SPLIT.to_dict() == {
        "method": "temporal", "train_fraction": 0.6, "last_n": 1, "min_interactions": 100,
        "max_interactions": 200, "n_users": 200, "seed": 0,
    }
    assert PAPER_SPLIT.spec == "temporal:0.6"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("temporal:0.6", SplitConfig("temporal", 0.6)),
        ("random:0.8", SplitConfig("random", 0.8)),
        ("last:5", SplitConfig("last", last_n=5)),
        ("last", SplitConfig("last", last_n=1)),
        (" Temporal ", SplitConfig("temporal", 0.6)),
    ],
)
def test_from_spec(spec, expected):
    assert SplitConfig.from_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("temporl:0.6", "unknown method 'temporl'; use temporal:0.6, random:0.8 or last:N "
         "(e.g. last:5). Did you mean 'temporal'?"),
        ("random:abc", "'abc' is not a fraction between 0 and 1"),
        ("last:2.5", "'2.5' is not an integer N"),
        ("random:1.5", "train_fraction must lie strictly between 0 and 1, got 1.5"),
        ("last:0", "last_n must be an integer >= 1, got 0"),
    ],
)
def test_from_spec_errors(spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        SplitConfig.from_spec(spec)


def test_config_validation_reports_all_problems():
    with pytest.raises(ConfigError) as info:
        SplitConfig(method="randm", train_fraction=0.0, min_interactions=50, max_interactions=10,
                    seed=-1)
    text = str(info.value)
    for part in ("did you mean 'random'?", "train_fraction must lie strictly between 0 and 1",
                 "min_interactions (50) exceeds max_interactions (10)", "seed must be an integer"):
        assert part in text
    with pytest.raises(ConfigError, match="n_users must be an integer >= 1 or None, got True"):
        SplitConfig(n_users=True)


def test_config_dict_round_trip():
    cfg = SplitConfig("last", 0.7, last_n=4, min_interactions=3, max_interactions=9, n_users=2,
                      seed=11)
    assert SplitConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match=re.escape("unknown split config key(s) 'n_user' "
                                                    "(did you mean 'n_users'?)")):
        SplitConfig.from_dict({"n_user": 3})


def test_save_and_load_round_trip(dataset, tmp_path):
    split = make_split(dataset, SplitConfig.from_spec("random:0.8", n_users=10, seed=2))
    folder = split.save(tmp_path / "split")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "test.parquet",
                                                        "train.parquet"]
    loaded = Split.load(folder)
    pd.testing.assert_frame_equal(loaded.train, split.train)
    pd.testing.assert_frame_equal(loaded.test, split.test)
    assert loaded.config == split.config
    assert loaded.dataset_fingerprint == dataset.fingerprint() == split.dataset_fingerprint
    assert loaded.scale == dataset.scale and loaded.dataset_name == "toy"


def test_load_rejects_missing_or_damaged_folders(dataset, tmp_path):
    with pytest.raises(DataError, match=r"no split in .*: config.json is missing; create one with"):
        Split.load(tmp_path / "nothing")
    split = make_split(dataset, SplitConfig.from_spec("temporal:0.6"))
    folder = split.save(tmp_path / "s")
    split.train.head(3).to_parquet(folder / "train.parquet", index=False)
    with pytest.raises(DataError, match=r"train.parquet has 3 rows but config.json says "
                       r"n_train=\d+; the folder is damaged"):
        Split.load(folder)
    split.save(folder)
    split.test.drop(columns="rating").to_parquet(folder / "test.parquet", index=False)
    with pytest.raises(DataError, match=r"test.parquet lacks column\(s\) rating; re-create"):
        Split.load(folder)


def test_summary_counts(dataset):
    split = make_split(dataset, SplitConfig.from_spec("temporal:0.5"))
    info = split.summary()
    assert info["users"] == len(split.users)
    assert info["train_rows"] + info["test_rows"] == len(
        dataset.interactions[dataset.interactions["user_id"].isin(split.users)])
    unknown = (~split.test["item_id"].isin(split.train["item_id"])).sum()
    assert info["test_rows_unknown_item"] == unknown


@pytest.mark.integration
def test_paper_split_on_ml100k(shared_data):
    from recsim_personas.data.registry import load_dataset

    ds = load_dataset("ml-100k", shared_data / "ml-100k")
    split = make_split(ds, PAPER_SPLIT)
    assert len(split.users) == 200
    counts = ds.interactions.groupby("user_id").size()[split.users]
    assert counts.between(100, 200).all()
    n_train = split.train.groupby("user_id").size()
    assert (n_train == np.floor(0.6 * counts + 1e-9).astype(int)).all()
    last_train = split.train.groupby("user_id")["timestamp"].max()
    first_test = split.test.groupby("user_id")["timestamp"].min()
    assert (last_train <= first_test).all()
