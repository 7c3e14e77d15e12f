"""Item statistics from the whole dataset: the rating pool, the run folder's catalog, the old option."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from recsim_personas.errors import ConfigError
from recsim_personas.memory.statistics import rating_pool


@pytest.fixture(scope="module")
def data():
    from recsim_personas.data.registry import load_dataset
    from recsim_personas.data.splits import SplitConfig, make_split

    dataset = load_dataset("ml-latest-small")
    split = make_split(dataset, SplitConfig(min_interactions=30, max_interactions=60, n_users=4, seed=0))
    return dataset, split


def _pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user_id"].tolist(), frame["item_id"].tolist(), strict=True))


def test_dataset_pool_is_every_rating_but_the_test_rows(data):
    dataset, split = data
    pool = rating_pool(dataset, split.train, split.test)
    assert len(pool) == len(dataset.interactions) - len(split.test)
    assert not _pairs(pool) & _pairs(split.test)
    assert _pairs(split.train) <= _pairs(pool)
    assert pool["user_id"].nunique() > split.train["user_id"].nunique()  # everyone else's ratings too
    train_only = rating_pool(dataset, split.train, split.test, "train")
    assert _pairs(train_only) == _pairs(split.train)
    with pytest.raises(ConfigError, match=re.escape("item_stats must be one of dataset, train, got 'all'")):
        rating_pool(dataset, split.train, split.test, "all")


def test_pool_leaves_far_fewer_test_items_without_an_average(data):
    from recsim_personas.data.item_catalog import ItemCatalog

    dataset, split = data
    full = ItemCatalog(dataset, rating_pool(dataset, split.train, split.test)).stats()
    train = ItemCatalog(dataset, split.train).stats()
    test_items = split.test["item_id"]
    missing_full = full.loc[test_items, "avg_rating"].isna().mean()
    missing_train = train.loc[test_items, "avg_rating"].isna().mean()
    assert missing_train > 0.5  # 4 users share few films
    assert missing_full < missing_train / 5


def test_run_folder_catalog_follows_its_manifest(data, tmp_path):
    from recsim_personas.memory.pipeline import (
        MemoryPipelineConfig,
        run_item_catalog,
        run_item_stats,
    )

    dataset, split = data
    run = tmp_path / "run"
    split.save(run / "split")
    # A folder made before the option existed: train-only averages, as its memories quote.
    assert run_item_stats(run) == "train"
    old = run_item_catalog(run, dataset).stats()
    assert int(old["n_ratings"].sum()) == len(split.train)
    config = MemoryPipelineConfig(embedder="hashing:8")
    assert config.item_stats == "dataset"
    (run / "manifest.json").write_text(json.dumps({"stages": {}, "config": config.to_dict()}))
    new = run_item_catalog(run, dataset).stats()
    assert int(new["n_ratings"].sum()) == len(dataset.interactions) - len(split.test)
    assert MemoryPipelineConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="item_stats 'everything' is not one of dataset, train"):
        MemoryPipelineConfig(item_stats="everything")
