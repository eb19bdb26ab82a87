"""The world's population: users and items, their latent tastes and traits, the shift's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from fitpulse_orchestration.world import vocab
from fitpulse_orchestration.world.params import (
    BASE_TASTE_ALPHA,
    DIM,
    SHIFT_TRENDING_ALPHA,
    ShiftParams,
    WorldParams,
)


def top_k(keys: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest keys per row, largest first."""
    part = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise."""
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Users:
    """The users' observable profiles and latent tastes, one array row per user."""

    ids: np.ndarray
    signup: np.ndarray  # datetime64[s]
    region: np.ndarray
    level: np.ndarray  # 0 beginner, 1 intermediate, 2 advanced
    goals: list[list[str]]
    cat_taste: np.ndarray  # (n, n_categories): columns follow vocab.ALL_CATEGORIES
    vec: np.ndarray  # (n, DIM)
    activity: np.ndarray  # daily session probability
    utc_offset: np.ndarray
    platform: np.ndarray
    opted_out: np.ndarray


@dataclass
class Items:
    """The items' catalog attributes and latent traits, one array row per item."""

    ids: np.ndarray
    type_: np.ndarray
    category: np.ndarray  # index into vocab.ALL_CATEGORIES
    difficulty: np.ndarray
    intensity: np.ndarray
    duration: np.ndarray
    equipment: np.ndarray
    tags: list[list[str]]
    title: np.ndarray
    published: np.ndarray  # datetime64[s]
    quality: np.ndarray
    vec: np.ndarray


def make_category_vectors(rng: np.random.Generator, n: int = len(vocab.CATEGORIES)) -> np.ndarray:
    """One random unit trait vector per category."""
    vecs = rng.normal(size=(n, DIM))
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def make_users(p: WorldParams, rng: np.random.Generator, cat_vecs: np.ndarray) -> Users:
    """The base population: profiles, category tastes, taste vectors and activity."""
    n = p.n_users
    start = np.datetime64(p.start_date.isoformat(), "s")
    in_window = rng.random(n) < 0.2
    before = start - rng.integers(1, 365 * 86400, size=n).astype("timedelta64[s]")
    during = start + rng.integers(0, p.days * 86400, size=n).astype("timedelta64[s]")
    signup = np.where(in_window, during, before)
    region = rng.choice(vocab.REGIONS, size=n, p=vocab.REGION_WEIGHTS)
    level = rng.choice(3, size=n, p=vocab.FITNESS_WEIGHTS)
    goals = [
        list(rng.choice(vocab.GOALS, size=int(rng.integers(1, 3)), replace=False)) for _ in range(n)
    ]
    cat_taste = rng.dirichlet(np.full(len(vocab.CATEGORIES), BASE_TASTE_ALPHA), size=n)
    vec = cat_taste @ cat_vecs + 0.35 * rng.normal(size=(n, DIM))
    dormant = rng.random(n) < p.dormant_share
    activity = np.where(
        dormant, rng.uniform(0.002, 0.02, size=n), np.clip(rng.beta(2.0, 3.5, size=n), 0.08, 0.95)
    )
    offsets = np.array([vocab.REGION_TIMEZONES[r][1] for r in region])
    platform = rng.choice(vocab.PLATFORMS, size=n, p=vocab.PLATFORM_WEIGHTS)
    opted_out = rng.random(n) < 0.12
    ids = np.array([f"usr_{i:07d}" for i in rng.permutation(n * 3)[:n]])
    return Users(
        ids, signup, region, level, goals, cat_taste, vec, activity, offsets, platform, opted_out
    )


def make_items(
    n: int,
    published: np.ndarray,
    rng: np.random.Generator,
    cat_vecs: np.ndarray,
    id_offset: int,
) -> Items:
    """``n`` catalog items published at ``published``: type, category, level, traits, quality."""
    type_ = rng.choice(vocab.ITEM_TYPES, size=n, p=vocab.ITEM_TYPE_WEIGHTS)
    category = rng.integers(0, len(vocab.CATEGORIES), size=n)
    difficulty = rng.choice(3, size=n, p=vocab.DIFFICULTY_WEIGHTS)
    # Intensity follows difficulty (and HIIT/running skew high, meditation low).
    base = difficulty + rng.normal(0, 0.7, size=n)
    cat_names = np.array(vocab.CATEGORIES)[category]
    base += np.where(np.isin(cat_names, ["hiit", "running", "cycling"]), 0.8, 0.0)
    base -= np.where(np.isin(cat_names, ["meditation", "nutrition", "mobility", "yoga"]), 0.8, 0.0)
    intensity = np.clip(np.round(base), 0, 2).astype(int)
    duration = make_durations(type_, rng)
    equipment = np.where(
        np.isin(cat_names, ["meditation", "nutrition"]),
        "none",
        rng.choice(vocab.EQUIPMENT, size=n, p=(0.35, 0.25, 0.15, 0.08, 0.1, 0.07)),
    )
    tags = [
        list(rng.choice(vocab.CATEGORY_TAGS[c], size=int(rng.integers(2, 4)), replace=False))
        for c in cat_names
    ]
    title = np.array(
        [
            f"{rng.choice(vocab.TITLE_WORDS)} {c.title()} {t.title()}"
            for c, t in zip(cat_names, type_, strict=True)
        ]
    )
    return finish_items(
        rng,
        cat_vecs,
        id_offset,
        type_,
        category,
        difficulty,
        intensity,
        duration,
        equipment,
        tags,
        title,
        published,
    )


