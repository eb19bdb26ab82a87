"""Erasure in the registry: registered bundles are rewritten without an erased user.

A feed bundle keeps the ALS factors of every member it was trained on, and old versions stay
registered for rollback, so an erasure that stopped at the data would leave the pseudonym in
every version ever trained. ``RegistryEraser.forget`` downloads each registered version's
bundle, and where any file holds the pseudonym it rewrites the bundle without that user
(``ranking.bundle.forget_users``), logs the new files over the old ones in the version's run,
binds the version to the new digest in the signed audit log (``artifacts_rewritten``) and evicts
the local serving cache of that version. Gate, review and promotion are unchanged.

The push policy's bundle holds per-user nothing; if one ever does, the erasure fails loudly
instead of leaving it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Final

from fitpulse_orchestration.privacy.traces import find_traces
from fitpulse_orchestration.ranking.bundle import bundle_files, forget_users, read_bundle
from model_registry.client import BUNDLE_TAG, HOME_RANKER_MODEL
from model_registry.names import PUSH_POLICY_MODEL
from model_registry.promotion import ModelPromotion

log = logging.getLogger(__name__)

ERASURE_ACTOR: Final = "erasure"


class BundleErasureError(RuntimeError):
    """A registered bundle holds an erased user and cannot be rewritten without them."""


class RegistryEraser:
    """The erasure's registry step (module docstring)."""

    def __init__(self, promotion: ModelPromotion, cache_dir: Path | None = None) -> None:
        self.promotion = promotion
        self.cache_dir = cache_dir

    def forget(self, pseudonym: str) -> list[str]:
        """Rewrite every registered feed bundle that holds ``pseudonym``; return those versions.

        Raises:
            BundleErasureError: when a push policy bundle holds it.
        """
        client = self.promotion.client
        rewritten = []
        for registered in client.versions(HOME_RANKER_MODEL):
            if not registered.tags.get(BUNDLE_TAG):
                continue
            with tempfile.TemporaryDirectory() as tmp:
                folder = client.download_bundle(HOME_RANKER_MODEL, registered.version, Path(tmp))
                if not find_traces(folder, [pseudonym]):
                    continue
                bundle = forget_users(read_bundle(folder), {pseudonym})
                out = Path(tmp) / "rewritten"
                out.mkdir()
                for name, data in bundle_files(bundle).items():
                    (out / name).write_bytes(data)
                client.overwrite_bundle(registered.run_id, out)
            self.promotion.record_rewrite(
                HOME_RANKER_MODEL,
                registered.version,
                ERASURE_ACTOR,
                "rewritten without an erased member (their pseudonym stays in audit/privacy)",
            )
            if self.cache_dir is not None:
                shutil.rmtree(
                    self.cache_dir / HOME_RANKER_MODEL / registered.version, ignore_errors=True
                )
            log.info("rewrote %s version %s", HOME_RANKER_MODEL, registered.version)
            rewritten.append(registered.version)
        for registered in client.versions(PUSH_POLICY_MODEL):
            with tempfile.TemporaryDirectory() as tmp:
                folder = client.download_artifacts(PUSH_POLICY_MODEL, registered.version, Path(tmp))
                if find_traces(folder, [pseudonym]):
                    raise BundleErasureError(
                        f"{PUSH_POLICY_MODEL} version {registered.version} holds an erased "
                        "member and has no rewrite"
                    )
        return rewritten
