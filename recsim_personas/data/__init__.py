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

# Each submodule and the public names it is the home of (imported on first use).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "custom_csv": ("load_csv",),
    "dataset": ("INTERACTION_COLUMNS", "ITEM_TEXT_COLUMNS", "LoadReport", "RatingDataset", "RatingScale"),
    "download": ("download_dataset",),
    "enrichment": ("enrich_items", "load_enrichment"),
    "item_catalog": ("ItemCatalog", "ItemInfo"),
    "movielens": ("load_ml100k", "load_ml1m", "load_ml_latest_small"),
    "registry": ("DATASET_NAMES", "DEFAULT_DATASET", "load_dataset"),
})
