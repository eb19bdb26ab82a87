"""Data in: generate the synthetic world, import interaction logs and item catalogs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from fitpulse_orchestration.cli._common import (
    HomeOpt,
    app,
    home_store,
    say,
)
from fitpulse_orchestration.settings import ProjectHome


@app.command()
def generate(
    scale: Annotated[str, typer.Option(help="World size: tiny, demo or large.")] = "demo",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    shift_days: Annotated[
        int,
        typer.Option(
            help="Shift the last N days: an influx of beginners and a new trending category "
            "(0: no shift)."
        ),
    ] = 0,
    home: HomeOpt = None,
) -> None:
    """Generate a synthetic FitPulse world into the home's landing zone (replacing data there)."""
    from fitpulse_orchestration import layout
    from fitpulse_orchestration.world.generator import generate_world
    from fitpulse_orchestration.world.params import ShiftParams, world_params

    project = ProjectHome.resolve(home).create()
    store = home_store(project)
    for prefix in ("landing/", "warehouse/", f"{layout.ASSETS}/"):
        store.delete_prefix(prefix)
    shift = ShiftParams(days=shift_days) if shift_days else None
    params = world_params(scale, seed=seed, shift=shift)
    say(
        f"generating the {scale!r} world (seed {seed}): {params.n_users:,} users, "
        f"{params.n_items:,} items + {params.new_items_per_day}/day, {params.days} days"
    )
    summary = generate_world(params, store)
    say(
        f"landed {summary.records_written:,} records ({summary.n_valid_events:,} valid events, "
        f"bad: {summary.bad_records}) over {len(summary.landed_days)} days; "
        f"cold users {summary.cold_user_share:.0%}"
    )
    if summary.shift_summary:
        shift_info = summary.shift_summary
        say(
            f"shift from {shift_info['start_date']}: {shift_info['shift_users']} new users "
            f"({shift_info['shift_beginner_share']:.0%} beginners), "
            f"{shift_info['trending_items']} items of the new '{shift_info['trending_category']}' "
            f"category; train on the days before it with `fitpulse train --until "
            f"{params.shift_start - dt.timedelta(days=1) if params.shift_start else ''}`"
        )


@app.command("import-interactions")
def import_interactions_cmd(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV/TSV or Parquet.")],
    home: HomeOpt = None,
    user_col: Annotated[str, typer.Option(help="Column holding user ids.")] = "user_id",
    item_col: Annotated[str, typer.Option(help="Column holding item ids.")] = "item_id",
    ts_col: Annotated[str, typer.Option(help="Column holding timestamps.")] = "timestamp",
    event_col: Annotated[
        str | None, typer.Option(help="Column of event types (omit with --weight-col).")
    ] = None,
    weight_col: Annotated[
        str | None, typer.Option(help="Numeric weight/rating column mapped by --grades.")
    ] = None,
    grades: Annotated[
        str,
        typer.Option(
            help="Weight thresholds, e.g. '5:workout_complete,4:workout_start,"
            "3:click'; below the lowest: impression."
        ),
    ] = "5:workout_complete,4:workout_start,3:click",
    event_map: Annotated[
        str,
        typer.Option(help="Rename source event types, e.g. 'play:click,finish:workout_complete'."),
    ] = "",
    ts_unit: Annotated[
        str | None, typer.Option(help="Epoch unit of numeric timestamps: s or ms.")
    ] = None,
    sep: Annotated[str | None, typer.Option(help="CSV separator (default: by extension).")] = None,
    no_header: Annotated[
        bool,
        typer.Option(
            help="The text file has no header; columns are named by "
            "--user-col,--item-col,(--event-col|--weight-col),--ts-col."
        ),
    ] = False,
) -> None:
    """Land an external interaction log in the collector's format for the same pipeline."""
    from fitpulse_orchestration import layout
    from fitpulse_orchestration.importing.interactions import ImportOptions, import_interactions

    if (event_col is None) == (weight_col is None):
        raise typer.BadParameter("give exactly one of --event-col or --weight-col")
    mapped = dict(pair.split(":", 1) for pair in event_map.split(",") if pair)
    grade_pairs = tuple(
        (float(t), e) for t, e in (pair.split(":", 1) for pair in grades.split(",") if pair)
    )
    middle = event_col or weight_col
    options = ImportOptions(
        user_col=user_col,
        item_col=item_col,
        ts_col=ts_col,
        event_col=event_col,
        weight_col=weight_col,
        ts_unit=ts_unit,
        event_map=mapped,
        grades=grade_pairs,
        sep=sep,
        column_names=(user_col, item_col, str(middle), ts_col) if no_header else None,
    )
    project = ProjectHome.resolve(home).create()
    store = home_store(project)
    summary = import_interactions(file, store, options)
    say(
        f"read {summary.rows_read:,} rows: landed {summary.rows_landed:,}, rejected "
        f"{summary.rows_rejected:,} {summary.reject_reasons or ''} over {len(summary.days)} days"
    )
    say(f"events: {summary.event_counts}")
    if summary.rejects_file:
        say(f"rejected rows with reasons: {summary.rejects_file}")
    if not store.list_keys(f"{layout.LANDING_CATALOG}/"):
        say(
            "no catalog is landed: every item is of unknown difficulty, and no feed shows such "
            "an item to a member of unknown level, as every imported member is. Land item "
            "metadata first (`fitpulse import-catalog FILE --difficulty ... --intensity ...` "
            "declares it for items without their own)"
        )
    say(f"next: fitpulse train --home {project.root}")


