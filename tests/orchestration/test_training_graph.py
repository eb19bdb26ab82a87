"""The spine's end-to-end test: the tiny world through ingestion, training and registration.

One module-scoped run (ingest every landed day, then the training job twice) is shared by
every assertion; it takes about a minute.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fitpulse_orchestration.console import default_dagster_url
from fitpulse_orchestration.definitions import build_definitions
from fitpulse_orchestration.evaluation.home_feed import METRICS, MODELS, SLICES, metric
from fitpulse_orchestration.evaluation.tuning import POPULARITY_HALF_LIVES
from fitpulse_orchestration.events.schema import ENGAGEMENT_GRADE
from fitpulse_orchestration.features.point_in_time import USER_FEATURES
from fitpulse_orchestration.storage.asset_values import load_asset_value
from fitpulse_orchestration.storage.online_store import SQLiteOnlineStore
from model_registry.client import (
    EXPERIMENT,
    GOVERNANCE_NOTE,
    HOME_RANKER_MODEL,
    RegisteredVersion,
    RegistryClient,
)
from model_registry.gate import CHECK_NAMES

if TYPE_CHECKING:
    from conftest import WorldHome

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::dagster.BetaWarning")]


@dataclass
class GraphRun:
    """What the module's end-to-end run produced."""

    world: WorldHome
    workdir: Path
    ingestion: list[dg.ExecuteInProcessResult]
    first: dg.ExecuteInProcessResult
    first_table: pd.DataFrame
    second: dg.ExecuteInProcessResult
    second_table: pd.DataFrame

    @property
    def tracking_uri(self) -> str:
        return self.world.home.mlflow_tracking_uri

    def version(self, number: str) -> RegisteredVersion:
        versions = RegistryClient(self.tracking_uri).versions(HOME_RANKER_MODEL)
        return next(v for v in versions if v.version == number)


@pytest.fixture(scope="module")
def graph(world_home: WorldHome, tmp_path_factory: pytest.TempPathFactory) -> GraphRun:
    # A scratch working directory: MLflow would put stray artifacts under ./mlruns of it.
    workdir = tmp_path_factory.mktemp("cwd")
    defs = build_definitions(world_home.home)
    instance = dg.DagsterInstance.ephemeral()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        ingestion = [
            defs.resolve_job_def("ingestion_job").execute_in_process(
                partition_key=day, instance=instance
            )
            for day in world_home.days
        ]
        training = defs.resolve_job_def("training_job")
        first = training.execute_in_process(instance=instance)
        first_table = load_asset_value(world_home.store, "home_feed_evaluation").table
        second = training.execute_in_process(instance=instance)
        second_table = load_asset_value(world_home.store, "home_feed_evaluation").table
    return GraphRun(world_home, workdir, ingestion, first, first_table, second, second_table)


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


def test_every_run_succeeds(graph: GraphRun) -> None:
    assert all(r.success for r in graph.ingestion)
    assert graph.first.success
    assert graph.second.success


def test_ingestion_accounts_for_every_landed_record(graph: GraphRun) -> None:
    summary = graph.world.summary
    totals = pd.DataFrame([_metadata(r, "raw_events") for r in graph.ingestion])

    assert totals["read"].sum() == summary.records_written
    assert totals["accepted"].sum() == summary.n_valid_events
    assert (totals["read"] == totals[["accepted", "quarantined", "duplicates"]].sum(axis=1)).all()


def test_evaluation_has_every_model_and_slice(graph: GraphRun) -> None:
    table = graph.first_table

    # A generated world adds its oracle row (the true preference order through the guardrails).
    assert set(zip(table["model"], table["slice"], strict=True)) == set(
        itertools.product((*MODELS, "oracle"), SLICES)
    )
    assert (table["users"] > 0).all()


def test_oracle_row_is_the_ceiling_of_every_model(graph: GraphRun) -> None:
    table = graph.first_table
    oracle = metric(table, "oracle", "ndcg_at_10")

    for model in MODELS:
        assert oracle > metric(table, model, "ndcg_at_10"), model
    assert metric(table, "oracle", "beginner_safety_violations") == 0


def test_candidate_beats_popularity(graph: GraphRun) -> None:
    table = graph.first_table

    assert metric(table, "candidate", "ndcg_at_10") > metric(
        table, "popularity_guarded", "ndcg_at_10"
    )


def test_candidate_is_safe_for_beginners(graph: GraphRun) -> None:
    table = graph.first_table

    candidate = table[table["model"] == "candidate"]
    assert (candidate["beginner_safety_violations"] == 0).all()


