"""Land an external item-metadata file in the catalog format (issue 18).

The counterpart of ``importer.import_interactions`` for items: a CSV/TSV/Parquet file of item
metadata (MovieLens ``movies.csv``: ``movieId,title,genres``) becomes one Parquet file of
``CATALOG_SCHEMA`` rows at ``layout.landing_reference_key(LANDING_CATALOG, day,
import_name(path))``, where ``load_catalog`` reads it like any catalog file the app lands.
Without it, items known only from imported events get ``unknown`` attributes
(``reference.complete_catalog``).

Ids are spelled exactly as ``import_interactions`` spells them (the same ``_ids``: text as
written and stripped, integral Parquet floats without ``.0``), so the imported events join the
imported items.

Genres (``"Adventure|Animation"``) become the item's ``category`` (the first genre) and its
``tags`` (all genres, comma-joined as the world generator writes them), which
``retrieval.two_tower.item_token_codes`` hashes into the content tokens of the item tower
(``cat=Adventure``, ``tag=Animation``, ...; it keeps the first five tags).

Difficulty and intensity come from columns, from a constant the operator declares for every
item, or stay ``unknown``. An item of unknown difficulty *or* intensity is unsafe for beginners
(``reference.unsafe_for_beginners``), and serving treats a user of unknown level as a beginner,
so such items are never shown to beginners or to users without a known level.

Without a publish-time column the publish time is marked unknown the way
``reference.complete_catalog`` marks the items it adds: ``item_type`` is ``unknown``, which is
what ``reference.publish_time_known`` reads. ``published_at`` is then ``UNKNOWN_PUBLISH_TIME``
(the Unix epoch), so the items are available from the first event on but have no age and are
never "fresh". That is why an item type (column or constant) is only accepted together with a
publish-time column.

Rows that cannot become a catalog row are not landed but written to
``importer.import_rejects_key("catalog-<stem>-<hash8>")`` with their row number and reason:
no id, an id already seen on an earlier row (the first row wins), text that is not UTF-8 and
not the fallback encoding either, a difficulty or intensity outside the vocabulary, and, with a
publish-time column, a missing or unparseable publish time or a missing item type.
``rows_read == rows_landed + rows_rejected`` always holds.

Encodings: text is decoded per field. A field that is not UTF-8 is decoded with
``fallback_encoding`` (default cp1252, the usual encoding of non-UTF-8 spreadsheet exports and
a superset of Latin-1's printable characters) and counted in ``recoded_rows``; a field that
neither decodes rejects its row as ``undecodable_text``. A UTF-8 byte-order mark is dropped and
a UTF-16 file (with its BOM) is read as UTF-16.
"""

from __future__ import annotations

import codecs
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.schema import ID_PATTERN
from fitpulse_orchestration.features.reference import (
    CATALOG_SCHEMA,
    DIFFICULTY_ORDINAL,
    INTENSITY_ORDINAL,
    LIVE_STATUS,
    UNKNOWN,
    unsafe_for_beginners,
)
from fitpulse_orchestration.importing.interactions import (
    _DECODED,
    _RECODED,
    _UNDECODABLE,
    DEFAULT_FALLBACK_ENCODING,
    TAB_SUFFIXES,
    TS_UNITS,
    _decode_bytes,
    _format_of,
    _ids,
    _parse_ts,
    import_name,
    import_rejects_key,
    misfit_ids,
    split_rejects,
    write_rejects,
)
from fitpulse_orchestration.storage import ObjectStore, write_parquet

UNKNOWN_PUBLISH_TIME: Final = pd.Timestamp("1970-01-01", tz="UTC")
"""``published_at`` of items imported without a publish time (their ``item_type`` is
``unknown``, so ``publish_time_known`` is False): available from any event on, never fresh."""

NO_GENRES: Final = ("(no genres listed)",)
"""Genre values meaning "none" (MovieLens writes ``(no genres listed)``)."""

