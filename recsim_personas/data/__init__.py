"""MovieLens data: loaders, the dataset type, item text for prompts, splits and the downloader.

Datasets and licences:

* ``ml-latest-small`` is vendored in ``recsim_personas/data/ml_latest_small/`` with its
  ``README.txt``; GroupLens allows redistributing it (with transformations) under the same terms.
  It is the embedded default: ``load_dataset("ml-latest-small")`` needs no download.
* ``ml-100k`` and ``ml-1m`` must **never** be redistributed: their README forbids it without
  GroupLens' permission. They are not in this repository; users run
  ``recsim-personas data download ml-100k`` (official archive, sha256-checked) or pass
  ``--data-dir`` / ``data_dir=`` to a copy they obtained themselves.
* Enrichment tables such as a scrape of IMDb descriptions are third-party data; the project only
  reads them from the user's disk (``enrichment=``) and never ships them.

Use MovieLens data under GroupLens' terms: cite Harper and Konstan (2015), no commercial use
without permission.
"""

from __future__ import annotations

from recsim_personas.data.custom_csv import load_csv
from recsim_personas.data.dataset import (
    INTERACTION_COLUMNS,
    ITEM_TEXT_COLUMNS,
    LoadReport,
    RatingDataset,
    RatingScale,
)
from recsim_personas.data.download import download_dataset
from recsim_personas.data.enrichment import enrich_items, load_enrichment
from recsim_personas.data.item_catalog import ItemCatalog, ItemInfo
from recsim_personas.data.movielens import load_ml1m, load_ml100k, load_ml_latest_small
from recsim_personas.data.registry import DATASET_NAMES, DEFAULT_DATASET, load_dataset

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_DATASET",
    "INTERACTION_COLUMNS",
    "ITEM_TEXT_COLUMNS",
    "ItemCatalog",
    "ItemInfo",
    "LoadReport",
    "RatingDataset",
    "RatingScale",
    "download_dataset",
    "enrich_items",
    "load_csv",
    "load_dataset",
    "load_enrichment",
    "load_ml1m",
    "load_ml100k",
    "load_ml_latest_small",
]
