"""ItemCatalog: item facts, the paper's MOVIE / SUMMARY lines, averages from train only."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from recsim_personas.data import ItemCatalog, ItemInfo, RatingDataset, RatingScale, load_dataset
from recsim_personas.data.dataset import make_items_frame
from recsim_personas.errors import DataError


@pytest.fixture()
def dataset() -> RatingDataset:
    items = make_items_frame(
        [10, 20, 30, 40],
        ["Big Lebowski, The", "Heat", "Untitled", "Nobody Rated"],
        [("Comedy", "Crime"), ("Action",), (), ("Drama",)],
        [1998, 1995, None, 2001],
        description=["A slacker is mistaken for a millionaire.", None, None, "Plot."],
        cast=[
            ", ".join(f"Actor {i}" for i in range(1, 19)),
            "Al Pacino, Robert De Niro",
            None,
            None,
        ],
    )
    interactions = pd.DataFrame(
        {
            "user_id": [1, 2, 3, 1, 2, 3],
            "item_id": [10, 10, 10, 20, 30, 10],
            "rating": [4.0, 3.0, 5.0, 2.0, 1.0, 1.0],
            "timestamp": [1, 2, 3, 4, 5, 6],
        }
    )
    return RatingDataset("toy", interactions, items, pd.DataFrame(), RatingScale(1, 5, 1))


@pytest.fixture()
def train(dataset: RatingDataset) -> pd.DataFrame:
    # The last interaction (user 3 rates item 10 with 1) is the test row: it must not count.
    return dataset.interactions.iloc[:5]


def test_describe_matches_the_paper_line(dataset: RatingDataset, train: pd.DataFrame) -> None:
    catalog = ItemCatalog(dataset, train)
    assert catalog.describe(10) == (
        "The movie Big Lebowski, The was released in the year 1998 is of Comedy, Crime genre "
        "with historical average rating of 4.00."
    )


def test_average_uses_train_only(dataset: RatingDataset, train: pd.DataFrame) -> None:
    info = ItemCatalog(dataset, train).info(10)
    assert info.avg_rating == pytest.approx((4 + 3 + 5) / 3)
    assert info.n_ratings == 3
    everything = ItemCatalog(dataset, dataset.interactions).info(10)
    assert everything.avg_rating == pytest.approx((4 + 3 + 5 + 1) / 4)


def test_info_fields(dataset: RatingDataset, train: pd.DataFrame) -> None:
    info = ItemCatalog(dataset, train).info(20)
    assert info == ItemInfo(
        item_id=20,
        title="Heat",
        year=1995,
        genres=("Action",),
        avg_rating=2.0,
        n_ratings=1,
        description=None,
        director=None,
        cast="Al Pacino, Robert De Niro",
    )


def test_describe_without_year_genres_or_ratings(
    dataset: RatingDataset, train: pd.DataFrame
) -> None:
    catalog = ItemCatalog(dataset, train)
    assert (
        catalog.describe(30)
        == "The movie Untitled is of unknown genre with historical average rating of 1.00."
    )
    assert catalog.describe(40) == (
        "The movie Nobody Rated was released in the year 2001 is of Drama genre with no historical ratings."
    )
    assert catalog.info(40).avg_rating is None and catalog.info(40).n_ratings == 0


def test_summary_joins_description_and_cast_like_the_paper(
    dataset: RatingDataset, train: pd.DataFrame
) -> None:
    catalog = ItemCatalog(dataset, train)
    first15 = ", ".join(f"Actor {i}" for i in range(1, 16))
    assert catalog.summary(10) == (
        f"A slacker is mistaken for a millionaire.. The cast of the movie is as follows: {first15}"
    )
    assert catalog.summary(20) == "The cast of the movie is as follows: Al Pacino, Robert De Niro"
    assert catalog.summary(40) == "Plot."
    assert catalog.summary(30) is None
    all_cast = ItemCatalog(dataset, train, max_cast=None).summary(10)
    assert all_cast is not None and all_cast.endswith("Actor 18")


def test_unknown_ids_raise(dataset: RatingDataset, train: pd.DataFrame) -> None:
    catalog = ItemCatalog(dataset, train)
    with pytest.raises(
        DataError, match=re.escape("unknown item id 99 in dataset 'toy' (ids run 10-40, 4 items)")
    ):
        catalog.info(99)
    assert 10 in catalog and 99 not in catalog and len(catalog) == 4
    bad_train = pd.DataFrame({"item_id": [10, 77], "rating": [3.0, 4.0]})
    with pytest.raises(
        DataError, match=re.escape("train rates 1 item id(s) not in dataset 'toy' (e.g. 77)")
    ):
        ItemCatalog(dataset, bad_train)
    with pytest.raises(DataError, match="lacks column 'rating'"):
        ItemCatalog(dataset, train.drop(columns="rating"))


def test_stats_frame(dataset: RatingDataset, train: pd.DataFrame) -> None:
    stats = ItemCatalog(dataset, train).stats()
    assert stats.loc[[10, 20, 40], "n_ratings"].tolist() == [3, 1, 0]
    assert pd.isna(stats.loc[40, "avg_rating"])


@pytest.mark.integration
def test_real_ml100k_lebowski_lines(shared_data: Path) -> None:
    ds = load_dataset(
        "ml-100k",
        shared_data / "ml-100k",
        enrichment=shared_data / "enrichment" / "ml-100k-details.csv",
    )
    inter = ds.interactions
    train = inter[inter["user_id"] % 2 == 1]  # any split works; odd users keep Lebowski rated
    catalog = ItemCatalog(ds, train)
    item = int(ds.items.index[ds.items["title"] == "Big Lebowski, The"][0])
    mean = train.loc[train["item_id"] == item, "rating"].mean()
    assert mean != inter.loc[inter["item_id"] == item, "rating"].mean()  # train-only shows
    genres = ", ".join(ds.items.loc[item, "genres"])
    assert catalog.describe(item) == (
        f"The movie Big Lebowski, The was released in the year 1998 is of {genres} genre with "
        f"historical average rating of {mean:.2f}."
    )
    summary = catalog.summary(item)
    assert summary is not None
    # The paper's example cast stops at the 15th name, John Turturro.
    assert summary.endswith("Jimmie Dale Gilmore, Jack Kehler, John Turturro")