DIFFICULTIES: Final = (*DIFFICULTY_ORDINAL, UNKNOWN)
INTENSITIES: Final = (*INTENSITY_ORDINAL, UNKNOWN)

_UTF8_BOM_AS_LATIN1: Final = "\xef\xbb\xbf"
_UTF16_BOMS_AS_LATIN1: Final = ("\xff\xfe", "\xfe\xff")


@dataclass(frozen=True)
class CatalogImportOptions:
    """How the columns of an item-metadata file map onto ``CATALOG_SCHEMA``.

    Attributes:
        id_col: column holding the item id, as the interaction log spells it.
        title_col: column holding the title; None (or a blank title) uses the id.
        type_col: column holding the item type; needs ``published_col``.
        item_type: type of every item whose row gives none; needs ``published_col``.
        category_col: column holding the category; a blank one falls back to the first genre.
        genres_col: column holding ``genre_sep``-separated genres: the first is the category
            (unless ``category_col`` gives one), all of them are the tags.
        genre_sep: separator of the genres.
        empty_genres: genre values that mean "no genre" and are dropped.
        difficulty_col: column holding ``beginner``/``intermediate``/``advanced`` (any case).
        intensity_col: column holding ``low``/``medium``/``high`` (any case).
        difficulty: difficulty of every item whose row gives none (all items without
            ``difficulty_col``), declared by the operator; ``unknown`` keeps the items away from
            beginners and users of unknown level.
        intensity: the same for intensity; both must be known for an item to reach beginners.
        published_col: column holding the publish time (ISO-8601, or epochs with
            ``published_unit``); None marks every publish time unknown.
        published_unit: ``"s"`` or ``"ms"`` for numeric epochs, None for ISO-8601 text.
        sep: field separator of a text file; None picks tab for ``.tsv``/``.data``, else comma.
        fallback_encoding: codec for fields that are not UTF-8; None rejects their rows.
        landing_day: day of the landing partition. Catalog files are applied in key order (a
            later day wins for an item); the default is the day of the latest publish time, or
            ``UNKNOWN_PUBLISH_TIME``'s day without publish times, so that any catalog file
            landed by the app (a status change) wins over the import.
    """

    id_col: str = "item_id"
    title_col: str | None = "title"
    type_col: str | None = None
    item_type: str | None = None
    category_col: str | None = None
    genres_col: str | None = None
    genre_sep: str = "|"
    empty_genres: tuple[str, ...] = NO_GENRES
    difficulty_col: str | None = None
    intensity_col: str | None = None
    difficulty: str = UNKNOWN
    intensity: str = UNKNOWN
    published_col: str | None = None
    published_unit: str | None = None
    sep: str | None = None
    fallback_encoding: str | None = DEFAULT_FALLBACK_ENCODING
    landing_day: dt.date | None = None

    def __post_init__(self) -> None:
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {DIFFICULTIES}, not {self.difficulty!r}")
        if self.intensity not in INTENSITIES:
            raise ValueError(f"intensity must be one of {INTENSITIES}, not {self.intensity!r}")
        if self.published_col is None:
            if self.type_col is not None or self.item_type not in (None, UNKNOWN):
                raise ValueError(
                    "an item type needs a publish-time column: without publish times every "
                    f"item's type is {UNKNOWN!r}, which is how the catalog marks a publish time "
                    "as unknown (reference.publish_time_known)"
                )
            if self.published_unit is not None:
                raise ValueError("published_unit needs published_col")
        else:
            if self.type_col is None and self.item_type is None:
                raise ValueError(
                    "with a publish-time column give an item type (type_col or item_type): "
                    f"an {UNKNOWN!r} type would mark the publish times as unknown"
                )
            if self.item_type == UNKNOWN:
                raise ValueError(
                    f"item_type {UNKNOWN!r} would mark the publish times as unknown; "
                    "omit published_col instead"
                )
        if self.published_unit not in (None, *TS_UNITS):
            raise ValueError(
                f"published_unit must be None, 's' or 'ms', not {self.published_unit!r}"
            )
        if not self.genre_sep:
            raise ValueError("genre_sep must not be empty")
        if self.fallback_encoding is not None:
            try:
                codecs.lookup(self.fallback_encoding)
            except LookupError as exc:
                raise ValueError(f"unknown fallback encoding {self.fallback_encoding!r}") from exc

    @property
    def source_columns(self) -> list[str]:
        """The mapped columns, in a stable order and without repeats."""
        mapped = (
            self.id_col,
            self.title_col,
            self.type_col,
            self.category_col,
            self.genres_col,
            self.difficulty_col,
            self.intensity_col,
            self.published_col,
        )
        return list(dict.fromkeys(c for c in mapped if c is not None))


