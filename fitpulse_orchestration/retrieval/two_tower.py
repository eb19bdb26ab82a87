"""Two-tower retrieval: a user tower and a content-only item tower, trained with in-batch softmax.

Why content-only items: 180K items are published a day and must be retrievable within minutes,
before anyone has interacted with them. The item tower therefore sees only what the catalog
says (type, category, difficulty, intensity, duration, equipment, tags), never an item id, so a
new item's embedding is as good on its first minute as on its hundredth day. The user tower
sees the profile (fitness level, region) and the user's history as the mean content of the
items they engaged with, so a user with two engagements already gets a personal embedding and
a brand-new user gets one from the profile alone (the 40% cold users).

Inputs are *hashed* tokens (``type=workout``, ``tag=core``, ``level=beginner|region=uk`` ...),
so a category or tag that appears after training (a trend) still maps to a slot instead of
failing. The same encoding functions build training inputs, batch inputs and the single
request's input, so offline and online embeddings agree (``tests/unit/retrieval``).

Training (PyTorch, CPU): each positive is a first engagement (click or deeper) of a user with an
item; the user's input is built from engagements strictly *before* it (no leak of the positive
into its own history). The loss is the in-batch sampled softmax over the batch's items with the
logQ correction for popularity (Yi et al., 2019): an item's logit is reduced by
``logq_weight * log(frequency)``, so popular items, which appear as in-batch negatives more
often, are not over-penalised and the model does not collapse to popularity either. In-batch
duplicates of the positive item are masked out as negatives.

At retrieval the popularity the training loss corrected for is added back as a prior, with
weight ``popularity_weight``: the searched score is ``cos(u, v) / temperature + w * log q(item)``,
with ``q`` the item's smoothed share of training positives (a new item has the floor share). It
is one extra coordinate of both vectors (``[v / temperature, log q]`` and ``[u, w]``), so a plain
inner-product FAISS index searches it. Without the prior a cold user's neighbours are niche
items of the right kind; with it, the well-liked ones of that kind. An item published after the
training cutoff has no interactions to judge it by and gets the prior of an average trained item
(not the floor of an item that was available and ignored), so new items compete on taste.

Serving does not need PyTorch: the trained weights are kept as numpy arrays and both towers run
as two numpy matrix products.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.events.schema import ENGAGEMENT_GRADE
from fitpulse_orchestration.features.reference import UNKNOWN, profile_attributes

if TYPE_CHECKING:
    import torch

CONTENT_DIM: Final = 256
"""Hash buckets of the item content tokens."""
PROFILE_DIM: Final = 32
"""Hash buckets of the user profile tokens."""
MAX_TOKENS: Final = 12
"""Content tokens per item kept (type, category, difficulty, intensity, duration, equipment,
category x difficulty, up to five tags)."""
HISTORY_SATURATION: Final = 50.0
"""Engagement count at which the history-size input reaches 1."""
_DURATION_EDGES: Final = (10.0, 20.0, 30.0, 45.0, 60.0)


def _bucket(token: str, dim: int) -> int:
    return zlib.crc32(token.encode()) % dim


def _column_codes(values: pd.Series, prefix: str, dim: int) -> np.ndarray:
    """Hash bucket of ``prefix=value`` per row (each distinct value hashed once)."""
    values = values.fillna(UNKNOWN).astype(str)
    uniques, inverse = np.unique(values.to_numpy(), return_inverse=True)
    codes = np.array([_bucket(f"{prefix}={u}", dim) for u in uniques], dtype=np.int16)
    return codes[inverse]


def item_token_codes(catalog: pd.DataFrame) -> np.ndarray:
    """Content token buckets of each catalog row: int16 ``(n, MAX_TOKENS)``, -1 padded.

    Reads ``item_type``, ``category``, ``difficulty``, ``intensity``, ``duration_min``,
    ``equipment`` and ``tags`` (comma separated); missing values hash as ``unknown``.
    """
    n = len(catalog)
    out = np.full((n, MAX_TOKENS), -1, dtype=np.int16)
    if n == 0:
        return out
    duration = pd.to_numeric(catalog["duration_min"], errors="coerce").to_numpy(dtype=float)
    dur_bucket = np.where(
        np.isnan(duration), "unknown", np.searchsorted(_DURATION_EDGES, duration).astype(str)
    )
    out[:, 0] = _column_codes(catalog["item_type"], "type", CONTENT_DIM)
    out[:, 1] = _column_codes(catalog["category"], "cat", CONTENT_DIM)
    out[:, 2] = _column_codes(catalog["difficulty"], "diff", CONTENT_DIM)
    out[:, 3] = _column_codes(catalog["intensity"], "int", CONTENT_DIM)
    out[:, 4] = _column_codes(pd.Series(dur_bucket), "dur", CONTENT_DIM)
    out[:, 5] = _column_codes(catalog["equipment"], "eq", CONTENT_DIM)
    cross = (
        catalog["category"].fillna(UNKNOWN).astype(str)
        + "|"
        + catalog["difficulty"].fillna(UNKNOWN).astype(str)
    )
    out[:, 6] = _column_codes(cross, "catdiff", CONTENT_DIM)
    tags = catalog["tags"].fillna("").astype(str).to_numpy()
    cache: dict[str, np.ndarray] = {}
    for row, text in enumerate(tags):
        codes = cache.get(text)
        if codes is None:
            names = [t.strip() for t in text.split(",") if t.strip()][: MAX_TOKENS - 7]
            codes = np.array([_bucket(f"tag={t}", CONTENT_DIM) for t in names], dtype=np.int16)
            cache[text] = codes
        out[row, 7 : 7 + len(codes)] = codes
    return out


def multi_hot(codes: np.ndarray) -> np.ndarray:
    """Dense float32 ``(n, CONTENT_DIM)`` multi-hot of ``item_token_codes`` rows."""
    out = np.zeros((len(codes), CONTENT_DIM), dtype=np.float32)
    rows, cols = np.nonzero(codes >= 0)
    np.add.at(out, (rows, codes[rows, cols].astype(np.int64)), 1.0)
    return np.minimum(out, 1.0)


def profile_codes(levels: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Dense float32 ``(n, PROFILE_DIM)`` of the hashed level, region and level x region."""
    out = np.zeros((len(levels), PROFILE_DIM), dtype=np.float32)
    cache: dict[tuple[str, str], tuple[int, int, int]] = {}
    for row, key in enumerate(zip(map(str, levels), map(str, regions), strict=True)):
        slots = cache.get(key)
        if slots is None:
            level, region = key
            slots = (
                _bucket(f"level={level}", PROFILE_DIM),
                _bucket(f"region={region}", PROFILE_DIM),
                _bucket(f"level={level}|region={region}", PROFILE_DIM),
            )
            cache[key] = slots
        out[row, list(slots)] = 1.0
    return out


