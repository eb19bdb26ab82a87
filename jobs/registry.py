"""Registry actions as jobs, launched from the Dagster UI's launchpad or by sensors.

Each job runs one op that calls the audited promotion workflow; its config names the version,
the decision and who made it, exactly like ``fitpulse registry approve|reject|rollback``.
"""

from typing import Literal

import dagster as dg
from pydantic import Field

from assets.resources import ModelRegistryResource
from model_registry.client import HOME_RANKER_MODEL


class ReviewConfig(dg.Config):
    """A reviewer's decision on one version."""

    version: str
    decision: Literal["approve", "reject"]
    reviewer: str
    approval_code: str = Field(
        description="The reviewer's code for this decision on this version: `fitpulse registry "
        "approval-code MODEL VERSION --reviewer NAME --decision DECISION` (from their key; "
        "useless for any other decision, so safe in the run config)."
    )
    note: str = ""
    model: str = HOME_RANKER_MODEL


@dg.op
def review_model_version(
    context: dg.OpExecutionContext, config: ReviewConfig, model_registry: ModelRegistryResource
) -> None:
    """Record a reviewer's approval or rejection (fails if the rules forbid it)."""
    model_registry.get_roster().authorise(
        config.reviewer, config.approval_code, config.model, config.version, config.decision
    )
    promotion = model_registry.get_promotion()
    if config.decision == "approve":
        changed = promotion.approve(config.model, config.version, config.reviewer, config.note)
    else:
        changed = promotion.reject(config.model, config.version, config.reviewer, config.note)
    verb = "approved" if config.decision == "approve" else "rejected"
    context.log.info(
        f"{config.model} version {config.version} {verb} by {config.reviewer}"
        if changed
        else f"{config.model} version {config.version} was already {verb}; nothing changed"
    )


class PromoteConfig(dg.Config):
    """The approved version to make champion."""

    version: str
    model: str = HOME_RANKER_MODEL
    actor: str = "promote_champion_job"


@dg.op
def promote_champion(
    context: dg.OpExecutionContext, config: PromoteConfig, model_registry: ModelRegistryResource
) -> None:
    """Move the ``champion`` alias to an approved, gate-passed version."""
    changed = model_registry.get_promotion().promote(config.model, config.version, config.actor)
    context.log.info(
        f"{config.model} champion is now version {config.version}"
        if changed
        else f"{config.model} version {config.version} already was the champion"
    )


class RollbackConfig(dg.Config):
    """Who rolls back and why."""

    operator: str
    note: str = ""
    model: str = HOME_RANKER_MODEL


@dg.op
def rollback_champion(
    context: dg.OpExecutionContext, config: RollbackConfig, model_registry: ModelRegistryResource
) -> None:
    """Move ``champion`` back to the previous champion."""
    if not config.operator.strip():
        raise ValueError("operator must name who rolls back")
    current, restored = model_registry.get_promotion().rollback(
        config.model, config.operator, config.note
    )
    context.log.info(f"{config.model}: rolled back version {current}; champion is {restored}")


@dg.job(description="Approve or reject a gate-passed model version (config: who, what, why).")
def review_model_job() -> None:
    """Record one review decision."""
    review_model_version()


@dg.job(description="Make an approved challenger the champion (launched by the sensor).")
def promote_champion_job() -> None:
    """Move the champion alias."""
    promote_champion()


@dg.job(description="Move the champion alias back to the previous champion.")
def rollback_champion_job() -> None:
    """Roll back the champion."""
    rollback_champion()
