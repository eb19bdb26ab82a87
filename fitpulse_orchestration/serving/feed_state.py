"""What every request reads: the catalog, the loaded versions and their retrieval lookups.

The state is swapped as a whole when a model or the catalog reloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa

from fitpulse_orchestration.features.reference import (
    DIFFICULTY_ORDINAL,
    UNKNOWN,
    publish_time_known,
    unsafe_for_beginners,
)
from fitpulse_orchestration.ranking.compiled import CompiledRanker
from fitpulse_orchestration.ranking.feed import HomeFeedModel
from fitpulse_orchestration.retrieval.candidates import (
    CandidateParams,
    CandidatePools,
    candidate_pools,
)
from fitpulse_orchestration.retrieval.index import ItemIndex
from fitpulse_orchestration.retrieval.live_index import LiveIndex
from fitpulse_orchestration.retrieval.two_tower import item_token_codes
from fitpulse_orchestration.serving.feed_types import ServiceUnavailableError


@dataclass(frozen=True)
class ItemRows:
    """Catalog attributes of some items, one array per attribute, in the order asked for.

    Attributes:
        row: catalog row of each item (``ItemCatalog.titles`` reads the payload titles by it).
        item_type: payload type (``UNKNOWN`` for an item the catalog lacks).
        category: guardrail category (``UNKNOWN`` when unknown: never capped).
        difficulty: ordinal difficulty (NaN when unknown).
        published_at: UTC publish time as ``datetime64[ns]`` without a zone (NaT when not a
            real publication).
        unsafe_for_beginner: unsafe for a beginner (True when unknown).
    """

    row: np.ndarray
    item_type: np.ndarray
    category: np.ndarray
    difficulty: np.ndarray
    published_at: np.ndarray
    unsafe_for_beginner: np.ndarray

    def take(self, rows: np.ndarray) -> ItemRows:
        """These attributes at positions ``rows``."""
        return ItemRows(
            self.row[rows],
            self.item_type[rows],
            self.category[rows],
            self.difficulty[rows],
            self.published_at[rows],
            self.unsafe_for_beginner[rows],
        )


class ItemCatalog:
    """The catalog as serving needs it: payload fields and guardrail attributes by item id.

    Held as arrays behind an id index: a request reads ~200 rows by position, which is much
    cheaper than reindexing a frame. What a forked worker reads stays shared with the server
    that forked it: the id index is built here, before any fork, and the titles (one per
    item, where types and categories repeat a few shared strings) are one Arrow buffer, not
    ``str`` objects, whose reference counts a read would write.
    """

    def __init__(self, catalog: pd.DataFrame) -> None:
        if catalog.empty:
            raise ServiceUnavailableError("the catalog is empty: nothing can be served")
        frame = catalog.drop_duplicates("item_id", keep="last").reset_index(drop=True)
        self.index = pd.Index(frame["item_id"].astype(str))
        # The first lookup builds the index's hash table and infers its type, reading every id.
        self.index.get_indexer(self.index[:1])
        # Requests look ids up in that hash table directly: ``Index.get_indexer`` spends about
        # three quarters of a request's lookup building and type-checking an ``Index`` of its
        # ~300 ids (``benchmarks/README.md``, "Catalog rows by the hash table").
        # ``test_feed_state`` checks it against ``get_indexer``.
        self._engine = self.index._engine
        known = publish_time_known(frame).to_numpy()
        self._titles = pa.array([*frame["title"].astype(str), ""], pa.large_string())
        self._columns: dict[str, np.ndarray] = {
            "item_type": np.append(frame["item_type"].astype(str).to_numpy(object), UNKNOWN),
            "category": np.append(frame["category"].astype(str).to_numpy(object), UNKNOWN),
            "difficulty": np.append(
                frame["difficulty"].map(DIFFICULTY_ORDINAL).to_numpy(dtype=float), np.nan
            ),
            "published_at": np.append(
                frame["published_at"].where(known).to_numpy(dtype="datetime64[ns]"),
                np.datetime64("NaT"),
            ),
            "unsafe_for_beginner": np.append(unsafe_for_beginners(frame).to_numpy(bool), True),
        }
        content = frame.reindex(columns=_CONTENT_COLUMNS)
        unknown = pd.DataFrame({c: [None] for c in _CONTENT_COLUMNS})
        self._codes = np.vstack([item_token_codes(content), item_token_codes(unknown)])
        self.source = catalog

    def __len__(self) -> int:
        return len(self.index)

    def rows(self, item_ids: np.ndarray) -> np.ndarray:
        """Catalog rows of ``item_ids`` in order (an unknown item: the unknown row)."""
        pos = self._engine.get_indexer(np.asarray(item_ids, dtype=object))
        return np.where(pos < 0, len(self.index), pos)

    def attributes(self, item_ids: np.ndarray) -> ItemRows:
        """The attributes of ``item_ids`` in order; unknown items are unknown and unsafe."""
        pos = self.rows(item_ids)
        return ItemRows(row=pos, **{name: values[pos] for name, values in self._columns.items()})

    def titles(self, rows: np.ndarray) -> list[str]:
        """Payload titles of catalog ``rows`` (``ItemRows.row``; the unknown row: "")."""
        titles: list[str] = self._titles.take(rows).to_pylist()
        return titles

    def token_codes(self, item_ids: np.ndarray) -> np.ndarray:
        """Two-tower content tokens of ``item_ids`` (unknown items: all-unknown tokens)."""
        codes: np.ndarray = self._codes[self.rows(item_ids)]
        return codes


_CONTENT_COLUMNS: Final = (
    "item_id",
    "item_type",
    "category",
    "difficulty",
    "intensity",
    "duration_min",
    "equipment",
    "tags",
)


@dataclass
class LoadedModel:
    """One registered version as serving holds it.

    ``model`` is None when the version could not be loaded (``problem`` says why); ``pools``
    are the retrieval lookups prepared for the serving time.
    """

    version: str
    model: HomeFeedModel | None
    problem: str | None = None
    pools: CandidatePools | None = None
    digest: str = ""
    """The artifact digest the version was loaded with (``ModelSource.digest``)."""
    compiled: CompiledRanker | None = None
    """The ranker compiled for the request path (None: LightGBM scores, e.g. a blend scorer)."""


@dataclass
class ServingState:
    """Everything a request reads, swapped as a whole when a model or the catalog reloads.

    Attributes:
        models: loaded versions by registry alias (``champion`` always present).
        catalog: the in-memory catalog.
        popular: the popularity table used when no model can be used (``fallback_popular_items``).
        fallback_pools: retrieval lookups over ``popular`` and the catalog.
        as_of: when the state was built: items published before it are available.
        live: requests are served at the wall clock (else at ``as_of``: a replay).
        live_index: the live two-tower index generation (``retrieval.live_index``), used by the
            model version it was embedded with instead of that version's training-time index.
    """

    models: dict[str, LoadedModel]
    catalog: ItemCatalog
    popular: pd.DataFrame
    fallback_pools: CandidatePools
    as_of: pd.Timestamp
    live: bool = False
    live_index: LiveIndex | None = None

    def two_tower_index(self, loaded: LoadedModel) -> ItemIndex | None:
        """The two-tower index ``loaded`` searches: the live one when it was built for it."""
        return _two_tower_index(self.live_index, loaded)

    @property
    def ready(self) -> bool:
        """The champion loaded whole: its model and every index, with no problem."""
        champ = self.models.get("champion")
        return bool(
            champ
            and champ.model is not None
            and champ.model.index is not None
            and champ.problem is None
        )


def _two_tower_index(live_index: LiveIndex | None, loaded: LoadedModel) -> ItemIndex | None:
    """The live index when it was embedded by ``loaded``'s version, else the version's own."""
    if loaded.model is None:
        return None
    if live_index is not None and live_index.meta.model_version == loaded.version:
        return live_index.index
    return loaded.model.tt_index


def prepare_state(
    models: dict[str, LoadedModel],
    catalog: pd.DataFrame,
    popular: pd.DataFrame,
    as_of: pd.Timestamp,
    live: bool = False,
    live_index: LiveIndex | None = None,
) -> ServingState:
    """Build the retrieval lookups of every loaded model and of the popularity fallback."""
    if "champion" not in models:
        raise ValueError("serving needs a champion entry (loaded or not)")
    for loaded in models.values():
        if loaded.model is not None:
            loaded.pools = candidate_pools(
                loaded.model.als,
                loaded.model.popular,
                catalog,
                as_of,
                loaded.model.candidate_params,
                _two_tower_index(live_index, loaded),
                loaded.model.ease,
            )
    fallback = candidate_pools(None, popular, catalog, as_of, CandidateParams())
    return ServingState(models, ItemCatalog(catalog), popular, fallback, as_of, live, live_index)
