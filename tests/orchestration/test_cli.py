"""The ``fitpulse`` command line: generate, train, recommend and import-interactions."""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from api_client import TOKENS, authed
from conftest import fix_pseudonym_key
from serving_setup import make_champion
from typer.testing import CliRunner, Result

from fitpulse_orchestration import layout
from fitpulse_orchestration.cli import app
from fitpulse_orchestration.evaluation.home_feed import MODELS, SLICES, metric
from fitpulse_orchestration.events.ingest import read_clean_events
from fitpulse_orchestration.events.schema import ENGAGEMENT_TYPES
from fitpulse_orchestration.privacy.pseudonymize import PSEUDONYM_PREFIX
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.storage.asset_values import load_asset_value
from fitpulse_orchestration.storage.tables import read_parquet_prefix

# shared/ sits beside the checkout (development machines and CI alike).
MOVIELENS = Path(__file__).resolve().parents[3] / "shared/data/movielens/ml-100k/u.data"
ML_WINDOW = ("1997-11-10", "1997-12-01")
TRAIN_UNTIL = "2026-10-30"
"""The last landed day the CLI training of the tiny world ingests (of 14, ending 2026-11-01)."""
"""Three weeks of every MovieLens user (about 20k ratings by 250 users).

u.data spans seven months; its first 3,000 lines are a random sample of it, which leaves five
users with engagements in a 5-day held-out window and every model at NDCG 0 (the check then
fails on 0 > 0). A contiguous window gives the split enough history, ranker days and
held-out users to evaluate.
"""
ML_IMPORT_OPTIONS = [
    "--no-header",
    "--user-col",
    "user_id",
    "--item-col",
    "item_id",
    "--weight-col",
    "rating",
    "--ts-col",
    "timestamp",
    "--ts-unit",
    "s",
    # Every rating is an engagement (a watched film): the mapping of the 1-5 scale.
    "--grades",
    "5:workout_complete,4:workout_start,1:click",
]
UNKNOWN_USER = "usr_unknown_1"
N_RECS = 10

runner = CliRunner()

# dagster-mlflow's resource is beta; the CLI silences that warning itself, pytest re-enables it.
pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")


def _invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def _store(home: Path) -> LocalObjectStore:
    return LocalObjectStore(ProjectHome(home).store)


def _report(home: Path) -> Path:
    return ProjectHome(home).reports / "home_feed_evaluation.json"


def test_help_lists_the_commands() -> None:
    result = _invoke("--help")

    assert result.exit_code == 0, result.output
    commands = ("generate", "demo", "train", "import-interactions", "recommend", "monitor", "ui")
    for command in (*commands, "registry"):
        assert command in result.output


def test_importing_the_cli_leaves_heavy_libraries_alone() -> None:
    code = (
        "import sys, fitpulse_orchestration.cli; "
        "print(*[m in sys.modules for m in ('dagster', 'mlflow', 'lightgbm')])"
    )

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert out.stdout.split() == ["False", "False", "False"]


def test_generate_lands_a_tiny_world(tmp_path: Path) -> None:
    result = _invoke("generate", "--scale", "tiny", "--home", tmp_path)

    store = _store(tmp_path)
    assert result.exit_code == 0, result.output
    days = layout.landed_dates(store.list_keys(f"{layout.LANDING_EVENTS}/"))
    assert len(days) == 14
    assert store.list_keys(f"{layout.LANDING_CATALOG}/")
    assert store.list_keys(f"{layout.LANDING_USERS}/")


def test_generate_rejects_an_unknown_scale(tmp_path: Path) -> None:
    result = _invoke("generate", "--scale", "huge", "--home", tmp_path)

    assert result.exit_code != 0
    assert "unknown scale 'huge'" in str(result.exception)


def test_train_without_landed_events_is_a_usage_error(tmp_path: Path) -> None:
    result = _invoke("train", "--home", tmp_path)

    assert result.exit_code == 2
    assert "no landed events" in result.output


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    home = tmp_path_factory.mktemp("cli_home")
    fix_pseudonym_key(ProjectHome(home))
    generated = _invoke("generate", "--scale", "tiny", "--home", home)
    assert generated.exit_code == 0, generated.output
    # Twelve of the fourteen days, and a gate no candidate can pass: the one CLI training of the
    # tiny world checks the report, a failed gate's output and, below, recommend and monitor.
    return home, _invoke(
        "train", "--home", home, "--until", TRAIN_UNTIL, "--gate", "ndcg_margin=1.0",
        "--trials", "3",
    )  # fmt: skip


