"""The closed loop: the world's users live with an arm's policies, one simulated day at a time.

Each day, for each user of the arm (ground truth from the world's latent state, which only the
simulation reads):

1. **Pushes.** At each of the push policy's local hours, a user who can get pushes (not churned,
   not opted out, notifications on) is decided for. A sent push is opened with
   ``world.push.open_probability`` (affinity for the item, how the hour suits the user, their
   activity, pushes in the last 7 days, night) and may make the user switch notifications off
   (``world.push.disable_probability``: many pushes, night, right after using the app, latent
   sensitivity). An opened push opens the app, and the user engages with the pushed item.
2. **Opening the app.** ``P(open) = sigmoid(logit(activity) + habit_weight x (habit -
   activity) + satisfaction_weight x (satisfaction - neutral) - fatigue_weight x pushes in the
   last 7 days beyond the free ones)``; ``habit`` is a moving average of active days,
   ``satisfaction`` of what the user's sessions gave them.
3. **The session.** The arm's feed policy serves 20 items; each is clicked, consumed, started and
   completed with the generator's probabilities (``world.respond``). A beginner who starts
   advanced or high-intensity content churns with ``unsafe_churn``; a session in which the user
   consumed nothing may make them churn (``disappointed_churn``); everyone churns with
   ``base_churn`` a day.
4. **The online state moves.** The user's history record (engaged and completed items, category
   counts) and push record (sends, opens, app opens, notifications off) are rewritten in the
   simulation's private copy of the online store, so tomorrow's feeds and push decisions see
   today's behaviour, as they would in production.

Models, features and the catalog stay as they were at the snapshot (no retraining inside the
simulated window). Serving deadlines are lifted so outcomes do not depend on the machine's load;
latency is measured, not enforced.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.features.online import UserHistory
from fitpulse_orchestration.features.reference import unsafe_for_beginners
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.push.caps import PushCapStore
from fitpulse_orchestration.push.features import PushHistory
from fitpulse_orchestration.simulation.arms import Arm
from fitpulse_orchestration.storage.online_store import InMemoryOnlineStore
from fitpulse_orchestration.world import push as world_push
from fitpulse_orchestration.world.respond import (
    SESSION_LOCAL_HOURS,
    WorldLatent,
    click_probability,
    completion_probability,
    consume_probability,
)

DAY_S: Final = 86400.0
WEEK_S: Final = 7 * DAY_S


@dataclass(frozen=True)
class Behaviour:
    """How simulated users decide: the environment's ground truth, not a platform setting."""

    habit_weight: float = 2.0
    satisfaction_weight: float = 2.0
    neutral_satisfaction: float = 0.3
    satisfaction_memory: float = 0.6
    habit_memory: float = 0.7
    fatigue_weight: float = 0.3
    fatigue_free_pushes: int = 3
    base_churn: float = 0.002
    disappointed_churn: float = 0.03
    unsafe_churn: float = 0.35
    dismiss_share: float = 0.4
    recent_use_s: float = 3 * 3600.0


@dataclass
class Population:
    """The users of one arm: their ids and latent traits (one row each)."""

    user_ids: np.ndarray
    pseudo_ids: np.ndarray
    rows: np.ndarray
    level: np.ndarray
    activity: np.ndarray
    utc_offset: np.ndarray
    opted_out: np.ndarray
    peak_hour: np.ndarray
    sensitivity: np.ndarray

    @classmethod
    def of(
        cls, latent: WorldLatent, user_ids: Sequence[str], pseudonymizer: Pseudonymizer
    ) -> Population:
        """The latent traits of ``user_ids`` (raw world ids).

        Raises:
            ValueError: when an id is not a user of the world.
        """
        rows = latent.user_rows(user_ids)
        if (rows < 0).any():
            unknown = [u for u, r in zip(user_ids, rows, strict=True) if r < 0][:3]
            raise ValueError(f"users unknown to the world: {unknown}")
        return cls(
            user_ids=np.asarray(user_ids, dtype=object),
            pseudo_ids=np.array([pseudonymizer.pseudonymize(u) for u in user_ids], dtype=object),
            rows=rows,
            level=latent.user_level[rows].astype(int),
            activity=np.clip(latent.user_activity[rows].astype(float), 0.01, 0.95),
            utc_offset=latent.user_utc_offset[rows].astype(int),
            opted_out=latent.user_opted_out[rows].astype(bool),
            peak_hour=latent.user_push_peak_hour[rows].astype(int),
            sensitivity=latent.user_push_sensitivity[rows].astype(float),
        )

    def __len__(self) -> int:
        return len(self.user_ids)


