"""A feed bundle: the whole home-feed model plus the reference data monitoring compares to.

The registry versions retrieval artifacts together with the ranker (one registered model per
use): a bundle holds the ALS factors, the two-tower towers, segment popularity and the ranker
as one pickled ``HomeFeedModel``, the ALS FAISS index and the two-tower index as their own files
(serving can lose one and still rank the other sources), plus two reference samples taken at
training time:

- ``reference_features``: ranker features of training examples (what the model learned from);
- ``reference_scores``: scores and sources it served on the last held-out days (what it
  predicted).

Pickles are tied to the code that wrote them: the registry tags each version with the code
version, and a bundle is only loaded by the same project.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.ranking.feed import HomeFeedModel
from fitpulse_orchestration.retrieval.index import ItemIndex

MODEL_FILE: Final = "home_feed_model.pkl"
INDEX_FILE: Final = "item_index.pkl"
TWO_TOWER_INDEX_FILE: Final = "two_tower_index.pkl"
FEATURES_FILE: Final = "reference_features.parquet"
SCORES_FILE: Final = "reference_scores.parquet"
REFERENCE_ROWS: Final = 5000
_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL


@dataclass
class FeedBundle:
    """A feed model and its training-time reference samples."""

    model: HomeFeedModel
    reference_features: pd.DataFrame
    reference_scores: pd.DataFrame


def sample_rows(frame: pd.DataFrame, n: int = REFERENCE_ROWS, seed: int = 7) -> pd.DataFrame:
    """At most ``n`` rows of ``frame``, sampled without replacement (seeded), index reset."""
    if len(frame) <= n:
        return frame.reset_index(drop=True)
    return frame.sample(n=n, random_state=seed).reset_index(drop=True)


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def bundle_files(bundle: FeedBundle) -> dict[str, bytes]:
    """File name -> bytes of the bundle (what the registry logs)."""
    files = {
        MODEL_FILE: pickle.dumps(
            replace(bundle.model, index=None, tt_index=None), protocol=_PROTOCOL
        ),
        INDEX_FILE: pickle.dumps(bundle.model.index, protocol=_PROTOCOL),
        FEATURES_FILE: _parquet(bundle.reference_features),
        SCORES_FILE: _parquet(bundle.reference_scores),
    }
    if bundle.model.tt_index is not None:
        files[TWO_TOWER_INDEX_FILE] = pickle.dumps(bundle.model.tt_index, protocol=_PROTOCOL)
    return files


def read_feed_model(folder: Path, with_index: bool = True) -> HomeFeedModel:
    """The feed model of a bundle folder, with its indexes unless ``with_index`` is False.

    The two-tower index is optional (older bundles have none): without it ``tt_index`` is None.

    Raises:
        FileNotFoundError: naming the missing model or index file.
        TypeError: when a file holds something else.
    """
    path = folder / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"feed bundle at {folder} has no {MODEL_FILE}")
    model = pickle.loads(path.read_bytes())
    if not isinstance(model, HomeFeedModel):
        raise TypeError(f"{path} holds a {type(model).__name__}, not a feed model")
    if not with_index:
        return replace(model, index=None, tt_index=None)
    return replace(model, index=read_item_index(folder), tt_index=read_two_tower_index(folder))


def read_two_tower_index(folder: Path) -> ItemIndex | None:
    """The two-tower index of a bundle folder; None for bundles made before it existed.

    Raises:
        TypeError: when the file holds something else.
    """
    if not (folder / TWO_TOWER_INDEX_FILE).is_file():
        return None
    return read_item_index(folder, TWO_TOWER_INDEX_FILE)


def read_item_index(folder: Path, name: str = INDEX_FILE) -> ItemIndex:
    """A FAISS item index of a bundle folder (the ALS one by default).

    Raises:
        FileNotFoundError: when the index file is missing.
        TypeError: when it holds something else.
    """
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"feed bundle at {folder} has no {name}")
    index = pickle.loads(path.read_bytes())
    if not isinstance(index, ItemIndex):
        raise TypeError(f"{path} holds a {type(index).__name__}, not an item index")
    return index


def read_bundle(folder: Path) -> FeedBundle:
    """Load a bundle written by ``bundle_files`` from ``folder``.

    Raises:
        FileNotFoundError: naming the missing file.
    """
    for name in (MODEL_FILE, INDEX_FILE, FEATURES_FILE, SCORES_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"feed bundle at {folder} has no {name}")
    return FeedBundle(
        model=read_feed_model(folder),
        reference_features=pd.read_parquet(folder / FEATURES_FILE),
        reference_scores=pd.read_parquet(folder / SCORES_FILE),
    )


def forget_users(bundle: FeedBundle, pseudonyms: AbstractSet[str]) -> FeedBundle:
    """``bundle`` without anything of ``pseudonyms`` (an erasure's rewrite of a registered bundle).

    The ALS user rows (factors and seen items) and the reference samples' rows of those users go;
    the rest of the model is item-side or aggregate and stays as trained. A forgotten user is
    served like any user without ALS factors.
    """
    gone = list(pseudonyms)
    als = bundle.model.als
    keep = ~np.isin(als.user_ids, gone)
    model = replace(
        bundle.model,
        als=replace(
            als,
            user_ids=als.user_ids[keep],
            user_factors=als.user_factors[keep],
            seen=als.seen[np.flatnonzero(keep)],
        ),
    )

    def without(frame: pd.DataFrame) -> pd.DataFrame:
        if "user_id" not in frame.columns:
            return frame
        return frame[~frame["user_id"].isin(gone)].reset_index(drop=True)

    return FeedBundle(model, without(bundle.reference_features), without(bundle.reference_scores))