@pytest.mark.slow
def test_train_exits_0_and_writes_the_report(trained_home: tuple[Path, Result]) -> None:
    home, result = trained_home

    # A failed gate keeps the version from review; it is not a training failure.
    assert result.exit_code == 0, result.output
    report = json.loads(_report(home).read_text())
    rows = pd.DataFrame(report["rows"])
    assert set(zip(rows["model"], rows["slice"], strict=True)) == {
        (m, s) for m in (*MODELS, "oracle") for s in SLICES
    }
    assert report["failed_checks"] == []
    assert {"start", "ranker_start", "eval_start", "end"} <= set(report["split"])
    assert report["split"]["end"].startswith("2026-10-31")
    # Like with like, as the blocking check compares: both feeds through the guardrails.
    guarded = metric(rows, "popularity_guarded", "ndcg_at_10")
    assert metric(rows, "candidate", "ndcg_at_10") > guarded
    assert "asset checks: passed" in result.output
    assert "ingesting 12 landed days (2026-10-19 .. 2026-10-30)" in result.output
    assert "promotion gate for version 1: failed" in result.output
    assert "[FAIL] ndcg_lift" in result.output
    assert "must lie above +1.0000" in result.output


@dataclass
class Recommendations:
    """The output of ``recommend`` and the raw ids it was asked for."""

    home: Path
    users: list[str]
    recs: pd.DataFrame
    result: Result


@pytest.fixture(scope="module")
def recommendations(
    trained_home: tuple[Path, Result], tmp_path_factory: pytest.TempPathFactory
) -> Recommendations:
    home, trained = trained_home
    assert trained.exit_code == 0, trained.output
    work = tmp_path_factory.mktemp("recommend")
    landed = pd.concat(read_parquet_prefix(_store(home), f"{layout.LANDING_USERS}/"))
    users = [*dict.fromkeys(landed["user_id"].astype(str)), UNKNOWN_USER]
    pd.DataFrame({"user_id": users}).to_csv(work / "users.csv", index=False)
    output = work / "out.parquet"

    result = _invoke(
        "recommend",
        "--users",
        work / "users.csv",
        "--output",
        output,
        "--n",
        str(N_RECS),
        "--version",
        "1",
        "--home",
        home,
    )

    assert result.exit_code == 0, result.output
    assert "fitpulse-home-ranker version 1 (as asked)" in result.output
    return Recommendations(home, users, pd.read_parquet(output), result)


def _engaged_items(home: Path) -> dict[str, set[str]]:
    """Raw user id -> items the user engaged with, from the landed NDJSON batches.

    Only records that ingestion accepted count: a corrupted line is not an engagement.
    """
    store = _store(home)
    accepted = set(read_clean_events(store)["event_id"])
    engaged: dict[str, set[str]] = defaultdict(set)
    for key in store.list_keys(f"{layout.LANDING_EVENTS}/"):
        for line in gzip.decompress(store.get_bytes(key)).decode("utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (
                isinstance(record, dict)
                and record.get("event_id") in accepted
                and record.get("event_type") in ENGAGEMENT_TYPES
            ):
                engaged[str(record["user_id"])].add(str(record["item_id"]))
    return engaged


@pytest.mark.slow
def test_recommendations_have_the_output_columns(recommendations: Recommendations) -> None:
    recs = recommendations.recs

    assert list(recs.columns) == ["user_id", "item_id", "rank", "score"]
    assert len(recs) > 0


@pytest.mark.slow
def test_recommendations_use_raw_user_ids(recommendations: Recommendations) -> None:
    recs = recommendations.recs

    assert not recs["user_id"].str.startswith(PSEUDONYM_PREFIX).any()
    assert set(recs["user_id"]) == set(recommendations.users)


@pytest.mark.slow
def test_recommendations_rank_at_most_n_items_per_user(recommendations: Recommendations) -> None:
    for user, group in recommendations.recs.groupby("user_id"):
        assert len(group) <= N_RECS, user
        assert sorted(group["rank"]) == list(range(1, len(group) + 1)), user
        assert group["item_id"].is_unique, user


