"""The world's days: app sessions, legacy feeds, engagement, churn and the daily push round."""

from __future__ import annotations

import numpy as np

from fitpulse_orchestration.world import vocab
from fitpulse_orchestration.world.engagement import EventLog, Streams, engage
from fitpulse_orchestration.world.params import FEED_SLOTS, WorldParams
from fitpulse_orchestration.world.population import Items, Users, sigmoid, top_k
from fitpulse_orchestration.world.push import PushState, simulate_pushes


def simulate(
    p: WorldParams,
    streams: Streams,
    users: Users,
    items: Items,
    log: EventLog,
    push: PushState,
    trending_bonus: np.ndarray | None = None,
) -> dict[str, float]:
    """Simulate every day into ``log``; return the churn rates of beginners.

    ``push`` holds the push scheduler's random streams and state; ``trending_bonus``
    (n_users,) is each user's affinity bonus for trending items (None without a shift).
    """
    rng = streams.main
    n_users = len(users.ids)
    n_items = len(items.ids)
    # Taste is scaled by the base category count, so a uniform base taste scores log(1) = 0
    # and a shift's extra category leaves the base affinities as they were.
    taste_scale = len(vocab.CATEGORIES)
    trending = np.flatnonzero(items.category >= len(vocab.CATEGORIES))
    churned = np.zeros(n_users, dtype=bool)
    unsafe_started = np.zeros(n_users, dtype=bool)
    cat_fatigue = np.zeros((n_users, users.cat_taste.shape[1]))
    last_open = np.full(n_users, np.datetime64("1970-01-01T00:00:00"), dtype="datetime64[s]")
    unsafe_for_beginner = (items.difficulty == 2) | (items.intensity == 2)

    def base_affinity(rows: np.ndarray) -> np.ndarray:
        """Affinity of users ``rows`` for every item, (len(rows), n_items).

        Computed per chunk of users: a users x items matrix of the ``large`` world would not
        fit in memory.
        """
        level_gap = items.difficulty[None, :] - users.level[rows][:, None]
        mismatch = np.where(level_gap > 0, 1.2 * level_gap, 0.3 * -level_gap)
        affinity = (
            users.vec[rows] @ items.vec.T
            + np.log(users.cat_taste[rows][:, items.category] * taste_scale + 1e-3)
            + items.quality[None, :]
            - mismatch
        )
        if trending_bonus is not None:
            affinity[:, trending] += trending_bonus[rows][:, None]
        return affinity

    popularity = np.exp(items.quality * 1.5)
    req_counter = 0
    sess_counter = 0
    for day_idx in range(p.days):
        day = np.datetime64(p.start_date.isoformat(), "s") + np.timedelta64(day_idx * 86400, "s")
        cat_fatigue *= 0.6
        churned |= streams.user_uniform(n_users) < 0.002
        exists = (users.signup < day + np.timedelta64(86400, "s")) & ~churned
        active = exists & (streams.user_uniform(n_users) < users.activity)
        pushed_open = simulate_pushes(
            p, push, users, items, log, day, exists, last_open, base_affinity
        )
        active |= pushed_open.opened
        unsafe_started |= pushed_open.unsafe_started
        churned |= pushed_open.churned
        act = np.flatnonzero(active)
        if act.size == 0:
            continue
        n_sessions = 1 + rng.poisson(0.4, size=act.size)
        sess_users = np.repeat(act, n_sessions)
        local_hours = rng.choice(
            [6, 7, 8, 12, 13, 17, 18, 19, 20, 21], size=sess_users.size
        ).astype(int)
        sess_ts = (
            day
            + ((local_hours - users.utc_offset[sess_users]) % 24 * 3600).astype("timedelta64[s]")
            + rng.integers(0, 3600, size=sess_users.size).astype("timedelta64[s]")
        )
        # Users who sign up during the day only act after their sign-up time.
        after_signup = users.signup[sess_users] < sess_ts
        sess_users, sess_ts = sess_users[after_signup], sess_ts[after_signup]
        order = np.argsort(sess_ts)
        sess_users, sess_ts = sess_users[order], sess_ts[order]
        for chunk in range(0, sess_users.size, 1024):
            su = sess_users[chunk : chunk + 1024]
            st = sess_ts[chunk : chunk + 1024]
            available = items.published[None, :] < st[:, None]
            aff = base_affinity(su) - 0.08 * cat_fatigue[su][:, items.category]
            # Fresh items get a recency boost for their first days.
            age_days = (st[:, None] - items.published[None, :]).astype(float) / 86400.0
            aff = aff + 0.6 * np.exp(-np.clip(age_days, 0, None) / 3.0)
            # Legacy feed: mixture of taste-ish, popularity and uniform exploration.
            taste_p = np.where(available, np.exp(0.8 * aff), 0.0)
            taste_p /= taste_p.sum(axis=1, keepdims=True)
            pop_p = np.where(available, popularity[None, :], 0.0)
            pop_p /= pop_p.sum(axis=1, keepdims=True)
            uni_p = available / available.sum(axis=1, keepdims=True)
            mix = 0.4 * taste_p + 0.35 * pop_p + 0.25 * uni_p
            keys = np.log(mix + 1e-30) + streams.item_gumbel((su.size,), n_items)
            feed = top_k(keys, FEED_SLOTS)
            # Organic discovery (browse and search) follows taste only.
            organic_keys = np.where(available, 1.5 * aff, -np.inf) + streams.item_gumbel(
                (su.size,), n_items
            )
            n_organic = rng.poisson(0.7, size=su.size)
            organic = top_k(organic_keys, 3)
            for row, u in enumerate(su):
                sess_counter += 1
                session_id = f"s_{sess_counter:09d}"
                t0 = st[row]
                plat = users.platform[u]
                log.add(
                    event_type="app_open",
                    user_id=users.ids[u],
                    ts=t0,
                    session_id=session_id,
                    platform=plat,
                )
                last_open[u] = t0
                req_counter += 1
                request_id = f"r_{req_counter:09d}"
                t_imp = t0 + np.timedelta64(1, "s")
                shown = feed[row]
                for pos, it in enumerate(shown):
                    log.add(
                        event_type="impression",
                        user_id=users.ids[u],
                        item_id=items.ids[it],
                        ts=t_imp,
                        request_id=request_id,
                        position=int(pos),
                        session_id=session_id,
                        platform=plat,
                    )
                examine = 1.0 / np.sqrt(1.0 + np.arange(FEED_SLOTS))
                p_click = sigmoid(-2.6 + 1.1 * aff[row, shown]) * examine
                clicks = shown[rng.random(FEED_SLOTS) < p_click]
                picks: list[tuple[int, str | None]] = [(int(it), request_id) for it in clicks]
                picks += [(int(it), None) for it in organic[row, : n_organic[row]]]
                t = t_imp
                for it, req in picks:
                    t = t + np.timedelta64(int(rng.integers(5, 90)), "s")
                    outcome = engage(
                        p,
                        rng,
                        log,
                        users,
                        items,
                        u,
                        it,
                        req,
                        t,
                        session_id,
                        plat,
                        float(aff[row, it]),
                    )
                    cat_fatigue[u, items.category[it]] += 1.0
                    if outcome and users.level[u] == 0 and unsafe_for_beginner[it]:
                        unsafe_started[u] = True
                        if rng.random() < 0.35:
                            churned[u] = True
                for it in shown:
                    cat_fatigue[u, items.category[it]] += 0.2
    beginners = users.level == 0
    return {
        "unsafe_started": float(
            churned[beginners & unsafe_started].mean()
            if (beginners & unsafe_started).any()
            else 0.0
        ),
        "safe_only": float(
            churned[beginners & ~unsafe_started].mean()
            if (beginners & ~unsafe_started).any()
            else 0.0
        ),
    }
