"""How memory texts name an item: its ``"Title (year)"`` label, the text embedded for retrieval."""

from __future__ import annotations

from typing import Any

__all__ = ["item_embedding_text", "title_with_year"]


def title_with_year(title: str, year: int | None) -> str:
    """``"Heat (1995)"``: the label memories, examples and prompts use; the bare title without a year."""
    return f"{title} ({year})" if year is not None else title


def item_embedding_text(catalog: Any, item_id: int) -> str:
    """The text embedded for an item: ``catalog.describe`` plus ``catalog.summary`` when present."""
    text = str(catalog.describe(item_id))
    summary = catalog.summary(item_id) if hasattr(catalog, "summary") else None
    if summary and str(summary).strip() and str(summary) not in text:
        text = f"{text} {str(summary).strip()}"
    return text
