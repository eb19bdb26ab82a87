"""Push notifications end to end on the tiny world: assets, registry, and the decision endpoint.

The module's copy of the session's trained tiny home (``trained_world``: ``fitpulse train``'s
``run_training`` runs the push job after the feed's training job). Tests then build runtimes and
apps over it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import threading
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd
import pytest
from api_client import TOKENS, authed

from fitpulse_orchestration import layout
from fitpulse_orchestration.features.reference import unsafe_for_beginners
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.privacy.suppression import add_erased, erased_key
from fitpulse_orchestration.push.caps import SQLitePushCapStore
from fitpulse_orchestration.push.features import PushHistory, local_time
from fitpulse_orchestration.push.policy import GUARDRAILS, PushPolicyBundle
from fitpulse_orchestration.push.service import LoadedPushPolicy, PushDecisionService
from fitpulse_orchestration.runner import TrainingRun, dagster_instance
from fitpulse_orchestration.server.app import create_app
from fitpulse_orchestration.server.runtime import ServiceRuntime, build_runtime, profile_backends
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.storage.asset_values import load_asset_value
from fitpulse_orchestration.storage.audit import AuditLog, load_audit_key
from fitpulse_orchestration.storage.keys import load_or_create_key
from fitpulse_orchestration.storage.online_store import SQLiteOnlineStore
from fitpulse_orchestration.storage.tables import read_parquet_prefix
from model_registry.client import RegistryClient
from model_registry.names import PUSH_POLICY_MODEL
from model_registry.serving import RegistryModelSource

if TYPE_CHECKING:
    from conftest import TrainedWorld

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::dagster.BetaWarning"),
]


@dataclasses.dataclass
class PushHome:
    home: ProjectHome
    facts: TrainingRun
    profiles: pd.DataFrame
    catalog: pd.DataFrame
    pseudonymizer: Pseudonymizer


@pytest.fixture(scope="module")
def trained(trained_world: TrainedWorld) -> PushHome:
    home, store, facts = trained_world.home, trained_world.store, trained_world.run
    profiles = (
        pd.concat(read_parquet_prefix(store, f"{layout.LANDING_USERS}/"), ignore_index=True)
        .drop_duplicates("user_id", keep="last")
        .reset_index(drop=True)
    )
    catalog = load_asset_value(store, "training_snapshot").inputs.catalog
    pseudo = Pseudonymizer.from_secret(load_or_create_key(home.pseudonym_key_file))
    return PushHome(home, facts, profiles, catalog, pseudo)


def _runtime(trained: PushHome, tmp_path: Path, **kwargs: Any) -> ServiceRuntime:
    return build_runtime(
        profile_backends(trained.home, "local"), tmp_path / "models", poll_s=3600.0, **kwargs
    )


def _history(trained: PushHome, user: str) -> PushHistory:
    pid = trained.pseudonymizer.pseudonymize(user)
    record = SQLiteOnlineStore(trained.home.online_store).lookup_records("push", [pid])[pid]
    return PushHistory.from_record(record)


def test_push_job_registers_an_evaluated_policy(trained: PushHome) -> None:
    store_root = trained.home.store
    assert trained.facts.push is not None
    assert trained.facts.push.version == "1"
    from fitpulse_orchestration.storage import LocalObjectStore

    store = LocalObjectStore(store_root)
    examples = load_asset_value(store, "push_training_examples")
    assert examples["sent"].any()
    assert (~examples["sent"]).any()
    assert not examples.loc[~examples["sent"], "opened"].any()
    evaluation = load_asset_value(store, "push_policy_evaluation")
    table = evaluation.table
    assert set(table["policy"]) == {"logged", "new"}
    assert set(table["estimator"]) == {"on_policy", "ips", "snips"}
    assert (table["low"] <= table["value"] + 1e-12).all()
    assert (table["value"] <= table["high"] + 1e-12).all()
    assert len(evaluation.sweep) >= 5
    assert evaluation.plot_png.startswith(b"\x89PNG")
    assert store.list_keys("reports/push_policy/"), "the sweep plot is saved as a report"
    registered = RegistryClient(trained.home.mlflow_tracking_uri).version(PUSH_POLICY_MODEL, "1")
    # The real gate's verdict (make_first_champions gates only a version whose gate failed).
    assert registered.tags["gate.status"] == "passed"
    audit = AuditLog(LocalObjectStore(store_root), load_audit_key(trained.home.audit_key_file))
    gated = [(e.action, e.actor) for e in audit.entries(PUSH_POLICY_MODEL) if "gate" in e.action]
    assert gated == [("gate_passed", "push_policy_gate")]
    assert "eval.new.snips.pushes" in registered.tags
    meta = SQLiteOnlineStore(trained.home.online_store).meta("push")
    assert meta is not None
    assert meta.rows > 0


def test_the_push_job_refreshes_the_registry_status(trained: PushHome) -> None:
    instance = dagster_instance(trained.home)
    records = instance.fetch_materializations(dg.AssetKey("registry_status"), limit=50).records
    by_job = {}
    for record in records:
        run = instance.get_run_by_id(record.run_id)
        assert run is not None
        by_job.setdefault(run.job_name, record)  # newest first

    push = by_job["push_training_job"].asset_materialization
    assert push is not None
    row = str(push.metadata[f"{PUSH_POLICY_MODEL} versions"].value).splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    # Version 1 with its passed gate, as the push job recorded it (before any review).
    assert cells[0].startswith("[1](")
    assert cells[1] == "candidate, challenger"
    assert cells[-1].startswith("passed")


def test_decisions_through_the_app(trained: PushHome, tmp_path: Path) -> None:
    """As ``fitpulse serve`` serves them: on the event loop (one request thread).

    The other tests' apps run the decision in the thread pool.
    """
    runtime = _runtime(trained, tmp_path)
    assert runtime.push is not None
    assert runtime.push.policy.version == "1"
    client = authed(create_app(runtime.service, push=runtime.push, threads=1, tokens=TOKENS))
    outcomes: Counter[str] = Counter()
    for user in trained.profiles["user_id"].head(60):
        response = client.post("/v1/push/decision", json={"user_id": user})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == "1"
        assert body["fallback"] is None
        if body["send"]:
            assert body["blocked_by"] is None
            assert body["item"] is not None
            assert body["scores"]["expected_value"] >= body["scores"]["threshold"]
        else:
            assert body["blocked_by"] in (*GUARDRAILS, "below_threshold", "unknown_user")
        outcomes["send" if body["send"] else body["blocked_by"]] += 1
    assert sum(outcomes.values()) == 60
    assert outcomes["send"] > 0, outcomes
    metrics = client.get("/metrics").text
    assert "fitpulse_push_decisions_total" in metrics


def test_opted_out_user_is_never_pushed(trained: PushHome, tmp_path: Path) -> None:
    runtime = _runtime(trained, tmp_path)
    client = authed(create_app(runtime.service, push=runtime.push, tokens=TOKENS))
    opted = trained.profiles[trained.profiles["push_opt_out"]]["user_id"].head(5)
    assert len(opted) > 0
    for user in opted:
        body = client.post("/v1/push/decision", json={"user_id": user}).json()
        assert (body["send"], body["blocked_by"]) == (False, "opted_out")
        assert body["earliest_send_at"] is None


def test_quiet_hours_block_and_say_when(trained: PushHome, tmp_path: Path) -> None:
    runtime = _runtime(trained, tmp_path)
    assert runtime.push is not None
    client = authed(create_app(runtime.service, push=runtime.push, tokens=TOKENS))
    user = trained.profiles[
        ~trained.profiles["push_opt_out"] & (trained.profiles["fitness_level"] == "advanced")
    ]["user_id"].iloc[0]
    history = _history(trained, user)
    as_of = runtime.service.state.as_of
    local = local_time(float(as_of.timestamp()), history.timezone)
    night = local.replace(hour=23, minute=30, second=0, microsecond=0)
    runtime.push.set_clock(night.timestamp)  # the server's clock, not the caller's
    body = client.post("/v1/push/decision", json={"user_id": user, "at": night.isoformat()}).json()
    assert (body["send"], body["blocked_by"]) == (False, "quiet_hours")
    earliest = dt.datetime.fromisoformat(body["earliest_send_at"])
    assert earliest >= night
    assert earliest.hour >= 8
    assert earliest.hour < 21


def test_user_guardrails_answer_before_any_candidate_is_retrieved(
    trained: PushHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = _runtime(trained, tmp_path)
    push = runtime.push
    assert push is not None
    retrieved: list[str] = []
    retrieve = push._candidates

    def candidates(pid: str, history: PushHistory) -> list[str]:
        retrieved.append(pid)
        return retrieve(pid, history)

    monkeypatch.setattr(push, "_candidates", candidates)
    as_of = float(runtime.service.state.as_of.timestamp())
    awake = trained.profiles[~trained.profiles["push_opt_out"]]
    advanced = awake[awake["fitness_level"] == "advanced"]["user_id"].iloc[0]
    beginner = next(
        user
        for user in awake[awake["fitness_level"] == "beginner"]["user_id"]
        if not _history(trained, user).notifications_off(as_of)
    )
    opted = trained.profiles[trained.profiles["push_opt_out"]]["user_id"].iloc[0]
    unsafe = sorted(set(trained.catalog.loc[unsafe_for_beginners(trained.catalog), "item_id"]))

    def night_for(user: str) -> None:
        night = local_time(as_of, _history(trained, user).timezone).replace(hour=23, minute=30)
        push.set_clock(night.timestamp)

    night_for(advanced)
    assert push.decide(opted).blocked_by == "opted_out"
    assert push.decide(advanced).blocked_by == "quiet_hours"
    assert retrieved == []
    # A beginner's candidates come first: unsafe_for_beginner precedes the time guardrails.
    night_for(beginner)
    assert push.decide(beginner, item_id=unsafe[0]).blocked_by == "unsafe_for_beginner"
    assert push.decide(beginner).blocked_by == "quiet_hours"
    assert retrieved == [trained.pseudonymizer.pseudonymize(beginner)]


def test_fail_safe_without_a_push_model(trained: PushHome, tmp_path: Path) -> None:
    audit = AuditLog(
        LocalObjectStore(trained.home.store), load_audit_key(trained.home.audit_key_file)
    )
    source = RegistryModelSource(
        trained.home.mlflow_tracking_uri, tmp_path / "models", audit, "no-such-push-model"
    )
    runtime = _runtime(trained, tmp_path, push_source=source)
    client = authed(create_app(runtime.service, push=runtime.push, tokens=TOKENS))
    user = trained.profiles["user_id"].iloc[0]
    body = client.post("/v1/push/decision", json={"user_id": user}).json()
    assert (body["send"], body["fallback"]) == (False, "model_unavailable")


@pytest.mark.parametrize("threads", [1, None])
def test_bad_inputs_get_4xx_with_a_reason(
    trained: PushHome, tmp_path: Path, threads: int | None
) -> None:
    runtime = _runtime(trained, tmp_path)
    client = authed(create_app(runtime.service, push=runtime.push, threads=threads, tokens=TOKENS))
    user = trained.profiles["user_id"].iloc[0]
    now = dt.datetime.fromtimestamp(runtime.push.clock(), dt.UTC)  # type: ignore[union-attr]
    for body, status in (
        ({"user_id": "bad id with spaces"}, 400),
        ({"user_id": user, "item_id": "wk_does_not_exist"}, 400),
        ({"user_id": user, "at": "yesterday"}, 422),
        ({"user_id": user, "at": "2026-11-01T10:00:00"}, 422),
        ({"user_id": user, "at": "9999-12-31T23:59:59+05:30"}, 422),
        ({"user_id": user, "at": "0001-01-01T00:00:00+05:30"}, 422),
        ({"user_id": user, "at": (now + dt.timedelta(hours=6)).isoformat()}, 422),
        ({"user_id": user, "at": (now - dt.timedelta(minutes=6)).isoformat()}, 422),
        ({"user_id": user, "send": True}, 422),
        ({}, 422),
    ):
        response = client.post("/v1/push/decision", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]
    within = {"user_id": user, "at": (now + dt.timedelta(minutes=4)).isoformat()}
    assert client.post("/v1/push/decision", json=within).status_code == 200


def _always_send(runtime: ServiceRuntime) -> None:
    assert runtime.push is not None
    assert runtime.push.policy.bundle is not None
    bundle = runtime.push.policy.bundle
    eager = PushPolicyBundle(
        bundle.models, dataclasses.replace(bundle.params, threshold=-1e9), bundle.trained_until
    )
    runtime.push.swap_policy(LoadedPushPolicy(runtime.push.policy.version, eager))


def _eager_push(
    trained: PushHome, tmp_path: Path, days: int
) -> tuple[PushDecisionService, str, dt.datetime]:
    """A push service that sends what passes the guardrails, a sendable user, and a daytime
    moment ``days`` after ``_sendable_user``'s (tests that send pick days no other uses)."""
    runtime = _runtime(trained, tmp_path)
    _always_send(runtime)
    assert runtime.push is not None
    assert runtime.push.caps is not None
    user, noon = _sendable_user(trained, runtime)
    return runtime.push, user, dt.datetime.fromisoformat(noon) + dt.timedelta(days=days)


