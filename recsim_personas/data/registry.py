"""Load a dataset by name: the embedded ml-latest-small, or ml-100k / ml-1m from a folder or the cache."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from recsim_personas.data.dataset import RatingDataset
from recsim_personas.data.download import cached_dataset_dir, downloads_dir
from recsim_personas.data.enrichment import enrich_items
from recsim_personas.data.movielens import (
    MOVIELENS_FILES,
    embedded_ml_latest_small,
    load_ml1m,
    load_ml100k,
    load_ml_latest_small,
)
from recsim_personas.errors import DataError, did_you_mean

__all__ = ["DATASET_NAMES", "DEFAULT_DATASET", "load_dataset"]

#: The embedded default: shipped inside the package, needs no download.
DEFAULT_DATASET = "ml-latest-small"

_LOADERS: dict[str, Callable[..., RatingDataset]] = {
    "ml-latest-small": load_ml_latest_small,
    "ml-100k": load_ml100k,
    "ml-1m": load_ml1m,
}
#: Names :func:`load_dataset` knows.
DATASET_NAMES: tuple[str, ...] = tuple(_LOADERS)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    enrichment: str | os.PathLike[str] | pd.DataFrame | None = None,
    skip_bad_rows: bool = False,
) -> RatingDataset:
    """Load a MovieLens dataset by name.

    Args:
        name: ``ml-latest-small``, ``ml-100k`` or ``ml-1m``.
        data_dir: Folder with the dataset's files (or its parent). ``None``: the embedded copy for
            ``ml-latest-small``, the download cache for the others.
        enrichment: Optional item-enrichment table (file or frame) joined by item id, see
            :func:`~recsim_personas.data.enrichment.enrich_items`.
        skip_bad_rows: Drop bad rows and count them in ``dataset.report`` instead of raising.

    Returns:
        The dataset.

    Raises:
        DataError: Unknown name (with a suggestion), a dataset that is neither in ``data_dir``
            nor in the cache (naming ``recsim-personas data download NAME`` and ``--data-dir``),
            or bad files.
    """
    if name not in _LOADERS:
        hint = did_you_mean(name, DATASET_NAMES, cutoff=0.5)
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}.{hint}")
    if data_dir is not None:
        dataset = _LOADERS[name](Path(data_dir), skip_bad_rows=skip_bad_rows)
    elif name == DEFAULT_DATASET:
        dataset = embedded_ml_latest_small(skip_bad_rows=skip_bad_rows)
    else:
        folder = cached_dataset_dir(name)
        if folder is None:
            raise DataError(
                f"{name} is not in the download cache ({downloads_dir() / name}); run "
                f"`recsim-personas data download {name}` on a machine with internet, or pass "
                f"--data-dir DIR (data_dir=...) for a folder holding {', '.join(MOVIELENS_FILES[name])}"
            )
        dataset = _LOADERS[name](folder, skip_bad_rows=skip_bad_rows)
    if enrichment is not None:
        dataset = enrich_items(dataset, enrichment, skip_bad_rows=skip_bad_rows)
    return dataset
