"""The synthetic world's true preference order: the ceiling beside every quality number.

A generated world knows what each of its users would engage with (``world.generator``), so an
evaluation on its events can report, next to each model, what ordering items by the world's own
engagement probability achieves (issue 18). Like ``world.respond``, this reads the world's
hidden state, which the platform's ingestion, features and training never read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fitpulse_orchestration import layout
from fitpulse_orchestration.storage import ObjectStore
from fitpulse_orchestration.world import vocab
from fitpulse_orchestration.world.params import LATENT_KEY, SHIFT_USER_TASTE_FACTOR, WorldParams
from fitpulse_orchestration.world.population import top_k
from fitpulse_orchestration.world.respond import WorldLatent, click_probability, load_latent
from fitpulse_orchestration.world.writers import read_world_params

_USER_CHUNK: Final = 512
"""Users scored at once: bounds the (users, items, DIM) gather in ``WorldLatent.affinity``."""


def world_oracle(
    store: ObjectStore,
    pseudonymize: Callable[[str], str],
    user_ids: Sequence[str],
    as_of: pd.Timestamp,
    k: int = 300,
) -> dict[str, list[str]] | None:
    """Each known user's catalog, best first by the world's probability that they engage.

    Items are ordered by ``engagement_probability``: the chance that the user clicks the item
    served in the top slot, ``world.respond.click_probability`` of the generator's base
    affinity (taste vectors, category taste, quality, level mismatch, and a shift's trending
    bonus). Every way the world draws an engagement rises with that affinity: feed clicks, and
    the read, watch or start after a click; organic discovery, a Gumbel top-k on 1.5 x
    affinity; the legacy push's pick, an argmax of affinity plus Gumbel noise. So its order is
    the world's order of engagement probability whatever the channel. The expected NDCG gain of
    a top-slot serving (click, then consumption and completion) was the alternative: it ranks
    workouts above articles of the same affinity, and it scored lower on the held-out
    engagements (NDCG@10 0.094 against 0.105 on the ``demo`` world, 0.264 against 0.269 on
    ``tiny``). The generator's fatigue and recency terms are left out: they depend on each
    user's history and on the serving time, not on taste (adding recency as of ``as_of``
    changed NDCG@10 by less than 0.001 on ``demo``).

    Args:
        store: the object store a world was generated into.
        pseudonymize: maps a raw world user id to the pseudonym the clean events carry.
        user_ids: pseudonymized user ids to order items for.
        as_of: only items the world published strictly before it are ranked (naive: UTC).
        k: at most this many items per user.

    Returns:
        ``{pseudonymized user id: item ids, best first}`` for every requested user the world
        knows (at most ``k`` items each; empty when nothing was published before ``as_of``),
        or None when ``store`` holds no generated world (``LATENT_KEY`` absent).

    Raises:
        FileNotFoundError: when the world has trending items but no ``SPEC_KEY`` to size
            their bonus (it was generated before worlds wrote their spec).
    """
    if not store.exists(LATENT_KEY):
        return None
    latent = load_latent(store)
    bonus = _trending_bonus(latent, store)
    stamp = pd.Timestamp(as_of)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    live = np.flatnonzero((item_publication_times(store, latent) < stamp).to_numpy())
    row_of = {pseudonymize(str(raw)): row for row, raw in enumerate(latent.user_ids)}
    wanted = [user for user in dict.fromkeys(map(str, user_ids)) if user in row_of]
    if live.size == 0 or k < 1:
        return {user: [] for user in wanted}
    out: dict[str, list[str]] = {}
    for start in range(0, len(wanted), _USER_CHUNK):
        chunk = wanted[start : start + _USER_CHUNK]
        rows = np.array([row_of[user] for user in chunk], dtype=np.int64)
        # generator._top_k is private but pure (no state, no draws).
        top = top_k(engagement_probability(latent, rows, live, bonus), min(k, live.size))
        for user, picked in zip(chunk, latent.item_ids[live[top]], strict=True):
            out[user] = picked.tolist()
    return out


def engagement_probability(
    latent: WorldLatent, users: np.ndarray, items: np.ndarray, bonus: np.ndarray | None = None
) -> np.ndarray:
    """P(click) of each item served to each user in the top slot of a feed.

    ``click_probability(affinity, 0)`` with ``WorldLatent.affinity`` plus ``bonus`` on
    trending items (category columns past ``vocab.CATEGORIES``), as the generator's sessions
    compute it before fatigue and recency.

    Args:
        latent: the world's hidden state (``load_latent``).
        users: user rows of ``latent``, shape (n_users,).
        items: item rows of ``latent``, shape (n_items,).
        bonus: affinity a shift adds to trending items, one per user row of ``latent``
            (shape (len(latent.user_ids),); ``trending_bonus``), or None for none.

    Returns:
        Float64 array (n_users, n_items) in (0, 1); rows follow ``users``, columns ``items``.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    affinity = latent.affinity(users[:, None], items[None, :])
    if bonus is not None:
        trending = latent.item_category[items] >= len(vocab.CATEGORIES)
        affinity = affinity + bonus[users][:, None] * trending[None, :]
    return click_probability(affinity, np.zeros_like(affinity))


def item_publication_times(store: ObjectStore, latent: WorldLatent) -> pd.Series:
    """When the world published each latent item, from the catalog files it landed.

    The latent state has no publication times; the world's back-office files
    (``layout.LANDING_CATALOG``) hold them exactly.

    Returns:
        UTC timestamps in ``latent.item_ids`` order (index: item id); NaT for an item that
        landed in no catalog file.
    """
    tables = [
        pq.read_table(pa.BufferReader(store.get_bytes(key)), columns=["item_id", "published_at"])
        for key in store.iter_keys(f"{layout.LANDING_CATALOG}/", ".parquet")
    ]
    ids = latent.item_ids.astype(str)
    if not tables:
        return pd.Series(pd.NaT, index=ids, dtype="datetime64[ns, UTC]")
    landed = pa.concat_tables(tables, promote_options="default").to_pandas()
    landed = landed.drop_duplicates("item_id", keep="last")
    published = pd.to_datetime(landed["published_at"], utc=True).set_axis(landed["item_id"])
    return published.reindex(ids)


def _trending_bonus(latent: WorldLatent, store: ObjectStore) -> np.ndarray | None:
    """Per user row, the affinity a shift adds to trending items (as ``generator._add_shift``).

    None for a world without trending items, where no spec is needed.
    """
    if not (latent.item_category >= len(vocab.CATEGORIES)).any():
        return None
    return trending_bonus(read_world_params(store), len(latent.user_ids))


def trending_bonus(params: WorldParams, n_users: int) -> np.ndarray | None:
    """The shift's affinity bonus for trending items per user row, or None without a shift.

    Base users (the first ``params.n_users`` rows) get ``shift.trending_taste``; the shift's
    own users, appended after them, ``SHIFT_USER_TASTE_FACTOR`` times as much.
    """
    if params.shift is None:
        return None
    bonus = np.full(n_users, params.shift.trending_taste)
    bonus[params.n_users :] *= SHIFT_USER_TASTE_FACTOR
    return bonus