@pytest.mark.slow
def test_unknown_user_gets_a_cold_start_feed(recommendations: Recommendations) -> None:
    recs = recommendations.recs

    assert (recs["user_id"] == UNKNOWN_USER).sum() > 0


@pytest.mark.slow
def test_recommendations_are_catalog_items(recommendations: Recommendations) -> None:
    store = _store(recommendations.home)
    catalog = pd.concat(read_parquet_prefix(store, f"{layout.LANDING_CATALOG}/"))

    assert set(recommendations.recs["item_id"]) <= set(catalog["item_id"].astype(str))


@pytest.mark.slow
def test_recommendations_exclude_engaged_items(recommendations: Recommendations) -> None:
    engaged = _engaged_items(recommendations.home)
    assert engaged, "the tiny world has engagements"

    seen = [
        (user, item)
        for user, item in zip(
            recommendations.recs["user_id"], recommendations.recs["item_id"], strict=True
        )
        if item in engaged.get(user, set())
    ]

    assert seen == []


def _users_csv(recommendations: Recommendations, folder: Path) -> Path:
    users = folder / "users.csv"
    pd.DataFrame({"user_id": recommendations.users}).to_csv(users, index=False)
    return users


@pytest.mark.slow
def test_recommend_without_a_champion_serves_the_popularity_fallback(
    recommendations: Recommendations, tmp_path: Path
) -> None:
    users = _users_csv(recommendations, tmp_path)
    output = tmp_path / "fallback.parquet"

    result = _invoke(
        "recommend", "--users", users, "--output", output, "--n", str(N_RECS),
        "--home", recommendations.home,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "serving the popularity fallback: no champion is promoted" in result.output
    store = _store(recommendations.home)
    popular = load_asset_value(store, "fallback_popular_items")
    snapshot = load_asset_value(store, "training_snapshot")
    catalog = snapshot.inputs.catalog  # type: ignore[attr-defined]
    as_of = snapshot.split.end  # type: ignore[attr-defined]
    fresh = catalog.loc[catalog["published_at"] >= as_of - pd.Timedelta(days=3), "item_id"]
    recs = pd.read_parquet(output)
    assert set(recs["user_id"]) == set(recommendations.users)
    assert set(recs["item_id"]) <= set(popular["item_id"]) | set(fresh)
    # The model's feeds are personal; the fallback's are not.
    model = recommendations.recs.groupby("user_id")["item_id"].agg(tuple)
    assert (recs.groupby("user_id")["item_id"].agg(tuple) != model).any()


@pytest.mark.slow
def test_recommend_refuses_a_version_the_platform_never_registered(
    recommendations: Recommendations, tmp_path: Path
) -> None:
    users = _users_csv(recommendations, tmp_path)

    result = _invoke(
        "recommend", "--users", users, "--output", tmp_path / "out.csv", "--version", "7",
        "--home", recommendations.home,
    )  # fmt: skip

    assert result.exit_code == 2, result.output
    assert "version 7 was never registered through the platform" in result.output
    assert not (tmp_path / "out.csv").exists()


@dataclass
class MovieLensRun:
    """An import of a MovieLens window and its catalog, the training on it, and its outputs."""

    home: Path
    rows: int
    window: pd.DataFrame
    imported: Result
    catalog: Result
    trained: Result
    recommended: Result
    recs: pd.DataFrame

    def value(self, asset: str) -> object:
        return load_asset_value(_store(self.home), asset)


@pytest.fixture(scope="module")
def movielens(tmp_path_factory: pytest.TempPathFactory) -> MovieLensRun:
    if not MOVIELENS.exists():
        pytest.skip(f"{MOVIELENS} is not available")
    work = tmp_path_factory.mktemp("movielens")
    ratings = pd.read_csv(
        MOVIELENS, sep="\t", header=None, names=["user", "item", "rating", "ts"], dtype=str
    )
    ts = pd.to_datetime(ratings["ts"].astype("int64"), unit="s")
    lo, hi = (pd.Timestamp(t) for t in ML_WINDOW)
    inside = (ts >= lo) & (ts < hi)
    window = ratings[inside].iloc[ts[inside].argsort(kind="stable")]
    source = work / "ml-window.tsv"
    window.to_csv(source, sep="\t", header=False, index=False)
    genres = pd.read_csv(MOVIELENS.parent / "u.genre", sep="|", header=None, names=["genre", "k"])
    columns = ["item_id", "title", "released", "video", "url", *genres["genre"]]
    items = pd.read_csv(
        MOVIELENS.parent / "u.item", sep="|", header=None, names=columns, encoding="latin-1"
    )
    flags = items[list(genres["genre"])].astype(bool)
    items["genres"] = ["|".join(flags.columns[row]) for row in flags.to_numpy()]
    catalog_file = work / "ml-catalog.csv"
    items[["item_id", "title", "genres"]].to_csv(catalog_file, index=False)
    home = work / "H2"
    fix_pseudonym_key(ProjectHome(home))

    imported = _invoke("import-interactions", source, *ML_IMPORT_OPTIONS, "--home", home)
    # Films are not workouts: the operator declares them fit for every level, or the
    # beginner-safety rule (unknown difficulty is unsafe) empties the feeds of users whose level
    # is unknown, which is every imported user.
    catalog = _invoke(
        "import-catalog",
        catalog_file,
        "--home",
        home,
        "--genres-col",
        "genres",
        "--difficulty",
        "beginner",
        "--intensity",
        "low",
    )
    trained = _invoke("train", "--home", home, "--holdout", "user_random", "--trials", "3")
    users = work / "users.csv"
    pd.DataFrame({"user_id": sorted(window["user"].unique())}).to_csv(users, index=False)
    output = work / "recs.csv"
    recommended = _invoke(
        "recommend", "--users", users, "--output", output, "--n", "10", "--version", "1",
        "--home", home,
    )  # fmt: skip
    recs = pd.read_csv(output, dtype={"user_id": str, "item_id": str})
    return MovieLensRun(home, len(window), window, imported, catalog, trained, recommended, recs)


@pytest.mark.slow
def test_movielens_import_lands_every_rating_and_the_catalog(movielens: MovieLensRun) -> None:
    assert movielens.imported.exit_code == 0, movielens.imported.output
    assert f"landed {movielens.rows:,}, rejected 0" in movielens.imported.output
    assert movielens.catalog.exit_code == 0, movielens.catalog.output
    store = _store(movielens.home)
    assert len(layout.landed_dates(store.list_keys(f"{layout.LANDING_EVENTS}/"))) == 21
    assert len(store.list_keys(f"{layout.LANDING_CATALOG}/")) == 1
    assert not store.list_keys(f"{layout.LANDING_USERS}/")


@pytest.mark.slow
def test_movielens_trains_registers_and_passes_every_blocking_check(
    movielens: MovieLensRun,
) -> None:
    output = movielens.trained.output

    assert movielens.trained.exit_code == 0, output
    assert "asset checks: passed" in output
    assert "promotion gate for version 1:" in output
    assert "push: skipped" in output
    report = json.loads(_report(movielens.home).read_text())
    assert report["split"]["protocol"] == "user_random"
    assert report["failed_checks"] == []


@pytest.mark.slow
def test_movielens_evaluation_reports_every_stage(movielens: MovieLensRun) -> None:
    evaluation = movielens.value("home_feed_evaluation")
    table = evaluation.table  # type: ignore[attr-defined]

    assert {(m, "all") for m in MODELS} <= set(zip(table["model"], table["slice"], strict=True))
    assert evaluation.protocol.startswith("user_random:")  # type: ignore[attr-defined]
    served = metric(table, "candidate", "ndcg_at_10")
    assert served == metric(table, evaluation.scorer, "ndcg_at_10")  # type: ignore[attr-defined]
    assert served > metric(table, "popularity", "ndcg_at_10")
    assert (table["beginner_safety_violations"] == 0).all()


@pytest.mark.slow
def test_movielens_ranker_trains_on_sampled_examples(movielens: MovieLensRun) -> None:
    frame = movielens.value("ranker_training_frame")
    assert isinstance(frame, pd.DataFrame)

    assert len(frame) > 0
    assert set(frame["kind"]) == {"sampled"}


@pytest.mark.slow
def test_movielens_catalog_reaches_the_items(movielens: MovieLensRun) -> None:
    snapshot = movielens.value("training_snapshot")
    catalog, profiles = snapshot.inputs.catalog, snapshot.inputs.profiles  # type: ignore[attr-defined]
    toy_story = catalog.set_index("item_id").loc["1"]

    assert toy_story["title"] == "Toy Story (1995)"
    assert toy_story["category"] == "Animation"
    assert set(profiles["fitness_level"]) == {"unknown"}


@pytest.mark.slow
def test_movielens_served_version_is_refit_on_every_event(movielens: MovieLensRun) -> None:
    evaluated = movielens.value("home_feed_model")
    served = movielens.value("served_home_feed_model")
    snapshot = movielens.value("training_snapshot")
    events = snapshot.inputs.events  # type: ignore[attr-defined]
    engaged = events[events["event_type"].isin(ENGAGEMENT_TYPES)]

    # The evaluated ALS never saw the held-out pairs; the served one saw every engagement.
    assert served.als.seen.nnz > evaluated.als.seen.nnz  # type: ignore[attr-defined]
    assert served.als.seen.nnz == len(  # type: ignore[attr-defined]
        events.drop_duplicates(["user_id", "item_id"])
    )
    assert len(served.ease.item_ids) == engaged["item_id"].nunique()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_movielens_recommendations_exclude_every_rated_item(movielens: MovieLensRun) -> None:
    assert movielens.recommended.exit_code == 0, movielens.recommended.output
    recs = movielens.recs
    rated = movielens.window.groupby("user")["item"].agg(set).to_dict()

    assert set(recs["user_id"]) == set(rated)
    assert recs.groupby("user_id").size().eq(10).all()
    assert not any(i in rated[u] for u, i in zip(recs["user_id"], recs["item_id"], strict=True))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--gate", "bogus=1"), "unknown gate setting 'bogus'"),
        (("--gate", "coverage_tolerance=wide"), "is not KEY=NUMBER"),
        (("--until", "yesterday"), "is not a YYYY-MM-DD date"),
    ],
)
def test_train_rejects_bad_options(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = _invoke("train", "--home", tmp_path, *args)

    assert result.exit_code == 2
    assert message in result.output


def test_generate_with_a_shift_lands_the_trending_category(tmp_path: Path) -> None:
    result = _invoke("generate", "--scale", "tiny", "--shift-days", "4", "--home", tmp_path)

    assert result.exit_code == 0, result.output
    assert "shift from 2026-10-29" in result.output
    assert "fitpulse train --until 2026-10-28" in result.output
    store = _store(tmp_path)
    catalog = pd.concat(
        [pd.read_parquet(store.uri(k)) for k in store.list_keys(f"{layout.LANDING_CATALOG}/")]
    )
    dance = catalog[catalog["category"] == "dance"]
    assert len(dance) > 0
    assert dance["published_at"].min() >= pd.Timestamp("2026-10-29", tz="UTC")


@pytest.mark.slow
def test_monitor_compares_with_the_latest_version(trained_home: tuple[Path, Result]) -> None:
    home, trained = trained_home
    assert trained.exit_code == 0, trained.output

    monitored = _invoke("monitor", "--home", home)

    assert monitored.exit_code == 0, monitored.output
    assert "feature_drift_report:" in monitored.output
    assert "reference version 1" in monitored.output


@pytest.mark.slow
def test_movielens_version_serves_a_feed_over_http(movielens: MovieLensRun, tmp_path: Path) -> None:
    from fitpulse_orchestration.server.app import create_app
    from fitpulse_orchestration.server.runtime import build_runtime, profile_backends

    # Its gate failed on this small window; the services serve only a promoted version.
    make_champion(ProjectHome(movielens.home), "1")
    runtime = build_runtime(
        profile_backends(ProjectHome(movielens.home), "local"), tmp_path, clock="snapshot"
    )
    client = authed(create_app(runtime.service, runtime.watcher, runtime.served_log, tokens=TOKENS))
    user = str(movielens.window["user"].iloc[0])
    rated = set(movielens.window.loc[movielens.window["user"] == user, "item"])

    response = client.get(f"/v1/home-feed/{user}")

    assert response.status_code == 200, response.text
    body = response.json()
    items = [item["id"] for item in body["items"]]
    assert body["model_version"] == "1"
    assert body["fallbacks"] == []
    assert len(items) == 20
    assert not set(items) & rated


def test_serve_refuses_a_port_in_use_before_loading_anything(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # An empty home: had serve loaded anything, it would fail on the missing catalog.
        result = _invoke("serve", "--home", tmp_path / "home", "--port", str(port))

    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in " ".join(result.output.split())
    assert "catalog" not in result.output
