from __future__ import annotations

import datetime as dt
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.features.reference import (
    UNKNOWN,
    load_catalog,
    publication_times,
    publish_time_known,
    unsafe_for_beginners,
)
from fitpulse_orchestration.importing.catalog import (
    UNKNOWN_PUBLISH_TIME,
    CatalogImportOptions,
    catalog_landing_key,
    catalog_rejects_key,
    import_catalog,
    split_genres,
)
from fitpulse_orchestration.importing.interactions import ImportOptions, import_interactions
from fitpulse_orchestration.retrieval.two_tower import MAX_TOKENS, item_token_codes
from fitpulse_orchestration.storage import LocalObjectStore, ObjectStore

# shared/ sits beside the checkout (development machines and CI alike).
ML_SMALL = Path(__file__).resolve().parents[4] / "shared/data/movielens/ml-latest-small"
MOVIES = ML_SMALL / "movies.csv"
ML_MOVIES = 9125
"""Movies in the shared ml-latest-small, the October 2016 edition (its README: 9125 movies;
the 2018 edition has 9742)."""
ML_OPTIONS = CatalogImportOptions(id_col="movieId", genres_col="genres")

HEADER = b"item_id,title,genres,difficulty\n"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _rejects(store: ObjectStore, key: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(store.get_bytes(key)), dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def movielens(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalObjectStore, pd.DataFrame]:
    store = LocalObjectStore(tmp_path_factory.mktemp("ml") / "home")
    summary = import_catalog(MOVIES, store, ML_OPTIONS)
    assert summary.rows_landed == ML_MOVIES
    return store, load_catalog(store).set_index("item_id", drop=False)


def test_movielens_movies_land_every_item(movielens: tuple[LocalObjectStore, pd.DataFrame]) -> None:
    store, catalog = movielens

    assert store.list_keys(f"{layout.LANDING_CATALOG}/") == [
        catalog_landing_key(MOVIES, UNKNOWN_PUBLISH_TIME.date())
    ]
    assert not store.list_keys("landing/import_rejects/")
    assert len(catalog) == ML_MOVIES
    toy = catalog.loc["1"]
    assert toy["title"] == "Toy Story (1995)"
    assert toy["category"] == "Adventure"
    assert toy["tags"] == "Adventure,Animation,Children,Comedy,Fantasy"
    assert catalog.loc["11", "title"] == "American President, The (1995)"
    assert catalog.loc["29", "title"].startswith("City of Lost Children, The (Cité des enfants")
    assert catalog.loc["40", ["category", "tags"]].tolist() == ["Drama", "Drama"]
    # MovieLens's "(no genres listed)" is no genre.
    assert catalog.loc["83829", ["category", "tags"]].tolist() == [UNKNOWN, ""]
    assert (catalog["category"] == UNKNOWN).sum() == 18


def test_movielens_items_have_unknown_publish_time_and_attributes(
    movielens: tuple[LocalObjectStore, pd.DataFrame],
) -> None:
    _, catalog = movielens

    assert (catalog["item_type"] == UNKNOWN).all()
    assert not publish_time_known(catalog).any()
    assert publication_times(catalog).isna().all()
    assert (catalog["published_at"] == UNKNOWN_PUBLISH_TIME).all()
    assert (catalog["status"] == "published").all()
    assert set(catalog["difficulty"]) == set(catalog["intensity"]) == {UNKNOWN}
    assert unsafe_for_beginners(catalog).all()


def test_movielens_genres_reach_the_item_tower(
    movielens: tuple[LocalObjectStore, pd.DataFrame],
) -> None:
    _, catalog = movielens
    rows = catalog.loc[["1", "40", "83829"]].reset_index(drop=True)

    codes = item_token_codes(rows)
    untagged = item_token_codes(rows.assign(tags=""))

    # Seven attribute tokens, then one per tag: 5 genres, 1, none.
    assert (codes >= 0).sum(axis=1).tolist() == [MAX_TOKENS, 8, 7]
    assert (untagged >= 0).sum(axis=1).tolist() == [7, 7, 7]
    assert (codes[:, :7] == untagged[:, :7]).all()


def test_movielens_ids_match_the_imported_ratings(
    tmp_path: Path, movielens: tuple[LocalObjectStore, pd.DataFrame]
) -> None:
    _, catalog = movielens
    ratings = tmp_path / "ratings.csv"
    with (ML_SMALL / "ratings.csv").open() as src:
        ratings.write_text("".join(next(src) for _ in range(501)))
    events = LocalObjectStore(tmp_path / "events")

    summary = import_interactions(
        ratings,
        events,
        ImportOptions(
            user_col="userId", item_col="movieId", event_col=None, weight_col="rating", ts_unit="s"
        ),
    )

    landed = pd.concat(
        [pd.read_json(events.uri(k), lines=True, dtype=False) for k in summary.files_written]
    )
    assert len(landed) == 500
    assert set(landed["item_id"]) <= set(catalog["item_id"])


def test_bad_rows_are_rejected_with_their_reasons(tmp_path: Path) -> None:
    source = _write(
        tmp_path / "items.csv",
        HEADER
        + b"w1,Core Blast,Core|HIIT,beginner\n"
        + b",No Id,Yoga,beginner\n"
        + b"w2,Easy Flow,Yoga,Intermediate\n"
        + b"w1,Core Blast Again,Core,advanced\n"
        + b"w3,Hard Thing,HIIT,expert\n"
        + b"w4,,Pilates,\n"
        + b"w5,Caf\x81 Flow,Yoga,beginner\n"
        + b",Nothing,Yoga,expert\n"
        + b"w/6,Slashed,Yoga,beginner\n",
    )
    store = LocalObjectStore(tmp_path / "home")

    options = CatalogImportOptions(genres_col="genres", difficulty_col="difficulty")
    summary = import_catalog(source, store, options)

    assert (summary.rows_read, summary.rows_landed, summary.rows_rejected) == (9, 3, 6)
    assert summary.balanced
    assert summary.reject_reasons == {
        "duplicate_item_id": 1,
        "invalid_difficulty": 2,
        "invalid_item_id": 1,
        "missing_item_id": 2,
        "undecodable_text": 1,
    }
    assert summary.rejects_file == catalog_rejects_key(source)
    rejects = _rejects(store, summary.rejects_file)
    assert rejects[["row_number", "reason"]].values.tolist() == [
        ["2", "missing_item_id"],
        ["4", "duplicate_item_id"],
        ["5", "invalid_difficulty"],
        ["7", "undecodable_text"],
        ["8", "invalid_difficulty;missing_item_id"],
        ["9", "invalid_item_id"],
    ]
    assert rejects.loc[3, "title"] == "Caf\\x81 Flow"
    catalog = load_catalog(store)
    assert catalog[["item_id", "title", "category", "tags", "difficulty"]].values.tolist() == [
        ["w1", "Core Blast", "Core", "Core,HIIT", "beginner"],
        ["w2", "Easy Flow", "Yoga", "Yoga", "intermediate"],
        ["w4", "w4", "Pilates", "Pilates", UNKNOWN],
    ]


def test_declared_difficulty_and_intensity_fill_blank_rows(tmp_path: Path) -> None:
    source = _write(
        tmp_path / "items.csv",
        HEADER + b"w1,A,Yoga,\nw2,B,HIIT,advanced\n",
    )
    store = LocalObjectStore(tmp_path / "home")

    summary = import_catalog(
        source,
        store,
        CatalogImportOptions(
            genres_col="genres", difficulty_col="difficulty", difficulty="beginner", intensity="low"
        ),
    )

    catalog = load_catalog(store)
    assert catalog["difficulty"].tolist() == ["beginner", "advanced"]
    assert catalog["intensity"].tolist() == ["low", "low"]
    assert unsafe_for_beginners(catalog).tolist() == [False, True]
    assert summary.beginner_safe == 1


def test_a_latin1_file_is_read_with_the_fallback(tmp_path: Path) -> None:
    text = (
        "item_id,title,genres\nm1,Amélie (2001),Comédie|Romance\nm2,Plain,Drama\nm3,Señor,Drama\n"
    )
    source = _write(tmp_path / "latin1.csv", text.encode("latin-1"))
    store = LocalObjectStore(tmp_path / "home")

    summary = import_catalog(source, store, CatalogImportOptions(genres_col="genres"))

    assert (summary.rows_landed, summary.rows_rejected, summary.recoded_rows) == (3, 0, 2)
    catalog = load_catalog(store)
    assert catalog["title"].tolist() == ["Amélie (2001)", "Plain", "Señor"]
    assert catalog.loc[0, ["category", "tags"]].tolist() == ["Comédie", "Comédie,Romance"]


def test_without_a_fallback_non_utf8_rows_are_rejected(tmp_path: Path) -> None:
    lines = ["item_id,title", "m1,Amélie", "m2,Señor"]
    data = (lines[0] + "\n" + lines[1] + "\n").encode() + (lines[2] + "\n").encode("latin-1")
    source = _write(tmp_path / "mixed.csv", b"\xef\xbb\xbf" + data)
    store = LocalObjectStore(tmp_path / "home")

    summary = import_catalog(source, store, CatalogImportOptions(fallback_encoding=None))

    assert summary.reject_reasons == {"undecodable_text": 1}
    assert load_catalog(store)["title"].tolist() == ["Amélie"]
    assert _rejects(store, catalog_rejects_key(source))["title"].tolist() == ["Se\\xf1or"]


def test_a_utf16_file_is_read(tmp_path: Path) -> None:
    source = _write(tmp_path / "items.tsv", "item_id\ttitle\nm1\tAmélie\n".encode("utf-16"))
    store = LocalObjectStore(tmp_path / "home")

    summary = import_catalog(source, store)

    assert summary.encoding == "utf-16"
    assert load_catalog(store)["title"].tolist() == ["Amélie"]


def test_reimporting_the_same_file_is_idempotent(tmp_path: Path) -> None:
    source = shutil.copy(MOVIES, tmp_path / "movies.csv")
    source = _write(source, source.read_bytes() + b",Orphan,Drama\n")
    store = LocalObjectStore(tmp_path / "home")

    first = import_catalog(source, store, ML_OPTIONS)
    snapshot = {k: store.get_bytes(k) for k in store.list_keys()}
    second = import_catalog(source, store, ML_OPTIONS)

    assert second == first
    assert first.rows_rejected == 1
    assert {k: store.get_bytes(k) for k in store.list_keys()} == snapshot
    assert len(load_catalog(store)) == ML_MOVIES


def test_reimporting_under_another_day_replaces_the_landing(tmp_path: Path) -> None:
    source = _write(tmp_path / "items.csv", HEADER + b"w1,A,Yoga,\n")
    store = LocalObjectStore(tmp_path / "home")
    day = dt.date(2024, 5, 1)

    import_catalog(source, store)
    summary = import_catalog(source, store, CatalogImportOptions(landing_day=day))

    assert store.list_keys(f"{layout.LANDING_CATALOG}/") == [catalog_landing_key(source, day)]
    assert summary.catalog_file == catalog_landing_key(source, day)


def test_publish_times_from_a_column_are_known(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "id": [196.0, 7.0, np.nan, 8.0, 9.0],
            "name": ["A", "B", "C", "D", "E"],
            "kind": ["video", None, "video", "video", "workout"],
            "published": pd.to_datetime(
                [
                    "2024-03-01T10:00Z",
                    "2024-03-04T09:00Z",
                    "2024-03-02T00:00Z",
                    None,
                    "2024-03-02T00:00Z",
                ],
                utc=True,
            ),
        }
    )
    source = tmp_path / "items.parquet"
    frame.to_parquet(source)
    store = LocalObjectStore(tmp_path / "home")

    summary = import_catalog(
        source,
        store,
        CatalogImportOptions(
            id_col="id", title_col="name", type_col="kind", published_col="published"
        ),
    )

    assert summary.reject_reasons == {
        "missing_item_id": 1,
        "missing_item_type": 1,
        "missing_published_at": 1,
    }
    assert summary.catalog_file == catalog_landing_key(source, dt.date(2024, 3, 2))
    catalog = load_catalog(store)
    assert catalog["item_id"].tolist() == ["196", "9"]
    assert catalog["item_type"].tolist() == ["video", "workout"]
    assert publish_time_known(catalog).all()
    assert catalog["published_at"].tolist() == [
        pd.Timestamp("2024-03-01T10:00Z"),
        pd.Timestamp("2024-03-02T00:00Z"),
    ]


def test_an_item_type_without_publish_times_is_refused() -> None:
    with pytest.raises(ValueError, match="item type needs a publish-time column"):
        CatalogImportOptions(item_type="movie")
    with pytest.raises(ValueError, match="give an item type"):
        CatalogImportOptions(published_col="published")
    with pytest.raises(ValueError, match="difficulty must be one of"):
        CatalogImportOptions(difficulty="easy")


def test_a_missing_column_names_the_columns_found(tmp_path: Path) -> None:
    source = _write(tmp_path / "items.csv", b"movieId,title\n1,A\n")

    with pytest.raises(ValueError, match=r"\['item_id'\] not found.*\['movieId', 'title'\]"):
        import_catalog(source, LocalObjectStore(tmp_path / "home"))


def test_split_genres_drops_blanks_repeats_and_commas() -> None:
    assert split_genres(" Action| |Comedy|Action|Sci,Fi ", "|") == ["Action", "Comedy", "Sci Fi"]
    assert split_genres("(no genres listed)", "|") == []
    assert split_genres(None, "|") == []
