"""A deterministic, seeded FitPulse world: profiles, a growing catalog and app events.

Events come from a latent taste model. Each user has a category taste (Dirichlet) and an
8-dimensional taste vector; each item has category traits, a quality (popularity) and a
difficulty. The chance of engaging with an item is::

    sigmoid(bias + taste . traits + log taste[category] + quality
            - level mismatch - category fatigue + recency) x position examination

A legacy recommender (taste-ish, popular and random items mixed) produces the feeds users
see, so logged impressions carry exposure bias; users also find items on their own (browse and
search) in proportion to their taste. Beginners who start advanced or high-intensity content
often churn, which is what makes the beginner-safety guardrail measurable. About 40% of users
end the window *cold* (fewer than 5 meaningful interactions).

A ``ShiftParams`` adds a distribution shift in the last days (a January influx of beginners
and a new trending category, ``vocab.TRENDING_CATEGORY``), so drift detection, retraining and
promotion have something to react to. Its users and items are appended after the base world's
and every draw about them comes from a separate generator: before the shift starts, a shifted
world simulates the same events as the world without it.

The world writes what the app's collector and back office would write (see ``layout``):
hourly gzipped NDJSON event batches with injected bad records, and Parquet catalog and profile
files. ``generate_world`` returns a ``WorldSummary`` that states exactly what was injected.
Each day the back office also unpublishes a few items and moderation flags a few as unsafe
(hourly ``updates-HH`` catalog files, drawn from their own generator so that nothing else in
the world changes; ``WorldSummary.status_changes`` lists them).
It also writes the world's hidden state to ``LATENT_KEY``, so ``world.respond`` can simulate how
its users react to feeds served later; that is ground truth the platform never reads. Its
``WorldParams`` go to ``SPEC_KEY`` (``read_world_params``), for the parts of the taste model the
latent state leaves out (the shift's trending bonus).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from fitpulse_orchestration.events.schema import ENGAGEMENT_TYPES
from fitpulse_orchestration.storage import ObjectStore
from fitpulse_orchestration.world import vocab
from fitpulse_orchestration.world.engagement import EventLog, Streams
from fitpulse_orchestration.world.params import (
    BASE_TASTE_ALPHA,
    SHIFT_USER_TASTE_FACTOR,
    STATUS_CHANGE_RATES,
    ShiftParams,
    WorldParams,
    WorldSummary,
)
from fitpulse_orchestration.world.population import (
    Items,
    Users,
    concat,
    make_category_vectors,
    make_items,
    make_shift_users,
    make_trending_items,
    make_users,
)
from fitpulse_orchestration.world.push import PushState
from fitpulse_orchestration.world.simulate import simulate
from fitpulse_orchestration.world.writers import (
    draw_status_changes,
    write_events,
    write_latent,
    write_reference,
    write_spec,
)


def add_shift(
    p: WorldParams,
    shift: ShiftParams,
    rng: np.random.Generator,
    users: Users,
    items: Items,
    cat_vecs: np.ndarray,
) -> tuple[Users, Items, np.ndarray, Streams]:
    """Append the shift's users and trending items to the base world's.

    Every draw comes from the shift's own generator, seeded from ``p.seed``; ``rng`` is the
    base world's, which keeps drawing for the base rows.

    Returns:
        Users and items with the shift's rows appended (``cat_taste`` gains a column for the
        trending category), the (n_users,) affinity bonus for trending items, and the streams
        the simulation draws from.
    """
    shift_rng = np.random.default_rng([p.seed, 1])
    cat_vecs = np.vstack([cat_vecs, make_category_vectors(shift_rng, 1)])
    # A base user's taste for the new category follows the marginal of one component of a
    # Dirichlet taste over every category; the base columns stay untouched.
    trending_taste = shift_rng.beta(
        BASE_TASTE_ALPHA, BASE_TASTE_ALPHA * len(vocab.CATEGORIES), size=len(users.ids)
    )
    base = replace(users, cat_taste=np.column_stack([users.cat_taste, trending_taste]))
    newcomers = make_shift_users(p, shift, shift_rng, cat_vecs)
    trending = make_trending_items(p, shift, shift_rng, cat_vecs, len(items.ids))
    bonus = np.concatenate(
        [
            np.full(len(base.ids), shift.trending_taste),
            np.full(len(newcomers.ids), SHIFT_USER_TASTE_FACTOR * shift.trending_taste),
        ]
    )
    streams = Streams(rng, shift_rng, len(users.ids), len(items.ids))
    return concat(base, newcomers), concat(items, trending), bonus, streams


def summarize_shift(
    p: WorldParams,
    shift: ShiftParams,
    users: Users,
    items: Items,
    log: EventLog,
    n_base_users: int,
) -> dict[str, Any]:
    """What the shift injected; ground truth for drift tests (see ``WorldSummary``)."""
    start_date = shift.start_date(p.end_date)
    start = np.datetime64(start_date.isoformat(), "s")
    newcomer_levels = users.level[n_base_users:]
    trending_ids = set(items.ids[items.category >= len(vocab.CATEGORIES)].tolist())
    on_trending = [
        row["item_id"] in trending_ids
        for row in log.rows
        if row["event_type"] in ENGAGEMENT_TYPES and row["ts"] >= start
    ]
    return {
        "start_date": start_date,
        "days": shift.days,
        "trending_category": vocab.TRENDING_CATEGORY,
        "shift_users": int(newcomer_levels.size),
        "shift_beginner_share": float((newcomer_levels == 0).mean())
        if newcomer_levels.size
        else 0.0,
        "trending_items": len(trending_ids),
        "trending_engagement_share": float(np.mean(on_trending)) if on_trending else 0.0,
    }


def generate_world(params: WorldParams, store: ObjectStore) -> WorldSummary:
    """Simulate ``params.days`` days of FitPulse and write the landing zone into ``store``.

    The world's hidden state goes to ``LATENT_KEY`` last, after every random draw.

    Returns:
        A summary with the exact number of valid events and injected bad records by kind.
    """
    rng = np.random.default_rng(params.seed)
    cat_vecs = make_category_vectors(rng)
    users = make_users(params, rng, cat_vecs)
    start = np.datetime64(params.start_date.isoformat(), "s")
    old_pub = start - rng.integers(3600, 180 * 86400, size=params.n_items).astype("timedelta64[s]")
    items = make_items(params.n_items, old_pub, rng, cat_vecs, 0)
    n_new = params.new_items_per_day * params.days
    new_pub = start + rng.integers(0, params.days * 86400, size=n_new).astype("timedelta64[s]")
    items = concat(items, make_items(n_new, new_pub, rng, cat_vecs, params.n_items))
    streams = Streams(rng, None, len(users.ids), len(items.ids))
    trending_bonus = None
    if params.shift is not None:
        users, items, trending_bonus, streams = add_shift(
            params, params.shift, rng, users, items, cat_vecs
        )
    log = EventLog()
    push_streams = Streams(
        np.random.default_rng([params.seed, 1]),
        None if params.shift is None else np.random.default_rng([params.seed, 2]),
        streams.n_base_users,
        streams.n_base_items,
    )
    push = PushState.start(push_streams, len(users.ids))
    churn = simulate(params, streams, users, items, log, push, trending_bonus)
    counts = pd.Series([r["event_type"] for r in log.rows]).value_counts()
    meaningful = pd.Series(
        [r["user_id"] for r in log.rows if r["event_type"] in ENGAGEMENT_TYPES]
    ).value_counts()
    cold_share = float((meaningful.reindex(users.ids, fill_value=0) < 5).mean())
    valid, written, bad, days = write_events(params, rng, log, store)
    changes = draw_status_changes(params, items)
    write_reference(params, users, items, changes, store)
    write_latent(users, items, push.population, store)
    write_spec(params, store)
    return WorldSummary(
        params=params,
        n_users=len(users.ids),
        n_items=len(items.ids),
        n_valid_events=valid,
        records_written=written,
        bad_records=bad,
        event_counts={str(k): int(v) for k, v in counts.items()},
        landed_days=days,
        cold_user_share=cold_share,
        beginner_churn=churn,
        shift_summary={}
        if params.shift is None
        else summarize_shift(params, params.shift, users, items, log, streams.n_base_users),
        catalog_updates={
            status: sum(c.status == status for c in changes) for status in STATUS_CHANGE_RATES
        },
        status_changes=changes,
    )