@dataclass
class CatalogImportSummary:
    """What one catalog import read, landed and rejected.

    Attributes:
        rows_read: data rows in the source file (a header row is not counted).
        rows_landed: catalog rows written.
        rows_rejected: rows written to ``rejects_file`` instead.
        reject_reasons: reason -> rejected rows with it (a row breaking several rules counts
            once per reason).
        catalog_file: key of the landed catalog file, or None when no row landed.
        rejects_file: key of the rejects CSV, or None when every row landed.
        encoding: how the file was decoded: ``utf-8`` (with fallback), ``utf-16`` or
            ``parquet``.
        recoded_rows: rows with a field decoded with the fallback encoding (landed or not).
        publish_times_known: whether ``published_at`` came from the file.
        beginner_safe: landed items that may be shown to beginners (known, not advanced
            difficulty and known, not high intensity).
    """

    rows_read: int
    rows_landed: int
    rows_rejected: int
    reject_reasons: dict[str, int]
    catalog_file: str | None
    rejects_file: str | None
    encoding: str
    recoded_rows: int
    publish_times_known: bool
    beginner_safe: int

    @property
    def balanced(self) -> bool:
        """Whether rows_read = rows_landed + rows_rejected."""
        return self.rows_read == self.rows_landed + self.rows_rejected


@dataclass
class CatalogSource:
    r"""The mapped columns of an item-metadata file, decoded.

    Attributes:
        frame: one row per data row, in file order (row ``i`` is data row ``i + 1``), holding
            ``options.source_columns``. Text fields are ``str`` (blanks ``""``), an undecodable
            one with its bad bytes ``\\x``-escaped; Parquet columns keep their types.
        status: int8 per row: 0 decoded as UTF-8 (or natively typed), 1 a field needed the
            fallback encoding, 2 a field decoded with neither.
        encoding: ``utf-8``, ``utf-16`` or ``parquet``.
    """

    frame: pd.DataFrame
    status: np.ndarray
    encoding: str


def _decode_column(
    values: pd.Series, fallback: str | None, byte_view: bool
) -> tuple[list[Any], list[int]]:
    """Decoded values and a status per value.

    ``byte_view``: the strings are bytes read as Latin-1 (one char per byte), so ASCII needs no
    work and anything else is re-encoded to its bytes first.
    """
    out: list[Any] = []
    status: list[int] = []
    for value in values:
        if isinstance(value, str) and byte_view and not value.isascii():
            text, code = _decode_bytes(value.encode("latin-1"), fallback)
        elif isinstance(value, bytes | bytearray):
            text, code = _decode_bytes(bytes(value), fallback)
        else:
            text, code = value, _DECODED
        out.append(text)
        status.append(code)
    return out, status


def _check_columns(path: Path, found: list[str], options: CatalogImportOptions) -> None:
    missing = [c for c in options.source_columns if c not in found]
    if missing:
        raise ValueError(
            f"{path.name}: mapped column(s) {missing} not found; the file has columns {found}. "
            "Map them with the id/title/type/category/genres/difficulty/intensity/published "
            "column options"
        )