def test_metrics_are_in_range(graph: GraphRun) -> None:
    table = graph.first_table

    for name in ("recall_at_100", "ndcg_at_10", "map_at_10", "coverage"):
        assert table[name].between(0.0, 1.0).all(), name


def test_evaluation_metadata_matches_the_table(graph: GraphRun) -> None:
    meta = _metadata(graph.first, "home_feed_evaluation")

    for model in MODELS:
        expected = metric(graph.first_table, model, "ndcg_at_10")
        assert meta[f"{model}_ndcg_at_10"] == pytest.approx(expected)


def test_blocking_checks_pass(graph: GraphRun) -> None:
    checks = {
        e.check_name: e
        for e in graph.first.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey("home_feed_evaluation")
    }

    assert set(checks) == {
        "candidate_beats_popularity",
        "served_feed_beats_retrievers",
        "beginner_safety",
    }
    assert all(c.passed for c in checks.values())


def test_first_gate_compares_with_popularity(graph: GraphRun) -> None:
    checks = {
        e.check_name: e
        for e in graph.first.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey("promotion_gate")
    }
    meta = _metadata(graph.first, "promotion_gate")

    assert set(checks) == set(CHECK_NAMES)
    assert meta["baseline"].startswith("popularity")
    assert meta["passed"] == all(c.passed for c in checks.values())
    assert graph.version("1").tags["gate.status"] == ("passed" if meta["passed"] else "failed")


def test_version_carries_provenance_and_bundle(graph: GraphRun) -> None:
    tags = graph.version("1").tags

    assert tags["evaluation_run_id"] == graph.version("1").run_id
    assert tags["code_version"].startswith(("git:", "pkg:"))
    assert len(tags["feature_schema_hash"]) == 16
    assert tags["artifacts.bundle_uri"] == f"runs:/{graph.version('1').run_id}/feed_bundle"


def test_fallback_popularity_counts_every_day_up_to_the_end(graph: GraphRun) -> None:
    store = graph.world.store
    snapshot = load_asset_value(store, "training_snapshot")
    split = snapshot.split  # type: ignore[attr-defined]
    events = snapshot.inputs.events  # type: ignore[attr-defined]
    fallback = load_asset_value(store, "fallback_popular_items")
    engaged = events[events["event_type"].map(ENGAGEMENT_GRADE).fillna(0) > 0]

    assert _metadata(graph.second, "fallback_popular_items")["as_of"] == split.end.isoformat()
    # Items engaged only in the held-out window: the evaluation's popularity cannot know them,
    # the fallback that serves does.
    before = set(engaged.loc[engaged["ts"] < split.eval_start, "item_id"])
    only_recent = set(engaged.loc[engaged["ts"] >= split.eval_start, "item_id"]) - before
    assert only_recent
    assert only_recent & set(fallback["item_id"])
    assert not only_recent & set(load_asset_value(store, "popular_items")["item_id"])


def test_second_run_moves_the_candidate_alias(graph: GraphRun) -> None:
    client = RegistryClient(graph.tracking_uri)

    assert client.alias_version(HOME_RANKER_MODEL, "candidate") == "2"
    assert client.alias_version(HOME_RANKER_MODEL, "champion") is None


def test_first_run_registers_version_1(graph: GraphRun) -> None:
    version = graph.version("1")

    assert version.name == HOME_RANKER_MODEL
    assert version.tags["dagster_run_id"] == graph.first.run_id
    assert _metadata(graph.first, "registered_home_ranker")["version"] == "1"
    # MLflow's UI shows the description as Markdown: a link back to the training run.
    mlflow_version = MlflowClient(tracking_uri=graph.tracking_uri).get_model_version(
        HOME_RANKER_MODEL, "1"
    )
    registered = MlflowClient(tracking_uri=graph.tracking_uri).get_registered_model(
        HOME_RANKER_MODEL
    )
    assert registered.description == GOVERNANCE_NOTE
    assert mlflow_version.description == (
        f"Trained by Dagster run [{graph.first.run_id}]"
        f"({default_dagster_url()}/runs/{graph.first.run_id}) of `training_job`."
    )


def test_version_tags_match_the_evaluation(graph: GraphRun) -> None:
    tags = graph.version("1").tags

    for model, slice_name, name in itertools.product(MODELS, SLICES, METRICS):
        expected = metric(graph.first_table, model, name, slice_name)
        assert float(tags[f"eval.{model}.{slice_name}.{name}"]) == pytest.approx(expected, abs=1e-6)
    assert {"data.start", "data.eval_start", "data.end", "features"} <= set(tags)