def _sendable_user(trained: PushHome, runtime: ServiceRuntime) -> tuple[str, str]:
    """An advanced user who may receive pushes, and a daytime moment with no cool-down."""
    assert runtime.push is not None
    caps = runtime.push.caps
    assert caps is not None
    as_of = runtime.service.state.as_of
    for user in trained.profiles[
        ~trained.profiles["push_opt_out"] & (trained.profiles["fitness_level"] == "advanced")
    ]["user_id"]:
        history = _history(trained, user)
        if history.notifications_off(float(as_of.timestamp())):
            continue
        local = local_time(float(as_of.timestamp()), history.timezone)
        noon = local.replace(hour=12, minute=0, second=0, microsecond=0) + dt.timedelta(days=3)
        pid = trained.pseudonymizer.pseudonymize(user)
        if caps.counts(pid, noon) == (0, 0) and history.last_app_open(noon.timestamp()) is None:
            return user, noon.isoformat()
        if caps.counts(pid, noon) == (0, 0):
            last = history.last_app_open(noon.timestamp())
            if last is not None and noon.timestamp() - last > 6 * 3600:
                return user, noon.isoformat()
    raise AssertionError("no advanced user without recent pushes in the tiny world")


def test_daily_cap_blocks_the_second_send(trained: PushHome, tmp_path: Path) -> None:
    runtime = _runtime(trained, tmp_path)
    _always_send(runtime)
    user, noon = _sendable_user(trained, runtime)
    client = authed(create_app(runtime.service, push=runtime.push, tokens=TOKENS))
    assert runtime.push is not None
    runtime.push.set_clock(dt.datetime.fromisoformat(noon).timestamp)
    first = client.post("/v1/push/decision", json={"user_id": user}).json()
    assert first["send"] is True, first
    later = dt.datetime.fromisoformat(noon) + dt.timedelta(hours=2)
    runtime.push.set_clock(later.timestamp)
    second = client.post("/v1/push/decision", json={"user_id": user}).json()
    assert (second["send"], second["blocked_by"]) == (False, "daily_cap")
    earliest = dt.datetime.fromisoformat(second["earliest_send_at"])
    assert earliest >= dt.datetime.fromisoformat(noon) + dt.timedelta(hours=24)