def user_inputs(
    levels: np.ndarray, regions: np.ndarray, history_sum: np.ndarray, history_count: np.ndarray
) -> np.ndarray:
    """The user tower's input rows.

    Args:
        levels: fitness level per user (``unknown`` allowed).
        regions: region per user.
        history_sum: ``(n, CONTENT_DIM)`` sum of the multi-hot rows of the items each user
            engaged with (each item once).
        history_count: how many items that sum covers per user.

    Returns:
        float32 ``(n, PROFILE_DIM + CONTENT_DIM + 2)``: profile tokens, mean history content,
        saturating history size and a has-history flag.
    """
    count = np.asarray(history_count, dtype=np.float32).reshape(-1, 1)
    mean = history_sum / np.maximum(count, 1.0)
    size = np.minimum(np.log1p(count) / np.log1p(HISTORY_SATURATION), 1.0)
    return np.hstack(
        [profile_codes(levels, regions), mean.astype(np.float32), size, (count > 0)]
    ).astype(np.float32)


@dataclass(frozen=True)
class TwoTowerParams:
    """Architecture and training settings.

    ``logq_weight`` scales the popularity correction (0: plain in-batch softmax, 1: full logQ);
    ``popularity_weight`` scales the popularity prior added back at retrieval. One thread by
    default: with two, float reductions vary from run to run, and on the tiny test world that
    moved the promotion gate's cold-user verdict between identical runs.
    """

    dim: int = 32
    hidden: int = 128
    temperature: float = 0.1
    logq_weight: float = 1.0
    popularity_weight: float = 0.75
    epochs: int = 4
    batch_size: int = 512
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    max_examples: int = 400_000
    valid_fraction: float = 0.1
    random_state: int = 7
    num_threads: int = 1


