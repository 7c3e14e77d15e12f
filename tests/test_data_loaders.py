"""Loaders: each MovieLens format and the generic CSV/parquet loader on small files written here,
every malformed case, skip_bad_rows, load_dataset, and (marked integration) the real dataset facts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsim_personas.data import (
    RatingScale,
    enrich_items,
    load_csv,
    load_dataset,
    load_ml1m,
    load_ml100k,
    load_ml_latest_small,
)
from recsim_personas.data.movielens import ML100K_GENRES
from recsim_personas.errors import ConfigError, DataError

# --------------------------------------------------------------------------------------------
# Writers for small files in each format


def _flags(*genres: str) -> str:
    return "|".join("1" if g in genres else "0" for g in ML100K_GENRES)


ML100K_ITEMS = [
    f"1|Toy Story (1995)|01-Jan-1995||http://imdb/1|{_flags('Animation', 'Comedy')}",
    f"2|Big Lebowski, The (1998)|06-Mar-1998||http://imdb/2|{_flags('Comedy', 'Crime')}",
    f"3|Café au lait (1993)|01-Jan-1993||http://imdb/3|{_flags('Drama')}",
    f"4|unknown||||{_flags('unknown')}",
]
ML100K_USERS = ["1|24|M|technician|85711", "2|53|F|other|94043", "3|23|M|writer|32067"]
ML100K_RATINGS = [
    "1\t1\t5\t881250949",
    "1\t2\t3\t881250950",
    "2\t1\t4\t881250951",
    "2\t3\t1\t881250952",
    "3\t4\t2\t881250953",
]


def write_ml100k(
    folder: Path, ratings: list[str] | None = None, items: list[str] | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("\n".join(ML100K_RATINGS if ratings is None else ratings) + "\n")
    (folder / "u.item").write_bytes(
        ("\n".join(ML100K_ITEMS if items is None else items) + "\n").encode("latin-1")
    )
    (folder / "u.user").write_text("\n".join(ML100K_USERS) + "\n")
    (folder / "u.genre").write_text(
        "".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)) + "\n"
    )
    return folder


ML1M_MOVIES = [
    "1::Toy Story (1995)::Animation|Children's|Comedy",
    '2::"Great Performances" Cats (1998)::Musical',
    "3::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi",
]
ML1M_USERS = ["1::F::1::10::48067", "2::M::56::16::70072"]
ML1M_RATINGS = ["1::1::5::978300760", "1::2::3::978302109", "2::3::4::978301968"]


def write_ml1m(folder: Path, ratings: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movies.dat").write_bytes(("\n".join(ML1M_MOVIES) + "\n").encode("latin-1"))
    (folder / "users.dat").write_text("\n".join(ML1M_USERS) + "\n")
    (folder / "ratings.dat").write_text(
        "\n".join(ML1M_RATINGS if ratings is None else ratings) + "\n"
    )
    return folder


LS_MOVIES = [
    "movieId,title,genres",
    "1,Toy Story (1995),Adventure|Animation",
    '11,"American President, The (1995)",Comedy|Drama',
    '12,"""Great Performances"" Cats (1998)",Musical',
    "13,Ready Player One,(no genres listed)",
]
LS_RATINGS = [
    "userId,movieId,rating,timestamp",
    "1,1,4.0,964982703",
    "1,11,3.5,964981247",
    "2,12,0.5,964982224",
    "2,13,5.0,964983815",
]


def write_latest_small(
    folder: Path, ratings: list[str] | None = None, movies: list[str] | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movies.csv").write_text(
        "\n".join(LS_MOVIES if movies is None else movies) + "\n", encoding="utf-8"
    )
    (folder / "ratings.csv").write_text(
        "\n".join(LS_RATINGS if ratings is None else ratings) + "\n"
    )
    (folder / "links.csv").write_text(
        "movieId,imdbId,tmdbId\n1,0114709,862\n11,0112346,\n12,0173714,1\n13,1677720,333339\n"
    )
    return folder


# --------------------------------------------------------------------------------------------
# Happy paths