def test_a_locked_cap_store_fails_safe_within_the_push_deadline(
    trained: PushHome, tmp_path: Path
) -> None:
    runtime = build_runtime(
        profile_backends(trained.home, "local", serving=True), tmp_path / "models", poll_s=3600.0
    )
    _always_send(runtime)
    assert runtime.push is not None
    user, noon = _sendable_user(trained, runtime)
    runtime.push.set_clock((dt.datetime.fromisoformat(noon) + dt.timedelta(days=3)).timestamp)
    locker = sqlite3.connect(trained.home.online_store.with_name("push_caps.sqlite"))
    locker.execute("BEGIN IMMEDIATE")  # another writer holds the cap store's write lock
    try:
        started = time.perf_counter()
        decision = runtime.push.decide(user)
        elapsed = time.perf_counter() - started
    finally:
        locker.rollback()
        locker.close()

    assert (decision.send, decision.fallback) == (False, "caps_unavailable")
    # 50 ms for the lock; the rest is the decision itself (generous for a loaded CI machine).
    assert elapsed < 1.0


def test_concurrent_decisions_send_once(trained: PushHome, tmp_path: Path) -> None:
    runtime = _runtime(trained, tmp_path)
    _always_send(runtime)
    assert runtime.push is not None
    user, noon = _sendable_user(trained, runtime)
    moment = (dt.datetime.fromisoformat(noon) + dt.timedelta(days=2)).isoformat()
    barrier = threading.Barrier(8)
    results: list[bool] = []
    lock = threading.Lock()

    def decide() -> None:
        barrier.wait()
        decision = runtime.push.decide(user, at=moment)  # type: ignore[union-attr]
        with lock:
            results.append(decision.send)

    threads = [threading.Thread(target=decide) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    caps = SQLitePushCapStore(trained.home.online_store.with_name("push_caps.sqlite"))
    stamp = dt.datetime.fromisoformat(moment)
    assert caps.counts(trained.pseudonymizer.pseudonymize(user), stamp)[0] == 1


def test_a_replayed_idempotency_key_returns_the_original_answer(
    trained: PushHome, tmp_path: Path
) -> None:
    runtime = _runtime(trained, tmp_path)
    _always_send(runtime)
    assert runtime.push is not None
    assert runtime.push.caps is not None
    user, noon = _sendable_user(trained, runtime)
    client = authed(create_app(runtime.service, push=runtime.push, tokens=TOKENS))
    start = dt.datetime.fromisoformat(noon)
    runtime.push.set_clock(start.timestamp)
    key = {"Idempotency-Key": "order-0001-abcdef"}

    first = client.post("/v1/push/decision", json={"user_id": user}, headers=key).json()
    replays = []
    for hours in (1, 6, 30):  # later, even past the day's cap window
        runtime.push.set_clock((start + dt.timedelta(hours=hours)).timestamp)
        replays.append(client.post("/v1/push/decision", json={"user_id": user}, headers=key).json())
    runtime.push.set_clock((start + dt.timedelta(hours=2)).timestamp)
    other_key = {"Idempotency-Key": "order-0002-abcdef"}
    fresh = client.post("/v1/push/decision", json={"user_id": user}, headers=other_key).json()

    assert (first["send"], first["replayed"]) == (True, False)
    assert replays == [{**first, "replayed": True}] * 3
    pid = trained.pseudonymizer.pseudonymize(user)
    assert runtime.push.caps.counts(pid, start + dt.timedelta(hours=30)) == (0, 1)
    assert (fresh["send"], fresh["blocked_by"]) == (False, "daily_cap")
    bad = client.post("/v1/push/decision", json={"user_id": user}, headers={"Idempotency-Key": "x"})
    assert bad.status_code == 422


def test_concurrent_twins_of_one_key_share_one_answer_and_one_send(
    trained: PushHome, tmp_path: Path
) -> None:
    push, user, tomorrow = _eager_push(trained, tmp_path, days=1)
    moment = tomorrow.isoformat()
    barrier = threading.Barrier(8)
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def decide() -> None:
        barrier.wait()
        decision = push.decide(user, at=moment, idempotency_key="twin-key-0001")
        with lock:
            answers.append({k: v for k, v in decision.payload().items() if k != "replayed"})

    threads = [threading.Thread(target=decide) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(answers) == 8
    assert all(a == answers[0] for a in answers)
    assert answers[0]["send"] is True
    pid = trained.pseudonymizer.pseudonymize(user)
    assert push.caps.counts(pid, dt.datetime.fromisoformat(moment))[0] == 1


def test_beginners_only_get_safe_items(trained: PushHome, tmp_path: Path) -> None:
    runtime = _runtime(trained, tmp_path)
    _always_send(runtime)
    client = authed(create_app(runtime.service, push=runtime.push, tokens=TOKENS))
    unsafe = set(trained.catalog.loc[unsafe_for_beginners(trained.catalog), "item_id"])
    beginners = trained.profiles[
        ~trained.profiles["push_opt_out"] & (trained.profiles["fitness_level"] == "beginner")
    ]["user_id"].head(30)
    sent = 0
    for user in beginners:
        body = client.post("/v1/push/decision", json={"user_id": user}).json()
        if body["item"] is not None:
            assert body["item"]["id"] not in unsafe
            sent += body["send"]
        given = client.post(
            "/v1/push/decision", json={"user_id": user, "item_id": sorted(unsafe)[0]}
        ).json()
        assert given["send"] is False
        assert given["blocked_by"] in ("opted_out", "unsafe_for_beginner")
    assert sent > 0


def test_nothing_is_decided_or_kept_for_an_erased_or_unknown_user(
    trained: PushHome, tmp_path: Path
) -> None:
    runtime = _runtime(trained, tmp_path)
    _always_send(runtime)
    assert runtime.push is not None
    assert runtime.push.caps is not None
    user, noon = _sendable_user(trained, runtime)
    moment = dt.datetime.fromisoformat(noon) + dt.timedelta(days=5)
    runtime.push.set_clock(moment.timestamp)
    client = authed(create_app(runtime.service, push=runtime.push, tokens=TOKENS))
    key = {"Idempotency-Key": "erased-0001-abcdef"}
    pid = trained.pseudonymizer.pseudonymize(user)
    store = LocalObjectStore(trained.home.store)
    add_erased(store, pid, moment.isoformat())
    counts_before = runtime.push.caps.counts(pid, moment)  # earlier tests sent to this user
    try:
        runtime.served_log.flush()  # the service re-reads the erasure list at each flush
        erased = client.post("/v1/push/decision", json={"user_id": user}, headers=key).json()
        stranger = client.post(
            "/v1/push/decision", json={"user_id": "never-seen-9f3a"}, headers=key
        ).json()
    finally:
        store.delete(erased_key(pid))

    assert (erased["send"], erased["blocked_by"]) == (False, "erased_user")
    assert runtime.push.caps.counts(pid, moment) == counts_before
    assert runtime.push.caps.recall_decision(pid, key["Idempotency-Key"]) is None
    assert (stranger["send"], stranger["blocked_by"]) == (False, "unknown_user")
    unknown = trained.pseudonymizer.pseudonymize("never-seen-9f3a")
    assert runtime.push.caps.recall_decision(unknown, key["Idempotency-Key"]) is None


def test_a_twin_that_finds_its_keys_reservation_still_sends(
    trained: PushHome, tmp_path: Path
) -> None:
    # Ten days on: outside the caps' windows of every send the module's other tests make.
    push, user, moment = _eager_push(trained, tmp_path, days=10)
    assert push.caps is not None
    assert push.policy.bundle is not None
    pid = trained.pseudonymizer.pseudonymize(user)
    # A concurrent twin of the same key reserved the send and has not remembered its answer.
    caps = push.policy.bundle.params.caps
    assert push.caps.try_reserve(pid, "idem:twin-key-0002", moment, caps).allowed

    decision = push.decide(user, at=moment.isoformat(), idempotency_key="twin-key-0002")

    assert (decision.send, decision.blocked_by) == (True, None)
    assert push.caps.counts(pid, moment)[0] == 1


def test_a_push_record_of_the_wrong_shape_fails_safe(trained: PushHome, tmp_path: Path) -> None:
    copy = tmp_path / "online.sqlite"
    with closing(sqlite3.connect(trained.home.online_store)) as source:
        with closing(sqlite3.connect(copy)) as target:
            source.backup(target)
    user = trained.profiles[~trained.profiles["push_opt_out"]]["user_id"].iloc[0]
    with closing(sqlite3.connect(copy)) as conn, conn:
        changed = conn.execute(
            "UPDATE features SET payload = '{\"sent\": 5}' WHERE kind = 'push' AND id = ?",
            (trained.pseudonymizer.pseudonymize(user),),
        ).rowcount
    assert changed == 1
    backends = dataclasses.replace(
        profile_backends(trained.home, "local"), online=SQLiteOnlineStore(copy, create=False)
    )
    runtime = build_runtime(backends, tmp_path / "models", poll_s=3600.0)
    client = authed(create_app(runtime.service, push=runtime.push, tokens=TOKENS))

    response = client.post("/v1/push/decision", json={"user_id": user})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["send"], body["fallback"]) == (False, "features_unavailable")
    assert "a push record of the wrong shape" in body["reasons"][0]
