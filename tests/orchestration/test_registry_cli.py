"""``fitpulse registry``: approve, reject, promote, roll back and status against a real registry.

One project home (one SQLite MLflow registry) serves the module; each test registers its own
model, so the tests stay independent. Gate verdicts are recorded through the real workflow.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from gate_samples import FAILED, PASSED
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner, Result

from fitpulse_orchestration.cli import app
from fitpulse_orchestration.cli.pipeline import DEMO_REVIEWER, demo_review
from fitpulse_orchestration.runner import PushRun, TrainingRun
from fitpulse_orchestration.serving.auth import ApiTokens
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.storage.audit import AuditLog, load_audit_key
from model_registry.client import RegistryClient
from model_registry.gate import GateDecision
from model_registry.names import HOME_RANKER_MODEL, PUSH_POLICY_MODEL
from model_registry.promotion import ModelPromotion
from model_registry.reviewers import KEY_ENV, ReviewerRoster, add_reviewer, approval_code

_MODEL_IDS = itertools.count(1)
STATUS_COLUMNS = ("version", "aliases", "created", "ndcg@10", "data", "review", "promotion", "gate")

runner = CliRunner()
REVIEWERS = ("ana", "bo")


class Registry:
    """The module's home with helpers that register versions and record gate verdicts."""

    def __init__(self, home: ProjectHome) -> None:
        self.home = home
        self.uri = home.mlflow_tracking_uri
        self.mlflow = MlflowClient(self.uri, registry_uri=self.uri)
        self.promotion = ModelPromotion(
            RegistryClient(self.uri),
            AuditLog(LocalObjectStore(home.store), load_audit_key(home.audit_key_file)),
        )
        self._sources = itertools.count(1)
        self.keys = {name: add_reviewer(home.reviewers_file, name) for name in REVIEWERS}

    def new_model(self) -> str:
        name = f"cli-model-{next(_MODEL_IDS)}"
        self.mlflow.create_registered_model(name)
        return name

    def add_version(self, model: str, decision: GateDecision | None = PASSED) -> str:
        source = self.home.root / "sources" / f"v{next(self._sources)}"
        source.mkdir(parents=True)
        version = str(self.mlflow.create_model_version(model, source.as_uri(), run_id=None).version)
        self.promotion.mark_candidate(model, version, "test")
        if decision is not None:
            self.promotion.record_gate(model, version, decision, "test")
        return version


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """One home per module: creating the SQLite registry runs every MLflow migration."""
    return Registry(ProjectHome(tmp_path_factory.mktemp("registry_cli")).create())


def _invoke(registry: Registry, *args: str | Path, key: str | None = None) -> Result:
    """Run ``fitpulse registry ARGS``; a ``--reviewer NAME`` gets NAME's key in the environment
    (or ``key`` when given)."""
    words = [str(a) for a in args]
    if key is None and "--reviewer" in words:
        key = registry.keys.get(words[words.index("--reviewer") + 1].strip(), "")
    env = {KEY_ENV: key} if key is not None else {}
    return runner.invoke(app, ["registry", *words, "--home", registry.home.root], env=env)


def _approve(registry: Registry, model: str, version: str, reviewer: str = "ana") -> Result:
    return _invoke(registry, "approve", model, version, "--reviewer", reviewer, "--note", "ok")


def _roles(aliases: str) -> str:
    """An aliases cell without ``candidate`` (it follows every registration)."""
    return ",".join(a for a in aliases.split(",") if a not in ("candidate", "-")) or "-"


def _status(result: Result) -> dict[str, dict[str, str]]:
    """``{version: {column: cell}}`` of the table that ``fitpulse registry status`` prints."""
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("version "))
    starts = [header.index(name) for name in STATUS_COLUMNS]
    bounds = list(itertools.pairwise([*starts, None]))
    table = {}
    for line in lines[lines.index(header) + 1 :]:
        if not line.split(" ", 1)[0].isdigit():
            break
        cells = [line[a:b].strip() for a, b in bounds]
        table[cells[0]] = dict(zip(STATUS_COLUMNS, cells, strict=True))
    return table


def _status_of(registry: Registry, model: str) -> dict[str, dict[str, str]]:
    return _status(_invoke(registry, "status", model))


def _trained(version: str, push: PushRun | None = None) -> TrainingRun:
    """What a training run that registered ``version`` behind a passed gate returns."""
    return TrainingRun([], {}, {}, "run", [], gate=PASSED, version=version, push=push)


