"""Loading serving state: registered versions by alias, the catalog and popularity, hot reload.

The service reads model versions through a ``ModelSource`` (the MLflow registry in
``model_registry.serving``; anything with the two methods in tests), the catalog and the
popularity fallback from the object store (the persisted ``catalog_items`` and
``fallback_popular_items`` assets) and the live two-tower index generation
(``retrieval.live_index``).
``ModelWatcher`` polls the aliases and the live index pointer and swaps in a new state when one
moves: the new version or generation is loaded completely before the swap, and requests in
flight finish on the state they started with, so no request is dropped or sees half a model or
half an index. A new live generation also reloads the catalog, so a newly published item is
servable and a pulled one unservable in the same swap.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import pandas as pd

from fitpulse_orchestration.ranking.bundle import (
    read_feed_model,
    read_item_index,
    read_two_tower_index,
)
from fitpulse_orchestration.ranking.compiled import CompiledRanker
from fitpulse_orchestration.ranking.feed import HomeFeedModel
from fitpulse_orchestration.retrieval.live_index import (
    LiveIndex,
    LiveIndexMeta,
    load_live_index,
    read_current_meta,
)
from fitpulse_orchestration.serving.experiments import Experiment
from fitpulse_orchestration.serving.feed_service import FeedService
from fitpulse_orchestration.serving.feed_state import LoadedModel, ServingState, prepare_state
from fitpulse_orchestration.serving.feed_types import ServiceUnavailableError
from fitpulse_orchestration.serving.periodic import Periodic
from fitpulse_orchestration.storage import ObjectStore
from fitpulse_orchestration.storage.asset_values import load_asset_value
from fitpulse_orchestration.storage.online_store import (
    OnlineFeatureStore,
    OnlineStoreUnavailableError,
)

log = logging.getLogger(__name__)

NO_CHAMPION: Final = (
    "no champion: no version has passed its gate, been approved by a reviewer and been promoted"
)

CLOCKS = ("snapshot", "now")
"""``snapshot``: serve as of the online features' ``as_of`` (a replay of the synthetic world);
``now``: the wall clock (production)."""


class ModelSource(Protocol):
    """Where registered feed-model versions come from."""

    def version_for(self, alias: str) -> str | None:
        """The version ``alias`` points at, or None."""

    def fetch(self, version: str) -> Path:
        """A local folder holding the version's feed bundle."""

    def discard(self, version: str) -> None:
        """Forget a local copy that failed to load (the next ``fetch`` gets a fresh one)."""

    def digest(self, version: str) -> str:
        """What the version's artifacts are bound to now (an erasure's rewrite changes it)."""


def load_version(source: ModelSource, version: str) -> LoadedModel:
    """Load one version; a missing or broken model or index is recorded, never raised.

    Anything a bundle can hold that this code cannot load (a damaged file, a pickle naming a
    module this code does not have) is a labelled problem: the service starts and serves the
    fallback. A local copy that fails to load is discarded, so the watcher's next attempt
    fetches it again (a damaged cache heals; a damaged registry artifact keeps failing,
    visibly).
    """
    try:
        digest = source.digest(version)
        folder = source.fetch(version)
    except Exception as exc:
        return LoadedModel(version, None, f"cannot fetch version {version}: {exc}")
    try:
        model = read_feed_model(folder, with_index=False)
    except Exception as exc:
        source.discard(version)
        return LoadedModel(
            version, None, f"cannot load the model of version {version}: {_why(exc)}"
        )
    problems = []
    try:
        model.index = read_item_index(folder)
    except Exception as exc:
        model.index = None
        problems.append(f"no item index for version {version}: {_why(exc)}")
    try:
        model.tt_index = read_two_tower_index(folder)
    except Exception as exc:
        model.tt_index = None
        problems.append(f"no two-tower index for version {version}: {_why(exc)}")
    compiled = compile_ranker(model, version, digest)
    if problems:
        source.discard(version)
        return LoadedModel(version, model, "; ".join(problems), digest=digest, compiled=compiled)
    return LoadedModel(version, model, digest=digest, compiled=compiled)


