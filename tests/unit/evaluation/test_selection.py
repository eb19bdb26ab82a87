from __future__ import annotations

import numpy as np
import pandas as pd

from fitpulse_orchestration.evaluation.selection import choose_cold_weights
from fitpulse_orchestration.ranking.blend import DEFAULT_COLD_WEIGHTS


def _pool(
    user: str, als: list[float], two_tower: list[float], popular: list[float]
) -> pd.DataFrame:
    n = len(als)
    return pd.DataFrame(
        {
            "user_id": [user] * n,
            "item_id": [f"i{j}" for j in range(n)],
            "rank_als": als,
            "rank_ease": [np.nan] * n,
            "rank_two_tower": two_tower,
            "rank_popular": popular,
        }
    )


NAN = np.nan


def test_history_less_members_choose_the_source_that_finds_their_items() -> None:
    # The new members engage with i0, which popularity ranks first and the two-tower last.
    new = [_pool(f"new{u}", [NAN] * 3, [2.0, 0.0, 1.0], [0.0, 1.0, 2.0]) for u in range(4)]
    # A member with history is left out of the choice: ALS finds their item.
    warm = _pool("warm", [0.0, 1.0, 2.0], [1.0, 0.0, 2.0], [2.0, 1.0, 0.0])
    scored = pd.concat([*new, warm], ignore_index=True)
    relevance = {f"new{u}": {"i0": 1} for u in range(4)} | {"warm": {"i2": 1}}

    weights, table = choose_cold_weights(scored, relevance)

    assert weights == {"two_tower": 0.0, "popular": 1.0}
    assert table["users"].tolist() == [4] * 5
    assert table["unguarded_ndcg_at_10"].iloc[0] == 1.0


def test_without_history_less_members_the_default_cold_weights_hold() -> None:
    scored = _pool("warm", [0.0, 1.0], [1.0, 0.0], [0.0, 1.0])

    weights, table = choose_cold_weights(scored, {"warm": {"i0": 1}})

    assert weights == DEFAULT_COLD_WEIGHTS
    assert table["unguarded_ndcg_at_10"].isna().all()