def finish_items(
    rng: np.random.Generator,
    cat_vecs: np.ndarray,
    id_offset: int,
    type_: np.ndarray,
    category: np.ndarray,
    difficulty: np.ndarray,
    intensity: np.ndarray,
    duration: np.ndarray,
    equipment: np.ndarray,
    tags: list[list[str]],
    title: np.ndarray,
    published: np.ndarray,
) -> Items:
    """Draw quality and taste vectors (in that order) and number the ids from ``id_offset``."""
    n = len(type_)
    quality = rng.normal(0.0, 0.6, size=n)
    vec = cat_vecs[category] + 0.45 * rng.normal(size=(n, DIM))
    ids = np.array([f"{vocab.ITEM_ID_PREFIX[t]}_{id_offset + i:07d}" for i, t in enumerate(type_)])
    return Items(
        ids,
        type_,
        category,
        difficulty,
        intensity,
        duration,
        equipment,
        tags,
        title,
        published,
        quality,
        vec,
    )


def make_durations(type_: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Minutes per item: articles 3-14, plans 4-12 weeks (in days), the rest 10-60."""
    n = len(type_)
    return np.where(
        type_ == "article",
        rng.integers(3, 15, size=n),
        np.where(type_ == "plan", rng.integers(4, 13, size=n) * 7, rng.integers(2, 13, size=n) * 5),
    )


Rows = TypeVar("Rows", Users, Items)


def concat(a: Rows, b: Rows) -> Rows:
    """Rows of ``a`` followed by rows of ``b``."""
    return type(a)(
        *[  # type: ignore[arg-type]
            (x + y) if isinstance(x, list) else np.concatenate([x, y])
            for x, y in zip(vars(a).values(), vars(b).values(), strict=True)
        ]
    )


def make_shift_users(
    p: WorldParams, shift: ShiftParams, rng: np.random.Generator, cat_vecs: np.ndarray
) -> Users:
    """The users a shift brings: they sign up during the shift, mostly beginners and active.

    ``cat_vecs`` has one row per ``vocab.ALL_CATEGORIES``; their taste favours the trending
    category. Ids continue after the base world's (``usr_`` numbers from ``3 * n_users`` on).
    """
    n = shift.n_new_users(p.n_users)
    start = np.datetime64(shift.start_date(p.end_date).isoformat(), "s")
    signup = start + rng.integers(0, shift.days * 86400, size=n).astype("timedelta64[s]")
    region = rng.choice(vocab.REGIONS, size=n, p=vocab.REGION_WEIGHTS)
    others = np.array(vocab.FITNESS_WEIGHTS[1:]) / sum(vocab.FITNESS_WEIGHTS[1:])
    level = np.where(rng.random(n) < shift.beginner_share, 0, 1 + rng.choice(2, size=n, p=others))
    goals = [
        list(rng.choice(vocab.GOALS, size=int(rng.integers(1, 3)), replace=False)) for _ in range(n)
    ]
    alpha = np.full(len(vocab.ALL_CATEGORIES), BASE_TASTE_ALPHA)
    alpha[-1] = SHIFT_TRENDING_ALPHA
    cat_taste = rng.dirichlet(alpha, size=n)
    vec = cat_taste @ cat_vecs + 0.35 * rng.normal(size=(n, DIM))
    # New-year resolutions: nobody in the influx is dormant (yet).
    activity = np.clip(rng.beta(3.0, 3.0, size=n), 0.15, 0.95)
    offsets = np.array([vocab.REGION_TIMEZONES[r][1] for r in region], dtype=int)
    platform = rng.choice(vocab.PLATFORMS, size=n, p=vocab.PLATFORM_WEIGHTS)
    opted_out = rng.random(n) < 0.12
    ids = np.array([f"usr_{p.n_users * 3 + i:07d}" for i in rng.permutation(n * 3)[:n]], dtype=str)
    return Users(
        ids, signup, region, level, goals, cat_taste, vec, activity, offsets, platform, opted_out
    )


def make_trending_items(
    p: WorldParams,
    shift: ShiftParams,
    rng: np.random.Generator,
    cat_vecs: np.ndarray,
    id_offset: int,
) -> Items:
    """Items of ``vocab.TRENDING_CATEGORY``, published during the shift only.

    Mostly beginner or intermediate, low or medium intensity; ``cat_vecs`` has one row per
    ``vocab.ALL_CATEGORIES``.
    """
    n = shift.n_trending_items_per_day(p.new_items_per_day) * shift.days
    start = np.datetime64(shift.start_date(p.end_date).isoformat(), "s")
    published = start + rng.integers(0, shift.days * 86400, size=n).astype("timedelta64[s]")
    type_ = rng.choice(vocab.ITEM_TYPES, size=n, p=vocab.TRENDING_ITEM_TYPE_WEIGHTS)
    category = np.full(n, len(vocab.ALL_CATEGORIES) - 1)
    difficulty = rng.choice(3, size=n, p=vocab.TRENDING_DIFFICULTY_WEIGHTS)
    intensity = np.clip(np.round(difficulty - 0.3 + rng.normal(0, 0.5, size=n)), 0, 2).astype(int)
    duration = make_durations(type_, rng)
    equipment = rng.choice(("none", "mat"), size=n, p=(0.85, 0.15))
    tags = [
        list(
            rng.choice(
                vocab.CATEGORY_TAGS[vocab.TRENDING_CATEGORY],
                size=int(rng.integers(2, 4)),
                replace=False,
            )
        )
        for _ in range(n)
    ]
    title = np.array(
        [
            f"{rng.choice(vocab.TITLE_WORDS)} {vocab.TRENDING_CATEGORY.title()} {t.title()}"
            for t in type_
        ],
        dtype=str,
    )
    return finish_items(
        rng,
        cat_vecs,
        id_offset,
        type_,
        category,
        difficulty,
        intensity,
        duration,
        equipment,
        tags,
        title,
        published,
    )