def compile_ranker(model: HomeFeedModel, version: str, digest: str = "") -> CompiledRanker | None:
    """The version's ranker compiled for the request path; None for a blend scorer.

    A ranker that does not compile is served by LightGBM (the same scores, slower), and logged.
    Compiled rankers are kept per artifact digest (``COMPILED_KEPT`` of them), so reloading the
    same bundle, e.g. in another runtime of this process, does not compile it again.
    """
    if model.scorer != "ranker":
        return None
    if digest and digest in _compiled:
        return _compiled[digest]
    try:
        compiled = CompiledRanker(model.ranker)
    except Exception:
        log.exception("version %s: the ranker did not compile; LightGBM scores it", version)
        return None
    if digest:
        if len(_compiled) >= COMPILED_KEPT:
            _compiled.pop(next(iter(_compiled)))
        _compiled[digest] = compiled
    return compiled


COMPILED_KEPT: Final = 4
"""Compiled rankers a process keeps (the champion, a challenger, a rollback or two)."""
_compiled: dict[str, CompiledRanker] = {}


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def resolve_as_of(clock: str, online: OnlineFeatureStore) -> pd.Timestamp:
    """Serving time for ``clock``: ``now``, ``snapshot`` or an ISO-8601 timestamp.

    Raises:
        ValueError: when the snapshot time cannot be read or the value is not understood.
    """
    if clock == "now":
        return pd.Timestamp.now(tz="UTC")
    if clock == "snapshot":
        try:
            meta = online.meta("user")
        except OnlineStoreUnavailableError as exc:
            raise ValueError(
                f"clock 'snapshot' needs the online store, which is unreachable ({exc}); "
                "pass an explicit ISO time or 'now'"
            ) from exc
        if meta is None:
            raise ValueError(
                "clock 'snapshot': the online features were never materialized "
                "(run `fitpulse train`)"
            )
        return _utc(pd.Timestamp(meta.as_of))
    try:
        return _utc(pd.Timestamp(clock))
    except ValueError as exc:
        raise ValueError(
            f"clock must be one of {CLOCKS} or an ISO-8601 time, got {clock!r}"
        ) from exc


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass
class ServingLoader:
    """Builds ``ServingState`` from a model source, the object store and the serving clock.

    ``clock`` is ``now``, ``snapshot`` or an ISO time (``resolve_as_of``).
    """

    source: ModelSource
    store: ObjectStore
    online: OnlineFeatureStore
    clock: str = "snapshot"
    aliases: tuple[str, ...] = ("champion",)

    def versions(self) -> dict[str, str | None]:
        """Version of each alias now."""
        return {alias: self.source.version_for(alias) for alias in self.aliases}

    def live_meta(self) -> LiveIndexMeta | None:
        """The live index pointer now (None: no live index published)."""
        return read_current_meta(self.store)

    def _live_index(self, reuse: LiveIndex | None) -> LiveIndex | None:
        meta = self.live_meta()
        if meta is None:
            return None
        if reuse is not None and reuse.meta.generation == meta.generation:
            return reuse
        try:
            return load_live_index(self.store, meta)
        except Exception as exc:
            log.warning("live index %s failed to load: %s", meta.generation, exc)
            return reuse

    def load(
        self,
        versions: dict[str, str | None] | None = None,
        reuse: Iterable[LoadedModel] = (),
        reuse_live: LiveIndex | None = None,
    ) -> ServingState:
        """Load every alias with the catalog, popularity and the live index.

        Versions in ``reuse`` that loaded without a problem are not loaded again, nor is
        ``reuse_live`` when it is still the live generation. A live generation that fails to
        load keeps ``reuse_live``.

        Raises:
            ServiceUnavailableError: when there is no catalog (nothing could be served).
        """
        versions = self.versions() if versions is None else versions
        cache = {m.version: m for m in reuse if m.problem is None}
        models: dict[str, LoadedModel] = {}
        for alias, version in versions.items():
            if version is None:
                if alias == "champion":
                    models[alias] = LoadedModel("none", None, NO_CHAMPION)
                continue
            if version not in cache:
                cache[version] = load_version(self.source, version)
            models[alias] = cache[version]
        for alias, loaded in models.items():
            if loaded.problem:
                log.warning("serving %s: %s", alias, loaded.problem)
        try:
            catalog = load_asset_value(self.store, "catalog_items")
        except FileNotFoundError as exc:
            raise ServiceUnavailableError(f"no catalog to serve from: {exc}") from exc
        try:
            popular = load_asset_value(self.store, "fallback_popular_items")
        except FileNotFoundError:
            log.warning(
                "no fallback_popular_items asset: the model-less fallback serves fresh items only"
            )
            popular = pd.DataFrame(columns=["segment", "item_id", "score", "rank"])
        as_of = resolve_as_of(self.clock, self.online)
        live_index = self._live_index(reuse_live)
        return prepare_state(
            models, catalog, popular, as_of, live=self.clock == "now", live_index=live_index
        )