def test_ml100k_loads_items_users_and_ratings(tmp_path: Path) -> None:
    ds = load_ml100k(write_ml100k(tmp_path / "ml-100k"))
    assert ds.name == "ml-100k"
    assert (ds.n_ratings, ds.n_users, ds.n_items) == (5, 3, 4)
    assert ds.scale == RatingScale(1.0, 5.0, 1.0)
    assert list(ds.interactions.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert ds.interactions.dtypes.astype(str).tolist() == ["int64", "int64", "float64", "int64"]
    assert ds.interactions["rating"].tolist() == [5.0, 3.0, 4.0, 1.0, 2.0]
    items = ds.items
    assert items.loc[2, "title"] == "Big Lebowski, The"
    assert items.loc[2, "year"] == 1998
    assert items.loc[2, "genres"] == ("Comedy", "Crime")
    assert items.loc[3, "title"] == "Café au lait"  # Latin-1 decoded
    assert items.loc[4, "title"] == "unknown" and pd.isna(items.loc[4, "year"])
    assert items.loc[4, "genres"] == ()  # the "unknown" flag means no genre
    assert str(items["year"].dtype) == "Int64"
    assert items.loc[1, "description"] is None
    assert ds.users.loc[2].to_dict() == {
        "age": 53,
        "gender": "F",
        "occupation": "other",
        "zip_code": "94043",
    }


def test_ml100k_folder_may_be_the_parent(tmp_path: Path) -> None:
    write_ml100k(tmp_path / "ml-100k")
    assert load_ml100k(tmp_path).n_ratings == 5


def test_ml1m_loads_double_colon_format(tmp_path: Path) -> None:
    ds = load_ml1m(write_ml1m(tmp_path))
    assert (ds.n_ratings, ds.n_users, ds.n_items) == (3, 2, 3)
    assert ds.items.loc[2, "title"] == '"Great Performances" Cats'
    assert ds.items.loc[3, "title"] == "Cité des enfants perdus, La"
    assert ds.items.loc[1, "genres"] == ("Animation", "Children's", "Comedy")
    assert ds.users.loc[1, "age_group"] == "Under 18"
    assert ds.users.loc[1, "occupation"] == "K-12 student"
    assert ds.users.loc[2, "occupation"] == "self-employed"


def test_ml_latest_small_reads_quoted_csv(tmp_path: Path) -> None:
    ds = load_ml_latest_small(write_latest_small(tmp_path))
    assert ds.scale == RatingScale(0.5, 5.0, 0.5)
    assert ds.items.loc[11, "title"] == "American President, The"
    assert ds.items.loc[12, "title"] == '"Great Performances" Cats'
    assert ds.items.loc[13, "genres"] == () and pd.isna(ds.items.loc[13, "year"])
    assert ds.items.loc[1, "imdb_id"] == "0114709"
    assert pd.isna(ds.items.loc[11, "tmdb_id"])
    assert ds.interactions["rating"].tolist() == [4.0, 3.5, 0.5, 5.0]
    assert ds.users.index.tolist() == [1, 2] and ds.users.columns.empty


def test_crlf_blank_lines_and_bom_are_tolerated(tmp_path: Path) -> None:
    folder = write_latest_small(tmp_path)
    text = "\ufeff" + "\r\n".join([*LS_RATINGS[:3], "", *LS_RATINGS[3:]]) + "\r\n"
    (folder / "ratings.csv").write_bytes(text.encode("utf-8"))
    assert load_ml_latest_small(folder).n_ratings == 4


def test_load_csv_maps_columns_and_items(tmp_path: Path) -> None:
    ratings = tmp_path / "r.csv"
    ratings.write_text("u;i;stars;when\n7;100;2;10\n7;101;3;11\n8;100;1;12\n")
    items = tmp_path / "items.csv"
    items.write_text(
        'iid;name;kinds;plot\n100;"Alien; The (1979)";Horror|Sci-Fi;In space\n101;Heat;;\n'
    )
    ds = load_csv(
        ratings,
        columns={"user_id": "u", "item_id": "i", "rating": "stars", "timestamp": "when"},
        scale=RatingScale(1, 3, 1),
        sep=";",
        items_path=items,
        item_columns={"item_id": "iid", "title": "name", "genres": "kinds", "description": "plot"},
    )
    assert ds.name == "r" and ds.n_ratings == 3
    assert ds.interactions["timestamp"].tolist() == [10, 11, 12]
    assert ds.items.loc[100, "title"] == "Alien; The" and ds.items.loc[100, "year"] == 1979
    assert ds.items.loc[100, "genres"] == ("Horror", "Sci-Fi")
    assert ds.items.loc[100, "description"] == "In space"
    assert ds.items.loc[101, "genres"] == () and ds.items.loc[101, "description"] is None


def test_load_csv_without_timestamp_uses_row_order_and_reads_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user": [1, 1, 2], "item": [5, 6, 5], "score": [0.5, 1.0, 0.0]})
    path = tmp_path / "r.parquet"
    frame.to_parquet(path)
    ds = load_csv(
        path,
        columns={"user_id": "user", "item_id": "item", "rating": "score"},
        scale=RatingScale(0, 1, 0.5),
    )
    assert ds.interactions["timestamp"].tolist() == [0, 1, 2]
    assert ds.items.index.tolist() == [5, 6]
    assert ds.source["format"] == "parquet"


def test_load_csv_bad_mapping_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("u,i,r\n1,2,3\n")
    with pytest.raises(
        ConfigError, match=re.escape("unknown key 'user'") + ".*Did you mean 'user_id'"
    ):
        load_csv(
            path, columns={"user": "u", "item_id": "i", "rating": "r"}, scale=RatingScale(1, 5, 1)
        )


def test_load_csv_parquet_bad_values_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    pd.DataFrame({"u": [1, 2, 3], "i": [1, 1, 1], "r": [3.0, None, 9.0]}).to_parquet(path)
    with pytest.raises(
        DataError, match=re.escape(f"{path}: row 2, field 'r': empty value (1 more bad row: 3)")
    ):
        load_csv(
            path,
            columns={"user_id": "u", "item_id": "i", "rating": "r"},
            scale=RatingScale(1, 5, 1),
        )


# --------------------------------------------------------------------------------------------
# Malformed input: one DataError naming file, line and field


def test_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    folder = write_ml100k(tmp_path, ratings=[*ML100K_RATINGS[:2], "2\t1\t4", *ML100K_RATINGS[3:]])
    with pytest.raises(
        DataError,
        match=re.escape(
            f"{folder / 'u.data'}: line 3, field 'timestamp': missing: the line has 3 fields where 4 are expected"
        ),
    ):
        load_ml100k(folder)


def test_extra_field_is_reported(tmp_path: Path) -> None:
    folder = write_ml1m(
        tmp_path, ratings=[*ML1M_RATINGS[:1], "1::2::3::978302109::9", ML1M_RATINGS[2]]
    )
    with pytest.raises(
        DataError, match=r"ratings\.dat: line 2, field '#5 \(extra\)': unexpected extra field"
    ):
        load_ml1m(folder)


def test_wrong_separator_is_named(tmp_path: Path) -> None:
    folder = write_ml100k(tmp_path, ratings=[r.replace("\t", ",") for r in ML100K_RATINGS])
    with pytest.raises(
        DataError,
        match=r"u\.data: line 1, field 'item_id': missing.*it contains ',': wrong separator\? \(the format uses TAB\).*\(4 more bad lines: 2, 3, 4, 5\)",
    ):
        load_ml100k(folder)


def test_wrong_separator_in_csv_header(tmp_path: Path) -> None:
    folder = write_latest_small(tmp_path, ratings=[r.replace(",", ";") for r in LS_RATINGS])
    with pytest.raises(
        DataError,
        match=r"ratings\.csv: line 1 \(header\), field 'userId': column missing.*wrong separator",
    ):
        load_ml_latest_small(folder)


def test_non_numeric_rating(tmp_path: Path) -> None:
    folder = write_ml100k(
        tmp_path, ratings=[*ML100K_RATINGS[:3], "2\t3\tfive\t881250952", ML100K_RATINGS[4]]
    )
    with pytest.raises(DataError, match=r"u\.data: line 4, field 'rating': 'five' is not a number"):
        load_ml100k(folder)


def test_non_integer_id(tmp_path: Path) -> None:
    folder = write_ml100k(tmp_path, ratings=[*ML100K_RATINGS[:4], "3\t4.5\t2\t881250953"])
    with pytest.raises(
        DataError, match=r"u\.data: line 5, field 'item_id': 4\.5 is not an integer"
    ):
        load_ml100k(folder)


@pytest.mark.parametrize(("value", "shown"), [("6", "6"), ("0", "0"), ("3.5", "3.5")])
def test_rating_off_the_integer_scale(tmp_path: Path, value: str, shown: str) -> None:
    folder = write_ml100k(
        tmp_path, ratings=[*ML100K_RATINGS[:1], f"1\t2\t{value}\t881250950", *ML100K_RATINGS[2:]]
    )
    with pytest.raises(
        DataError, match=re.escape(f"line 2, field 'rating': {shown} is off the 1-5 scale (step 1)")
    ):
        load_ml100k(folder)


def test_rating_off_the_half_star_scale(tmp_path: Path) -> None:
    folder = write_latest_small(
        tmp_path, ratings=[*LS_RATINGS[:2], "1,11,3.25,964981247", *LS_RATINGS[3:]]
    )
    with pytest.raises(
        DataError,
        match=re.escape(
            "ratings.csv: line 3, field 'rating': 3.25 is off the 0.5-5 scale (step 0.5)"
        ),
    ):
        load_ml_latest_small(folder)


def test_missing_column_suggests_the_close_one(tmp_path: Path) -> None:
    folder = write_latest_small(
        tmp_path, ratings=["userId,movieId,ratings,timestamp", "1,1,4.0,964982703"]
    )
    with pytest.raises(
        DataError,
        match=r"ratings\.csv: line 1 \(header\), field 'rating': column missing.*Did you mean 'ratings'\?",
    ):
        load_ml_latest_small(folder)


def test_duplicate_pair_names_both_lines(tmp_path: Path) -> None:
    folder = write_ml100k(tmp_path, ratings=[*ML100K_RATINGS, "1\t2\t4\t881250999"])
    with pytest.raises(
        DataError,
        match=re.escape(
            "u.data: line 6, field 'user_id, item_id': duplicate rating of item 2 by user 1 (first at line 2)"
        ),
    ):
        load_ml100k(folder)


def test_unknown_item_id(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path, ratings=[*ML1M_RATINGS, "2::99::4::978301968"])
    with pytest.raises(
        DataError,
        match=re.escape(
            "ratings.dat: line 4, field 'item_id': unknown item id 99 (not in movies.dat)"
        ),
    ):
        load_ml1m(folder)


def test_bad_genre_flag_in_item_file(tmp_path: Path) -> None:
    items = [*ML100K_ITEMS[:3], ML100K_ITEMS[3].replace("|1|", "|2|", 1)]
    folder = write_ml100k(tmp_path, items=items)
    with pytest.raises(
        DataError,
        match=r"u\.item: line 4, field 'genre flag': genre flag 'unknown' is 2, expected 0 or 1",
    ):
        load_ml100k(folder)


def test_line_numbers_count_blank_lines_and_multiline_quoted_fields(tmp_path: Path) -> None:
    movies = [
        "movieId,title,genres",
        '1,"A film\nwith a two-line title (1990)",Drama',
        "",
        "1,Again (1991),Drama",
    ]
    folder = write_latest_small(
        tmp_path, movies=movies, ratings=["userId,movieId,rating,timestamp", "1,1,4.0,1"]
    )
    with pytest.raises(
        DataError,
        match=re.escape("movies.csv: line 5, field 'movieId': duplicate id 1 (first at line 2)"),
    ):
        load_ml_latest_small(folder)


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    folder = write_latest_small(tmp_path)
    (folder / "movies.csv").write_bytes(
        b"movieId,title,genres\n1,Toy Story (1995),A\n2,Caf\xe9 (1990),B\n"
    )
    with pytest.raises(
        DataError,
        match=r"movies\.csv: line 3, field 'encoding': byte 0xe9 at byte offset 47 is not utf-8; "
        r"pass --encoding latin-1 \(Python: encoding='latin-1'\)",
    ):
        load_ml_latest_small(folder)


def test_missing_file_and_wrong_folder(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=re.escape("does not hold ml-100k: expected u.data, u.item")
    ):
        load_ml100k(tmp_path)
    with pytest.raises(DataError, match="data folder not found"):
        load_ml1m(tmp_path / "nope")


def test_many_bad_lines_are_counted_in_the_message(tmp_path: Path) -> None:
    bad = [f"1\t{i}\t9\t1" for i in range(1, 5)]
    folder = write_ml100k(tmp_path, ratings=[*bad, *ML100K_RATINGS[2:]])
    with pytest.raises(
        DataError, match=re.escape("(3 more bad lines: 2, 3, 4)") + ".*skip_bad_rows=True"
    ):
        load_ml100k(folder)


# --------------------------------------------------------------------------------------------
# skip_bad_rows: drop and report how many


def test_skip_bad_rows_drops_and_reports(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ratings = [
        *ML100K_RATINGS,
        "1\t3\t9\t1",  # off scale
        "2\t2",  # missing fields
        "1\t2\t4\t2",  # duplicate of line 2
        "3\t77\t4\t3",  # unknown item
        "",  # blank line: not data, not counted
        "3\t3\tx\t4",  # not a number
    ]
    folder = write_ml100k(tmp_path, ratings=ratings)
    with caplog.at_level("WARNING", logger="recsim_personas.data"):
        ds = load_ml100k(folder, skip_bad_rows=True)
    assert ds.n_ratings == 5
    assert ds.report.skipped == {"u.data": 5}
    assert ds.report.total_skipped == 5
    assert any("line 6, field 'rating'" in e for e in ds.report.examples)
    assert any("skipped 5 bad lines" in r.getMessage() for r in caplog.records)
    # the first occurrence of the duplicate pair is kept
    kept = ds.interactions.set_index(["user_id", "item_id"])["rating"]
    assert kept.loc[(1, 2)] == 3.0


def test_skip_bad_rows_with_nothing_left_raises(tmp_path: Path) -> None:
    folder = write_ml100k(tmp_path, ratings=[r.replace("\t", ";") for r in ML100K_RATINGS])
    with pytest.raises(DataError, match=r"no valid rows left after skipping 5 bad lines"):
        load_ml100k(folder, skip_bad_rows=True)


def test_skip_bad_rows_in_the_item_file_reports_and_ratings_then_fail(tmp_path: Path) -> None:
    items = [*ML100K_ITEMS[:3], "4|unknown||||0|1"]
    folder = write_ml100k(tmp_path, items=items, ratings=ML100K_RATINGS[:4])
    ds = load_ml100k(folder, skip_bad_rows=True)
    assert ds.report.skipped == {"u.item": 1}
    assert 4 not in ds.items.index


# --------------------------------------------------------------------------------------------
# load_dataset


def test_load_dataset_unknown_name_suggests() -> None:
    with pytest.raises(
        DataError, match=re.escape("unknown dataset 'ml-100'") + ".*Did you mean 'ml-100k'"
    ):
        load_dataset("ml-100")


def test_load_dataset_not_downloaded_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSIM_PERSONAS_CACHE", str(tmp_path))
    with pytest.raises(
        DataError, match=re.escape("run `recsim-personas data download ml-1m`") + ".*--data-dir"
    ):
        load_dataset("ml-1m")


def test_load_dataset_reads_data_dir_and_enrichment(tmp_path: Path) -> None:
    write_ml100k(tmp_path / "ml-100k")
    enrichment = tmp_path / "details.csv"
    enrichment.write_text(
        "movie_id,description,director,cast\n"
        "2,\"The Dude\nabides.\",['Joel Coen'],\"['Jeff Bridges', 'John Goodman']\"\n"
        "1,\"It looks like we don't have any Plot Summaries for this title yet.\",['nan'],['nan']\n"
        "999,Not in the dataset,[],[]\n"
    )
    ds = load_dataset("ml-100k", tmp_path, enrichment=enrichment)
    assert ds.items.loc[2, "description"] == "The Dude abides."
    assert ds.items.loc[2, "director"] == "Joel Coen"
    assert ds.items.loc[2, "cast"] == "Jeff Bridges, John Goodman"
    assert ds.items.loc[1, ["description", "director", "cast"]].tolist() == [None, None, None]
    assert any("1 ids not in ml-100k" in n for n in ds.report.notes)
    assert ds.source["enrichment"] == str(enrichment)


def test_enrichment_duplicate_id_is_an_error(tmp_path: Path) -> None:
    ds = load_ml100k(write_ml100k(tmp_path / "d"))
    path = tmp_path / "e.csv"
    path.write_text("movie_id,description\n1,a\n2,b\n1,c\n")
    with pytest.raises(
        DataError,
        match=re.escape("e.csv: line 4, field 'movie_id': duplicate item id 1 (first at line 2)"),
    ):
        enrich_items(ds, path)
    with pytest.raises(DataError, match=r"id column missing.*Did you mean 'movie_id'"):
        enrich_items(ds, path, id_column="movieid")


def test_embedded_default_reproduces_published_facts() -> None:
    ds = load_dataset("ml-latest-small")
    assert (ds.n_ratings, ds.n_users, ds.n_items) == (100_836, 610, 9_724)
    assert round(float(ds.interactions["rating"].mean()), 5) == 3.50156
    assert ds.report.total_skipped == 0


# --------------------------------------------------------------------------------------------
# Real data (../shared/data): the dataset facts


@pytest.mark.integration
def test_real_ml100k_facts(shared_data: Path) -> None:
    ds = load_dataset("ml-100k", shared_data / "ml-100k")
    assert (ds.n_ratings, ds.n_users, ds.n_items) == (100_000, 943, 1_682)
    assert round(float(ds.interactions["rating"].mean()), 5) == 3.52986
    assert len(ds.users) == 943 and {"age", "gender", "occupation"} <= set(ds.users.columns)
    # genres agree with an independent read of u.item's 19 flags (the "unknown" flag means none)
    raw = pd.read_csv(shared_data / "ml-100k" / "u.item", sep="|", header=None, encoding="latin-1")
    flags = raw.iloc[:, 6:].to_numpy() == 1  # skip "unknown" (column 5)
    names = np.array(ML100K_GENRES[1:], dtype=object)
    expected = pd.Series([tuple(names[row]) for row in flags], index=raw[0].to_numpy())
    assert ds.items["genres"].equals(expected.rename("genres").rename_axis("item_id"))


@pytest.mark.integration
def test_real_ml_latest_small_facts(shared_data: Path) -> None:
    ds = load_dataset("ml-latest-small", shared_data / "ml-latest-small")
    assert (ds.n_ratings, ds.n_users, ds.n_items) == (100_836, 610, 9_724)
    assert round(float(ds.interactions["rating"].mean()), 5) == 3.50156
    embedded = load_dataset("ml-latest-small")
    assert ds.fingerprint() == embedded.fingerprint()


@pytest.mark.integration
def test_real_ml1m_prefix_facts(shared_data: Path) -> None:
    ds = load_dataset("ml-1m", shared_data / "ml-1m-users-1-2999")
    assert ds.n_ratings == 487_650
    assert ds.n_users == 2_999
    assert ds.interactions["user_id"].max() == 2_999
    assert len(ds.users) == 6_040 and len(ds.items) == 3_883


@pytest.mark.integration
def test_real_ml100k_enrichment_join(shared_data: Path) -> None:
    path = shared_data / "enrichment" / "ml-100k-details.csv"
    ds = load_dataset("ml-100k", shared_data / "ml-100k", enrichment=path)
    # Independent count: rows whose description is not IMDb's "no summary" placeholder.
    raw = pd.read_csv(path)
    placeholder = raw["description"].str.startswith(
        "It looks like we don't have any Plot Summaries"
    )
    expected = int(
        (raw["movie_id"].isin(ds.items.index) & ~placeholder & raw["description"].notna()).sum()
    )
    got = int(ds.items["description"].notna().sum())
    assert got == expected
    assert 1_400 < got < len(ds.items)
    lebowski = ds.items[ds.items["title"] == "Big Lebowski, The"].iloc[0]
    assert lebowski["cast"].startswith("Jeff Bridges, John Goodman, Julianne Moore")
    assert not ds.items["cast"].dropna().str.contains(r"\[|'nan'").any()
    assert np.all(ds.items["description"].dropna().map(lambda s: "\n" not in s))


def test_stray_quote_inside_a_field_is_read_literally(tmp_path: Path) -> None:
    movies = ["movieId,title,genres", '1,Foo "bar (1990),Drama', "11,Baz (1991),Comedy"]
    ratings = ["userId,movieId,rating,timestamp", "1,1,4.0,1", "1,11,3.0,2"]
    ds = load_ml_latest_small(write_latest_small(tmp_path, movies=movies, ratings=ratings))
    assert ds.items.loc[1, "title"] == 'Foo "bar'
    # a real field-count error in a file with quotes still names its line
    movies.append('12,"Quoted, title (1992)",Drama,extra')
    (tmp_path / "movies.csv").write_text("\n".join(movies) + "\n")
    with pytest.raises(
        DataError, match=r"movies\.csv: line 4, field '#4 \(extra\)': unexpected extra field"
    ):
        load_ml_latest_small(tmp_path)


def test_id_too_large_for_int64(tmp_path: Path) -> None:
    folder = write_ml100k(tmp_path, ratings=[*ML100K_RATINGS, "1\t99999999999999999999999\t3\t1"])
    with pytest.raises(DataError, match=r"line 6, field 'item_id': 1e\+23 does not fit in int64"):
        load_ml100k(folder)


def test_enrichment_from_a_frame(tmp_path: Path) -> None:
    ds = load_ml100k(write_ml100k(tmp_path))
    frame = pd.DataFrame({"item_id": [1, 2], "cast": [["A", "B"], "['C']"]})
    out = enrich_items(ds, frame)
    assert out.items.loc[[1, 2], "cast"].tolist() == ["A, B", "C"]
    assert ds.items.loc[1, "cast"] is None  # the input dataset is not modified
    with pytest.raises(DataError, match="item id 1 appears more than once"):
        enrich_items(ds, pd.DataFrame({"item_id": [1, 1], "cast": ["A", "B"]}))


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_ratings_file(tmp_path: Path, content: str) -> None:
    folder = write_ml100k(tmp_path)
    (folder / "u.data").write_text(content)
    with pytest.raises(DataError, match=r"u\.data: no ratings in the file"):
        load_ml100k(folder)
    header_only = write_latest_small(tmp_path / "ls", ratings=["userId,movieId,rating,timestamp"])
    with pytest.raises(DataError, match=r"ratings\.csv: no ratings in the file"):
        load_ml_latest_small(header_only)


def test_unbalanced_quote_is_reported(tmp_path: Path) -> None:
    movies = [
        "movieId,title,genres",
        "1,Toy Story (1995),Drama",
        '11,"Never closed (1991),Comedy',
        "12,Fine (1992),Drama",
    ]
    folder = write_latest_small(
        tmp_path, movies=movies, ratings=["userId,movieId,rating,timestamp", "1,1,4.0,1"]
    )
    with pytest.raises(DataError, match=r"movies\.csv: line 3, field 'genres': missing"):
        load_ml_latest_small(folder)
