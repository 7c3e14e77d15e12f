"""The text embedded for an item (its label comes from :func:`recsim_personas.data.item_catalog.title_with_year`)."""

from __future__ import annotations

from typing import Any

__all__ = ["item_embedding_text"]


def item_embedding_text(catalog: Any, item_id: int) -> str:
    """The text embedded for an item: ``catalog.describe`` plus ``catalog.summary`` when present."""
    text = str(catalog.describe(item_id))
    summary = catalog.summary(item_id) if hasattr(catalog, "summary") else None
    if summary and str(summary).strip() and str(summary) not in text:
        text = f"{text} {str(summary).strip()}"
    return text
