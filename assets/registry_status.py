"""``registry_status``: what the registry holds, as the Dagster UI shows it.

Every registered version of the feed model and the push policy with its aliases, gate, review
and promotion state (``ModelPromotion.status``), each version linked to its MLflow page; the
champion; and what waits for a person: a gate-passed version for its review, an approved one
for its promotion. The training job refreshes it after the promotion gate, and every registry
job (review, promote, rollback) records a fresh materialization of it when it acts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import quote

import dagster as dg

from assets.groups import REGISTRY
from assets.resources import ModelRegistryResource
from fitpulse_orchestration.console import (
    DAGSTER_URL_ENV,
    MLFLOW_URL_ENV,
    default_dagster_url,
    default_mlflow_url,
)
from model_registry.names import HOME_RANKER_MODEL, PUSH_POLICY_MODEL
from model_registry.promotion import CHAMPION, ModelPromotion, VersionStatus

REGISTRY_STATUS = dg.AssetKey("registry_status")
REGISTRY_MODELS = (HOME_RANKER_MODEL, PUSH_POLICY_MODEL)
"""The registered models the platform governs."""


def mlflow_version_url(model: str, version: str) -> str:
    """The MLflow UI's page of ``model`` version ``version`` (``fitpulse ui`` serves it)."""
    base = os.environ.get(MLFLOW_URL_ENV) or default_mlflow_url()
    return f"{base.rstrip('/')}/#/models/{quote(model)}/versions/{version}"


def dagster_run_url(run_id: str) -> str:
    """The Dagster UI's page of run ``run_id`` (``fitpulse ui`` serves it)."""
    base = os.environ.get(DAGSTER_URL_ENV) or default_dagster_url()
    return f"{base.rstrip('/')}/runs/{run_id}"


def trained_by_description(job_name: str, run_id: str) -> str:
    """A registered version's MLflow description: a link back to the run that trained it."""
    return f"Trained by Dagster run [{run_id}]({dagster_run_url(run_id)}) of `{job_name}`."


def _table(model: str, rows: Sequence[VersionStatus]) -> str:
    if not rows:
        return f"{model}: no registered versions"
    head = "| version | aliases | created | NDCG@10 | data | review | promotion | gate |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = (
            f"[{r.version}]({mlflow_version_url(model, r.version)})",
            ", ".join(r.aliases) or "-",
            r.created,
            r.ndcg_at_10,
            r.data_window,
            r.review,
            r.promotion,
            r.gate.replace("|", "/"),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def waiting_for_people(
    promotion: ModelPromotion, model: str, rows: Sequence[VersionStatus]
) -> list[str]:
    """What of ``model`` waits for a person: reviews of gate-passed versions, a promotion."""
    waiting = [
        f"{model} version {r.version}: review (gate passed; launch review_model_job)"
        for r in rows
        if r.review == "pending"
    ]
    pending = promotion.pending_promotion(model)
    if pending is not None:
        waiting.append(
            f"{model} version {pending}: promotion (approved; promote_champion_job_on_approval "
            "or promote_champion_job)"
        )
    return waiting


def registry_status_metadata(
    promotion: ModelPromotion, models: Sequence[str] = REGISTRY_MODELS
) -> dict[str, dg.MetadataValue]:
    """The metadata of one ``registry_status`` materialization."""
    metadata: dict[str, dg.MetadataValue] = {}
    waiting: list[str] = []
    for model in models:
        rows = promotion.status(model)
        champion = next((r.version for r in rows if CHAMPION in r.aliases), None)
        metadata[f"{model} champion"] = dg.MetadataValue.text(champion or "none")
        if champion is not None:
            metadata[f"{model} champion page"] = dg.MetadataValue.url(
                mlflow_version_url(model, champion)
            )
        metadata[f"{model} versions"] = dg.MetadataValue.md(_table(model, rows))
        waiting.extend(waiting_for_people(promotion, model, rows))
    metadata["waiting"] = dg.MetadataValue.md(
        "\n".join(f"- {w}" for w in waiting) if waiting else "nothing waits for a person"
    )
    metadata["waiting_count"] = dg.MetadataValue.int(len(waiting))
    return metadata


def record_registry_status(
    context: dg.OpExecutionContext | dg.AssetExecutionContext, promotion: ModelPromotion
) -> None:
    """Record a fresh ``registry_status`` materialization from a registry job's op or an asset."""
    context.log_event(
        dg.AssetMaterialization(REGISTRY_STATUS, metadata=registry_status_metadata(promotion))
    )


@dg.asset(group_name=REGISTRY, kinds={"mlflow"}, deps=["promotion_gate"])
def registry_status(model_registry: ModelRegistryResource) -> dg.MaterializeResult:
    """Versions, aliases, gate verdicts, reviews, the champion and what waits for a person.

    Refreshed by the training job (after the gate), the push training job (after the push
    gate) and by every registry job when it acts.
    """
    return dg.MaterializeResult(metadata=registry_status_metadata(model_registry.get_promotion()))
