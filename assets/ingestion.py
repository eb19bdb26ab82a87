"""Ingestion: landed collector batches to clean, pseudonymized daily partitions."""

import datetime as dt
import json

import dagster as dg
import pandas as pd

from assets.groups import INGESTION
from assets.resources import ObjectStoreResource, PseudonymizerResource
from fitpulse_orchestration import layout
from fitpulse_orchestration.events.ingest import (
    CleanPartitionWriter,
    ingest_day,
    write_ingested,
)
from fitpulse_orchestration.events.landing_watch import landing_fingerprints
from fitpulse_orchestration.events.manifest import (
    day_fingerprint,
    ingestion_context,
    window_fingerprints,
    write_manifest,
)
from fitpulse_orchestration.features.reference import load_catalog, load_profiles
from fitpulse_orchestration.privacy.erasure import purge_erased_lines
from fitpulse_orchestration.privacy.suppression import erased_pseudonyms

MAX_QUARANTINE_RATE = 0.05


def daily_partitions(start_date: str) -> dg.DailyPartitionsDefinition:
    """Daily partitions of landed events, from ``start_date`` (YYYY-MM-DD) through today."""
    return dg.DailyPartitionsDefinition(start_date=start_date, end_offset=1)


def build_ingestion_assets(partitions: dg.DailyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The ingestion assets for the given partitioning."""

    @dg.asset(
        partitions_def=partitions,
        group_name=INGESTION,
        kinds={"pandas", "parquet"},
        check_specs=[
            dg.AssetCheckSpec(
                "rows_balance",
                asset="raw_events",
                description="read = accepted + quarantined + duplicates",
            ),
            dg.AssetCheckSpec(
                "quarantine_rate",
                asset="raw_events",
                description=f"at most {MAX_QUARANTINE_RATE:.0%} quarantined",
            ),
        ],
    )
    def raw_events(
        context: dg.AssetExecutionContext,
        object_store: ObjectStoreResource,
        pseudonymizer: PseudonymizerResource,
    ) -> dg.MaterializeResult:
        """One day of validated, de-duplicated, pseudonymized app events (clean Parquet)."""
        day = dt.date.fromisoformat(context.partition_key)
        store = object_store.get_store()
        pseudo = pseudonymizer.get_pseudonymizer()
        # What this run reads, listed once and hashed before it is read: a batch rewritten
        # meanwhile makes the next pass see a change, never the reverse.
        versions = store.list_versions(layout.landing_events_prefix(day))
        erased_now = erased_pseudonyms(store)
        fingerprint = day_fingerprint(
            ingestion_context(pseudo, erased_now),
            day,
            landing_fingerprints(versions).get(day.isoformat(), ""),
            window_fingerprints(store, day),
        )
        clean = CleanPartitionWriter()
        result = ingest_day(store, day, pseudo, keys=list(versions), erased=erased_now, sink=clean)
        paths = write_ingested(store, day, result, clean)
        purged = 0
        if result.erased_sources:
            erased = erased_pseudonyms(store)
            purged = purge_erased_lines(
                store, result.erased_sources, pseudo, erased
            ).records_deleted
        write_manifest(store, day, fingerprint, result)
        return dg.MaterializeResult(
            metadata={
                "inputs_fingerprint": fingerprint,
                "read": result.read,
                "accepted": result.accepted,
                "quarantined": result.quarantined,
                "duplicates": result.duplicates,
                "erased": result.erased,
                "erased_lines_purged_from_landing": purged,
                "health_fields_removed": result.health_fields_removed,
                "files": result.files,
                "quarantine_rate": result.quarantine_rate,
                "quarantine_reasons": dg.MetadataValue.json(result.reasons),
                "clean_path": dg.MetadataValue.path(paths["events"]),
                "quarantine_path": dg.MetadataValue.path(paths["quarantine"]),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="rows_balance",
                    passed=result.balanced,
                    metadata={
                        "read": result.read,
                        "accounted": result.accepted
                        + result.quarantined
                        + result.duplicates
                        + result.erased,
                    },
                ),
                dg.AssetCheckResult(
                    check_name="quarantine_rate",
                    passed=result.quarantine_rate <= MAX_QUARANTINE_RATE,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "rate": result.quarantine_rate,
                        "reasons": json.dumps(result.reasons, sort_keys=True),
                    },
                ),
            ],
        )

    return [raw_events]


@dg.asset(group_name=INGESTION, kinds={"pandas"})
def catalog_items(object_store: ObjectStoreResource) -> dg.Output[pd.DataFrame]:
    """Latest landed version of every catalog item (workouts, plans, articles, videos)."""
    catalog = load_catalog(object_store.get_store())
    counts = catalog["item_type"].value_counts().to_dict()
    return dg.Output(
        catalog, metadata={"items": len(catalog), "by_type": dg.MetadataValue.json(counts)}
    )


@dg.asset(group_name=INGESTION, kinds={"pandas"})
def member_profiles(
    object_store: ObjectStoreResource, pseudonymizer: PseudonymizerResource
) -> dg.Output[pd.DataFrame]:
    """Latest landed profile of every member, keyed by pseudonymous user id."""
    profiles = load_profiles(object_store.get_store(), pseudonymizer.get_pseudonymizer())
    levels = profiles["fitness_level"].value_counts().to_dict()
    return dg.Output(
        profiles, metadata={"members": len(profiles), "by_level": dg.MetadataValue.json(levels)}
    )
