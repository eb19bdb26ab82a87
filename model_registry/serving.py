"""The registry as the services' model source: verified versions by alias, bundles cached locally.

Serving trusts the signed audit log (``storage.audit``), not MLflow's aliases and tags:

- ``champion`` resolves to the champion the verified audit log records: a version that passed
  its gate, was approved and was promoted. Until the first promotion there is none, and the
  services serve their labelled fallbacks (the feed: popularity; push: no send);
- ``challenger`` resolves to the audited challenger (its gate passed; shadow traffic and canary
  shares serve it while the reviewer decides);
- an alias moved outside the platform is logged and not followed (the promotion sensor puts it
  back);
- any other alias (an experiment's variant) is followed only to a version whose gate passed and
  that a reviewer approved, and nobody rolled back;
- a bundle is used only when its digest equals the one the audit log binds (recorded at
  registration, re-bound when an erasure rewrites the bundle); a damaged or outdated cached copy
  is evicted and downloaded again, a registry copy that differs is refused. The watcher reloads
  a served version whose digest was re-bound, so an erased member leaves running servers too.

A broken audit chain raises ``AuditIntegrityError``: the watcher keeps serving what it serves.
Bundles are cached under ``cache_dir/<model>/<version>/``; a download lands in a temporary
folder and is renamed into place when complete and verified, so a crash never leaves a half
bundle that looks complete.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from fitpulse_orchestration.storage import ObjectStore
from fitpulse_orchestration.storage.audit import AuditLog
from model_registry.client import HOME_RANKER_MODEL, RegistryClient
from model_registry.ledger import AuditedState, artifact_digest, audited_state
from model_registry.names import PUSH_POLICY_MODEL
from model_registry.promotion import CHALLENGER, CHAMPION

log = logging.getLogger(__name__)

_DONE = ".complete"


class ArtifactMismatchError(RuntimeError):
    """A version's artifacts are not the ones recorded when it was registered."""


class RegistryModelSource:
    """Resolves aliases through the verified audit log and downloads each bundle once."""

    def __init__(
        self,
        tracking_uri: str,
        cache_dir: Path,
        audit: AuditLog,
        model_name: str = HOME_RANKER_MODEL,
    ) -> None:
        self.client = RegistryClient(tracking_uri)
        self.cache_dir = cache_dir
        self.audit = audit
        self.model_name = model_name

    def state(self) -> AuditedState:
        """The model's state as its verified audit log says (raises when it is broken)."""
        return audited_state(self.audit.verify(self.model_name))

    def version_for(self, alias: str) -> str | None:
        """The verified version ``alias`` stands for (module docstring), or None."""
        state = self.state()
        found = self.client.alias_version(self.model_name, alias)
        if alias in (CHAMPION, CHALLENGER):
            version = state.alias(alias)
            if found is not None and found != version:
                log.error(
                    "%s alias %s points at version %s outside the platform; serving the audited "
                    "%s instead",
                    self.model_name,
                    alias,
                    found,
                    version or "fallback",
                )
            return version
        if found is None:
            return None
        record = state.of(found)
        if record is None or not record.servable:
            log.error(
                "%s alias %s points at version %s, which has not passed its gate and review",
                self.model_name,
                alias,
                found,
            )
            return None
        return found

    def digest(self, version: str) -> str:
        """The version's artifact digest as the verified audit log binds it ("" if unknown)."""
        record = self.state().of(version)
        return record.artifact_digest if record is not None else ""

    def discard(self, version: str) -> None:
        """Remove the cached copy of ``version`` (it failed to load)."""
        shutil.rmtree(self.cache_dir / self.model_name / str(version), ignore_errors=True)

    def fetch(self, version: str) -> Path:
        """The local bundle folder of ``version``, checked against its registered digest.

        Raises:
            ArtifactMismatchError: when the version was never registered through the platform
                or the registry's bundle differs from the registered one (the copy is removed).
        """
        record = self.state().of(version)
        if record is None or not record.artifact_digest:
            raise ArtifactMismatchError(
                f"{self.model_name} version {version} was never registered through the platform"
            )
        target = self.cache_dir / self.model_name / str(version)
        if (target / _DONE).exists():
            if artifact_digest(target) == record.artifact_digest:
                return target
            log.warning(
                "the cached bundle of %s version %s is damaged or outdated; downloading it again",
                self.model_name,
                version,
            )
            self.discard(version)
        self._download(version, target)
        digest = artifact_digest(target)
        if digest != record.artifact_digest:
            self.discard(version)
            raise ArtifactMismatchError(
                f"{self.model_name} version {version}: bundle digest {digest[:12]} differs from "
                f"the registered {record.artifact_digest[:12]}; refusing to serve it"
            )
        return target

    def _download(self, version: str, target: Path) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
            folder = self.client.download_bundle(self.model_name, version, Path(tmp) / "dl")
            staged = Path(tmp) / "bundle"
            shutil.copytree(folder, staged)
            (staged / _DONE).touch()
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.rename(target)


def registry_sources(
    tracking_uri: str, cache: Path, store: ObjectStore, audit_key: str
) -> tuple[RegistryModelSource, RegistryModelSource]:
    """The registry's feed-model and push-policy sources, as ``fitpulse serve`` uses them.

    ``store`` and ``audit_key``: where the registry's signed audit log lives and its key.
    """
    audit = AuditLog(store, audit_key)
    return (
        RegistryModelSource(tracking_uri, cache, audit),
        RegistryModelSource(tracking_uri, cache, audit, PUSH_POLICY_MODEL),
    )
