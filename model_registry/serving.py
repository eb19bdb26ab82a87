"""The registry as the feed service's model source: versions by alias, bundles cached locally."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from model_registry.client import HOME_RANKER_MODEL, RegistryClient
from model_registry.promotion import CHAMPION

_DONE = ".complete"


class RegistryModelSource:
    """Resolves aliases in the MLflow registry and downloads each version's bundle once.

    Until a champion exists, ``champion`` resolves to the newest registered version (the
    platform can serve before its first promotion). Bundles are cached under
    ``cache_dir/<model>/<version>/``; a download lands in a temporary folder and is renamed
    into place when complete, so a crash never leaves a half bundle that looks complete.
    """

    def __init__(
        self, tracking_uri: str, cache_dir: Path, model_name: str = HOME_RANKER_MODEL
    ) -> None:
        self.client = RegistryClient(tracking_uri)
        self.cache_dir = cache_dir
        self.model_name = model_name

    def version_for(self, alias: str) -> str | None:
        """The version ``alias`` points at (``champion``: else the newest version)."""
        version = self.client.alias_version(self.model_name, alias)
        if version is None and alias == CHAMPION:
            latest = self.client.latest(self.model_name)
            return latest.version if latest is not None else None
        return version

    def discard(self, version: str) -> None:
        """Remove the cached copy of ``version`` (it failed to load)."""
        shutil.rmtree(self.cache_dir / self.model_name / str(version), ignore_errors=True)

    def fetch(self, version: str) -> Path:
        """The local bundle folder of ``version`` (downloaded on first use)."""
        target = self.cache_dir / self.model_name / str(version)
        if (target / _DONE).exists():
            return target
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
        return target
