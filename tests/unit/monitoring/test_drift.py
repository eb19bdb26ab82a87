from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.monitoring.drift import (
    HISTORY_COLUMNS,
    DriftParams,
    DriftReport,
    DriftSnapshotError,
    compute_drift,
    drift_history_plot,
    read_drift_snapshot,
)

DriftPairs = dict[str, tuple[pd.DataFrame, pd.DataFrame]]


def _levels(rng: np.random.Generator, n: int, p: list[float]) -> pd.DataFrame:
    """A strongly-shiftable categorical column next to a stable one."""
    return pd.DataFrame(
        {
            "level": rng.choice(["beginner", "intermediate", "advanced"], n, p=p),
            "is_cold": rng.random(n) < 0.3,
        }
    )


@pytest.fixture(scope="module")
def shifted_report() -> DriftReport:
    """One shifted-pair report shared by the tests that only read its outputs."""
    rng = np.random.default_rng(7)
    ref = pd.DataFrame({"a": rng.normal(0, 1, 500), "b": rng.exponential(1.0, 500)})
    cur = pd.DataFrame({"a": rng.normal(1.5, 1, 500), "b": rng.exponential(3.0, 500)})
    return compute_drift(ref, cur, ["a", "b"])


def test_same_distribution_is_not_drift(drift_pairs: DriftPairs) -> None:
    ref, cur = drift_pairs["same"]
    result = compute_drift(ref, cur, ["a", "b"]).result

    assert not result.dataset_drift
    assert result.drifted_columns() == []
    assert (result.n_drifted, result.n_columns, result.drift_share) == (0, 2, 0.0)
    assert (result.reference_rows, result.current_rows) == (500, 500)
    # At most 1000 reference values: K-S p-values, drift below 0.05.
    for col in result.columns:
        assert (col.method, col.threshold) == ("K-S p_value", 0.05)
        assert col.score > col.threshold


def test_shifted_distribution_drifts_in_both_columns(drift_pairs: DriftPairs) -> None:
    ref, cur = drift_pairs["shifted"]
    result = compute_drift(ref, cur, ["a", "b"]).result

    assert result.dataset_drift
    assert result.drifted_columns() == ["a", "b"]
    assert (result.n_drifted, result.drift_share) == (2, 1.0)
    assert all(c.score < c.threshold for c in result.columns)


def test_dataset_drift_compares_share_with_drift_share(drift_pairs: DriftPairs) -> None:
    ref, _ = drift_pairs["same"]
    _, shifted = drift_pairs["shifted"]
    cur = shifted.assign(b=ref["b"].sample(frac=1.0, random_state=1).to_numpy())

    at_half = compute_drift(ref, cur, ["a", "b"], params=DriftParams(drift_share=0.5)).result
    above = compute_drift(ref, cur, ["a", "b"], params=DriftParams(drift_share=0.6)).result

    assert at_half.drifted_columns() == ["a"]
    assert at_half.drift_share == 0.5
    assert at_half.dataset_drift
    assert not above.dataset_drift


def test_categorical_mix_change_is_detected(rng: np.random.Generator) -> None:
    ref = _levels(rng, 600, [0.6, 0.3, 0.1])
    cur = _levels(rng, 600, [0.1, 0.3, 0.6])

    result = compute_drift(ref, cur, [], ["level", "is_cold"]).result

    assert result.drifted_columns() == ["level"]
    by_name = {c.column: c for c in result.columns}
    assert by_name["level"].method == "chi-square p_value"
    assert by_name["is_cold"].method == "Z-test p_value"
    assert result.dataset_drift


def test_large_reference_uses_distances(rng: np.random.Generator) -> None:
    ref = pd.DataFrame({"x": rng.normal(0, 1, 1500), "k": rng.choice(list("pqr"), 1500)})
    cur = pd.DataFrame({"x": rng.normal(1.0, 1, 1500), "k": rng.choice(list("pqr"), 1500)})

    result = compute_drift(ref, cur, ["x"], ["k"]).result

    by_name = {c.column: c for c in result.columns}
    assert (by_name["x"].method, by_name["x"].threshold) == ("Wasserstein distance (normed)", 0.1)
    assert (by_name["k"].method, by_name["k"].threshold) == ("Jensen-Shannon distance", 0.1)
    assert by_name["x"].drifted
    assert by_name["x"].score >= 0.1
    assert not by_name["k"].drifted
    assert by_name["k"].score < 0.1


def test_summary_is_json_and_matches_columns(shifted_report: DriftReport) -> None:
    result = shifted_report.result
    summary: dict[str, Any] = json.loads(json.dumps(result.summary()))

    assert summary["dataset_drift"] is True
    assert summary["drift_share"] == result.drift_share
    assert (summary["n_drifted"], summary["n_columns"]) == (2, 2)
    assert summary["rows"] == {"reference": 500, "current": 500}
    assert list(summary["columns"]) == ["a", "b"]
    for col in result.columns:
        assert summary["columns"][col.column] == {
            "drifted": col.drifted,
            "score": col.score,
            "method": col.method,
            "threshold": col.threshold,
        }


