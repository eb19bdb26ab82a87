"""Registry actions as jobs, launched from the Dagster UI's launchpad or by sensors.

Each job runs one op that calls the audited promotion workflow; its config names the version,
the decision and who made it, exactly like ``fitpulse registry approve|reject|rollback``.

The launchpad's "Scaffold missing config" fills in required fields only, and writes an enum
(a ``Literal``) as its values joined by ``|`` (``approve|reject``, which is not a valid value).
``decision`` therefore defaults to ``approve``, the default of ``fitpulse registry approval-code``:
the scaffold leaves it out, and a reject code with a forgotten ``decision`` is refused, never
recorded as an approval, because the code is bound to the decision.

Each op tags its own run with what it acts on (a job's ``tags`` are fixed when it is defined,
and the values come from the run config), so runs can be filtered by version, decision or who.
"""

from typing import Literal

import dagster as dg
from pydantic import Field

from assets.registry_status import record_registry_status
from assets.resources import ModelRegistryResource
from jobs.tags import (
    ACTOR_TAG,
    DECISION_TAG,
    MODEL_TAG,
    OPERATOR_TAG,
    RESTORED_VERSION_TAG,
    REVIEWER_TAG,
    VERSION_TAG,
)
from model_registry.client import HOME_RANKER_MODEL

_VERSION_DESCRIPTION = "Version number in the registry (`fitpulse registry status`), e.g. 3."
_MODEL_DESCRIPTION = "Registered model name."


def _tag_run(context: dg.OpExecutionContext, tags: dict[str, str]) -> None:
    """Add ``tags`` to the op's own run (they show on the Runs page and filter it)."""
    context.instance.add_run_tags(context.run.run_id, tags)


class ReviewConfig(dg.Config):
    """A reviewer's decision on one version."""

    version: int = Field(gt=0, strict=True, description=_VERSION_DESCRIPTION)
    decision: Literal["approve", "reject"] = Field(
        "approve",
        description="approve or reject; must be the decision the approval code was made for.",
    )
    reviewer: str = Field(
        description="Your name on the reviewer roster (`fitpulse reviewer add NAME`)."
    )
    approval_code: str = Field(
        description="The reviewer's code for this decision on this version: `fitpulse registry "
        "approval-code MODEL VERSION --reviewer NAME --decision DECISION` (from their key; "
        "useless for any other decision, so safe in the run config)."
    )
    note: str = Field("", description="Why; kept in the audit log and on the version's tags.")
    model: str = Field(HOME_RANKER_MODEL, description=_MODEL_DESCRIPTION)


@dg.op
def review_model_version(
    context: dg.OpExecutionContext, config: ReviewConfig, model_registry: ModelRegistryResource
) -> None:
    """Record a reviewer's approval or rejection (fails if the rules forbid it)."""
    version = str(config.version)
    # Tagged before the checks, so a refused review is as easy to find as a recorded one.
    _tag_run(
        context,
        {
            MODEL_TAG: config.model,
            VERSION_TAG: version,
            DECISION_TAG: config.decision,
            REVIEWER_TAG: config.reviewer,
        },
    )
    model_registry.get_roster().authorise(
        config.reviewer, config.approval_code, config.model, version, config.decision
    )
    promotion = model_registry.get_promotion()
    if config.decision == "approve":
        changed = promotion.approve(config.model, version, config.reviewer, config.note)
    else:
        changed = promotion.reject(config.model, version, config.reviewer, config.note)
    record_registry_status(context, promotion)
    verb = "approved" if config.decision == "approve" else "rejected"
    context.log.info(
        f"{config.model} version {version} {verb} by {config.reviewer}"
        if changed
        else f"{config.model} version {version} was already {verb}; nothing changed"
    )


class PromoteConfig(dg.Config):
    """The approved version to make champion."""

    version: int = Field(
        gt=0, strict=True, description=f"{_VERSION_DESCRIPTION} Approved and gate-passed."
    )
    model: str = Field(HOME_RANKER_MODEL, description=_MODEL_DESCRIPTION)
    actor: str = Field(
        "promote_champion_job", description="Who promotes, as recorded in the audit log."
    )


@dg.op
def promote_champion(
    context: dg.OpExecutionContext, config: PromoteConfig, model_registry: ModelRegistryResource
) -> None:
    """Move the ``champion`` alias to an approved, gate-passed version."""
    version = str(config.version)
    _tag_run(context, {MODEL_TAG: config.model, VERSION_TAG: version, ACTOR_TAG: config.actor})
    promotion = model_registry.get_promotion()
    changed = promotion.promote(config.model, version, config.actor)
    record_registry_status(context, promotion)
    context.log.info(
        f"{config.model} champion is now version {version}"
        if changed
        else f"{config.model} version {version} already was the champion"
    )


class RollbackConfig(dg.Config):
    """Who rolls back and why."""

    operator: str = Field(description="Who rolls back, as recorded in the audit log.")
    note: str = Field("", description="Why; kept in the audit log.")
    model: str = Field(HOME_RANKER_MODEL, description=_MODEL_DESCRIPTION)


@dg.op
def rollback_champion(
    context: dg.OpExecutionContext, config: RollbackConfig, model_registry: ModelRegistryResource
) -> None:
    """Move ``champion`` back to the previous champion."""
    if not config.operator.strip():
        raise ValueError("operator must name who rolls back")
    _tag_run(context, {MODEL_TAG: config.model, OPERATOR_TAG: config.operator})
    promotion = model_registry.get_promotion()
    current, restored = promotion.rollback(config.model, config.operator, config.note)
    record_registry_status(context, promotion)
    # The versions are known only now: the one rolled back, and the champion again.
    _tag_run(context, {VERSION_TAG: current, RESTORED_VERSION_TAG: restored})
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
