"""Data drift of a current frame against a reference frame, computed with Evidently.

``compute_drift`` runs Evidently's ``DataDriftPreset`` on the requested columns only and reads
its snapshot back into plain dataclasses, so callers never touch Evidently objects. Evidently
chooses each column's statistical test itself, from the *non-null* reference rows of that
column (Evidently 0.7.23, ``legacy/calculations/stattests/registry.py``):

* at most 1000 reference values: two-sample K-S for numerical columns with more than 5 distinct
  values, chi-square for 3-5 distinct values and for categorical columns with more than 2
  categories, and the two-proportion Z-test for at most 2 values. The score is a p-value; the
  threshold is 0.05 and a column drifts when the p-value falls below it (K-S: at or below).
* more than 1000 reference values: normed Wasserstein distance for numerical columns with more
  than 5 distinct values, Jensen-Shannon distance otherwise (categorical columns included). The
  score is a distance; the threshold is 0.1 and a column drifts when the distance reaches it.

A column's verdict is Evidently's own (its per-column test status), not recomputed here, so the
direction of the comparison always matches the test. Evidently 0.7 reports no dataset-level
drift boolean: ``DriftResult.dataset_drift`` is the share of drifted columns compared with
``DriftParams.drift_share`` (``share >= drift_share``), the same rule as Evidently's own
"share of drifted columns less than drift_share" test.

Evidently is imported inside ``compute_drift``: importing it costs about 1.7 s, which the CLI
and the serving process should not pay at import time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

_COUNT_METRIC: Final = "evidently:metric_v2:DriftedColumnsCount"
_VALUE_DRIFT_METRIC: Final = "evidently:metric_v2:ValueDrift"
_VALUE_DRIFT_TEST: Final = "evidently:bound_test:ValueDriftBoundTest"
_TEST_STATUS_DRIFTED: Final = {"FAIL": True, "SUCCESS": False}


class DriftSnapshotError(RuntimeError):
    """Evidently's snapshot does not have the structure this module reads.

    Raised instead of guessing when a metric, a test or a field is missing or has an
    unexpected type, e.g. after an Evidently upgrade changed the snapshot format.
    """


@dataclass(frozen=True)
class DriftParams:
    """How ``compute_drift`` decides dataset drift and how much data it compares.

    Attributes:
        drift_share: The dataset drifts when the share of drifted columns is at least this;
            in ``(0, 1]``.
        max_rows: Each side with more rows than this is sampled down to this many rows,
            without replacement, before the comparison; at least 1.
        seed: Seed of that sampling, in ``[0, 2**32)``; equal inputs give equal samples.

    Raises:
        ValueError: when a field is out of range.
    """

    drift_share: float = 0.5
    max_rows: int = 20_000
    seed: int = 7

    def __post_init__(self) -> None:
        if not 0.0 < self.drift_share <= 1.0:
            raise ValueError(f"drift_share must be in (0, 1], got {self.drift_share}")
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {self.max_rows}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")


_DEFAULT_PARAMS: Final = DriftParams()


@dataclass(frozen=True)
class ColumnDrift:
    """Evidently's drift verdict for one column.

    Attributes:
        column: The column's name.
        drifted: Whether Evidently's test for this column detected drift.
        score: The test's value as Evidently reports it: a p-value (K-S, chi-square, Z-test;
            small means drift) or a distance (Wasserstein, Jensen-Shannon; large means drift).
        method: The test's name as Evidently reports it, e.g. ``"K-S p_value"``.
        threshold: The threshold ``score`` was compared with.
    """

    column: str
    drifted: bool
    score: float
    method: str
    threshold: float


@dataclass(frozen=True)
class DriftResult:
    """Drift of every requested column and the dataset-level verdict.

    Attributes:
        dataset_drift: ``drift_share >= DriftParams.drift_share``.
        drift_share: ``n_drifted / n_columns``, as Evidently's ``DriftedColumnsCount`` reports it.
        n_drifted: Number of drifted columns.
        n_columns: Number of columns compared.
        columns: One entry per requested column: numerical columns first, then categorical,
            each in the order requested.
        reference_rows: Rows of the reference side that were compared (after sampling).
        current_rows: Rows of the current side that were compared (after sampling).
    """

    dataset_drift: bool
    drift_share: float
    n_drifted: int
    n_columns: int
    columns: tuple[ColumnDrift, ...]
    reference_rows: int
    current_rows: int

    def summary(self) -> dict[str, Any]:
        """A JSON-serializable digest of the result.

        Returns:
            ``{"dataset_drift", "drift_share", "n_drifted", "n_columns", "rows": {"reference",
            "current"}, "columns": {name: {"drifted", "score", "method", "threshold"}}}``,
            with only built-in types (``bool``, ``int``, ``float``, ``str``, ``dict``).
        """
        return {
            "dataset_drift": self.dataset_drift,
            "drift_share": self.drift_share,
            "n_drifted": self.n_drifted,
            "n_columns": self.n_columns,
            "rows": {"reference": self.reference_rows, "current": self.current_rows},
            "columns": {
                c.column: {
                    "drifted": c.drifted,
                    "score": c.score,
                    "method": c.method,
                    "threshold": c.threshold,
                }
                for c in self.columns
            },
        }

    def drifted_columns(self) -> list[str]:
        """Names of the drifted columns, in the order of ``columns``."""
        return [c.column for c in self.columns if c.drifted]


@dataclass(frozen=True)
class DriftReport:
    """A drift result together with the Evidently report it was read from.

    Attributes:
        result: The parsed verdicts.
        html: Evidently's standalone HTML report, UTF-8 encoded (a few MB: it embeds its
            JavaScript).
        json: Evidently's JSON snapshot (``Snapshot.json()``): ``{"metrics": [...],
            "tests": [...]}``; ``read_drift_snapshot`` parses it.
    """

    result: DriftResult
    html: bytes
    json: str


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: Sequence[str],
    categorical: Sequence[str] = (),
    params: DriftParams = _DEFAULT_PARAMS,
) -> DriftReport:
    """Compare the distribution of each requested column in ``current`` with ``reference``.

    Only the requested columns are passed to Evidently; other columns of the frames are
    ignored, and rows are independent samples (the index is not used). A side with more than
    ``params.max_rows`` rows is sampled down to that many rows (seeded, so equal inputs give
    equal results). NaN and +/-inf values are left out of each column's test by Evidently.

    A column that has no value left on one side (all NaN or inf after sampling) is rejected
    with a ``ValueError`` naming it, rather than dropped: Evidently itself cannot test it, and
    a feature that stopped being filled is a pipeline fault that must not pass as "no drift".

    Args:
        reference: Reference rows (e.g. a training sample); one row per example.
        current: Current rows (e.g. recent traffic), with the same requested columns.
        numerical: Columns compared as numbers; their dtype must be numeric (bool counts).
        categorical: Columns compared as categories (any hashable values, e.g. codes).
        params: Dataset-drift rule and sampling.

    Returns:
        The parsed result, Evidently's HTML report and its JSON snapshot.

    Raises:
        ValueError: when no column is requested, a column is requested twice (or as both
            numerical and categorical), a column is missing from a frame or duplicated in it,
            a frame has no rows, a numerical column has a non-numeric dtype, or a column has
            no non-null finite value on one side.
        DriftSnapshotError: when Evidently's snapshot has an unexpected structure.
    """
    columns = _requested_columns(numerical, categorical)
    frames = {"reference": reference, "current": current}
    _check_frames(frames, columns, numerical)
    ref = _sample(reference[columns], params)
    cur = _sample(current[columns], params)
    _check_has_values({"reference": ref, "current": cur})

    # Deferred: importing evidently takes ~1.7 s (see module docstring).
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=list(numerical), categorical_columns=list(categorical)
    )
    # include_tests adds the per-column pass/fail statuses that carry each column's verdict.
    report = Report(
        [DataDriftPreset(columns=columns, drift_share=params.drift_share)], include_tests=True
    )
    snapshot = report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    snapshot_json: str = snapshot.json()
    result = read_drift_snapshot(
        json.loads(snapshot_json),
        columns,
        params.drift_share,
        reference_rows=len(ref),
        current_rows=len(cur),
    )
    # get_html_str is what save_html writes; save_html silently writes nothing when given a
    # file object rather than a path (Evidently 0.7.23), so the string is taken directly.
    html: str = snapshot.get_html_str(as_iframe=False)
    return DriftReport(result=result, html=html.encode("utf-8"), json=snapshot_json)


def read_drift_snapshot(
    snapshot: Mapping[str, Any],
    columns: Sequence[str],
    drift_share: float,
    *,
    reference_rows: int,
    current_rows: int,
) -> DriftResult:
    """Read a ``DataDriftPreset`` snapshot (parsed ``Snapshot.json()``) into a ``DriftResult``.

    The snapshot must have been produced with ``include_tests=True``: each column's verdict is
    the status of its ``ValueDrift`` test (``FAIL`` means drifted).

    Args:
        snapshot: ``{"metrics": [...], "tests": [...]}`` as ``json.loads(snapshot.json())``.
        columns: The columns the preset covered; the result lists them in this order.
        drift_share: The dataset drifts when the share of drifted columns is at least this.
        reference_rows: Reference rows that were compared (recorded in the result).
        current_rows: Current rows that were compared (recorded in the result).

    Returns:
        The per-column verdicts and the dataset-level verdict.

    Raises:
        DriftSnapshotError: when a metric, test or field is missing or malformed, the
            snapshot's columns differ from ``columns``, or Evidently's drifted-column count
            disagrees with its per-column verdicts.
    """
    metrics = _field(snapshot, "metrics", "snapshot")
    tests = _field(snapshot, "tests", "snapshot")
    if not isinstance(metrics, list) or not isinstance(tests, list):
        raise DriftSnapshotError("snapshot 'metrics' and 'tests' must be lists")

    drifted_by_metric: dict[str, bool] = {}
    for i, test in enumerate(tests):
        where = f"tests[{i}]"
        if _field(_field(test, "bound_test", where), "type", where) != _VALUE_DRIFT_TEST:
            continue
        metric_id = str(_field(_field(test, "metric_config", where), "metric_id", where))
        status = _field(test, "status", where)
        if status not in _TEST_STATUS_DRIFTED:
            raise DriftSnapshotError(f"{where}: unexpected value drift test status {status!r}")
        drifted_by_metric[metric_id] = _TEST_STATUS_DRIFTED[status]

    counts: list[Mapping[str, Any]] = []
    by_column: dict[str, ColumnDrift] = {}
    for i, metric in enumerate(metrics):
        where = f"metrics[{i}]"
        config = _field(metric, "config", where)
        kind = _field(config, "type", where)
        if kind == _COUNT_METRIC:
            counts.append(_field(metric, "value", where))
        elif kind == _VALUE_DRIFT_METRIC:
            column = str(_field(config, "column", where))
            metric_id = str(_field(metric, "id", where))
            if metric_id not in drifted_by_metric:
                raise DriftSnapshotError(
                    f"{where}: no value drift test for column {column!r}; "
                    "was the report run with include_tests=True?"
                )
            if column in by_column:
                raise DriftSnapshotError(f"{where}: column {column!r} appears twice")
            by_column[column] = ColumnDrift(
                column=column,
                drifted=drifted_by_metric[metric_id],
                score=_number(_field(metric, "value", where), f"{where}.value"),
                method=str(_field(config, "method", where)),
                threshold=_number(_field(config, "threshold", where), f"{where}.threshold"),
            )

    if sorted(by_column) != sorted(columns):
        raise DriftSnapshotError(
            f"snapshot has value drift for {sorted(by_column)}, expected {sorted(columns)}"
        )
    if len(counts) != 1:
        raise DriftSnapshotError(f"expected one DriftedColumnsCount metric, found {len(counts)}")
    n_drifted = _number(_field(counts[0], "count", "DriftedColumnsCount"), "count")
    share = _number(_field(counts[0], "share", "DriftedColumnsCount"), "share")
    per_column = tuple(by_column[c] for c in columns)
    n_flagged = sum(c.drifted for c in per_column)
    # The count comes from Evidently's legacy DatasetDriftMetric, the verdicts from the
    # ValueDrift metrics: two code paths that must agree.
    if n_drifted != n_flagged or not math.isclose(share, n_flagged / len(per_column)):
        raise DriftSnapshotError(
            f"DriftedColumnsCount reports {n_drifted:g} drifted (share {share:g}) but the "
            f"value drift tests flag {n_flagged} of {len(per_column)} columns"
        )
    return DriftResult(
        dataset_drift=share >= drift_share,
        drift_share=share,
        n_drifted=n_flagged,
        n_columns=len(per_column),
        columns=per_column,
        reference_rows=reference_rows,
        current_rows=current_rows,
    )


def _requested_columns(numerical: Sequence[str], categorical: Sequence[str]) -> list[str]:
    """All requested columns, numerical first; rejects empty, string and repeated requests."""
    for name, value in (("numerical", numerical), ("categorical", categorical)):
        if isinstance(value, str):
            raise ValueError(f"{name} must be a sequence of column names, not the string {value!r}")
    columns = [*numerical, *categorical]
    if not columns:
        raise ValueError("no columns requested: pass at least one numerical or categorical column")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ValueError(
            f"columns requested more than once or as both numerical and categorical: {repeated}"
        )
    return columns


def _check_frames(
    frames: Mapping[str, pd.DataFrame], columns: Sequence[str], numerical: Sequence[str]
) -> None:
    """Raise ``ValueError`` unless every frame has rows and usable, unique requested columns.

    ``frames`` maps a side's name (``"reference"``, ``"current"``) to its frame; each problem
    is reported for all sides at once.
    """
    missing = {
        side: [c for c in columns if c not in frame.columns] for side, frame in frames.items()
    }
    if any(missing.values()):
        lacking = "; ".join(
            f"the {side} frame lacks {cols} (it has {list(frames[side].columns)})"
            for side, cols in missing.items()
            if cols
        )
        raise ValueError(f"requested column(s) missing: {lacking}")
    duplicated = {
        side: [c for c in columns if int((frame.columns == c).sum()) > 1]
        for side, frame in frames.items()
    }
    if any(duplicated.values()):
        raise ValueError(f"duplicate column labels among the requested columns: {duplicated}")
    empty = [side for side, frame in frames.items() if len(frame) == 0]
    if empty:
        raise ValueError(f"no rows to compare in the {' and '.join(empty)} frame(s)")
    non_numeric = {
        f"{side}.{c}": str(frame[c].dtype)
        for side, frame in frames.items()
        for c in numerical
        if not pd.api.types.is_numeric_dtype(frame[c])
    }
    if non_numeric:
        raise ValueError(f"numerical column(s) with non-numeric dtypes: {non_numeric}")


def _sample(frame: pd.DataFrame, params: DriftParams) -> pd.DataFrame:
    """At most ``params.max_rows`` rows of ``frame`` (seeded, without replacement), index reset."""
    if len(frame) > params.max_rows:
        frame = frame.sample(n=params.max_rows, random_state=params.seed)
    return frame.reset_index(drop=True)


def _check_has_values(frames: Mapping[str, pd.DataFrame]) -> None:
    """Raise ``ValueError`` naming the columns with no non-null finite value on some side.

    Evidently drops NaN and +/-inf before testing and raises deep inside its drift code when
    nothing is left.
    """
    empty: dict[str, list[str]] = {}
    for side, frame in frames.items():
        has_value = frame.replace([np.inf, -np.inf], np.nan).notna().any()
        cols = [str(c) for c in frame.columns if not bool(has_value[c])]
        if cols:
            empty[f"{side} ({len(frame)} rows compared)"] = cols
    if empty:
        raise ValueError(
            f"column(s) with no non-null finite value, so their drift cannot be tested: {empty}"
        )


def _field(obj: Any, key: str, where: str) -> Any:
    """``obj[key]``, or ``DriftSnapshotError`` naming ``where`` when it is not there."""
    if not isinstance(obj, Mapping) or key not in obj:
        raise DriftSnapshotError(f"{where}: expected a mapping with key {key!r}, got {obj!r:.200}")
    return obj[key]


def _number(value: Any, where: str) -> float:
    """``value`` as a float, or ``DriftSnapshotError`` when it is not a real number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DriftSnapshotError(f"{where}: expected a number, got {value!r:.200}")
    return float(value)


HISTORY_COLUMNS: Final = ("at", "drift_share", "dataset_drift")
"""One drift report per row: when (UTC), its share of drifted columns and its verdict."""


def drift_history_plot(history: pd.DataFrame, threshold: float, title: str) -> bytes:
    """Drift over time (PNG): each report's share of drifted columns, and the alarm threshold.

    ``history`` has ``HISTORY_COLUMNS``; reports whose share reached the threshold are marked.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import DateFormatter

    frame = history.sort_values("at")
    drifted = frame[frame["dataset_drift"].astype(bool)]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(frame["at"], frame["drift_share"], marker="o", label="share of drifted columns")
    ax.scatter(drifted["at"], drifted["drift_share"], color="red", s=60, zorder=3, label="drift")
    ax.axhline(
        threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:g}"
    )
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel("share of drifted columns")
    fig.suptitle(title, fontsize=10)
    ax.grid(alpha=0.3)
    # Above the axes: inside, it would cover points; beside them, it would widen the picture
    # past the asset page's metadata column.
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    ax.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d %H:%M", tz="UTC"))
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