@dataclass
class Tower:
    """A two-layer MLP with an L2-normalised output, as numpy weights."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Embed rows of ``x`` (float32, L2-normalised rows)."""
        h = np.maximum(np.asarray(x, dtype=np.float32) @ self.w1 + self.b1, 0.0)
        out = h @ self.w2 + self.b2
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.maximum(norm, 1e-12), dtype=np.float32)


@dataclass
class TwoTowerArtifacts:
    """Trained towers, the settings they were trained with and training metrics."""

    user_tower: Tower
    item_tower: Tower
    params: TwoTowerParams
    item_counts: pd.Series
    """Training positives per item id (the popularity prior; absent items count 0)."""
    total_positives: int
    cutoff: pd.Timestamp
    """Training positives are before this time; items published after it are new."""
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """Dimension of the searched vectors (tower output plus the popularity coordinate)."""
        return int(self.user_tower.w2.shape[1]) + 1

    def log_prior(self, item_ids: np.ndarray, published_at: pd.Series) -> np.ndarray:
        """Smoothed log share of training positives per item; the mean one for new items.

        Args:
            item_ids: items to score.
            published_at: their publication times (UTC; NaT counts as new).
        """
        counts = self.item_counts.reindex(pd.Index(item_ids).astype(str)).fillna(0.0).to_numpy()
        denom = self.total_positives + len(self.item_counts) + 1.0
        prior = np.log((counts + 1.0) / denom)
        average = float(np.mean(np.log((self.item_counts.to_numpy() + 1.0) / denom)))
        cutoff = pd.Timestamp(self.cutoff)
        cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff
        published = pd.to_datetime(pd.Series(published_at), utc=True)
        new = ~(published < cutoff).to_numpy()
        return np.where((counts == 0) & new, average, prior).astype(np.float32)

    def param_dict(self) -> dict[str, Any]:
        """Hyper-parameters as a flat dict (for tracking)."""
        return asdict(self.params)

    def embed_items(self, catalog: pd.DataFrame) -> np.ndarray:
        """Item embeddings of ``catalog`` rows, in order (float32 ``(n, dim)``)."""
        out = np.empty((len(catalog), self.dim), dtype=np.float32)
        for lo in range(0, len(catalog), 50_000):
            part = catalog.iloc[lo : lo + 50_000]
            vec = self.item_tower(multi_hot(item_token_codes(part)))
            out[lo : lo + len(part), :-1] = vec / self.params.temperature
            out[lo : lo + len(part), -1] = self.log_prior(
                part["item_id"].to_numpy(), part["published_at"]
            )
        return out

    def embed_users(self, inputs: np.ndarray) -> np.ndarray:
        """User query vectors of ``user_inputs`` rows (embedding plus the prior's weight)."""
        vec = self.user_tower(inputs)
        weight = np.full((len(vec), 1), self.params.popularity_weight, dtype=np.float32)
        return np.ascontiguousarray(np.hstack([vec, weight]), dtype=np.float32)


def _first_engagements(events: pd.DataFrame, before: pd.Timestamp | None) -> pd.DataFrame:
    """Each user's first click-or-deeper event per item, sorted by user then time."""
    grades = [k for k, v in ENGAGEMENT_GRADE.items() if v > 0]
    ev = events[events["event_type"].isin(grades) & events["item_id"].notna()]
    if before is not None:
        ev = ev[ev["ts"] < before]
    ev = ev.sort_values(["ts", "event_id"], kind="stable").drop_duplicates(["user_id", "item_id"])
    return ev.sort_values(["user_id", "ts"], kind="stable")[["user_id", "item_id", "ts"]]