def read_catalog_file(path: Path, options: CatalogImportOptions | None = None) -> CatalogSource:
    """Read and decode the mapped columns of an item-metadata file.

    Text is parsed as Latin-1 (which maps every byte to one character, and the separators and
    quotes are ASCII, so each field holds exactly its bytes) and each field is then decoded on
    its own: a file that is not UTF-8, or only partly, never fails the read.

    Args:
        path: a ``.csv``/``.tsv``/``.data``/``.txt`` file with a header row (optionally
            ``.gz`` etc.) or a ``.parquet``/``.pq`` file.
        options: column mapping, separator and fallback encoding.

    Returns:
        The decoded frame, the per-row decoding status and the encoding.

    Raises:
        ValueError: the format is unknown, a text file is empty, or a mapped column is absent.
    """
    options = options or CatalogImportOptions()
    path = Path(path)
    fmt = _format_of(path)
    wanted = options.source_columns
    fallback = options.fallback_encoding
    if fmt == "parquet":
        import pyarrow.parquet as pq

        _check_columns(path, list(pq.read_schema(path).names), options)
        frame = pd.read_parquet(path, columns=wanted).reset_index(drop=True)
        encoding, byte_view = "parquet", False
    else:
        read_args: dict[str, Any] = {
            "sep": options.sep or ("\t" if fmt in TAB_SUFFIXES else ","),
            "index_col": False,
            "skipinitialspace": True,
            "keep_default_na": False,
            "dtype": str,
        }
        encoding, byte_view = "utf-8", True
        try:
            header = pd.read_csv(path, nrows=0, encoding="latin-1", **read_args)
            raw_names = [str(c) for c in header.columns]
            if raw_names and raw_names[0].startswith(_UTF16_BOMS_AS_LATIN1):
                encoding, byte_view = "utf-16", False
                header = pd.read_csv(path, nrows=0, encoding="utf-16", **read_args)
                raw_names = [str(c) for c in header.columns]
        except pd.errors.EmptyDataError as exc:
            raise ValueError(f"{path.name} is empty: expected a header row") from exc
        names = (
            [_decode_bytes(n.encode("latin-1"), fallback)[0] for n in raw_names]
            if byte_view
            else list(raw_names)
        )
        if names and names[0].startswith("\ufeff"):
            names[0] = names[0].removeprefix("\ufeff")
        _check_columns(path, names, options)
        by_name = dict(zip(names, raw_names, strict=True))
        frame = pd.read_csv(
            path,
            usecols=[by_name[c] for c in wanted],
            encoding="latin-1" if byte_view else encoding,
            **read_args,
        )
        frame = frame.rename(columns={by_name[c]: c for c in wanted})[wanted]
        frame = frame.reset_index(drop=True)
    status = np.zeros(len(frame), dtype=np.int8)
    for column in wanted:
        if frame[column].dtype == object:
            values, codes = _decode_column(frame[column], fallback, byte_view)
            frame[column] = pd.Series(values, index=frame.index, dtype=object)
            status = np.maximum(status, np.asarray(codes, dtype=np.int8))
    return CatalogSource(frame=frame, status=status, encoding=encoding)


def _text(values: pd.Series) -> pd.Series:
    """Stripped text per row; None where missing or blank."""

    def one(value: Any) -> str | None:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return None
        text = str(value).strip()
        return text or None

    return pd.Series([one(v) for v in values], index=values.index, dtype=object)


def split_genres(text: str | None, sep: str, empty: tuple[str, ...] = NO_GENRES) -> list[str]:
    """The distinct genres of ``text`` in order, without blanks and ``empty`` values.

    A comma inside a genre becomes a space: tags are comma-separated.
    """
    if text is None:
        return []
    genres = (g.strip().replace(",", " ") for g in text.split(sep))
    return list(dict.fromkeys(g for g in genres if g and g not in empty))


