"""Online experiments: deterministic assignment of users to variants, configured in a TOML file.

A user's variant is a pure function of the experiment's salt and the app's user id: HMAC-SHA256
keyed by the salt, the first 8 bytes read as a number in [0, 1), matched against the variants'
cumulative shares. The same user always lands in the same variant (across replicas and
restarts), and a new salt reshuffles everyone (a new experiment). Example file::

    [experiment]
    name = "ranker-ab"
    salt = "2026-11-ranker-ab"

    [[experiment.variants]]
    name = "control"
    share = 0.5
    model_alias = "champion"

    [[experiment.variants]]
    name = "treatment"
    share = 0.5
    model_alias = "challenger"
    rerank = { max_per_category = 4 }

A variant serves the model its registry alias points at (``champion`` or ``challenger``) and may
override re-ranking settings (``RerankParams`` fields).
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

from fitpulse_orchestration.ranking.rerank import RerankParams

ALIASES: Final = ("champion", "challenger")


@dataclass(frozen=True)
class Assignment:
    """Where one request goes: experiment (None outside one), variant and model alias."""

    experiment: str | None
    variant: str
    model_alias: str
    rerank: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Variant:
    """One arm: its traffic share, model alias and re-ranking overrides."""

    name: str
    share: float
    model_alias: str = "champion"
    rerank: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Experiment:
    """A named experiment with a salt and variants whose shares sum to 1."""

    name: str
    salt: str
    variants: tuple[Variant, ...]

    def __post_init__(self) -> None:
        if not self.name or not self.salt:
            raise ValueError("an experiment needs a name and a salt")
        if not self.variants:
            raise ValueError(f"experiment {self.name!r} has no variants")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name!r} repeats a variant name: {names}")
        for v in self.variants:
            if not 0.0 < v.share <= 1.0:
                raise ValueError(f"variant {v.name!r}: share must be in (0, 1], got {v.share}")
            if v.model_alias not in ALIASES:
                raise ValueError(
                    f"variant {v.name!r}: model_alias must be one of {ALIASES}, "
                    f"got {v.model_alias!r}"
                )
        total = sum(v.share for v in self.variants)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"experiment {self.name!r}: variant shares sum to {total}, not 1")

    def bucket(self, user_id: str) -> float:
        """The user's position in [0, 1) for this experiment's salt."""
        digest = hmac.new(self.salt.encode(), user_id.encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64

    def assign(self, user_id: str) -> Assignment:
        """The variant of ``user_id``."""
        point = self.bucket(user_id)
        edge = 0.0
        chosen = self.variants[-1]
        for variant in self.variants:
            edge += variant.share
            if point < edge:
                chosen = variant
                break
        return Assignment(self.name, chosen.name, chosen.model_alias, chosen.rerank)


_RERANK_FIELDS: Final = {f.name for f in fields(RerankParams)} - {"n"}


def _variant(raw: dict[str, Any], experiment: str) -> Variant:
    unknown = set(raw) - {"name", "share", "model_alias", "rerank"}
    if unknown:
        raise ValueError(f"experiment {experiment!r}: unknown variant keys {sorted(unknown)}")
    if "name" not in raw or "share" not in raw:
        raise ValueError(f"experiment {experiment!r}: every variant needs a name and a share")
    overrides = dict(raw.get("rerank", {}))
    bad = set(overrides) - _RERANK_FIELDS
    if bad:
        raise ValueError(
            f"variant {raw['name']!r}: unknown rerank settings {sorted(bad)}; "
            f"allowed: {sorted(_RERANK_FIELDS)}"
        )
    return Variant(
        name=str(raw["name"]),
        share=float(raw["share"]),
        model_alias=str(raw.get("model_alias", "champion")),
        rerank=tuple(sorted(overrides.items())),
    )


def load_experiment(path: Path) -> Experiment:
    """Read and validate an experiment file.

    Raises:
        ValueError: naming the file and what is wrong with it.
    """
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read experiment file {path}: {exc}") from exc
    section = data.get("experiment")
    if not isinstance(section, dict):
        raise ValueError(f"{path}: expected an [experiment] table")
    try:
        name = str(section.get("name", ""))
        variants = tuple(_variant(v, name) for v in section.get("variants", []))
        return Experiment(name=name, salt=str(section.get("salt", "")), variants=variants)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