def test_mlflow_run_has_stage_params_and_metrics(graph: GraphRun) -> None:
    run = MlflowClient(tracking_uri=graph.tracking_uri).get_run(graph.version("1").run_id)

    assert "als.factors" in run.data.params
    assert "ranker.valid_ndcg_at_10" in run.data.metrics
    assert run.data.metrics["evaluation.candidate.all.ndcg_at_10"] == pytest.approx(
        metric(graph.first_table, "candidate", "ndcg_at_10")
    )
    assert run.data.tags["dagster_run_id"] == graph.first.run_id
    assert run.info.status == "FINISHED"


def test_the_evaluation_plot_is_on_the_asset_and_in_the_mlflow_run(graph: GraphRun) -> None:
    meta = _metadata(graph.first, "home_feed_evaluation")
    run_id = graph.version("1").run_id
    artifacts = MlflowClient(tracking_uri=graph.tracking_uri).list_artifacts(run_id, "evaluation")

    assert Path(meta["plot"]).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # The picture itself on the asset's page, served by the console's report server.
    assert meta["plot_image"] == f"![plot]({meta['plot_link']})"
    assert meta["plot_link"].endswith(Path(meta["plot"]).name)
    assert "| baseline " in meta["lift_over_rows"]
    assert {a.path for a in artifacts} >= {
        "evaluation/evaluation.png",
        "evaluation/ndcg_intervals.csv",
        "evaluation/lift_intervals.csv",
    }


def test_one_mlflow_run_per_training_run(graph: GraphRun) -> None:
    client = MlflowClient(tracking_uri=graph.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None

    runs = client.search_runs([experiment.experiment_id])
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]

    assert sorted(r.data.tags["dagster_run_id"] for r in top) == sorted(
        [graph.first.run_id, graph.second.run_id]
    )


def test_tuning_trials_are_nested_runs_of_their_training_run(graph: GraphRun) -> None:
    client = MlflowClient(tracking_uri=graph.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parent = next(
        r.info.run_id for r in runs if r.data.tags.get("dagster_run_id") == graph.first.run_id
    )
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    tuning = load_asset_value(graph.world.store, "retrieval_tuning")

    # TuningParams().n_trials trials per searched retriever (ALS and EASE), each with its
    # score, and one per popularity half-life of the grid.
    assert len(trials) == 2 * 12 + len(POPULARITY_HALF_LIVES)
    assert {r.data.tags["fitpulse.stage"] for r in trials} == {"tuning"}
    assert all("validation_ndcg_at_10" in r.data.metrics for r in trials)
    assert graph.version("2").tags["tuning.ease.l2"] == str(tuning.ease.l2)
    half_life = graph.version("2").tags["tuning.popularity.half_life_days"]
    assert half_life == tuning.popularity.describe()


def test_mlflow_artifacts_stay_in_the_home(graph: GraphRun) -> None:
    artifacts = graph.world.home.mlflow_artifacts
    run = MlflowClient(tracking_uri=graph.tracking_uri).get_run(graph.version("1").run_id)

    assert run.info.artifact_uri.startswith(artifacts.resolve().as_uri())
    assert any(p.is_file() for p in artifacts.rglob("*"))
    assert not (graph.workdir / "mlruns").exists()


def test_second_run_registers_version_2(graph: GraphRun) -> None:
    latest = RegistryClient(graph.tracking_uri).latest(HOME_RANKER_MODEL)

    assert latest is not None
    assert latest.version == "2"
    assert latest.tags["dagster_run_id"] == graph.second.run_id
    assert latest.run_id != graph.version("1").run_id
    assert float(latest.tags["eval.candidate.all.ndcg_at_10"]) == pytest.approx(
        metric(graph.second_table, "candidate", "ndcg_at_10"), abs=1e-6
    )


def test_online_store_serves_the_offline_feature_tables(graph: GraphRun) -> None:
    store = SQLiteOnlineStore(graph.world.home.online_store)
    offline = load_asset_value(graph.world.store, "user_features").set_index("user_id")

    sample = list(offline.index[:25])
    online = store.lookup("user", sample).set_index("user_id").loc[sample]

    pd.testing.assert_frame_equal(
        online, offline.loc[sample, list(USER_FEATURES)], check_names=False
    )
    meta = store.meta("item")
    assert meta is not None
    assert meta.rows == len(load_asset_value(graph.world.store, "item_features"))