def _catalog_codes(catalog: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """Token codes of ``item_ids`` (unknown items get the codes of an all-unknown row)."""
    frame = catalog.drop_duplicates("item_id", keep="last").set_index("item_id")
    frame = frame.reindex(pd.Index(item_ids).astype(str))
    return item_token_codes(frame.reset_index())


def history_inputs(
    events: pd.DataFrame,
    catalog: pd.DataFrame,
    profiles: pd.DataFrame,
    user_ids: np.ndarray,
    as_of: pd.Timestamp,
) -> np.ndarray:
    """User tower inputs of ``user_ids`` from events strictly before ``as_of`` (batch path)."""
    first = _first_engagements(events, as_of)
    first = first[first["user_id"].isin(set(map(str, user_ids)))]
    hot = multi_hot(_catalog_codes(catalog, first["item_id"].to_numpy()))
    users = pd.Index(pd.Series(user_ids).astype(str))
    rows = users.get_indexer(first["user_id"].astype(str))
    sums = np.zeros((len(users), CONTENT_DIM), dtype=np.float32)
    np.add.at(sums, rows, hot)
    counts = np.bincount(rows, minlength=len(users)).astype(np.float32)
    prof = profile_attributes(profiles, users)
    return user_inputs(prof["fitness_level"].to_numpy(), prof["region"].to_numpy(), sums, counts)


def request_inputs(
    level: str, region: str, engaged_codes: np.ndarray, n_engaged: int
) -> np.ndarray:
    """User tower input of one request (the serving path of ``history_inputs``).

    Args:
        level: the user's fitness level.
        region: the user's region.
        engaged_codes: ``item_token_codes`` rows of the items the user engaged with.
        n_engaged: how many items those are.
    """
    sums = multi_hot(engaged_codes).sum(axis=0, keepdims=True)
    return user_inputs(np.array([level]), np.array([region]), sums, np.array([n_engaged]))


@dataclass
class TrainingExamples:
    """Positives with their user inputs and item content, in time order."""

    user_x: np.ndarray
    item_x: np.ndarray
    item_ids: np.ndarray
    ts: np.ndarray
    cutoff: pd.Timestamp


EXAMPLE_BLOCK_ROWS: Final = 65_536
"""First engagements per block of ``build_examples`` (cut at a member's first row)."""


def build_examples(
    events: pd.DataFrame,
    catalog: pd.DataFrame,
    profiles: pd.DataFrame,
    before: pd.Timestamp,
    max_examples: int,
    block_rows: int = EXAMPLE_BLOCK_ROWS,
) -> TrainingExamples:
    """One example per first engagement before ``before``, user input from strictly earlier ones.

    Keeps the latest ``max_examples`` positives (their histories still use older ones). The
    positives are chosen first, by time; the dense content rows are then encoded over blocks of
    about ``block_rows`` first engagements, each block whole members, and only the kept rows are
    copied out. So the dense memory is one block's plus the output's, whatever the log holds
    (every first engagement as a dense row at once is tens of TiB at full scale).
    """
    first = _first_engagements(events, before).reset_index(drop=True)
    users = first["user_id"].to_numpy()
    n = len(users)
    keep = np.argsort(first["ts"].to_numpy(), kind="stable")[-max_examples:].astype(np.int64)
    slot = np.full(n, -1, dtype=np.int64)
    slot[keep] = np.arange(len(keep))
    codes = _catalog_codes(catalog, first["item_id"].to_numpy())
    starts = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1] if n else np.array([], int)
    group_start = np.repeat(starts, np.diff(np.r_[starts, n])) if n else np.array([], int)
    sums = np.zeros((len(keep), CONTENT_DIM), dtype=np.float32)
    item_x = np.zeros((len(keep), CONTENT_DIM), dtype=np.float32)
    counts = (np.arange(n) - group_start)[keep].astype(np.float32)
    lo = 0
    while lo < n:
        cut = int(np.searchsorted(starts, lo + block_rows))
        hi = int(starts[cut]) if cut < len(starts) else n
        hot = multi_hot(codes[lo:hi])
        csum = np.cumsum(hot, axis=0, dtype=np.float32)
        # Exclusive prefix sums per member: rows are grouped by member in time order, and a
        # block starts at a member's first row.
        first_row = group_start[lo:hi] - lo
        base = np.where(first_row[:, None] > 0, csum[np.maximum(first_row - 1, 0)], 0.0)
        kept = slot[lo:hi] >= 0
        dest = slot[lo:hi][kept]
        sums[dest] = (csum - hot - base)[kept]
        item_x[dest] = hot[kept]
        lo = hi
    prof = profile_attributes(profiles, users[keep])
    user_x = user_inputs(prof["fitness_level"].to_numpy(), prof["region"].to_numpy(), sums, counts)
    return TrainingExamples(
        user_x=user_x,
        item_x=item_x,
        item_ids=first["item_id"].to_numpy().astype(str)[keep],
        ts=first["ts"].to_numpy()[keep],
        cutoff=pd.Timestamp(before),
    )


