"""The evaluation protocol (how events are split) and the ranker's labelled examples.

Every protocol cuts the events into three parts::

    fit          what the validation models (tuning, the ranker's feature models, the
                 choice of the served scorer) learn from
    validation   the ranker's training examples, hyper-parameter search and scorer choice
    held-out     the evaluation the promotion gate judges (never used to choose anything)

``time`` (default) cuts by whole days: fit is ``[start, ranker_start)``, validation
``[ranker_start, eval_start)``, held-out ``[eval_start, end)``. The held-out window is the
shortest run of latest days holding at least ``heldout_share`` of the engagements and
``min_heldout_users`` users (or ``eval_days`` when given), and the validation window is sized
the same way on the days before it.

``user_random`` (the Microsoft Recommenders protocol) holds out a seeded random
``heldout_share`` of each user's engaged items, and ``leave_last`` each user's last engaged
item; the validation part is carved from the rest by the same rule. Their held-out and
validation parts are (user, item) pairs: every event of such a pair leaves the data the models
see, and all of them happen "as of" ``end`` (``ranker_start == eval_start == end``).

ALS scores of training examples come from models that never saw the examples, so the ranker
never sees a score that already knew the example's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pandas as pd
import pandera.pandas as pa

from fitpulse_orchestration.events.schema import ENGAGEMENT_GRADE

MIN_IMPRESSION_GROUPS = 10
"""Below this many labelled feed requests the ranker trains on sampled negatives instead."""
HOLDOUTS: Final = ("time", "user_random", "leave_last")
"""Evaluation protocols (``SplitParams.holdout``)."""

Pair = tuple[str, str]


@dataclass(frozen=True)
class SplitParams:
    """The evaluation protocol and its sizes.

    Attributes:
        holdout: one of ``HOLDOUTS``.
        eval_days: ``time`` only: fixed days of the held-out window (None: sized by events).
        ranker_days: ``time`` only: fixed days of the validation window (None: sized).
        heldout_share: ``time``: least share of engagements in each window; ``user_random``:
            share of each user's engaged items held out (at least one).
        min_heldout_users: ``time``: least number of users engaging in each window.
        seed: ``user_random``: seed of the per-user draw.
    """

    holdout: str = "time"
    eval_days: int | None = None
    ranker_days: int | None = None
    heldout_share: float = 0.15
    min_heldout_users: int = 50
    seed: int = 42

    def __post_init__(self) -> None:
        if self.holdout not in HOLDOUTS:
            raise ValueError(f"holdout must be one of {', '.join(HOLDOUTS)}, got {self.holdout!r}")
        if not 0.0 < self.heldout_share < 1.0:
            raise ValueError(f"heldout_share must be in (0, 1), got {self.heldout_share}")
        for name in ("eval_days", "ranker_days"):
            days = getattr(self, name)
            if days is not None and days < 1:
                raise ValueError(f"{name} must be at least 1, got {days}")


@dataclass(frozen=True)
class TimeSplit:
    """The protocol's boundaries (UTC) and, for per-user protocols, the pairs it holds out.

    ``heldout_pairs`` and ``validation_pairs`` are (user_id, item_id) pairs; both are empty
    under the ``time`` protocol, whose parts are time windows.
    """

    start: pd.Timestamp
    ranker_start: pd.Timestamp
    eval_start: pd.Timestamp
    end: pd.Timestamp
    protocol: str = "time"
    heldout_pairs: frozenset[Pair] = field(default_factory=frozenset)
    validation_pairs: frozenset[Pair] = field(default_factory=frozenset)

    def as_dict(self) -> dict[str, str]:
        """The boundaries as ISO strings and the protocol (for metadata, tags and params)."""
        out = {
            "start": self.start.isoformat(),
            "ranker_start": self.ranker_start.isoformat(),
            "eval_start": self.eval_start.isoformat(),
            "end": self.end.isoformat(),
            "protocol": self.protocol,
        }
        if self.protocol != "time":
            out["heldout_pairs"] = str(len(self.heldout_pairs))
            out["validation_pairs"] = str(len(self.validation_pairs))
        return out

    def describe(self) -> str:
        """One line a reviewer reads: which protocol, which window or how many pairs."""
        if self.protocol == "time":
            return (
                f"time: validation {self.ranker_start.date()} .. {self.eval_start.date()}, "
                f"held-out {self.eval_start.date()} .. {self.end.date()} (end exclusive)"
            )
        return (
            f"{self.protocol}: {len(self.heldout_pairs):,} held-out and "
            f"{len(self.validation_pairs):,} validation (user, item) pairs, as of {self.end}"
        )

    def train_events(self, events: pd.DataFrame) -> pd.DataFrame:
        """Events the evaluated models may learn from (the held-out part removed)."""
        if self.protocol == "time":
            return events[events["ts"] < self.eval_start]
        return _without_pairs(events, self.heldout_pairs)

    def fit_events(self, events: pd.DataFrame) -> pd.DataFrame:
        """Events the validation models may learn from (held-out and validation removed)."""
        if self.protocol == "time":
            return events[events["ts"] < self.ranker_start]
        return _without_pairs(events, self.heldout_pairs | self.validation_pairs)

    def example_events(self, events: pd.DataFrame) -> pd.DataFrame:
        """Events that features of validation examples may see (as of each example).

        Under ``time`` that is everything before the held-out window (point-in-time features
        cut at each example's timestamp); per-user protocols also drop the validation pairs.
        """
        if self.protocol == "time":
            return self.train_events(events)
        return self.fit_events(events)

    def validation_window(self, events: pd.DataFrame) -> pd.DataFrame:
        """The validation part's events (where the ranker's examples come from)."""
        if self.protocol == "time":
            return events[(events["ts"] >= self.ranker_start) & (events["ts"] < self.eval_start)]
        return _only_pairs(events, self.validation_pairs)

    def heldout_window(self, events: pd.DataFrame) -> pd.DataFrame:
        """The held-out part's events."""
        if self.protocol == "time":
            return events[(events["ts"] >= self.eval_start) & (events["ts"] < self.end)]
        return _only_pairs(events, self.heldout_pairs)


