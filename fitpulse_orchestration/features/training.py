"""Time split and the ranker's labelled examples.

The window of clean events is cut in three, by whole days::

    [start, ranker_start)        history: the feature-ALS model and early features
    [ranker_start, eval_start)   ranker training examples (features as of each example)
    [eval_start, end)            held-out evaluation window

ALS scores of training examples come from an ALS trained on events before ``ranker_start``,
so the ranker never sees an ALS score that already knew the example's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa

from fitpulse_orchestration.events.schema import ENGAGEMENT_GRADE

MIN_IMPRESSION_GROUPS = 10
"""Below this many labelled feed requests the ranker trains on sampled negatives instead."""


@dataclass(frozen=True)
class SplitParams:
    """Days in the held-out window and in the ranker's training window."""

    eval_days: int = 5
    ranker_days: int = 5


@dataclass(frozen=True)
class TimeSplit:
    """Boundaries (UTC midnights) of the three windows."""

    start: pd.Timestamp
    ranker_start: pd.Timestamp
    eval_start: pd.Timestamp
    end: pd.Timestamp

    def as_dict(self) -> dict[str, str]:
        """ISO strings of the boundaries (for metadata and tags)."""
        return {k: v.isoformat() for k, v in vars(self).items()}


def compute_time_split(events: pd.DataFrame, params: SplitParams) -> TimeSplit:
    """Cut the events' days into history, ranker and evaluation windows.

    Raises:
        ValueError: when fewer than ``eval_days + ranker_days + 1`` days of events exist.
    """
    if events.empty:
        raise ValueError("no clean events: ingest at least one day before training")
    first = events["ts"].min().floor("D")
    end = events["ts"].max().floor("D") + pd.Timedelta(days=1)
    days = int((end - first) / pd.Timedelta(days=1))
    needed = params.eval_days + params.ranker_days + 1
    if days < needed:
        raise ValueError(
            f"events span {days} days but the split needs at least {needed} "
            f"({params.ranker_days} ranker + {params.eval_days} evaluation + 1 history)"
        )
    eval_start = end - pd.Timedelta(days=params.eval_days)
    ranker_start = eval_start - pd.Timedelta(days=params.ranker_days)
    return TimeSplit(start=first, ranker_start=ranker_start, eval_start=eval_start, end=end)


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


def build_ranker_examples(
    events: pd.DataFrame,
    catalog: pd.DataFrame,
    split: TimeSplit,
    negatives: int = 7,
    seed: int = 7,
) -> pd.DataFrame:
    """Labelled (user, item, as_of) groups from the ranker window.

    With impressions, a group is one feed request; an item's label is the deepest engagement
    that came from that request (impression 0, click 1, start/read/watch 2, complete 3). Groups
    without any engagement carry no ranking signal and are left out. Without impressions (an
    imported log), each engagement becomes a group with ``negatives`` items sampled by
    popularity among those published before it and never engaged by the user. The sampled
    path is also taken when fewer than ``MIN_IMPRESSION_GROUPS`` impression groups have a
    positive.

    Returns:
        ``EXAMPLES_SCHEMA`` rows, grouped contiguously by ``group_id``.
    """
    window = events[(events["ts"] >= split.ranker_start) & (events["ts"] < split.eval_start)]
    impressions = window[window["event_type"] == "impression"]
    examples = _impression_examples(window, impressions)
    if examples["group_id"].nunique() < MIN_IMPRESSION_GROUPS:
        # Imported logs carry at most single-item "impressions" (low ratings) and engagements
        # without request ids: no impression group has both a positive and a negative.
        examples = _sampled_examples(events, window, catalog, split, negatives, seed)
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
    engaged = events[events["event_type"].isin(list(grades)) & (events["ts"] < split.eval_start)]
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
    """Graded relevance per user in the evaluation window: ``{user: {item: max grade}}``."""
    grades = {k: v for k, v in ENGAGEMENT_GRADE.items() if v > 0}
    ev = events[
        (events["ts"] >= split.eval_start)
        & (events["ts"] < split.end)
        & events["event_type"].isin(list(grades))
    ]
    best = ev.assign(grade=ev["event_type"].map(grades)).groupby(["user_id", "item_id"])["grade"]
    out: dict[str, dict[str, int]] = {}
    for (user, item), grade in best.max().items():
        out.setdefault(str(user), {})[str(item)] = int(grade)
    return out
