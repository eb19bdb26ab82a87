"""When drift reports should trigger a retrain: one per drift episode, with a cooldown.

A *drift episode* is a run of consecutive drifted reports against the same reference model.
It ends with a report that shows no drift, or when the reference changes (a new champion was
promoted). The first drifted report of an episode triggers a retrain unless the previous
trigger is younger than the cooldown; later reports of the same episode never do, so a
drift that persists until the new model is reviewed causes one retrain, not one per report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class DriftObservation:
    """One materialized drift report, as the sensor reads it from the event log."""

    record_id: int
    dataset_drift: bool
    drift_share: float
    reference_version: str
    at: float
    """Seconds since the epoch when the report was materialized."""


@dataclass(frozen=True)
class RetrainState:
    """What the sensor remembers between ticks (its cursor)."""

    last_record_id: int = 0
    episode_reference: str | None = None
    """Reference version of the current drift episode; None outside an episode."""
    last_trigger_at: float | None = None
    last_trigger_record: int | None = None

    def to_cursor(self) -> str:
        """JSON cursor text."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_cursor(cls, cursor: str | None) -> RetrainState:
        """Parse a cursor written by ``to_cursor`` (the initial state when empty)."""
        if not cursor:
            return cls()
        return cls(**json.loads(cursor))


@dataclass(frozen=True)
class RetrainDecision:
    """The observation that triggers a retrain (if any), the new state and what happened."""

    trigger: DriftObservation | None
    state: RetrainState
    log: tuple[str, ...]


def decide_retrain(
    observations: list[DriftObservation], state: RetrainState, cooldown_s: float
) -> RetrainDecision:
    """Walk new reports in order and decide whether one of them starts a retrain.

    Reports with ``record_id <= state.last_record_id`` were seen before and are ignored. At
    most one retrain is triggered per call.
    """
    trigger: DriftObservation | None = None
    log: list[str] = []
    for obs in sorted(observations, key=lambda o: o.record_id):
        if obs.record_id <= state.last_record_id:
            continue
        state = replace(state, last_record_id=obs.record_id)
        if not obs.dataset_drift:
            if state.episode_reference is not None:
                log.append(f"report {obs.record_id}: no drift, episode over")
            state = replace(state, episode_reference=None)
            continue
        if state.episode_reference == obs.reference_version:
            log.append(
                f"report {obs.record_id}: drift {obs.drift_share:.2f} continues the episode "
                f"already handled by report {state.last_trigger_record}"
            )
            continue
        if trigger is not None:
            log.append(f"report {obs.record_id}: drift, retrain already requested this tick")
            continue
        if state.last_trigger_at is not None and obs.at - state.last_trigger_at < cooldown_s:
            wait = cooldown_s - (obs.at - state.last_trigger_at)
            log.append(
                f"report {obs.record_id}: drift {obs.drift_share:.2f} inside the cooldown "
                f"({wait:.0f} s left); not retraining"
            )
            continue
        trigger = obs
        state = replace(
            state,
            episode_reference=obs.reference_version,
            last_trigger_at=obs.at,
            last_trigger_record=obs.record_id,
        )
        log.append(
            f"report {obs.record_id}: drift {obs.drift_share:.2f} against version "
            f"{obs.reference_version}; retraining"
        )
    return RetrainDecision(trigger=trigger, state=state, log=tuple(log))
