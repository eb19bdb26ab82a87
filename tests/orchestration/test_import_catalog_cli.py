"""``fitpulse import-catalog``: an item-metadata file lands as a catalog file."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from fitpulse_orchestration import layout
from fitpulse_orchestration.cli import app
from fitpulse_orchestration.features.reference import load_catalog
from fitpulse_orchestration.importing.catalog import (
    UNKNOWN_PUBLISH_TIME,
    catalog_landing_key,
    catalog_rejects_key,
)
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore

runner = CliRunner()


def _invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def test_import_catalog_lands_items_and_names_the_rejects(tmp_path: Path) -> None:
    source = tmp_path / "movies.csv"
    source.write_bytes(
        b"movieId,title,genres\n"
        b"1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        b"2,Am\xe9lie (2001),Comedy|Romance\n"
        b"1,Toy Story again,Comedy\n"
    )
    home = tmp_path / "home"

    result = _invoke(
        "import-catalog",
        source,
        "--home",
        home,
        "--id-col",
        "movieId",
        "--genres-col",
        "genres",
        "--intensity",
        "Low",
    )

    assert result.exit_code == 0, result.output
    rejects = catalog_rejects_key(source)
    assert "read 3 items: landed 2, rejected 1 {'duplicate_item_id': 1}" in result.output
    assert "1 rows were not UTF-8 and were read as cp1252" in result.output
    assert "0 of 2 items may be shown to beginners" in result.output
    assert "no item may be shown to them: declare what the file does not say" in result.output
    assert f"rejected rows with reasons: {rejects}" in result.output
    store = LocalObjectStore(ProjectHome(home).store)
    assert store.list_keys(f"{layout.LANDING_CATALOG}/") == [
        catalog_landing_key(source, UNKNOWN_PUBLISH_TIME.date())
    ]
    assert store.exists(rejects)
    catalog = load_catalog(store)
    assert catalog[["item_id", "title", "category", "intensity"]].values.tolist() == [
        ["1", "Toy Story (1995)", "Adventure", "low"],
        ["2", "Amélie (2001)", "Comedy", "low"],
    ]


def test_import_catalog_refuses_an_item_type_without_publish_times(tmp_path: Path) -> None:
    source = tmp_path / "movies.csv"
    source.write_text("item_id,title\n1,A\n")

    result = _invoke("import-catalog", source, "--home", tmp_path / "h", "--item-type", "movie")

    assert result.exit_code == 2
    assert "needs a publish-time column" in result.output


def test_interactions_without_a_catalog_say_no_feed_will_show_their_items(tmp_path: Path) -> None:
    """Imported members are of unknown level: without item metadata nothing is safe for them."""
    log = tmp_path / "ratings.csv"
    log.write_text("user_id,item_id,rating,ts\nu1,1,5,1700000000\nu2,2,4,1700000100\n")
    movies = tmp_path / "movies.csv"
    movies.write_text("movieId,title,genres\n1,A,Comedy\n2,B,Drama\n")
    home = tmp_path / "home"
    interactions = (
        "import-interactions", log, "--home", home, "--user-col", "user_id", "--item-col",
        "item_id", "--weight-col", "rating", "--ts-col", "ts", "--ts-unit", "s",
    )  # fmt: skip
    hint = "no catalog is landed: every item is of unknown difficulty"

    before = _invoke(*interactions)
    declared = _invoke(
        "import-catalog", movies, "--home", home, "--id-col", "movieId", "--genres-col", "genres",
        "--difficulty", "beginner", "--intensity", "low",
    )  # fmt: skip
    after = _invoke(*interactions)

    assert before.exit_code == 0, before.output
    assert hint in before.output
    assert declared.exit_code == 0, declared.output
    assert "2 of 2 items may be shown to beginners" in declared.output
    assert "no item may be shown to them" not in declared.output
    assert after.exit_code == 0, after.output
    assert hint not in after.output