@dataclass
class ArmRun:
    """What one arm's users did, day by day.

    ``active``, ``starts`` and ``pushes`` are (users, days); ``requests`` has one row per served
    feed, ``push_log`` one per push decision.
    """

    arm: str
    population: Population
    active: np.ndarray
    starts: np.ndarray
    pushes: np.ndarray
    disabled_day: np.ndarray
    churned_day: np.ndarray
    requests: pd.DataFrame
    push_log: pd.DataFrame


REQUEST_COLUMNS: Final = (
    "arm",
    "day",
    "user",
    "request_id",
    "variant",
    "model_version",
    "items",
    "fallback",
    "latency_ms",
    "beginner",
    "unsafe_shown",
    "served",
)


def _logit(p: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.log(p) - np.log1p(-p)
    return result


def _sigmoid(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return result


class ClosedLoop:
    """The environment: the world's latent state, the catalog's safety labels, a private store.

    Args:
        latent: the world's hidden state (``world.respond.load_latent``).
        catalog: the served catalog (``item_id``, ``difficulty``, ``intensity``, ``item_type``).
        store: the simulation's own copy of the online store (history and push records of the
            simulated users are rewritten in it; the arms' services must read it too).
        start: midnight UTC of the first simulated day (after the serving snapshot).
        behaviour: the users' decision model.
        caps: the push cap store the arms' push service reserves sends in.

    Each ``run`` starts its users from their state at the snapshot: their online records are
    restored and their cap records dropped, so runs of the same users are independent.
    """

    def __init__(
        self,
        latent: WorldLatent,
        catalog: pd.DataFrame,
        store: InMemoryOnlineStore,
        start: pd.Timestamp,
        behaviour: Behaviour | None = None,
        caps: PushCapStore | None = None,
    ) -> None:
        self.latent = latent
        self.store = store
        self.start = start
        self.behaviour = behaviour or Behaviour()
        self.caps = caps
        self._initial: dict[str, dict[str, dict[str, Any] | None]] = {}
        unsafe = unsafe_for_beginners(catalog).to_numpy(bool)
        self.unsafe = dict(zip(catalog["item_id"].astype(str), unsafe, strict=True))
        self.category = dict(
            zip(catalog["item_id"].astype(str), catalog["category"].astype(str), strict=True)
        )

    def run(
        self,
        arm: Arm,
        population: Population,
        days: int,
        seed: int,
        on_day_end: Callable[[int, pd.DataFrame, pd.DataFrame], None] | None = None,
    ) -> ArmRun:
        """Play ``days`` days of ``population`` under ``arm`` with draws seeded by ``seed``.

        ``on_day_end(day, requests, push_log)`` (optional) is called after each day with the
        logs so far: a canary controller reads them there and may change the arm's routing.

        Raises:
            ValueError: if ``days`` < 1.
        """
        if days < 1:
            raise ValueError("days must be at least 1")
        self._reset([str(p) for p in population.pseudo_ids])
        day_state = _Users.start(self, population, days)
        rng = np.random.default_rng(seed)
        for day in range(days):
            self._play_day(arm, day_state, day, rng)
            if on_day_end is not None:
                on_day_end(day, day_state.requests_frame(), day_state.push_frame())
        return day_state.result(arm.name)

    def _reset(self, pids: list[str]) -> None:
        """Put the users' records back as they were at the snapshot; drop their cap records."""
        for kind in ("history", "push"):
            current = self.store.lookup_records(kind, pids)
            for pid in pids:
                initial = self._initial.setdefault(pid, {})
                if kind not in initial:
                    initial[kind] = current.get(pid)
                    continue
                record = initial[kind]
                if record is None:
                    self.store.forget_record(kind, pid)
                else:
                    self.store.put_record(kind, pid, record)
        if self.caps is not None:
            for pid in pids:
                self.caps.forget_user(pid)

    def _play_day(self, arm: Arm, u: _Users, day: int, rng: np.random.Generator) -> None:
        b = self.behaviour
        pop = u.population
        n = len(pop)
        day0 = self.start + pd.Timedelta(days=day)
        for i in np.flatnonzero(u.alive & (rng.random(n) < b.base_churn)):
            u.churn(int(i), day)
        push_opened = np.full(n, np.nan)
        for hour in arm.push.local_hours:
            minutes = rng.integers(0, 60, size=n)
            for i in np.flatnonzero(u.alive & ~u.disabled & ~pop.opted_out):
                offset_h = (hour - int(pop.utc_offset[i])) % 24
                at = day0 + pd.Timedelta(hours=offset_h, minutes=int(minutes[i]))
                request_id = f"{arm.name}-push-{day}-{hour:02d}-{i}"
                outcome = arm.push.decide(str(pop.user_ids[i]), at, request_id, int(u.sent[i]))
                entry: dict[str, Any] = {
                    "arm": arm.name,
                    "day": day,
                    "user": int(i),
                    "request_id": request_id,
                    "send": outcome.send and outcome.item is not None,
                    "item": outcome.item,
                    "blocked_by": outcome.blocked_by,
                    "latency_ms": outcome.latency_ms,
                    "opened": False,
                    "disabled": False,
                    "unsafe_to_beginner": False,
                }
                u.push_log.append(entry)
                if not entry["send"]:
                    continue
                item = str(outcome.item)
                unsafe = self.unsafe.get(item, True)
                entry["unsafe_to_beginner"] = bool(pop.level[i] == 0 and unsafe)
                opened = self._deliver(rng, u, int(i), item, hour, at.timestamp(), day)
                entry["opened"], entry["disabled"] = opened is not None, bool(u.disabled[i])
                if opened is not None and math.isnan(push_opened[i]):
                    push_opened[i] = opened
        fatigue = np.array([u.pushes_since(i, day0.timestamp() - WEEK_S) for i in range(n)])
        logit = (
            _logit(pop.activity)
            + b.habit_weight * (u.habit - pop.activity)
            + b.satisfaction_weight * (u.satisfaction - b.neutral_satisfaction)
            - b.fatigue_weight * np.maximum(fatigue - b.fatigue_free_pushes, 0)
        )
        organic = rng.random(n) < _sigmoid(logit)
        local_hours = rng.choice(SESSION_LOCAL_HOURS, size=n)
        seconds = rng.integers(0, 3600, size=n)
        for i in np.flatnonzero(u.alive & (organic | ~np.isnan(push_opened))):
            if math.isnan(push_opened[i]):
                offset_h = (int(local_hours[i]) - int(pop.utc_offset[i])) % 24
                t = (day0 + pd.Timedelta(hours=offset_h, seconds=int(seconds[i]))).timestamp()
            else:
                t = float(push_opened[i])
            self._session(arm, rng, u, int(i), day, t)
        u.habit = b.habit_memory * u.habit + (1 - b.habit_memory) * u.active[:, day]

    def _deliver(
        self, rng: np.random.Generator, u: _Users, i: int, item: str, hour: int, t: float, day: int
    ) -> float | None:
        """A push of ``item`` reaches user ``i`` at ``t``; return when it was opened, if it was."""
        b = self.behaviour
        pop = u.population
        u.sent[i] += 1
        u.pushes[i, day] += 1
        u.sent_times[i].append(t)
        history = u.push[i]
        recent_use = history.app_opens.size > 0 and t - history.app_opens[-1] < b.recent_use_s
        history = dataclasses.replace(history, sent=np.append(history.sent, t))
        row = self.latent.item_rows([item])[0]
        aff = float(self.latent.affinity(pop.rows[i], row)) if row >= 0 else -3.0
        quiet = bool(world_push.is_quiet_hour(hour))
        fit = float(world_push.hour_fit(pop.peak_hour[i], hour))
        week = u.pushes_since(i, t - WEEK_S)
        p_open = world_push.open_probability(aff, fit, float(pop.activity[i]), week, quiet)
        draw = rng.random()
        opened_at: float | None = None
        if draw < p_open:
            opened_at = t + float(rng.integers(60, world_push.OPEN_WINDOW_S))
            history = dataclasses.replace(history, opened=np.append(history.opened, opened_at))
            self._engage(rng, u, i, [item], day)
        elif draw < p_open + b.dismiss_share:
            history = dataclasses.replace(history, dismissed=np.append(history.dismissed, t + 60))
        p_off = world_push.disable_probability(
            aff, week, quiet, bool(recent_use), float(pop.sensitivity[i])
        )
        if rng.random() < p_off:
            u.disabled[i] = True
            u.disabled_day[i] = day
            history = dataclasses.replace(history, disabled_at=t + 3600.0)
        u.push[i] = history
        self.store.put_record("push", u.pids[i], history.to_record())
        return opened_at

    def _session(
        self, arm: Arm, rng: np.random.Generator, u: _Users, i: int, day: int, t: float
    ) -> None:
        """User ``i`` opens the app at ``t``: serve the arm's feed and play the response."""
        b = self.behaviour
        pop = u.population
        request_id = f"{arm.name}-feed-{day}-{i}"
        feed = arm.feed.serve(str(pop.user_ids[i]), request_id)
        beginner = bool(pop.level[i] == 0)
        unsafe_shown = sum(self.unsafe.get(it, True) for it in feed.items) if beginner else 0
        u.requests.append(
            {
                "arm": arm.name,
                "day": day,
                "user": i,
                "request_id": request_id,
                "variant": feed.variant,
                "model_version": feed.model_version,
                "items": len(feed.items),
                "fallback": feed.fallback,
                "latency_ms": feed.latency_ms,
                "beginner": beginner,
                "unsafe_shown": int(unsafe_shown),
                "served": tuple(feed.items),
            }
        )
        u.active[i, day] = True
        consumed = self._engage(rng, u, i, feed.items, day)
        if consumed == 0 and rng.random() < b.disappointed_churn:
            u.churn(i, day)
        session_value = min(consumed, 2) / 2.0
        u.satisfaction[i] = (
            b.satisfaction_memory * u.satisfaction[i] + (1 - b.satisfaction_memory) * session_value
        )
        history = u.push[i]
        u.push[i] = dataclasses.replace(history, app_opens=np.append(history.app_opens, t))
        self.store.put_record("push", u.pids[i], u.push[i].to_record())

    def _engage(
        self, rng: np.random.Generator, u: _Users, i: int, items: Sequence[str], day: int
    ) -> int:
        """User ``i`` looks at ``items`` in order; return how many they consumed.

        Clicks are position-biased; a clicked item is consumed and, for workouts and plans,
        started and completed with the generator's probabilities. The user's history record
        learns the engaged and completed items.
        """
        if not items:
            return 0
        pop = u.population
        rows = self.latent.item_rows(items)
        known = rows >= 0
        aff = np.full(len(items), -3.0)
        aff[known] = self.latent.affinity(np.full(int(known.sum()), pop.rows[i]), rows[known])
        clicked = rng.random(len(items)) < click_probability(aff, np.arange(len(items)))
        history = u.history[i]
        engaged, done = set(history.engaged), set(history.completed_recent)
        categories = dict(history.category_counts)
        consumed = 0
        for k in np.flatnonzero(clicked & known):
            item, row = str(items[int(k)]), int(rows[k])
            engaged.add(item)
            category = self.category.get(item, "unknown")
            categories[category] = categories.get(category, 0) + 1
            kind = str(self.latent.item_type[row])
            if rng.random() >= consume_probability(kind, float(aff[k])):
                continue
            consumed += 1
            if kind in ("article", "video"):
                continue
            u.starts[i, day] += 1
            too_hard = int(self.latent.item_difficulty[row]) - int(pop.level[i])
            if rng.random() < completion_probability(too_hard):
                done.add(item)
            if (
                pop.level[i] == 0
                and self.unsafe.get(item, True)
                and rng.random() < self.behaviour.unsafe_churn
            ):
                u.churn(i, day)
        u.history[i] = dataclasses.replace(
            history,
            engaged=frozenset(engaged),
            completed_recent=frozenset(done),
            category_counts=categories,
        )
        self.store.put_record("history", u.pids[i], u.history[i].to_record())
        return consumed


@dataclass
class _Users:
    """The mutable state of one arm's users during a run."""

    population: Population
    pids: list[str]
    history: list[UserHistory]
    push: list[PushHistory]
    alive: np.ndarray
    disabled: np.ndarray
    habit: np.ndarray
    satisfaction: np.ndarray
    sent: np.ndarray
    sent_times: list[list[float]]
    active: np.ndarray
    starts: np.ndarray
    pushes: np.ndarray
    disabled_day: np.ndarray
    churned_day: np.ndarray
    requests: list[dict[str, Any]]
    push_log: list[dict[str, Any]]

    @classmethod
    def start(cls, loop: ClosedLoop, population: Population, days: int) -> _Users:
        n = len(population)
        pids = [str(p) for p in population.pseudo_ids]
        history = loop.store.lookup_records("history", pids)
        push = loop.store.lookup_records("push", pids)
        histories = [UserHistory.from_record(history[p]) if p in history else UserHistory()
                     for p in pids]  # fmt: skip
        pushes = [PushHistory.from_record(push[p]) if p in push else PushHistory() for p in pids]
        at = loop.start.timestamp()
        return cls(
            population=population,
            pids=pids,
            history=histories,
            push=pushes,
            alive=np.ones(n, bool),
            disabled=np.array([h.notifications_off(at) for h in pushes], dtype=bool),
            habit=population.activity.copy(),
            satisfaction=np.full(n, loop.behaviour.neutral_satisfaction),
            sent=np.zeros(n, dtype=int),
            sent_times=[[] for _ in range(n)],
            active=np.zeros((n, days), bool),
            starts=np.zeros((n, days), dtype=int),
            pushes=np.zeros((n, days), dtype=int),
            disabled_day=np.full(n, -1),
            churned_day=np.full(n, -1),
            requests=[],
            push_log=[],
        )

    def churn(self, i: int, day: int) -> None:
        if self.alive[i]:
            self.alive[i] = False
            self.churned_day[i] = day

    def pushes_since(self, i: int, start: float) -> int:
        return sum(1 for s in self.sent_times[i] if s > start)

    def requests_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.requests, columns=list(REQUEST_COLUMNS))

    def push_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.push_log, columns=list(PUSH_COLUMNS))

    def result(self, arm: str) -> ArmRun:
        return ArmRun(
            arm=arm,
            population=self.population,
            active=self.active,
            starts=self.starts,
            pushes=self.pushes,
            disabled_day=self.disabled_day,
            churned_day=self.churned_day,
            requests=self.requests_frame(),
            push_log=self.push_frame(),
        )


PUSH_COLUMNS: Final = (
    "arm",
    "day",
    "user",
    "request_id",
    "send",
    "item",
    "blocked_by",
    "latency_ms",
    "opened",
    "disabled",
    "unsafe_to_beginner",
)
