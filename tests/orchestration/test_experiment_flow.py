"""Served traffic flows back: monitoring reads the service's log, experiments are analysed.

The module's copy of the session's trained tiny home (``trained_world``). The service serves the
world's users in process, the world responds from its hidden tastes, ingestion picks up
exposures and responses like any events, and ``experiment_analysis`` reports per-variant
outcomes with intervals.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
from typer.testing import CliRunner

from fitpulse_orchestration.cli import app
from fitpulse_orchestration.features.point_in_time import USER_FEATURES
from fitpulse_orchestration.runner import run_monitoring
from fitpulse_orchestration.server.runtime import build_runtime, profile_backends
from fitpulse_orchestration.serving.feed_types import ServingConfig
from fitpulse_orchestration.serving.traffic import serve_traffic, world_user_ids
from fitpulse_orchestration.storage.asset_values import load_asset_value
from fitpulse_orchestration.storage.online_store import SQLiteOnlineStore

if TYPE_CHECKING:
    from conftest import TrainedWorld, WorldHome

pytestmark = pytest.mark.slow

EXPERIMENT = """
[experiment]
name = "flow-ab"
salt = "flow-salt"

[[experiment.variants]]
name = "control"
share = 0.5

[[experiment.variants]]
name = "popular-first"
share = 0.5
rerank = { max_per_category = 1 }
"""


@pytest.fixture(scope="module")
def trained(trained_world: TrainedWorld) -> WorldHome:
    return trained_world.world


def test_monitoring_reads_the_services_own_log(trained: WorldHome, tmp_path: Path) -> None:
    runtime = build_runtime(
        profile_backends(trained.home, "local"),
        tmp_path / "models",
        config=ServingConfig(feature_log_share=1.0),
    )
    users = world_user_ids(trained.store, 60, seed=3)
    responses, summary = serve_traffic(runtime.service, users)
    runtime.served_log.close()
    assert summary.requests == 60
    assert runtime.served_log.written_feature_rows >= 20 * 50

    facts = run_monitoring(trained.home)

    assert facts.served_log_source == "service_log"
    # The online store holds the offline snapshot and cross features are computed from the
    # same events: the service's features match the offline recomputation exactly.
    assert facts.worst_skew == 0.0
    assert facts.checks["skew_within_threshold"]
    assert facts.checks["beginner_violations_served"]
    assert facts.checks["empty_feed_rate"]
    assert all(r.model_version == "1" for r in responses)


def test_the_skew_check_fails_when_serving_reads_other_features(
    trained: WorldHome, tmp_path: Path
) -> None:
    # The snapshot clock makes serving's features equal the offline ones by construction (the
    # test above); here the online user table drifts from the offline one, as a stale or
    # broken materialization would, and the check must say so. The table is restored after.
    store = SQLiteOnlineStore(trained.home.online_store)
    meta = store.meta("user")
    assert meta is not None
    offline: pd.DataFrame = load_asset_value(trained.store, "user_features")
    drifted = offline.assign(u_engaged_28d=offline["u_engaged_28d"] + 5.0)
    store.materialize("user", drifted, USER_FEATURES, pd.Timestamp(meta.as_of))
    try:
        runtime = build_runtime(
            profile_backends(trained.home, "local"),
            tmp_path / "models",
            config=ServingConfig(feature_log_share=1.0),
        )
        serve_traffic(runtime.service, world_user_ids(trained.store, 60, seed=5))
        runtime.served_log.close()

        facts = run_monitoring(trained.home)
    finally:
        store.materialize("user", offline, USER_FEATURES, pd.Timestamp(meta.as_of))

    assert facts.worst_skew is not None
    assert facts.worst_skew > 0.05
    assert not facts.checks["skew_within_threshold"]


def test_traffic_and_experiment_analysis(trained: WorldHome, tmp_path: Path) -> None:
    experiment = tmp_path / "flow.toml"
    experiment.write_text(EXPERIMENT)
    runner = CliRunner()
    home = str(trained.home.root)

    served = runner.invoke(
        app, ["traffic", "--requests", "250", "--experiment", str(experiment), "--home", home]
    )
    assert served.exit_code == 0, served.output
    assert "served 250 feeds" in served.output
    assert "the world responded with" in served.output

    analysed = runner.invoke(app, ["analyze-experiment", "--experiment", "flow-ab", "--home", home])
    assert analysed.exit_code == 0, analysed.output
    table: pd.DataFrame = load_asset_value(trained.store, "experiment_analysis")
    assert list(table["variant"]) == ["control", "popular-first"]
    assert table["users"].sum() == 250
    control, treated = table.iloc[0], table.iloc[1]
    assert control["impressions"] == control["users"] * 20
    # One item per category: at most one per catalog category (11), guardrails never relaxed.
    assert treated["impressions"] <= treated["users"] * 11
    for metric in ("ctr", "workout_starts_per_user", "return_rate_7d"):
        assert (table[f"{metric}_lo"] <= table[metric]).all()
        assert (table[metric] <= table[f"{metric}_hi"]).all()
    assert (table["ctr"] > 0).all()
    assert treated["ctr_diff_lo"] <= treated["ctr_diff"] <= treated["ctr_diff_hi"]
    assert "| popular-first | " in analysed.output


def test_analysis_of_an_unknown_experiment_fails_clearly(trained: WorldHome) -> None:
    result = CliRunner().invoke(
        app, ["analyze-experiment", "--experiment", "nope", "--home", str(trained.home.root)]
    )

    assert result.exit_code == 2
    assert "no exposures of experiment 'nope'" in result.output
