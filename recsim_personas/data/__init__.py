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

from recsim_personas.lazy import lazy_exports

#: Each public name and the submodule that is its home (imported on first use).
_WHERE: dict[str, str] = {
    "load_csv": "custom_csv",
    "INTERACTION_COLUMNS": "dataset",
    "ITEM_TEXT_COLUMNS": "dataset",
    "LoadReport": "dataset",
    "RatingDataset": "dataset",
    "RatingScale": "dataset",
    "download_dataset": "download",
    "enrich_items": "enrichment",
    "load_enrichment": "enrichment",
    "ItemCatalog": "item_catalog",
    "ItemInfo": "item_catalog",
    "load_ml100k": "movielens",
    "load_ml1m": "movielens",
    "load_ml_latest_small": "movielens",
    "DATASET_NAMES": "registry",
    "DEFAULT_DATASET": "registry",
    "load_dataset": "registry",
}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
