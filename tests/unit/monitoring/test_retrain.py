from __future__ import annotations

from dataclasses import replace

import pytest

from fitpulse_orchestration.monitoring.retrain import (
    DriftObservation,
    RetrainState,
    decide_retrain,
)

HOUR = 3600.0
COOLDOWN = 24 * HOUR
T0 = 1_800_000_000.0


def obs(record_id: int, drift: bool, at_hours: float, reference: str = "3") -> DriftObservation:
    return DriftObservation(
        record_id=record_id,
        dataset_drift=drift,
        drift_share=0.6 if drift else 0.1,
        reference_version=reference,
        at=T0 + at_hours * HOUR,
    )


def run(
    batches: list[list[DriftObservation]], state: RetrainState | None = None
) -> tuple[list[int | None], RetrainState]:
    """Feed ``batches`` tick by tick (through the cursor); the trigger's record id per tick."""
    state = state or RetrainState()
    triggers: list[int | None] = []
    for batch in batches:
        decision = decide_retrain(batch, RetrainState.from_cursor(state.to_cursor()), COOLDOWN)
        triggers.append(decision.trigger.record_id if decision.trigger else None)
        state = decision.state
    return triggers, state


def test_first_drift_triggers_a_retrain() -> None:
    decision = decide_retrain([obs(1, True, 0)], RetrainState(), COOLDOWN)

    assert decision.trigger == obs(1, True, 0)
    assert decision.state == RetrainState(
        last_record_id=1,
        episode_reference="3",
        last_trigger_at=T0,
        last_trigger_record=1,
    )
    assert decision.log == ("report 1: drift 0.60 against version 3; retraining",)


def test_no_drift_triggers_nothing() -> None:
    decision = decide_retrain([obs(1, False, 0), obs(2, False, 1)], RetrainState(), COOLDOWN)

    assert decision.trigger is None
    assert decision.state == RetrainState(last_record_id=2)
    assert decision.log == ()


def test_empty_batch_keeps_the_state() -> None:
    state = RetrainState(last_record_id=4, episode_reference="3", last_trigger_at=T0)

    decision = decide_retrain([], state, COOLDOWN)

    assert decision.trigger is None
    assert decision.state == state


def test_one_episode_causes_one_retrain() -> None:
    # drift persists for days against the same reference: later reports never trigger
    triggers, state = run([[obs(1, True, 0)], [obs(2, True, 30)], [obs(3, True, 60)]])

    assert triggers == [1, None, None]
    assert state.episode_reference == "3"
    assert state.last_trigger_record == 1
    assert state.last_record_id == 3


def test_continuing_episode_is_logged() -> None:
    _, state = run([[obs(1, True, 0)]])

    decision = decide_retrain([obs(2, True, 48)], state, COOLDOWN)

    assert decision.trigger is None
    assert decision.log == (
        "report 2: drift 0.60 continues the episode already handled by report 1",
    )


def test_no_drift_ends_the_episode_and_later_drift_triggers_after_cooldown() -> None:
    triggers, state = run([[obs(1, True, 0)], [obs(2, False, 10)], [obs(3, True, 30)]])

    assert triggers == [1, None, 3]
    assert state.last_trigger_record == 3
    assert state.last_trigger_at == T0 + 30 * HOUR


def test_no_drift_report_logs_the_end_of_the_episode() -> None:
    _, state = run([[obs(1, True, 0)]])

    decision = decide_retrain([obs(2, False, 1)], state, COOLDOWN)

    assert decision.state.episode_reference is None
    assert decision.log == ("report 2: no drift, episode over",)


def test_new_episode_inside_the_cooldown_does_not_trigger() -> None:
    triggers, state = run([[obs(1, True, 0)], [obs(2, False, 5)], [obs(3, True, 10)]])

    assert triggers == [1, None, None]
    assert state.last_trigger_record == 1
    assert state.episode_reference is None  # the skipped drift did not open a handled episode


