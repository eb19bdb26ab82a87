"""Online experiments of the home feed, analysed from logged events.

The serving layer logs every served feed as ``impression`` events (``serving.logs``) whose
payload names the experiment, the variant, the model version and the fallback. After ingestion
they are clean events (``events.schema.CLEAN_EVENTS_SCHEMA``, ``payload`` a JSON string). An
analysis joins them with the outcomes in the same log:

- **CTR**: clicked impressions over impressions. A click counts when its ``request_id``,
  ``user_id`` and ``item_id`` match an exposure of the experiment, once per impression (a
  double tap is one click-through), so CTR is a proportion.
- **Workout starts per user**: ``workout_start`` events (any item) of exposed users in the
  horizon after their first exposure, over exposed users.
- **Return rate** (``return_rate_7d``, named for the default horizon): share of exposed users with
  an ``app_open`` in the horizon after their first exposure.

The horizon is ``(first exposure, first exposure + horizon_days]``: strictly after, so the
``app_open`` that requested the first feed is not its own return.

Intervals are percentile bootstraps over *users* (a cluster bootstrap: one user's requests are
correlated, so resampling impressions would understate the variance). Each arm is resampled
independently, and a difference's interval comes from the differences of the arms' replicates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

EXPOSURE_COLUMNS: Final = (
    "request_id",
    "user_id",
    "variant",
    "model_version",
    "item_id",
    "position",
    "ts",
    "event_id",
    "problem",
)
PROBLEMS: Final = ("invalid_json", "not_an_object", "missing_variant", "missing_request_id")
"""Why an exposure row is unusable (``problem`` column of ``exposures_of``).