def test_html_and_json_outputs(shifted_report: DriftReport) -> None:
    assert shifted_report.html.lstrip().startswith(b"<!DOCTYPE html>")
    assert shifted_report.html.rstrip().endswith(b"</html>")
    snapshot = json.loads(shifted_report.json)
    assert set(snapshot) == {"metrics", "tests"}

    reread = read_drift_snapshot(snapshot, ["a", "b"], 0.5, reference_rows=500, current_rows=500)
    assert reread == shifted_report.result


def test_other_columns_are_ignored(drift_pairs: DriftPairs) -> None:
    ref, cur = drift_pairs["same"]
    ref = ref.assign(note="reference", c=np.nan)
    cur = cur.assign(note="current", extra=1)

    result = compute_drift(ref, cur, ["a"]).result

    assert [c.column for c in result.columns] == ["a"]


def test_missing_columns_are_named(drift_pairs: DriftPairs) -> None:
    ref, cur = drift_pairs["same"]
    with pytest.raises(ValueError, match=r"current frame lacks \['b'\]"):
        compute_drift(ref, cur.drop(columns="b"), ["a", "b"])
    with pytest.raises(ValueError, match=r"reference frame lacks \['zz'\]"):
        compute_drift(ref, cur, ["a"], ["zz"])


@pytest.mark.parametrize("side", ["reference", "current"])
def test_empty_frame_is_rejected(drift_pairs: DriftPairs, side: str) -> None:
    ref, cur = drift_pairs["same"]
    if side == "reference":
        ref = ref.iloc[:0]
    else:
        cur = cur.iloc[:0]
    with pytest.raises(ValueError, match=f"no rows to compare in the {side}"):
        compute_drift(ref, cur, ["a", "b"])


def test_bad_column_requests_are_rejected(drift_pairs: DriftPairs) -> None:
    ref, cur = drift_pairs["same"]
    with pytest.raises(ValueError, match="no columns requested"):
        compute_drift(ref, cur, [])
    with pytest.raises(ValueError, match="more than once"):
        compute_drift(ref, cur, ["a"], ["a"])
    with pytest.raises(ValueError, match="not the string"):
        compute_drift(ref, cur, "a")
    with pytest.raises(ValueError, match="non-numeric"):
        compute_drift(ref.assign(a="x"), cur, ["a"])


def test_all_nan_column_is_rejected_by_name(drift_pairs: DriftPairs) -> None:
    ref, cur = drift_pairs["same"]
    with pytest.raises(ValueError, match=r"no non-null finite value.*current.*\['b'\]"):
        compute_drift(ref, cur.assign(b=np.nan), ["a", "b"])
    with pytest.raises(ValueError, match=r"reference.*\['k'\]"):
        compute_drift(ref.assign(k=None), cur.assign(k="x"), ["a"], ["k"])


@pytest.mark.parametrize(
    "kwargs",
    [{"drift_share": 0.0}, {"drift_share": 1.5}, {"max_rows": 0}, {"seed": -1}],
)
def test_params_out_of_range_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DriftParams(**kwargs)


def test_sampling_is_seeded(rng: np.random.Generator) -> None:
    ref = pd.DataFrame({"a": rng.normal(0, 1, 3000), "b": rng.exponential(1.0, 3000)})
    cur = pd.DataFrame({"a": rng.normal(0.2, 1, 2500), "b": rng.exponential(1.2, 2500)})
    params = DriftParams(max_rows=400, seed=3)

    first = compute_drift(ref, cur, ["a", "b"], params=params).result
    second = compute_drift(ref, cur, ["a", "b"], params=params).result
    other_seed = compute_drift(ref, cur, ["a", "b"], params=DriftParams(max_rows=400, seed=4))

    assert (first.reference_rows, first.current_rows) == (400, 400)
    assert first == second
    assert other_seed.result.columns[0].score != first.columns[0].score


def test_malformed_snapshot_raises(shifted_report: DriftReport) -> None:
    snapshot = json.loads(shifted_report.json)
    rows = {"reference_rows": 500, "current_rows": 500}

    with pytest.raises(DriftSnapshotError, match="include_tests"):
        read_drift_snapshot({**snapshot, "tests": []}, ["a", "b"], 0.5, **rows)
    with pytest.raises(DriftSnapshotError, match="expected"):
        read_drift_snapshot(snapshot, ["a", "b", "c"], 0.5, **rows)

    (count,) = [m for m in snapshot["metrics"] if "DriftedColumnsCount" in m["config"]["type"]]
    count["value"]["count"] = 1.0
    with pytest.raises(DriftSnapshotError, match="flag 2 of 2"):
        read_drift_snapshot(snapshot, ["a", "b"], 0.5, **rows)


def test_drift_over_time_is_a_png() -> None:
    history = pd.DataFrame(
        {
            "at": pd.to_datetime(["2026-11-01", "2026-11-02", "2026-11-03"], utc=True),
            "drift_share": [0.1, 0.2, 0.7],
            "dataset_drift": [False, False, True],
        }
    )
    assert list(history.columns) == list(HISTORY_COLUMNS)

    png = drift_history_plot(history, 0.5, "feature drift")

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