def test_approve_without_reviewer_exits_2(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.add_version(model)

    result = _invoke(registry, "approve", model, version)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert "pass --reviewer NAME and set FITPULSE_REVIEWER_KEY" in result.stderr


def test_blank_reviewer_is_no_reviewer(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.add_version(model)

    result = _invoke(registry, "approve", model, version, "--reviewer", "   ")

    assert result.exit_code == 2, result.output
    assert "pass --reviewer NAME and set FITPULSE_REVIEWER_KEY" in result.stderr


def test_a_reviewer_off_the_roster_or_with_a_wrong_key_is_refused(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.add_version(model)

    stranger = _invoke(registry, "approve", model, version, "--reviewer", "mallory", key="k" * 43)
    forged = _invoke(registry, "approve", model, version, "--reviewer", "ana", key="k" * 43)
    borrowed = _invoke(
        registry, "approve", model, version, "--reviewer", "ana", key=registry.keys["bo"]
    )

    assert (stranger.exit_code, forged.exit_code, borrowed.exit_code) == (2, 2, 2)
    assert "'mallory' is not on the reviewer roster" in stranger.stderr
    assert "the approval code is not ana's for 'approve'" in forged.stderr
    assert "the approval code is not ana's for 'approve'" in borrowed.stderr
    assert _status_of(registry, model)[version]["review"] == "pending"


def test_the_approval_code_is_the_one_the_roster_accepts(registry: Registry) -> None:
    key = registry.keys["ana"]
    args = ["registry", "approval-code", "some-model", "7", "--reviewer", "ana"]

    result = runner.invoke(app, [*args, "--decision", "reject"], env={KEY_ENV: key})

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == approval_code(key, "ana", "some-model", "7", "reject")
    ReviewerRoster.from_file(registry.home.reviewers_file).authorise(
        "ana", result.stdout.strip(), "some-model", "7", "reject"
    )


def test_approving_a_gate_failed_version_exits_2(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.add_version(model, FAILED)

    result = _approve(registry, model, version)

    assert result.exit_code == 2, result.output
    assert "cannot be approved" in result.stderr
    assert "beginner_safety" in result.stderr


def test_approving_a_version_the_gate_never_saw_exits_2(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.add_version(model, decision=None)

    result = _approve(registry, model, version)

    assert result.exit_code == 2, result.output
    assert "cannot be approved: gate not run" in result.stderr


def test_approve_then_approve_again_changes_nothing(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.add_version(model)

    first = _approve(registry, model, version, reviewer="ana")
    second = _approve(registry, model, version, reviewer="bo")

    assert first.exit_code == 0, first.output
    assert f"{model} version {version} approved by ana" in first.stdout
    assert second.exit_code == 0, second.output
    assert "already approved" in second.stdout
    assert _status_of(registry, model)[version]["review"] == "approved by ana"
    approvals = [e for e in registry.promotion.audit.entries(model) if e.action == "approved"]
    assert [e.actor for e in approvals] == ["ana"]


def test_reject_then_approve_exits_2(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.add_version(model)

    rejected = _invoke(registry, "reject", model, version, "--reviewer", "ana", "--note", "no")
    approved = _approve(registry, model, version, reviewer="bo")

    assert rejected.exit_code == 0, rejected.output
    assert "rejected by ana" in rejected.stdout
    assert approved.exit_code == 2, approved.output
    assert "was rejected by ana" in approved.stderr
    row = _status_of(registry, model)[version]
    assert row["review"] == "rejected by ana"
    assert _roles(row["aliases"]) == "-"


def test_promoting_an_unapproved_version_exits_2(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.add_version(model)

    result = _invoke(registry, "promote", model, version)

    assert result.exit_code == 2, result.output
    assert "is not approved" in result.stderr
    row = _status_of(registry, model)[version]
    assert (_roles(row["aliases"]), row["review"], row["promotion"]) == (
        "challenger",
        "pending",
        "-",
    )


def test_promote_makes_the_approved_version_champion(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.add_version(model)
    assert _approve(registry, model, version).exit_code == 0

    promoted = _invoke(registry, "promote", model, version)
    again = _invoke(registry, "promote", model, version)

    assert promoted.exit_code == 0, promoted.output
    assert f"{model} champion is now version {version}" in promoted.stdout
    assert again.exit_code == 0, again.output
    assert "already is the champion" in again.stdout
    row = _status_of(registry, model)[version]
    assert (_roles(row["aliases"]), row["promotion"]) == ("champion", "champion")


def test_rolling_back_the_first_champion_exits_2(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.add_version(model)
    assert _approve(registry, model, version).exit_code == 0
    assert _invoke(registry, "promote", model, version).exit_code == 0

    result = _invoke(registry, "rollback", model, "--by", "oncall", "--note", "x")

    assert result.exit_code == 2, result.output
    assert "nothing to roll back" in result.stderr
    row = _status_of(registry, model)[version]
    assert (_roles(row["aliases"]), row["promotion"]) == ("champion", "champion")


def test_rollback_without_a_champion_exits_2(registry: Registry) -> None:
    model = registry.new_model()
    registry.add_version(model)

    result = _invoke(registry, "rollback", model, "--by", "oncall")

    assert result.exit_code == 2, result.output
    assert "has no champion to roll back" in result.stderr


def test_rollback_restores_the_previous_champion(registry: Registry) -> None:
    model = registry.new_model()
    first = registry.add_version(model)
    assert _approve(registry, model, first).exit_code == 0
    assert _invoke(registry, "promote", model, first).exit_code == 0
    second = registry.add_version(model)
    assert _approve(registry, model, second).exit_code == 0
    assert _invoke(registry, "promote", model, second).exit_code == 0
    before = _status_of(registry, model)
    assert (_roles(before[second]["aliases"]), before[second]["promotion"]) == (
        "champion",
        "champion",
    )
    assert (_roles(before[first]["aliases"]), before[first]["promotion"]) == ("-", "retired")

    result = _invoke(registry, "rollback", model, "--by", "oncall", "--note", "x")

    assert result.exit_code == 0, result.output
    assert f"rolled back version {second}; champion is version {first} again" in result.stdout
    after = _status_of(registry, model)
    assert (_roles(after[first]["aliases"]), after[first]["promotion"]) == ("champion", "champion")
    assert (_roles(after[second]["aliases"]), after[second]["promotion"]) == ("-", "rolled_back")
    rollback = registry.promotion.audit.entries(model)[-1]
    assert (rollback.action, rollback.actor, rollback.note) == ("rolled_back", "oncall", "x")
    assert rollback.details == {"restored": first, "from": second}
    # A rolled-back version stays retired.
    retry = _invoke(registry, "promote", model, second)
    assert retry.exit_code == 2, retry.output
    assert "was rolled back" in retry.stderr


def test_status_lists_versions_and_the_audit_log(registry: Registry) -> None:
    model = registry.new_model()
    passed = registry.add_version(model)
    failed = registry.add_version(model, FAILED)

    result = _invoke(registry, "status", model)

    rows = _status(result)
    assert list(rows) == [failed, passed]
    assert (_roles(rows[passed]["aliases"]), rows[passed]["review"]) == ("challenger", "pending")
    assert rows[passed]["gate"] == "passed vs popularity"
    assert _roles(rows[failed]["aliases"]) == "-"
    assert rows[failed]["gate"].startswith("failed vs popularity (beginner_safety: ")
    audit = result.stdout.splitlines()[-1]
    assert audit == f"audit log: {registry.promotion.audit.location()}"
    assert audit.endswith(str(registry.home.store / "audit" / "registry"))


def test_status_of_an_unknown_model_says_nothing_is_registered(registry: Registry) -> None:
    result = _invoke(registry, "status", "no-such-model")

    assert result.exit_code == 0, result.output
    assert "no-such-model: no registered versions" in result.stdout


@pytest.mark.parametrize("command", ["approve", "reject", "promote"])
def test_unknown_version_exits_2_naming_the_versions(registry: Registry, command: str) -> None:
    model = registry.new_model()
    one = registry.add_version(model)
    two = registry.add_version(model, FAILED)
    extra = ["--reviewer", "ana"] if command != "promote" else []

    result = _invoke(registry, command, model, "99", *extra)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert f"has no version '99' (versions: {two}, {one})" in result.stderr


def test_the_demo_stands_in_for_the_reviewer_only_on_a_passed_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ProjectHome(tmp_path / "demo_home").create()
    registry = Registry(home)
    for model in (HOME_RANKER_MODEL, PUSH_POLICY_MODEL):
        registry.mlflow.create_registered_model(model)
    passed = registry.add_version(HOME_RANKER_MODEL, PASSED)
    failed = registry.add_version(PUSH_POLICY_MODEL, FAILED)

    demo_review(home, _trained(passed, push=PushRun(version=failed, gate_passed=False)))

    out = capsys.readouterr().out
    audited = registry.promotion.audited(HOME_RANKER_MODEL)
    assert audited.champion == passed
    assert audited.versions[passed].reviewer == DEMO_REVIEWER
    assert registry.promotion.audited(PUSH_POLICY_MODEL).champion is None
    assert f"{PUSH_POLICY_MODEL} version {failed} failed its gate" in out
    assert f"approved by {DEMO_REVIEWER}" in out
    assert DEMO_REVIEWER in ReviewerRoster.from_file(home.reviewers_file).digests
    # Its key file gone, the stand-in approves nothing (it never mints itself a new key).
    (home.root / "secrets" / "demo_reviewer_key").unlink()
    newer = registry.add_version(HOME_RANKER_MODEL, PASSED)
    demo_review(home, _trained(newer))

    assert "its key file" in capsys.readouterr().out
    assert registry.promotion.audited(HOME_RANKER_MODEL).champion == passed


def test_new_secrets_are_printed_once_and_only_their_digests_kept(tmp_path: Path) -> None:
    home = ["--home", str(tmp_path / "home")]

    added = runner.invoke(app, ["reviewer", "add", "bea", *home])
    issued = runner.invoke(app, ["token", "issue", "svc", *home])
    again = runner.invoke(app, ["reviewer", "add", "bea", *home])

    assert (added.exit_code, issued.exit_code, again.exit_code) == (0, 0, 2)
    key, token = added.stdout.strip().splitlines()[-1], issued.stdout.strip().splitlines()[-1]
    project = ProjectHome(tmp_path / "home")
    roster = ReviewerRoster.from_file(project.reviewers_file)
    roster.authorise("bea", approval_code(key, "bea", "m", "1", "approve"), "m", "1", "approve")
    assert key not in project.reviewers_file.read_text()
    tokens = ApiTokens.parse_file(project.api_tokens_file)
    assert tokens.caller(f"Bearer {token}") == "svc"
    assert token not in project.api_tokens_file.read_text()
    assert "already on the roster" in again.output