def test_cooldown_skip_is_logged_with_the_time_left() -> None:
    _, state = run([[obs(1, True, 0)], [obs(2, False, 5)]])

    decision = decide_retrain([obs(3, True, 10)], state, COOLDOWN)

    assert decision.log == (
        "report 3: drift 0.60 inside the cooldown (50400 s left); not retraining",
    )


def test_cooldown_skipped_drift_triggers_once_the_cooldown_passes() -> None:
    triggers, state = run(
        [
            [obs(1, True, 0)],
            [obs(2, False, 5)],
            [obs(3, True, 10)],  # inside the cooldown
            [obs(4, True, 20)],  # still inside
            [obs(5, True, 24)],  # the cooldown is over: this episode's retrain
            [obs(6, True, 50)],  # the same episode: no second retrain
        ]
    )

    assert triggers == [1, None, None, None, 5, None]
    assert state.last_trigger_record == 5


def test_cooldown_boundary_is_inclusive() -> None:
    state = RetrainState(last_record_id=1, last_trigger_at=T0, last_trigger_record=1)

    just_before = decide_retrain([obs(2, True, 24 - 1 / HOUR)], state, COOLDOWN)
    at_boundary = decide_retrain([obs(2, True, 24)], state, COOLDOWN)

    assert just_before.trigger is None
    assert at_boundary.trigger is not None


def test_new_reference_version_starts_a_new_episode() -> None:
    triggers, state = run([[obs(1, True, 0, reference="3")], [obs(2, True, 30, reference="4")]])

    assert triggers == [1, 2]
    assert state.episode_reference == "4"


def test_new_reference_inside_the_cooldown_does_not_trigger() -> None:
    triggers, _ = run([[obs(1, True, 0, reference="3")], [obs(2, True, 2, reference="4")]])

    assert triggers == [1, None]


def test_already_seen_records_are_ignored() -> None:
    _, state = run([[obs(1, False, 0), obs(5, False, 1)]])

    decision = decide_retrain([obs(3, True, 2), obs(5, True, 3)], state, COOLDOWN)

    assert decision.trigger is None
    assert decision.state == state
    assert decision.log == ()


def test_only_records_after_the_cursor_count() -> None:
    _, state = run([[obs(1, False, 0), obs(5, False, 1)]])

    decision = decide_retrain([obs(3, True, 2), obs(6, True, 3)], state, COOLDOWN)

    assert decision.trigger is not None
    assert decision.trigger.record_id == 6
    assert decision.state.last_record_id == 6


def test_at_most_one_trigger_per_call() -> None:
    reports = [
        obs(1, True, 0, reference="3"),
        obs(2, True, 30, reference="4"),
        obs(3, False, 60),
        obs(4, True, 90, reference="4"),
    ]

    decision = decide_retrain(reports, RetrainState(), COOLDOWN)

    assert decision.trigger is not None
    assert decision.trigger.record_id == 1
    assert decision.state.last_record_id == 4
    assert decision.state.last_trigger_record == 1
    assert "report 2: drift, retrain already requested this tick" in decision.log
    assert "report 4: drift, retrain already requested this tick" in decision.log


def test_observations_are_walked_in_record_order() -> None:
    decision = decide_retrain(
        [obs(3, True, 2), obs(1, False, 0), obs(2, True, 1)], RetrainState(), COOLDOWN
    )

    assert decision.trigger is not None
    assert decision.trigger.record_id == 2
    assert decision.state.last_record_id == 3


def test_cursor_round_trip() -> None:
    state = RetrainState(
        last_record_id=17, episode_reference="5", last_trigger_at=T0 + 0.5, last_trigger_record=12
    )

    cursor = state.to_cursor()

    assert RetrainState.from_cursor(cursor) == state
    assert RetrainState.from_cursor(RetrainState().to_cursor()) == RetrainState()
    assert replace(state, episode_reference=None).to_cursor() != cursor


@pytest.mark.parametrize("cursor", [None, ""])
def test_empty_cursor_is_the_initial_state(cursor: str | None) -> None:
    assert RetrainState.from_cursor(cursor) == RetrainState(
        last_record_id=0, episode_reference=None, last_trigger_at=None, last_trigger_record=None
    )
