"""Reports as links: what ``fitpulse ui`` serves from the home's ``reports/`` prefix.

A report in a local object store gets, beside its path, a link the console's report server
answers (``FITPULSE_REPORTS_URL``, set by ``fitpulse ui``; by default the console's own
default address). A report in S3 keeps its ``s3://`` address only: the console serves local
files.
"""

from __future__ import annotations

import os

import dagster as dg

from fitpulse_orchestration import layout
from fitpulse_orchestration.console import REPORTS_URL_ENV, default_reports_url
from fitpulse_orchestration.storage import LocalObjectStore, ObjectStore


def report_url(key: str) -> str:
    """The console's link to report ``key`` (a key under ``layout.REPORTS``)."""
    prefix = f"{layout.REPORTS}/"
    if not key.startswith(prefix):
        raise ValueError(f"{key!r} is not a report key (under {prefix})")
    base = os.environ.get(REPORTS_URL_ENV) or default_reports_url()
    return f"{base.rstrip('/')}/{key[len(prefix) :]}"


def report_metadata(store: ObjectStore, key: str, name: str) -> dict[str, dg.MetadataValue]:
    """``name``: where report ``key`` is stored; ``<name>_link``: a link to it (local stores)."""
    metadata: dict[str, dg.MetadataValue] = {name: dg.MetadataValue.path(store.uri(key))}
    if isinstance(store, LocalObjectStore):
        metadata[f"{name}_link"] = dg.MetadataValue.url(report_url(key))
    return metadata


def plot_metadata(store: ObjectStore, key: str, name: str) -> dict[str, dg.MetadataValue]:
    """``report_metadata`` of a PNG plus, for local stores, ``<name>_image``: the picture itself.

    The image is Markdown pointing at the report server, so the asset's page shows it while
    ``fitpulse ui`` runs.
    """
    metadata = report_metadata(store, key, name)
    if isinstance(store, LocalObjectStore):
        metadata[f"{name}_image"] = dg.MetadataValue.md(f"![{name}]({report_url(key)})")
    return metadata