``invalid_json`` and ``not_an_object`` payloads cannot say which experiment they belong to, so
every experiment's analysis reports them.
"""

METRICS: Final = ("ctr", "workout_starts_per_user", "return_rate_7d")
COUNT_COLUMNS: Final = (
    "variant",
    "users",
    "requests",
    "impressions",
    "clicks",
    "workout_starts",
    "returned_users",
)
_BOOT_CHUNK_CELLS: Final = 4_000_000
"""Resampled user indices drawn at once (32 MB of int64): bounds memory for 50K+ users."""


@dataclass
class ExperimentAnalysis:
    """The analysis of one experiment.

    ``table`` has one row per variant, the control first, then the others by name:

    - counts: ``variant``, ``users``, ``requests``, ``impressions``, ``clicks`` (clicked
      impressions), ``workout_starts`` and ``returned_users`` (both in the horizon);
    - for each metric in ``METRICS`` (``ctr``, ``workout_starts_per_user``,
      ``return_rate_7d``): the estimate and its interval ``<metric>_lo`` / ``<metric>_hi``;
    - for each metric, the difference vs the control and its interval: ``<metric>_diff``,
      ``<metric>_diff_lo``, ``<metric>_diff_hi`` (NaN on the control row).

    Users exposed to more than one variant are in no row (``mixed_users`` counts them), nor are
    impressions whose payload could not be read (``malformed_exposures``).
    ``incomplete_horizon_users`` counts analysed users whose horizon ends after the last event
    in the log: their starts and returns are censored, which biases every arm alike.
    """

    experiment: str
    control: str
    table: pd.DataFrame
    confidence: float
    horizon_days: float
    n_boot: int
    seed: int
    mixed_users: int
    malformed_exposures: int
    incomplete_horizon_users: int

    def summary(self) -> dict[str, Any]:
        """JSON-ready metadata: the settings, the exclusions and each variant's row.

        ``variants`` maps a variant name to its table row; NaN (the control's differences) is
        left out.
        """
        variants: dict[str, dict[str, Any]] = {}
        for record in self.table.to_dict(orient="records"):
            row = {str(k): _plain(v) for k, v in record.items() if k != "variant" and not _isnan(v)}
            variants[str(record["variant"])] = row
        return {
            "experiment": self.experiment,
            "control": self.control,
            "confidence": self.confidence,
            "horizon_days": self.horizon_days,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "users": int(self.table["users"].sum()),
            "mixed_users": self.mixed_users,
            "malformed_exposures": self.malformed_exposures,
            "incomplete_horizon_users": self.incomplete_horizon_users,
            "variants": variants,
        }

    def readable(self) -> pd.DataFrame:
        """The table for people: one row per variant and metric.

        Columns ``variant``, ``users``, ``metric``, ``value``, ``ci`` and, for non-control
        variants, ``diff`` and ``diff_ci`` (intervals as text).
        """
        rows = []
        for record in self.table.to_dict(orient="records"):
            for metric in METRICS:
                diff = record[f"{metric}_diff"]
                rows.append(
                    {
                        "variant": record["variant"],
                        "users": int(record["users"]),
                        "metric": metric,
                        "value": round(float(record[metric]), 4),
                        "ci": f"[{record[f'{metric}_lo']:.4f}, {record[f'{metric}_hi']:.4f}]",
                        "diff": "" if _isnan(diff) else f"{diff:+.4f}",
                        "diff_ci": ""
                        if _isnan(diff)
                        else f"[{record[f'{metric}_diff_lo']:+.4f}, "
                        f"{record[f'{metric}_diff_hi']:+.4f}]",
                    }
                )
        return pd.DataFrame(rows)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def _plain(value: Any) -> Any:
    """Numpy scalars as Python ones (for JSON metadata)."""
    return value.item() if isinstance(value, np.generic) else value


def _read_payload(raw: str, experiment: str) -> tuple[bool, str | None, str | None, str | None]:
    """``(belongs, variant, model_version, problem)`` of one payload string."""
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return True, None, None, "invalid_json"
    if not isinstance(data, dict):
        return True, None, None, "not_an_object"
    if data.get("experiment") != experiment:
        return False, None, None, None
    variant = data.get("variant")
    version = data.get("model_version")
    version_str = None if version is None else str(version)
    if not isinstance(variant, str) or not variant:
        return True, None, version_str, "missing_variant"
    return True, variant, version_str, None


def exposures_of(events: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """The served impressions of ``experiment``, with their payloads parsed.

    An impression belongs to the experiment when its payload is a JSON object whose
    ``experiment`` is ``experiment``. Unusable rows are returned, not dropped: ``problem`` names
    what is wrong (one of ``PROBLEMS``) and is None on every usable row, so a caller counts them
    with ``problem.notna()`` and analyses ``problem.isna()``. Payloads that are not JSON objects
    at all are included for every experiment, since they may belong to any.

    Args:
        events: clean events (``CLEAN_EVENTS_SCHEMA``); only ``impression`` rows with a payload
            are read. Each distinct payload string is parsed once (a log has a handful).
        experiment: the experiment's name as the serving layer logs it.

    Returns:
        One row per impression, columns ``EXPOSURE_COLUMNS``: ``request_id``, ``user_id``,
        ``variant``, ``model_version`` (str or None), ``item_id``, ``position`` (Int64), ``ts``
        (UTC), ``event_id`` and ``problem``; ordered by ``ts`` (ties in log order).
    """
    impressions = events.loc[
        (events["event_type"] == "impression") & events["payload"].notna(),
        ["request_id", "user_id", "item_id", "position", "ts", "event_id", "payload"],
    ]
    distinct = pd.unique(impressions["payload"])
    parsed = pd.DataFrame(
        [_read_payload(raw, experiment) for raw in distinct],
        columns=["belongs", "variant", "model_version", "problem"],
        index=pd.Index(distinct, name="payload"),
    )
    if parsed.empty:
        parsed = parsed.astype({"belongs": bool})
    frame = impressions.join(parsed, on="payload")
    frame = frame.loc[frame["belongs"].astype(bool)].drop(columns=["belongs", "payload"])
    no_request = frame["problem"].isna() & frame["request_id"].isna()
    frame.loc[no_request, "problem"] = "missing_request_id"
    frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    out: pd.DataFrame = frame.loc[:, list(EXPOSURE_COLUMNS)].astype({"problem": object})
    out["problem"] = out["problem"].where(out["problem"].notna(), None)
    return out


def _events_in_horizon(
    events: pd.DataFrame, event_type: str, first: pd.Series, horizon: pd.Timedelta
) -> pd.Series:
    """Per user of ``first`` (indexed by user id), their ``event_type`` events in the horizon."""
    rows = events.loc[
        (events["event_type"] == event_type) & events["user_id"].isin(first.index),
        ["user_id", "ts"],
    ]
    start = rows["user_id"].map(first)
    inside = (rows["ts"] > start) & (rows["ts"] <= start + horizon)
    counts = rows.loc[inside, "user_id"].value_counts()
    return counts.reindex(first.index, fill_value=0).astype("int64")


def bootstrap_sums(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Column sums of ``values`` (users x k) over ``n_boot`` resamples of its rows: n_boot x k."""
    n_users, k = values.shape
    sums = np.empty((n_boot, k))
    columns = [np.ascontiguousarray(values[:, j]) for j in range(k)]
    chunk = max(1, _BOOT_CHUNK_CELLS // max(n_users, 1))
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        idx = rng.integers(0, n_users, size=(stop - start, n_users))
        for j, column in enumerate(columns):
            sums[start:stop, j] = column[idx].sum(axis=1)
    return sums


def _metrics(sums: np.ndarray, users: int) -> np.ndarray:
    """Metrics in ``METRICS`` order from sums of (impressions, clicks, starts, returned)."""
    impressions, clicks, starts, returned = (sums[..., j] for j in range(4))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([clicks / impressions, starts / users, returned / users], axis=-1)


def analyze_experiment(
    events: pd.DataFrame,
    experiment: str,
    control: str,
    horizon_days: float = 7.0,
    n_boot: int = 1000,
    seed: int = 7,
    confidence: float = 0.95,
) -> ExperimentAnalysis:
    """CTR, workout starts per user and return rate of each variant, with bootstrap intervals.

    Args:
        events: clean events (``CLEAN_EVENTS_SCHEMA``) covering the experiment and at least
            ``horizon_days`` after its last exposure (later horizons are censored; see
            ``ExperimentAnalysis.incomplete_horizon_users``).
        experiment: the experiment's name as logged in the impressions' payload.
        control: the variant the others are compared with.
        horizon_days: length of the outcome window after a user's first exposure.
        n_boot: bootstrap resamples per variant.
        seed: seed of the bootstrap; variant ``i`` (in table order) draws from the ``i``-th
            child of ``np.random.SeedSequence(seed)``, so a variant's interval does not depend
            on how many other variants there are.
        confidence: coverage of the percentile intervals.

    Returns:
        The analysis; see ``ExperimentAnalysis`` for the table's columns.

    Raises:
        ValueError: when the log has no usable exposure of ``experiment``, when ``control`` is
            not one of its variants (naming those found), or on invalid settings.
    """
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")

    exposures = exposures_of(events, experiment)
    usable = exposures.loc[exposures["problem"].isna()]
    malformed = len(exposures) - len(usable)
    if usable.empty:
        raise ValueError(
            f"no exposures of experiment {experiment!r} in the log "
            f"({malformed} impressions with unusable payloads)"
        )
    variants_per_user = usable.groupby("user_id")["variant"].nunique()
    mixed = variants_per_user.index[variants_per_user > 1]
    usable = usable.loc[~usable["user_id"].isin(mixed)]
    found = sorted(usable["variant"].unique())
    if control not in found:
        raise ValueError(
            f"control {control!r} is not a variant of experiment {experiment!r}; found {found}"
        )

    per_user = usable.groupby("user_id").agg(
        variant=("variant", "first"),
        first=("ts", "min"),
        requests=("request_id", "nunique"),
        impressions=("event_id", "size"),
    )
    shown = usable[["request_id", "user_id", "item_id"]].drop_duplicates()
    clicked = events.loc[
        (events["event_type"] == "click") & events["request_id"].isin(shown["request_id"]),
        ["request_id", "user_id", "item_id"],
    ].drop_duplicates()
    clicks = clicked.merge(shown, on=["request_id", "user_id", "item_id"])["user_id"]
    per_user["clicks"] = clicks.value_counts().reindex(per_user.index, fill_value=0)
    horizon = pd.Timedelta(days=horizon_days)
    per_user["workout_starts"] = _events_in_horizon(
        events, "workout_start", per_user["first"], horizon
    )
    per_user["returned"] = (
        _events_in_horizon(events, "app_open", per_user["first"], horizon) > 0
    ).astype("int64")
    incomplete = int((per_user["first"] + horizon > events["ts"].max()).sum())

    order = [control, *(v for v in found if v != control)]
    children = np.random.SeedSequence(seed).spawn(len(order))
    alpha = (1.0 - confidence) / 2.0
    quantiles = [alpha, 1.0 - alpha]
    replicates: dict[str, np.ndarray] = {}
    rows = []
    for variant, child in zip(order, children, strict=True):
        arm = per_user.loc[per_user["variant"] == variant]
        values = arm[["impressions", "clicks", "workout_starts", "returned"]].to_numpy(float)
        users = len(arm)
        point = _metrics(values.sum(axis=0), users)
        reps = _metrics(bootstrap_sums(values, n_boot, np.random.default_rng(child)), users)
        replicates[variant] = reps
        low, high = np.quantile(reps, quantiles, axis=0)
        row: dict[str, Any] = {
            "variant": variant,
            "users": users,
            "requests": int(arm["requests"].sum()),
            "impressions": int(arm["impressions"].sum()),
            "clicks": int(arm["clicks"].sum()),
            "workout_starts": int(arm["workout_starts"].sum()),
            "returned_users": int(arm["returned"].sum()),
        }
        for j, metric in enumerate(METRICS):
            row |= {metric: point[j], f"{metric}_lo": low[j], f"{metric}_hi": high[j]}
        rows.append(row)
    for row in rows:
        base = rows[0]
        diffs = replicates[row["variant"]] - replicates[control]
        low, high = np.quantile(diffs, quantiles, axis=0)
        is_control = row["variant"] == control
        for j, metric in enumerate(METRICS):
            row |= {
                f"{metric}_diff": np.nan if is_control else row[metric] - base[metric],
                f"{metric}_diff_lo": np.nan if is_control else low[j],
                f"{metric}_diff_hi": np.nan if is_control else high[j],
            }
    table = pd.DataFrame(rows)
    return ExperimentAnalysis(
        experiment=experiment,
        control=control,
        table=table,
        confidence=confidence,
        horizon_days=horizon_days,
        n_boot=n_boot,
        seed=seed,
        mixed_users=len(mixed),
        malformed_exposures=malformed,
        incomplete_horizon_users=incomplete,
    )