def _vocabulary(
    raw: pd.Series | None, default: str, allowed: tuple[str, ...]
) -> tuple[pd.Series | None, pd.Series | None]:
    """Lower-cased values (blanks take ``default``) and the rows outside ``allowed``."""
    if raw is None:
        return None, None
    values = _text(raw).map(lambda v: v.lower(), na_action="ignore").fillna(default)
    return values, ~values.isin(allowed)


@dataclass
class _Prepared:
    catalog: pd.DataFrame
    rejects: pd.DataFrame


def _prepare(source: CatalogSource, options: CatalogImportOptions) -> _Prepared:
    """Map the decoded columns onto ``CATALOG_SCHEMA`` and split off the rows that cannot land."""
    raw = source.frame
    n = len(raw)
    problems: dict[str, pd.Series] = {}
    item = _ids(raw[options.id_col])
    problems["undecodable_text"] = pd.Series(source.status == _UNDECODABLE, index=raw.index)
    problems["missing_item_id"] = item.isna()
    problems["invalid_item_id"] = misfit_ids(item, ID_PATTERN) & ~problems["undecodable_text"]
    problems["duplicate_item_id"] = item.notna() & item.duplicated(keep="first")

    difficulty, bad_difficulty = _vocabulary(
        raw[options.difficulty_col] if options.difficulty_col else None,
        options.difficulty,
        DIFFICULTIES,
    )
    if bad_difficulty is not None:
        problems["invalid_difficulty"] = bad_difficulty
    intensity, bad_intensity = _vocabulary(
        raw[options.intensity_col] if options.intensity_col else None,
        options.intensity,
        INTENSITIES,
    )
    if bad_intensity is not None:
        problems["invalid_intensity"] = bad_intensity

    if options.published_col is not None:
        published_raw = raw[options.published_col]
        blank = _text(published_raw).isna() if published_raw.dtype == object else None
        present = published_raw.notna() if blank is None else ~blank
        published = _parse_ts(
            published_raw.where(present), options.published_unit, options.published_col
        )
        problems["missing_published_at"] = ~present
        problems["unparseable_published_at"] = present & published.isna()
        item_type = (
            _text(raw[options.type_col])
            if options.type_col
            else pd.Series(None, index=raw.index, dtype=object)
        )
        item_type = item_type.fillna(options.item_type) if options.item_type else item_type
        problems["missing_item_type"] = item_type.isna()
    else:
        published = pd.Series(UNKNOWN_PUBLISH_TIME, index=raw.index)
        item_type = pd.Series(UNKNOWN, index=raw.index, dtype=object)

    genres = (
        [split_genres(g, options.genre_sep, options.empty_genres) for g in _text(raw[c])]
        if (c := options.genres_col)
        else [[] for _ in range(n)]
    )
    category = (
        _text(raw[options.category_col])
        if options.category_col
        else pd.Series(None, index=raw.index, dtype=object)
    )
    first_genre = pd.Series([g[0] if g else None for g in genres], index=raw.index, dtype=object)
    category = category.fillna(first_genre).fillna(UNKNOWN)
    title = _text(raw[options.title_col]) if options.title_col else item
    title = title.fillna(item)

    good, rejects = split_rejects(raw, problems)

    def kept(values: pd.Series | None, default: str) -> Any:
        return default if values is None else values[good].to_numpy(dtype=object)

    catalog = pd.DataFrame(
        {
            "item_id": item[good].to_numpy(dtype=object),
            "item_type": item_type[good].to_numpy(dtype=object),
            "title": title[good].to_numpy(dtype=object),
            "category": category[good].to_numpy(dtype=object),
            "difficulty": kept(difficulty, options.difficulty),
            "intensity": kept(intensity, options.intensity),
            "duration_min": np.nan,
            "equipment": UNKNOWN,
            "tags": [",".join(g) for g, ok in zip(genres, good, strict=True) if ok],
            "published_at": pd.to_datetime(published[good], utc=True).reset_index(drop=True),
            "status": LIVE_STATUS,
        }
    )
    validated: pd.DataFrame = CATALOG_SCHEMA.validate(catalog)
    return _Prepared(catalog=validated, rejects=rejects)


