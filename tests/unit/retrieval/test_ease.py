from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.retrieval.ease import EaseParams, train_ease


def _clicks(pairs: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [u for u, _ in pairs],
            "item_id": [i for _, i in pairs],
            "event_type": "click",
            "ts": pd.Timestamp("2026-10-01", tz="UTC"),
        }
    )


# Two tastes: A and B go together, C and D go together; E is liked by everyone.
TASTES = _clicks(
    [(f"u{k}", i) for k in range(6) for i in ("A", "B", "E")]
    + [(f"v{k}", i) for k in range(6) for i in ("C", "D", "E")]
)


def test_ease_weights_are_the_closed_form() -> None:
    model = train_ease(TASTES, EaseParams(l2=2.0))
    items = ["A", "B", "C", "D", "E"]
    x = np.zeros((12, 5))
    for u, i in TASTES[["user_id", "item_id"]].itertuples(index=False):
        x[int(u[1:]) + (6 if u[0] == "v" else 0), items.index(i)] = 1.0
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(5))
    expected = -p / np.diag(p)
    np.fill_diagonal(expected, 0.0)

    assert list(model.item_ids) == items
    np.testing.assert_allclose(model.weights, expected, rtol=1e-5, atol=1e-6)


def test_ease_recommends_the_co_engaged_item_first() -> None:
    model = train_ease(TASTES, EaseParams(l2=2.0))

    items, scores = model.top_items({"A"}, 2)

    assert list(items) == ["B", "E"]
    assert scores[0] > scores[1]
    assert list(model.top_items({"C", "D"}, 1)[0]) == ["E"]
    assert list(model.top_items({"unknown"}, 3)[0]) == []


def test_ease_keeps_only_the_head_of_the_catalog() -> None:
    model = train_ease(TASTES, EaseParams(l2=2.0, max_items=1))

    assert list(model.item_ids) == ["E"]
    assert model.metrics["head_engagement_share"] == pytest.approx(12 / 36)


def test_ease_needs_engagements() -> None:
    impressions = TASTES.assign(event_type="impression")

    with pytest.raises(ValueError, match="no engagements"):
        train_ease(impressions, EaseParams())
    with pytest.raises(ValueError, match="l2 must be > 0"):
        EaseParams(l2=0.0)