def train_two_tower(examples: TrainingExamples, params: TwoTowerParams) -> TwoTowerArtifacts:
    """Fit both towers with logQ-corrected in-batch softmax; validate on the latest positives.

    Raises:
        ValueError: with fewer than 2 batches' worth of positives.
    """
    import torch

    n = len(examples.item_ids)
    needed = 2 * min(params.batch_size, 64)
    if n < needed:
        raise ValueError(f"two-tower training needs at least {needed} positives, got {n}")
    torch.manual_seed(params.random_state)
    torch.set_num_threads(params.num_threads)
    rng = np.random.default_rng(params.random_state)
    n_valid = int(n * params.valid_fraction)
    train_idx = np.arange(n - n_valid)
    valid_idx = np.arange(n - n_valid, n)
    _, item_codes, freq = np.unique(examples.item_ids, return_inverse=True, return_counts=True)
    logq = np.log(freq[item_codes] / n).astype(np.float32)

    def mlp(n_in: int) -> torch.nn.Sequential:
        return torch.nn.Sequential(
            torch.nn.Linear(n_in, params.hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(params.hidden, params.dim),
        )

    user_net = mlp(examples.user_x.shape[1])
    item_net = mlp(examples.item_x.shape[1])
    optim = torch.optim.Adam(
        [*user_net.parameters(), *item_net.parameters()],
        lr=params.learning_rate,
        weight_decay=params.weight_decay,
    )
    ux = torch.from_numpy(examples.user_x)
    ix = torch.from_numpy(examples.item_x)
    lq = torch.from_numpy(logq)
    codes = torch.from_numpy(item_codes.astype(np.int64))

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(idx)
        u = torch.nn.functional.normalize(user_net(ux[t]), dim=1)
        v = torch.nn.functional.normalize(item_net(ix[t]), dim=1)
        logits = u @ v.T / params.temperature - params.logq_weight * lq[t][None, :]
        same = codes[t][:, None] == codes[t][None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
        return torch.nn.functional.cross_entropy(logits, torch.arange(len(idx)))

    def mean_loss(idx: np.ndarray) -> float:
        if len(idx) < 2:
            return float("nan")
        with torch.no_grad():
            losses = [
                float(batch_loss(idx[lo : lo + params.batch_size]))
                for lo in range(0, len(idx), params.batch_size)
                if len(idx[lo : lo + params.batch_size]) > 1
            ]
        return float(np.mean(losses))

    started = time.perf_counter()
    history: list[float] = []
    for _ in range(params.epochs):
        perm = rng.permutation(train_idx)
        for lo in range(0, len(perm), params.batch_size):
            idx = perm[lo : lo + params.batch_size]
            if len(idx) < 2:
                continue
            optim.zero_grad()
            loss = batch_loss(idx)
            loss.backward()
            optim.step()
        history.append(mean_loss(valid_idx))
    seconds = time.perf_counter() - started

    metrics = {
        "positives": float(n),
        "train_positives": float(len(train_idx)),
        "distinct_items": float(len(freq)),
        "valid_loss_first_epoch": history[0] if history else float("nan"),
        "valid_loss": history[-1] if history else float("nan"),
        "train_seconds": seconds,
    }
    counts = pd.Series(examples.item_ids).value_counts().astype(float)
    return TwoTowerArtifacts(
        tower_from_torch(user_net),
        tower_from_torch(item_net),
        params,
        counts,
        n,
        examples.cutoff,
        metrics,
    )


def tower_from_torch(net: torch.nn.Sequential) -> Tower:
    """The numpy ``Tower`` of a trained ``Linear -> ReLU -> Linear`` network.

    Serving embeds every request's user with these weights: no torch call per request.
    """
    import torch

    first, second = net[0], net[2]
    if not isinstance(first, torch.nn.Linear) or not isinstance(second, torch.nn.Linear):
        raise TypeError("a tower is Linear -> ReLU -> Linear")
    return Tower(
        w1=first.weight.detach().numpy().T.copy(),
        b1=first.bias.detach().numpy().copy(),
        w2=second.weight.detach().numpy().T.copy(),
        b2=second.bias.detach().numpy().copy(),
    )