def catalog_landing_key(path: Path, day: dt.date) -> str:
    """Key of the catalog file an import of ``path`` lands on ``day``."""
    return layout.landing_reference_key(layout.LANDING_CATALOG, day, import_name(Path(path)))


def catalog_rejects_key(path: Path) -> str:
    """Key of the rejects CSV of a catalog import of ``path`` (``catalog-<stem>-<hash8>``)."""
    return import_rejects_key("catalog-" + import_name(Path(path)).removeprefix("import-"))


def import_catalog(
    path: Path, store: ObjectStore, options: CatalogImportOptions | None = None
) -> CatalogImportSummary:
    """Land an item-metadata file in ``store`` as one catalog file, and report what happened.

    The landable rows become ``CATALOG_SCHEMA`` rows, in file order: ``item_id`` as
    ``import_interactions`` spells it; ``item_type`` from the type column or constant, or
    ``unknown`` without publish times; ``title`` (the id when blank); ``category`` (category
    column, else the first genre, else ``unknown``); ``difficulty`` and ``intensity`` (column,
    else the declared constant); ``duration_min`` NaN; ``equipment`` ``unknown``; ``tags`` the
    genres joined by commas; ``published_at`` (UTC) from the file or ``UNKNOWN_PUBLISH_TIME``;
    ``status`` ``published``. They are written to ``catalog_landing_key(path, day)``, where the
    name is ``importer.import_name(path)`` (``import-<stem>-<hash8>`` of the file's bytes), so
    importing the same file again rewrites the same object; a landing of the same file under
    another ``landing_day`` is removed.

    Rows that cannot land go to ``catalog_rejects_key(path)`` with ``row_number`` (1 = first
    data row), ``reason`` (``;``-joined) and their mapped columns as decoded; a stale rejects
    file of the same file is removed when there are none.

    Args:
        path: the file; see ``read_catalog_file`` for the formats and encodings.
        store: the object store holding the landing zone.
        options: column mapping and declared attributes (default: ``item_id`` and ``title``
            columns, everything else unknown).

    Returns:
        Counts, the keys written, the decoding and how many items may reach beginners.

    Raises:
        ValueError: on bad options, an unreadable format or missing columns, or a numeric
            publish-time column without ``published_unit``.
    """
    options = options or CatalogImportOptions()
    path = Path(path)
    source = read_catalog_file(path, options)
    prepared = _prepare(source, options)
    catalog, rejects = prepared.catalog, prepared.rejects

    name = import_name(path)
    catalog_key: str | None = None
    if len(catalog):
        day = options.landing_day or (
            catalog["published_at"].max().date()
            if options.published_col is not None
            else UNKNOWN_PUBLISH_TIME.date()
        )
        catalog_key = catalog_landing_key(path, day)
        write_parquet(store, catalog_key, catalog)
    for key in store.iter_keys(f"{layout.LANDING_CATALOG}/", f"/{name}.parquet"):
        if key != catalog_key:
            store.delete(key)

    rejects_key = catalog_rejects_key(path)
    reasons = write_rejects(store, rejects_key, rejects)
    return CatalogImportSummary(
        rows_read=len(source.frame),
        rows_landed=len(catalog),
        rows_rejected=len(rejects),
        reject_reasons=reasons,
        catalog_file=catalog_key,
        rejects_file=rejects_key if len(rejects) else None,
        encoding=source.encoding,
        recoded_rows=int((source.status == _RECODED).sum()),
        publish_times_known=options.published_col is not None,
        beginner_safe=int((~unsafe_for_beginners(catalog)).sum()),
    )
