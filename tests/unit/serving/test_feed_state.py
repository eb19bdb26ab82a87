"""The serving catalog's id lookups (``ItemCatalog``) against pandas' public lookup."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitpulse_orchestration.features.reference import UNKNOWN
from fitpulse_orchestration.serving.feed_state import ItemCatalog

IDS = ["wk_001", "wk_002", "übung_3", "ar_004", "wk_002"]


def _catalog() -> ItemCatalog:
    return ItemCatalog(
        pd.DataFrame(
            {
                "item_id": IDS,
                "item_type": ["workout", "workout", "workout", "article", "plan"],
                "title": ["A", "B", "C", "D", "B again"],
                "category": ["cardio", "yoga", "cardio", "sleep", "strength"],
                "difficulty": ["beginner", "advanced", "beginner", "beginner", "advanced"],
                "intensity": "low",
                "published_at": pd.Timestamp("2026-01-01", tz="UTC"),
                "status": "published",
            }
        )
    )


def test_rows_agree_with_get_indexer_and_unknown_ids_get_the_unknown_row() -> None:
    catalog = _catalog()
    # New string objects (as a search returns them), repeats, a non-ASCII id, ids the catalog
    # lacks, and values that are not strings at all.
    asked = np.array(
        ["ar_004", "wk_" + "002", "übung_3", "wk_404", "", "wk_001", "ar_004", None, 4],
        dtype=object,
    )
    expected = catalog.index.get_indexer(asked)
    # The duplicated wk_002 keeps its last row, after the others.
    assert expected.tolist() == [2, 3, 1, -1, -1, 0, 2, -1, -1]
    rows = catalog.rows(asked)
    assert rows.tolist() == np.where(expected < 0, len(catalog), expected).tolist()
    assert catalog.rows(np.array([], dtype=object)).tolist() == []
    # A unicode array (numpy's fixed-width strings) is looked up the same.
    assert catalog.rows(np.array(["wk_002", "wk_404"])).tolist() == [3, len(catalog)]


def test_attributes_and_token_codes_follow_the_rows() -> None:
    catalog = _catalog()
    attrs = catalog.attributes(np.array(["wk_002", "nope"], dtype=object))
    # The last copy of a duplicated id wins; an unknown item is unknown and unsafe.
    assert attrs.item_type.tolist() == ["plan", UNKNOWN]
    assert attrs.category.tolist() == ["strength", UNKNOWN]
    assert attrs.unsafe_for_beginner.tolist() == [True, True]
    assert catalog.titles(attrs.row) == ["B again", ""]
    codes = catalog.token_codes(np.array(["wk_002", "nope", "wk_002"], dtype=object))
    assert (codes[0] == codes[2]).all()
    assert not (codes[0] == codes[1]).all()
    assert (codes[1] == catalog.token_codes(np.array(["also-unknown"], dtype=object))[0]).all()
