"""``fitpulse privacy``: erase a member now, or file the request for ``erasure_job``."""

from __future__ import annotations

from typing import Annotated

import typer

from fitpulse_orchestration.cli._common import (
    HomeOpt,
    ProfileOpt,
    app,
    backend_promotion,
    exit_2_on,
    profile_backends_or_exit,
    say,
)
from fitpulse_orchestration.settings import ProjectHome

privacy_app = typer.Typer(
    help="Erase a user's data on request, or file the request for erasure_job.",
    no_args_is_help=True,
)
app.add_typer(privacy_app, name="privacy")
UserArg = Annotated[str, typer.Argument(help="The app's user id (as its events carry it).")]
RequesterOpt = Annotated[
    str, typer.Option("--requested-by", help="Who asked (ticket or operator), for the audit.")
]


@privacy_app.command()
def erase(
    user_id: UserArg,
    requested_by: RequesterOpt = "cli",
    home: HomeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Erase USER_ID now: raw events, quarantine, profile, online features, push counters.

    The user also joins the erasure list, so ingestion and the next training snapshot skip
    them. The audit record under audit/privacy/ keeps only the keyed hash (pseudonym).
    """
    from fitpulse_orchestration.privacy.erasure import erase_user
    from model_registry.erasure import RegistryEraser

    backends = profile_backends_or_exit(home, profile)
    eraser = RegistryEraser(backend_promotion(backends), ProjectHome.resolve(home).model_cache)
    report = exit_2_on(
        (ValueError,),
        lambda: erase_user(
            backends.store,
            backends.pseudonymizer,
            user_id,
            backends.online,
            backends.caps,
            requested_by,
            bundles=eraser.forget,
        ),
    )
    deleted = {zone: c.records_deleted for zone, c in report.zones.items()}
    say(f"erased pseudonym {report.pseudonym}: {report.records_deleted} records {deleted}")
    say(f"online rows {report.online_rows}, push records {report.push_records}")
    if report.bundles_rewritten:
        versions = ", ".join(report.bundles_rewritten)
        say(f"registered feed bundles rewritten without the member: version {versions}")
    say(f"audit: {backends.store.uri(report.audit_key)}")


@privacy_app.command("request-erasure")
def request_erasure_cmd(
    user_id: UserArg,
    requested_by: RequesterOpt = "cli",
    home: HomeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """File an erasure request; erasure_job (sensor erasure_job_on_request) processes it."""
    from fitpulse_orchestration.privacy.erasure import request_erasure

    backends = profile_backends_or_exit(home, profile)
    key = exit_2_on((ValueError,), lambda: request_erasure(backends.store, user_id, requested_by))
    say(f"filed {backends.store.uri(key)}")