class ModelWatcher:
    """Polls the registry aliases and swaps the service's state when one moves.

    With ``experiment_source`` (a canary rollout's state), each poll also applies the traffic
    split it returns: a rollback or the kill switch reaches every replica within ``poll_s``.

    On the wall clock the state is also rebuilt every ``refresh_s`` seconds, so items
    published since (and the catalog asset's updates) become servable.

    A reload that leaves the same wanted versions failing or degraded (an artifact that does
    not download, a corrupt index) is retried with a backoff counted in polls: 1, 2, 4, ... up
    to ``MAX_RETRY_SKIP`` polls are skipped between attempts, so a bad version does not make
    every worker reload (and warn) on every poll. A moved alias, a rewritten version, a live
    index to follow or a stale state is acted on at the next poll whatever the backoff.
    """

    MAX_RETRY_SKIP: int = 32
    """Most polls skipped between two attempts at the same failing versions (about 5 minutes
    at the default 10 s poll)."""

    def __init__(
        self,
        service: FeedService,
        loader: ServingLoader,
        poll_s: float = 10.0,
        refresh_s: float = 300.0,
        experiment_source: Callable[[], Experiment | None] | None = None,
    ) -> None:
        self.service = service
        self.experiment_source = experiment_source
        self.loader = loader
        self.poll_s = poll_s
        self.refresh_s = refresh_s
        self._poller = Periodic("model-watcher", poll_s, self.check_once)
        self.reloads = 0
        self.last_error: str | None = None
        self.attempts = 0
        """Reloads tried (swapped or not)."""
        self._failing: tuple[object, ...] | None = None
        """What the last attempt wanted and what was still wrong after it."""
        self._backoff = 0
        self._skip = 0

    def served_versions(self) -> dict[str, str | None]:
        """Version each alias is served from now (None: alias absent)."""
        state = self.service.state
        return {
            alias: (state.models[alias].version if alias in state.models else None)
            for alias in self.loader.aliases
        }

    def check_once(self) -> bool:
        """Reload when an alias moved, a served version is degraded or a live state is stale.

        A newly wanted version that fails to load never replaces a working one: the alias
        keeps its old version, ``last_error`` says why, and a later poll tries again (after the
        backoff of the class docstring).

        Returns:
            Whether the state was swapped.
        """
        try:
            self._follow_experiment()
            current = self.service.state
            wanted = self.loader.versions()
            served = self.served_versions()
            state_age = (pd.Timestamp.now(tz="UTC") - current.as_of).total_seconds()
            stale = current.live and state_age > self.refresh_s
            problems = self._problems(current)
            # A version whose artifacts were rewritten (an erasure) is loaded again.
            rebound = {
                m.version
                for m in current.models.values()
                if m.model is not None and self.loader.source.digest(m.version) != m.digest
            }
            meta = self.loader.live_meta()
            served_live = current.live_index.meta.generation if current.live_index else None
            live_moved = meta is not None and meta.generation != served_live
            failing = (tuple(sorted(wanted.items())), problems)
            if not (alias_changes(served, wanted) or stale or problems or live_moved or rebound):
                self.last_error = None
                self._back_off(failing, still_wrong=False)
                return False
            if not (stale or live_moved or rebound) and failing == self._failing and self._skip:
                self._skip -= 1
                return False
            self.attempts += 1
            reuse = [m for m in current.models.values() if m.version not in rebound]
            state: ServingState = self.loader.load(
                wanted, reuse=reuse, reuse_live=current.live_index
            )
            kept = []
            for alias, new in list(state.models.items()):
                old = current.models.get(alias)
                if new.model is None and old is not None and old.model is not None:
                    state.models[alias] = old
                    kept.append(f"{alias}: version {new.version} failed ({new.problem})")
            unchanged = (
                all(state.models.get(a) is current.models.get(a) for a in current.models)
                and len(state.models) == len(current.models)
                and not stale
                and state.live_index is current.live_index
            )
            self.last_error = "; ".join(kept) or None
            # What the next poll compares with: the wanted versions and what is wrong after this.
            after = self._problems(current if unchanged else state)
            self._back_off((failing[0], after), bool(kept or after))
            if unchanged:
                return False
            self.service.swap_state(state)
            del current
            freeze_heap(collect=True)
            self.reloads += 1
            log.info("serving reloaded: %s", self.served_versions())
            return True
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("model reload failed, still serving %s: %s", self.served_versions(), exc)
        return False

    @staticmethod
    def _problems(state: ServingState) -> tuple[tuple[str, str | None, str | None], ...]:
        return tuple(
            sorted((alias, m.version, m.problem) for alias, m in state.models.items() if m.problem)
        )

    def _back_off(self, failing: tuple[object, ...], still_wrong: bool) -> None:
        """After an attempt: back off while the same versions stay wrong, else start over."""
        if not still_wrong:
            self._failing, self._backoff, self._skip = None, 0, 0
            return
        self._backoff = min(max(1, 2 * self._backoff), self.MAX_RETRY_SKIP)
        self._skip = self._backoff
        self._failing = failing

    def _follow_experiment(self) -> None:
        """Apply the traffic split ``experiment_source`` wants now (a rollout's state)."""
        if self.experiment_source is None:
            return
        wanted = self.experiment_source()
        if wanted != self.service.experiment:
            self.service.experiment = wanted
            log.info("traffic split now %s", wanted.variants if wanted else "champion only")

    def start(self) -> None:
        """Poll in a daemon thread until ``stop``."""
        self._poller.start()

    def stop(self) -> None:
        """Stop polling."""
        self._poller.stop()


def freeze_heap(collect: bool = False) -> None:
    """Move every live object out of the garbage collector's reach.

    A loaded state holds millions of objects (id maps, catalog strings); a full collection
    walking them paused requests by up to ~240 ms at 1M items (benchmarks/serve_bench.py).
    Frozen objects are never scanned. After a reload, ``collect`` first unfreezes and collects,
    so the previous state is freed rather than kept forever.
    """
    if collect:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


def alias_changes(served: dict[str, str | None], wanted: dict[str, str | None]) -> bool:
    """Whether any alias should now be served from another version.

    ``served`` maps a champion that could not be registered to ``"none"``; a champion alias
    that still has no version is no change.
    """
    for alias, version in wanted.items():
        current = served.get(alias)
        if version is None and current in (None, "none"):
            continue
        if version != current:
            return True
    return False
