"""Loaders for the GroupLens MovieLens releases in their original formats.

* ``ml-latest-small`` (2018): ``ratings.csv``, ``movies.csv`` (quoted CSV, UTF-8), ``links.csv``;
  half-star scale 0.5-5. Vendored in the package (its README allows redistribution).
* ``ml-100k``: ``u.data`` (tab-separated), ``u.item`` (``|``, Latin-1, 19 genre flags named by
  ``u.genre``), ``u.user``; scale 1-5.
* ``ml-1m``: ``ratings.dat``, ``movies.dat`` (Latin-1), ``users.dat``, all ``::``-separated; scale
  1-5. The loader reads the full ``ratings.dat`` and any prefix of it (e.g. only users 1-2999).

Each loader takes the folder holding the files (or its parent, when the files sit in a
sub-folder named like the dataset, as the archives extract).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from recsim_personas.data.dataset import (
    LoadReport,
    RatingDataset,
    RatingScale,
    make_items_frame,
    split_title_year,
)
from recsim_personas.data.delimited import read_table
from recsim_personas.data.interactions import ratings_dataset
from recsim_personas.errors import DataError

__all__ = [
    "HALF_STAR_SCALE",
    "ML1M_AGE_GROUPS",
    "ML1M_OCCUPATIONS",
    "ML100K_GENRES",
    "MOVIELENS_FILES",
    "STAR_SCALE",
    "embedded_ml_latest_small",
    "load_ml1m",
    "load_ml100k",
    "load_ml_latest_small",
    "resolve_data_dir",
]

#: Integer 1-5 stars (ml-100k, ml-1m).
STAR_SCALE = RatingScale(1.0, 5.0, 1.0)
#: Half stars 0.5-5 (ml-latest-small).
HALF_STAR_SCALE = RatingScale(0.5, 5.0, 0.5)

#: Files each loader needs (the first one identifies the folder).
MOVIELENS_FILES: dict[str, tuple[str, ...]] = {
    "ml-latest-small": ("ratings.csv", "movies.csv"),
    "ml-100k": ("u.data", "u.item", "u.user", "u.genre"),
    "ml-1m": ("ratings.dat", "movies.dat", "users.dat"),
}

#: ml-100k genre names in flag order, used only when ``u.genre`` is absent (from its README).
ML100K_GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
# Markers that mean "no genre"; an item with only these gets an empty genres tuple.
_NO_GENRE = {"unknown", "(no genres listed)"}

#: ML-1M ``users.dat`` age codes -> range (from the ML-1M README).
ML1M_AGE_GROUPS: dict[int, str] = {
    1: "Under 18",
    18: "18-24",
    25: "25-34",
    35: "35-44",
    45: "45-49",
    50: "50-55",
    56: "56+",
}
#: ML-1M ``users.dat`` occupation codes -> name (from the ML-1M README).
ML1M_OCCUPATIONS: dict[int, str] = {
    0: "other",
    1: "academic/educator",
    2: "artist",
    3: "clerical/admin",
    4: "college/grad student",
    5: "customer service",
    6: "doctor/health care",
    7: "executive/managerial",
    8: "farmer",
    9: "homemaker",
    10: "K-12 student",
    11: "lawyer",
    12: "programmer",
    13: "retired",
    14: "sales/marketing",
    15: "scientist",
    16: "self-employed",
    17: "technician/engineer",
    18: "tradesman/craftsman",
    19: "unemployed",
    20: "writer",
}

_RATING_NAMES = ("user_id", "item_id", "rating", "timestamp")
_RATING_KINDS = {"user_id": "int", "item_id": "int", "rating": "float", "timestamp": "int"}
# The fields of each release's user file, in file order, and how each is parsed.
_ML100K_USERS = {"user_id": "int", "age": "int", "gender": "str", "occupation": "str", "zip_code": "str"}
_ML1M_USERS = {"user_id": "int", "gender": "str", "age": "int", "occupation": "int", "zip_code": "str"}


def resolve_data_dir(path: str | os.PathLike[str], name: str) -> Path:
    """The folder holding ``name``'s files: ``path`` itself or ``path/<name>``.

    Raises:
        DataError: Neither holds the files; the message lists what is expected.
    """
    path = Path(path)
    marker = MOVIELENS_FILES[name][0]
    for candidate in (path, path / name):
        if (candidate / marker).is_file():
            return candidate
    if not path.exists():
        raise DataError(f"data folder not found: {path} (expected the extracted {name} files)")
    raise DataError(
        f"{path} does not hold {name}: expected {', '.join(MOVIELENS_FILES[name])} in it (or in "
        f"{path / name}); point --data-dir / data_dir at the folder the {name}.zip archive extracts to"
    )


def _genre_tuples(lists: pd.Series) -> list[tuple[str, ...]]:
    out = []
    for genres in lists:
        kept = tuple(g for g in genres if g and g not in _NO_GENRE)
        out.append(kept)
    return out


# ---------------------------------------------------------------------------------------------
# ml-latest-small


def load_ml_latest_small(
    path: str | os.PathLike[str], *, skip_bad_rows: bool = False
) -> RatingDataset:
    """Load GroupLens ml-latest-small from its CSV files.

    Args:
        path: Folder with ``ratings.csv`` and ``movies.csv`` (``links.csv`` adds IMDb/TMDB ids).
        skip_bad_rows: Drop bad rows and count them in ``dataset.report`` instead of raising.

    Returns:
        The dataset on the half-star scale; items carry ``imdb_id`` and ``tmdb_id`` when
        ``links.csv`` is present.

    Raises:
        DataError: Missing files or columns, or bad rows (file, line and field named).
    """
    folder = resolve_data_dir(path, "ml-latest-small")
    report = LoadReport()
    movies = read_table(
        folder / "movies.csv",
        sep=",",
        quoted=True,
        columns={"movieId": "int", "title": "str", "genres": "str"},
    )
    movies.flag_duplicate_ids("movieId")
    mframe = movies.resolve(skip_bad_rows=skip_bad_rows, report=report)
    title, year = split_title_year(mframe["title"])
    genres = _genre_tuples(mframe["genres"].fillna("").str.split("|"))
    extra: dict[str, object] = {}
    links_path = folder / "links.csv"
    if links_path.is_file():
        links = read_table(
            links_path,
            sep=",",
            quoted=True,
            columns={"movieId": "int", "imdbId": "str", "tmdbId": "str"},
        )
        links.flag_duplicate_ids("movieId")
        lframe = links.resolve(skip_bad_rows=skip_bad_rows, report=report).set_index("movieId")
        lframe = lframe.reindex(mframe["movieId"].to_numpy())
        extra["imdb_id"] = (
            lframe["imdbId"]
            .where(lframe["imdbId"].notna() & (lframe["imdbId"] != ""), None)
            .tolist()
        )
        tmdb = pd.to_numeric(lframe["tmdbId"].replace("", None), errors="coerce").astype("Int64")
        extra["tmdb_id"] = tmdb.tolist()
    items = make_items_frame(mframe["movieId"], title, genres, year, **extra)

    ratings = read_table(
        folder / "ratings.csv",
        sep=",",
        quoted=True,
        columns={"userId": "int", "movieId": "int", "rating": "float", "timestamp": "int"},
    )
    ratings.frame.columns = list(_RATING_NAMES)
    return ratings_dataset(
        ratings,
        name="ml-latest-small",
        scale=HALF_STAR_SCALE,
        source={"path": str(folder), "format": "ml-latest-small"},
        report=report,
        skip_bad_rows=skip_bad_rows,
        items=items,
        item_file="movies.csv",
        fields={"user_id": "userId", "item_id": "movieId"},
    )


def embedded_ml_latest_small(*, skip_bad_rows: bool = False) -> RatingDataset:
    """The copy of ml-latest-small vendored in the package (read via :mod:`importlib.resources`)."""
    ref = resources.files("recsim_personas.data").joinpath("ml_latest_small")
    with resources.as_file(ref) as folder:
        dataset = load_ml_latest_small(folder, skip_bad_rows=skip_bad_rows)
    dataset.source = {
        "path": "embedded:recsim_personas/data/ml_latest_small",
        "format": "ml-latest-small",
    }
    return dataset


# ---------------------------------------------------------------------------------------------
# ml-100k


def _ml100k_genres(folder: Path, skip_bad_rows: bool, report: LoadReport) -> list[str]:
    path = folder / "u.genre"
    if not path.is_file():
        return list(ML100K_GENRES)
    table = read_table(
        path, sep="|", names=("genre", "index"), columns={"genre": "str", "index": "int"}
    )
    table.flag_duplicate_ids("index")
    frame = table.resolve(skip_bad_rows=skip_bad_rows, report=report).sort_values("index")
    expected = np.arange(len(frame))
    if not np.array_equal(frame["index"].to_numpy(), expected):
        raise DataError(
            f"{path}: field 'index': genre indexes must run 0..{len(frame) - 1} without gaps, "
            f"got {frame['index'].tolist()}"
        )
    return frame["genre"].astype(str).str.strip().tolist()


def load_ml100k(path: str | os.PathLike[str], *, skip_bad_rows: bool = False) -> RatingDataset:
    """Load MovieLens-100K from ``u.data``, ``u.item``, ``u.user`` and ``u.genre``.

    Args:
        path: Folder with the files (as the ``ml-100k.zip`` archive extracts them).
        skip_bad_rows: Drop bad rows and count them in ``dataset.report`` instead of raising.

    Returns:
        The dataset on the 1-5 scale; items carry ``release_date`` and ``imdb_url``; users have
        ``age``, ``gender``, ``occupation``, ``zip_code``.

    Raises:
        DataError: Missing files, or bad rows (file, line and field named).
    """
    folder = resolve_data_dir(path, "ml-100k")
    report = LoadReport()
    genre_names = _ml100k_genres(folder, skip_bad_rows, report)
    flag_cols = [f"genre:{g}" for g in genre_names]
    item_names = ("item_id", "title", "release_date", "video_release_date", "imdb_url", *flag_cols)
    item_kinds = {"item_id": "int", "title": "str", "release_date": "str", "imdb_url": "str"}
    item_kinds.update(dict.fromkeys(flag_cols, "int"))
    items_t = read_table(
        folder / "u.item", sep="|", names=item_names, columns=item_kinds, encoding="latin-1"
    )
    items_t.flag_duplicate_ids("item_id")
    flags = items_t.frame[flag_cols].to_numpy(dtype=np.float64)
    bad_flag = ~np.isin(flags, (0.0, 1.0)) & ~np.isnan(flags)
    if bad_flag.any():
        rows = bad_flag.any(axis=1)
        first_col = bad_flag.argmax(axis=1)
        items_t.flag(
            rows,
            "genre flag",
            lambda pos: (
                f"genre flag {flag_cols[first_col[pos]][6:]!r} is {flags[pos, first_col[pos]]:g}, expected 0 or 1"
            ),
        )
    iframe = items_t.resolve(skip_bad_rows=skip_bad_rows, report=report)
    title, year = split_title_year(iframe["title"])
    flag_matrix = iframe[flag_cols].to_numpy(dtype=np.int64) == 1
    names = np.asarray(genre_names, dtype=object)
    genres = _genre_tuples(pd.Series([tuple(names[row]) for row in flag_matrix], dtype=object))
    items = make_items_frame(
        iframe["item_id"],
        title,
        genres,
        year,
        release_date=iframe["release_date"].where(iframe["release_date"] != "", None),
        imdb_url=iframe["imdb_url"].where(iframe["imdb_url"] != "", None),
    )

    users_t = read_table(
        folder / "u.user", sep="|", names=tuple(_ML100K_USERS), columns=_ML100K_USERS,
        encoding="latin-1",
    )
    users_t.flag_duplicate_ids("user_id")
    uframe = users_t.resolve(skip_bad_rows=skip_bad_rows, report=report)
    users = uframe.set_index("user_id")

    return _star_dataset(
        "ml-100k", folder / "u.data", "\t", items, "u.item", users, "u.user", skip_bad_rows, report
    )


# ---------------------------------------------------------------------------------------------
# ml-1m


def load_ml1m(path: str | os.PathLike[str], *, skip_bad_rows: bool = False) -> RatingDataset:
    """Load MovieLens-1M from ``ratings.dat``, ``movies.dat`` and ``users.dat``.

    ``ratings.dat`` may be the full file (1,000,209 ratings) or any prefix of it, such as the
    first 487,650 lines holding every rating of users 1-2999.

    Args:
        path: Folder with the three ``::``-separated files.
        skip_bad_rows: Drop bad rows and count them in ``dataset.report`` instead of raising.

    Returns:
        The dataset on the 1-5 scale; users have ``gender``, ``age`` (the file's code: 1, 18, 25,
        ...), ``age_group`` ("18-24"), ``occupation`` (name) and ``zip_code``.

    Raises:
        DataError: Missing files, or bad rows (file, line and field named).
    """
    folder = resolve_data_dir(path, "ml-1m")
    report = LoadReport()
    movies = read_table(
        folder / "movies.dat",
        sep="::",
        names=("item_id", "title", "genres"),
        columns={"item_id": "int", "title": "str", "genres": "str"},
        encoding="latin-1",
    )
    movies.flag_duplicate_ids("item_id")
    mframe = movies.resolve(skip_bad_rows=skip_bad_rows, report=report)
    title, year = split_title_year(mframe["title"])
    items = make_items_frame(
        mframe["item_id"], title, _genre_tuples(mframe["genres"].fillna("").str.split("|")), year
    )

    users_t = read_table(
        folder / "users.dat", sep="::", names=tuple(_ML1M_USERS), columns=_ML1M_USERS,
        encoding="latin-1",
    )
    users_t.flag_duplicate_ids("user_id")
    age = users_t.frame["age"]
    users_t.flag(
        age.notna().to_numpy() & ~age.isin(list(ML1M_AGE_GROUPS)).to_numpy(),
        "age",
        lambda pos: f"age code {age.iloc[pos]:g} is not one of {sorted(ML1M_AGE_GROUPS)}",
    )
    occ = users_t.frame["occupation"]
    users_t.flag(
        occ.notna().to_numpy() & ~occ.isin(list(ML1M_OCCUPATIONS)).to_numpy(),
        "occupation",
        lambda pos: f"occupation code {occ.iloc[pos]:g} is not in 0-20",
    )
    users_t.int_columns = ("user_id", "age", "occupation")
    uframe = users_t.resolve(skip_bad_rows=skip_bad_rows, report=report)
    users = pd.DataFrame(
        {
            "gender": uframe["gender"].to_numpy(),
            "age": uframe["age"].to_numpy(),
            "age_group": uframe["age"].map(ML1M_AGE_GROUPS).to_numpy(),
            "occupation": uframe["occupation"].map(ML1M_OCCUPATIONS).to_numpy(),
            "zip_code": uframe["zip_code"].to_numpy(),
        },
        index=pd.Index(uframe["user_id"].to_numpy(), name="user_id"),
    )

    return _star_dataset(
        "ml-1m", folder / "ratings.dat", "::", items, "movies.dat", users, "users.dat",
        skip_bad_rows, report,
    )


def _star_dataset(
    name: str,
    ratings_path: Path,
    sep: str,
    items: pd.DataFrame,
    item_file: str,
    users: pd.DataFrame,
    user_file: str,
    skip_bad_rows: bool,
    report: LoadReport,
) -> RatingDataset:
    """The tail of the ml-100k and ml-1m loaders: their header-less ratings file on 1-5 stars."""
    ratings = read_table(ratings_path, sep=sep, names=_RATING_NAMES, columns=_RATING_KINDS)
    source = {"path": str(ratings_path.parent), "format": name}
    return ratings_dataset(
        ratings, name=name, scale=STAR_SCALE, source=source, report=report,
        skip_bad_rows=skip_bad_rows, items=items, item_file=item_file, users=users,
        user_file=user_file,
    )