@app.command("import-catalog")
def import_catalog_cmd(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV/TSV or Parquet.")],
    home: HomeOpt = None,
    id_col: Annotated[
        str, typer.Option(help="Column of item ids (as import-interactions lands them).")
    ] = "item_id",
    title_col: Annotated[
        str, typer.Option(help="Column of titles; '' uses the item id.")
    ] = "title",
    type_col: Annotated[
        str | None, typer.Option(help="Column of item types (needs --published-col).")
    ] = None,
    item_type: Annotated[
        str | None, typer.Option(help="Type of items without one (needs --published-col).")
    ] = None,
    category_col: Annotated[
        str | None, typer.Option(help="Column of categories (blank: the first genre).")
    ] = None,
    genres_col: Annotated[
        str | None,
        typer.Option(help="Column of genres, e.g. 'Action|Comedy': category and tags."),
    ] = None,
    genre_sep: Annotated[str, typer.Option(help="Separator of the genres.")] = "|",
    difficulty_col: Annotated[
        str | None, typer.Option(help="Column of beginner/intermediate/advanced.")
    ] = None,
    intensity_col: Annotated[str | None, typer.Option(help="Column of low/medium/high.")] = None,
    difficulty: Annotated[
        str,
        typer.Option(
            help="Declared difficulty of items without one. Items of unknown difficulty or "
            "intensity are never shown to beginners or users of unknown level."
        ),
    ] = "unknown",
    intensity: Annotated[
        str, typer.Option(help="Declared intensity of items without one.")
    ] = "unknown",
    published_col: Annotated[
        str | None,
        typer.Option(help="Column of publish times (default: unknown, never 'fresh')."),
    ] = None,
    published_unit: Annotated[
        str | None, typer.Option(help="Epoch unit of numeric publish times: s or ms.")
    ] = None,
    sep: Annotated[str | None, typer.Option(help="CSV separator (default: by extension).")] = None,
    fallback_encoding: Annotated[
        str,
        typer.Option(help="Codec of fields that are not UTF-8; 'none' rejects their rows."),
    ] = "cp1252",
    landing_day: Annotated[
        str | None,
        typer.Option(help="Landing day YYYY-MM-DD (later days win per item; default: derived)."),
    ] = None,
) -> None:
    """Land an item-metadata file (e.g. MovieLens movies.csv) as a catalog file."""
    from fitpulse_orchestration.importing.catalog import CatalogImportOptions, import_catalog

    try:
        options = CatalogImportOptions(
            id_col=id_col,
            title_col=title_col or None,
            type_col=type_col,
            item_type=item_type,
            category_col=category_col,
            genres_col=genres_col,
            genre_sep=genre_sep,
            difficulty_col=difficulty_col,
            intensity_col=intensity_col,
            difficulty=difficulty.strip().lower(),
            intensity=intensity.strip().lower(),
            published_col=published_col,
            published_unit=published_unit,
            sep=sep,
            fallback_encoding=None if fallback_encoding.lower() == "none" else fallback_encoding,
            landing_day=dt.date.fromisoformat(landing_day) if landing_day else None,
        )
        project = ProjectHome.resolve(home).create()
        summary = import_catalog(file, home_store(project), options)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    reasons = f" {summary.reject_reasons}" if summary.reject_reasons else ""
    say(
        f"read {summary.rows_read:,} items: landed {summary.rows_landed:,}, rejected "
        f"{summary.rows_rejected:,}{reasons}"
    )
    if summary.catalog_file:
        say(f"catalog file: {summary.catalog_file}")
    if summary.recoded_rows:
        say(f"{summary.recoded_rows:,} rows were not UTF-8 and were read as {fallback_encoding}")
    if not summary.publish_times_known:
        say("publish times unknown: items are available from the first event, never fresh")
    say(
        f"{summary.beginner_safe:,} of {summary.rows_landed:,} items may be shown to beginners "
        "and to members of unknown level (every imported member)"
    )
    if summary.rows_landed and not summary.beginner_safe:
        say(
            "no item may be shown to them: declare what the file does not say with --difficulty "
            "and --intensity (e.g. --difficulty beginner --intensity low for content safe for all)"
        )
    if summary.rejects_file:
        say(f"rejected rows with reasons: {summary.rejects_file}")