def _pair_keys(events: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([events["user_id"].astype(str), events["item_id"].astype(str)])


def _only_pairs(events: pd.DataFrame, pairs: frozenset[Pair]) -> pd.DataFrame:
    if not pairs or events.empty:
        return events.iloc[0:0]
    wanted = pd.MultiIndex.from_tuples(sorted(pairs))
    return events[_pair_keys(events).isin(wanted)]


def _without_pairs(events: pd.DataFrame, pairs: frozenset[Pair]) -> pd.DataFrame:
    if not pairs or events.empty:
        return events
    wanted = pd.MultiIndex.from_tuples(sorted(pairs))
    return events[~_pair_keys(events).isin(wanted)]


def compute_time_split(events: pd.DataFrame, params: SplitParams) -> TimeSplit:
    """Split the events by ``params.holdout`` (see the module docstring).

    Raises:
        ValueError: when there are no events, when the days cannot hold a history, a
            validation and a held-out window, or when no user has enough engaged items to hold
            any out.
    """
    if events.empty:
        raise ValueError("no clean events: ingest at least one day before training")
    first = events["ts"].min().floor("D")
    end = events["ts"].max().floor("D") + pd.Timedelta(days=1)
    if params.holdout != "time":
        return _pair_split(events, params, first, end)
    days = int((end - first) / pd.Timedelta(days=1))
    if params.eval_days is not None and params.ranker_days is not None:
        needed = params.eval_days + params.ranker_days + 1
        if days < needed:
            raise ValueError(
                f"events span {days} days but the split needs at least {needed} "
                f"({params.ranker_days} ranker + {params.eval_days} evaluation + 1 history)"
            )
    engaged = _engagements(events)
    eval_start = _window_start(engaged, first, end, params.eval_days, params)
    ranker_start = _window_start(
        engaged[engaged["ts"] < eval_start], first, eval_start, params.ranker_days, params
    )
    if ranker_start <= first:
        raise ValueError(
            f"events span {days} days: too few to hold a history, a validation and a held-out "
            f"window of {params.heldout_share:.0%} of the engagements each; pass --eval-days and "
            "--ranker-days, or use a per-user holdout"
        )
    return TimeSplit(start=first, ranker_start=ranker_start, eval_start=eval_start, end=end)


def _engagements(events: pd.DataFrame) -> pd.DataFrame:
    grades = [k for k, v in ENGAGEMENT_GRADE.items() if v > 0]
    return events[events["event_type"].isin(grades) & events["item_id"].notna()]


def _window_start(
    engaged: pd.DataFrame,
    first: pd.Timestamp,
    end: pd.Timestamp,
    fixed_days: int | None,
    params: SplitParams,
) -> pd.Timestamp:
    """Start of the shortest run of whole days before ``end`` that is big enough."""
    if fixed_days is not None:
        return end - pd.Timedelta(days=fixed_days)
    total = len(engaged)
    days = int((end - first) / pd.Timedelta(days=1))
    if total == 0:
        return end - pd.Timedelta(days=1)
    day = engaged["ts"].dt.floor("D")
    per_day = day.value_counts()
    need_users = min(params.min_heldout_users, int(engaged["user_id"].nunique()))
    for k in range(1, days):
        start = end - pd.Timedelta(days=k)
        events_in = int(per_day[per_day.index >= start].sum())
        users_in = int(engaged.loc[day >= start, "user_id"].nunique())
        if events_in >= params.heldout_share * total and users_in >= need_users:
            return start
    return first


def _pair_split(
    events: pd.DataFrame, params: SplitParams, first: pd.Timestamp, end: pd.Timestamp
) -> TimeSplit:
    engaged = _engagements(events)
    heldout = _hold_out_pairs(engaged, params, params.seed)
    remaining = _without_pairs(engaged, frozenset(heldout))
    validation = _hold_out_pairs(remaining, params, params.seed + 1)
    if not heldout or not validation:
        raise ValueError(
            f"{params.holdout}: no user has enough engaged items to hold some out twice "
            "(held-out and validation need at least 3 distinct engaged items per user)"
        )
    return TimeSplit(
        start=first,
        ranker_start=end,
        eval_start=end,
        end=end,
        protocol=params.holdout,
        heldout_pairs=frozenset(heldout),
        validation_pairs=frozenset(validation),
    )


def _hold_out_pairs(engaged: pd.DataFrame, params: SplitParams, seed: int) -> set[Pair]:
    """Per user with at least two distinct engaged items: the pairs the protocol holds out.

    ``user_random``: ``max(1, round(share * n))`` of the user's ``n`` items, drawn with a
    generator seeded by ``seed`` over users in sorted order (never all of them).
    ``leave_last``: the item of the user's latest engagement (ties: the larger item id).
    """
    pairs = (
        engaged.assign(
            user_id=engaged["user_id"].astype(str), item_id=engaged["item_id"].astype(str)
        )
        .groupby(["user_id", "item_id"], sort=True)["ts"]
        .max()
        .reset_index()
    )
    out: set[Pair] = set()
    rng = np.random.default_rng(seed)
    for user, group in pairs.groupby("user_id", sort=True):
        n = len(group)
        if n < 2:
            continue
        items = group["item_id"].to_numpy()
        if params.holdout == "leave_last":
            last = group.sort_values(["ts", "item_id"]).iloc[-1]["item_id"]
            out.add((str(user), str(last)))
            continue
        k = min(n - 1, max(1, round(params.heldout_share * n)))
        for j in rng.choice(n, size=k, replace=False):
            out.add((str(user), str(items[j])))
    return out


EXAMPLES_SCHEMA = pa.DataFrameSchema(
    {
        "group_id": pa.Column(str),
        "user_id": pa.Column(str),
        "item_id": pa.Column(str),
        "as_of": pa.Column(pd.DatetimeTZDtype(tz="UTC")),
        "label": pa.Column("int64", pa.Check.isin([0, 1, 2, 3])),
        "kind": pa.Column(str, pa.Check.isin(["impression", "sampled"])),
    },
    name="ranker_examples",
)


MAX_RANKER_GROUPS: Final = 200_000
"""Most groups (feed requests or sampled engagements) the ranker learns from: a seeded sample
of the validation window's groups above it. About 20 rows a group, so at most about 4M rows of
features (about 2 GiB as the training frame); LambdaRank's gains flatten long before that on
every world measured here, while a full-scale day holds millions of engaged feed requests."""


def build_ranker_examples(
    events: pd.DataFrame,
    catalog: pd.DataFrame,
    split: TimeSplit,
    negatives: int = 7,
    seed: int = 7,
    max_groups: int = MAX_RANKER_GROUPS,
) -> pd.DataFrame:
    """Labelled (user, item, as_of) groups from the ranker window.

    With impressions, a group is one feed request; an item's label is the deepest engagement
    that came from that request (impression 0, click 1, start/read/watch 2, complete 3). Groups
    without any engagement carry no ranking signal and are left out. Without impressions (an
    imported log), each engagement becomes a group with ``negatives`` items sampled by
    popularity among those published before it and never engaged by the user. The sampled
    path is also taken when fewer than ``MIN_IMPRESSION_GROUPS`` impression groups have a
    positive. Above ``max_groups`` groups, a seeded sample of ``max_groups`` whole groups is
    kept.

    Returns:
        ``EXAMPLES_SCHEMA`` rows, grouped contiguously by ``group_id``.
    """
    window = split.validation_window(events)
    impressions = window[window["event_type"] == "impression"]
    examples = _impression_examples(window, impressions)
    if examples["group_id"].nunique() < MIN_IMPRESSION_GROUPS:
        # Imported logs carry at most single-item "impressions" (low ratings) and engagements
        # without request ids: no impression group has both a positive and a negative.
        examples = _sampled_examples(events, window, catalog, split, negatives, seed)
    groups = np.sort(examples["group_id"].unique())
    if len(groups) > max_groups:
        kept = np.random.default_rng(seed).choice(groups, size=max_groups, replace=False)
        examples = examples[examples["group_id"].isin(kept)].reset_index(drop=True)
    validated: pd.DataFrame = EXAMPLES_SCHEMA.validate(examples)
    return validated


def _impression_examples(window: pd.DataFrame, impressions: pd.DataFrame) -> pd.DataFrame:
    grades = {k: v for k, v in ENGAGEMENT_GRADE.items() if v > 0}
    eng = window[window["event_type"].isin(list(grades)) & window["request_id"].notna()]
    labels = (
        eng.assign(grade=eng["event_type"].map(grades))
        .groupby(["request_id", "item_id"])["grade"]
        .max()
    )
    imp = impressions.drop_duplicates(["request_id", "item_id"])
    key = pd.MultiIndex.from_arrays([imp["request_id"], imp["item_id"]])
    label = labels.reindex(key).fillna(0).astype("int64").to_numpy()
    examples = pd.DataFrame(
        {
            "group_id": imp["request_id"].astype(str).to_numpy(),
            "user_id": imp["user_id"].to_numpy(),
            "item_id": imp["item_id"].astype(str).to_numpy(),
            "as_of": imp["ts"].to_numpy(),
            "label": label,
            "kind": "impression",
        }
    )
    examples["as_of"] = pd.to_datetime(examples["as_of"], utc=True)
    examples["label"] = examples["label"].astype("int64")
    positive_groups = examples.groupby("group_id")["label"].transform("max") > 0
    examples = examples[positive_groups]
    # Order groups by their first impression so each group stays contiguous even when its
    # impressions carry different timestamps.
    examples = examples.assign(_start=examples.groupby("group_id")["as_of"].transform("min"))
    examples = examples.sort_values(["_start", "group_id", "as_of"], kind="stable")
    return examples.drop(columns="_start").reset_index(drop=True)


def _sampled_examples(
    events: pd.DataFrame,
    window: pd.DataFrame,
    catalog: pd.DataFrame,
    split: TimeSplit,
    negatives: int,
    seed: int,
) -> pd.DataFrame:
    grades = {k: v for k, v in ENGAGEMENT_GRADE.items() if v > 0}
    pos = window[window["event_type"].isin(list(grades))]
    pos = (
        pos.assign(grade=pos["event_type"].map(grades), day=pos["ts"].dt.floor("D"))
        .sort_values("grade", ascending=False, kind="stable")
        .drop_duplicates(["user_id", "item_id", "day"])
        .sort_values("ts", kind="stable")
    )
    train = split.train_events(events)
    engaged = train[train["event_type"].isin(list(grades))]
    user_items = engaged.groupby("user_id")["item_id"].agg(set).to_dict()
    pop = engaged["item_id"].value_counts()
    cat = catalog.set_index("item_id")["published_at"]
    item_ids = pop.index.to_numpy().astype(str)
    # Naive UTC datetime64 so the per-example comparison is a plain vectorised numpy compare.
    published = cat.reindex(item_ids).dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    prob = pop.to_numpy(dtype=float) ** 0.75
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, str, pd.Timestamp, int, str]] = []
    for ev_id, user, item, ts, grade in zip(
        pos["event_id"], pos["user_id"], pos["item_id"], pos["ts"], pos["grade"], strict=True
    ):
        group = f"sampled-{ev_id}"
        rows.append((group, user, str(item), ts, int(grade), "sampled"))
        allowed = published < ts.tz_convert(None).to_datetime64()
        p = np.where(allowed, prob, 0.0)
        mine = user_items.get(user, set())
        taken = 0
        if p.sum() > 0:
            draws = rng.choice(
                len(item_ids),
                size=min(4 * negatives, int((p > 0).sum())),
                replace=False,
                p=p / p.sum(),
            )
            for j in draws:
                if taken >= negatives:
                    break
                if item_ids[j] in mine:
                    continue
                rows.append((group, user, item_ids[j], ts, 0, "sampled"))
                taken += 1
    examples = pd.DataFrame(
        rows, columns=["group_id", "user_id", "item_id", "as_of", "label", "kind"]
    )
    examples["as_of"] = pd.to_datetime(examples["as_of"], utc=True)
    examples["label"] = examples["label"].astype("int64")
    return examples


def heldout_relevance(events: pd.DataFrame, split: TimeSplit) -> dict[str, dict[str, int]]:
    """Graded relevance per user in the held-out part: ``{user: {item: max grade}}``."""
    return graded_relevance(split.heldout_window(events))


def validation_relevance(events: pd.DataFrame, split: TimeSplit) -> dict[str, dict[str, int]]:
    """Graded relevance per user in the validation part: ``{user: {item: max grade}}``."""
    return graded_relevance(split.validation_window(events))


def graded_relevance(window: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Each user's deepest engagement grade per item among ``window``'s events."""
    grades = {k: v for k, v in ENGAGEMENT_GRADE.items() if v > 0}
    ev = window[window["event_type"].isin(list(grades))]
    best = ev.assign(grade=ev["event_type"].map(grades)).groupby(["user_id", "item_id"])["grade"]
    out: dict[str, dict[str, int]] = {}
    for (user, item), grade in best.max().items():
        out.setdefault(str(user), {})[str(item)] = int(grade)
    return out
