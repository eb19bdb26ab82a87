"""Which validation design picks the blend of retrievers that scores best on test (issue 18)?

A side study on MovieLens 100K with the reference implementations of ``public_data_bench.py``
(not the project's pipeline: no two-tower source, no guardrails, no cold weights). For each
outer split it scores all 15 weighted reciprocal-rank fusions of ALS, EASE and popularity
(weights in steps of 0.25) on the test part, and asks which one each validation design would
have picked: today's (an inner held-out, then a validation carve, graded relevance, half the
users), and alternatives (no inner held-out, binary relevance, several carves averaged, other
shares). About 15 s per outer seed here:

    .venv/bin/python benchmarks/blend_choice_study.py --seeds 42,43,44 --out /tmp/blend.json

Outer split: public_data_bench.stratified_split(0.75, seed). TEST = the 25%, scored with the
benchmark's protocol (top 10, train items removed, only train items ranked, binary relevance,
every test user; pdb.ranking_metrics). Validation carves follow the project's
features/training.py::_hold_out_pairs rule (users and items in str-sorted order, per user
k = min(n-1, max(1, round(share*n))) drawn with rng.choice, users with < 2 items skipped).
Validation NDCG uses fitpulse_orchestration.evaluation.metrics.ndcg_at_k (gain 2^g - 1).
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import itertools
import json
import sys
import time

import numpy as np
import pandas as pd
import public_data_bench as pdb
import scipy.sparse as sp
from scipy.stats import kendalltau, spearmanr

from fitpulse_orchestration.evaluation.metrics import ndcg_at_k
from fitpulse_orchestration.evaluation.selection import split_users

POOL = 100
RRF_K = 10.0
ALS_POINT = pdb.AlsPoint(18, 1.317, 3.765)
ALS_SEED = 42
EASE_LAMBDA = 500.0
SOURCES = ("als", "ease", "popular")
WEIGHTS = [
    w for w in itertools.product([0.0, 0.25, 0.5, 0.75, 1.0], repeat=3) if abs(sum(w) - 1.0) < 1e-9
]
assert len(WEIGHTS) == 15


def label(w) -> str:
    return " + ".join(f"{s} {x:g}" for s, x in zip(SOURCES, w, strict=True) if x > 0)


def log(msg: str) -> None:
    print(f"[blend-study {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- retrieval lists and blends


def top_n(scores: np.ndarray, exclude: sp.csr_matrix, candidates: np.ndarray, n: int) -> np.ndarray:
    """Best n item indices per row (ties: lower item index), excluded / non-candidates removed."""
    scores = np.array(scores, dtype=np.float64)
    scores[:, ~candidates] = -np.inf
    r, c = exclude.nonzero()
    scores[r, c] = -np.inf
    part = np.argpartition(-scores, n, axis=1)[:, :n]
    ps = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -ps), axis=1)
    return np.take_along_axis(part, order, axis=1)


def source_lists(x: sp.csr_matrix, users: np.ndarray) -> dict[str, np.ndarray]:
    """Top-100 lists of each source for ``users`` (fit on ``x``; x's items excluded)."""
    candidates = np.asarray(x.sum(axis=0)).ravel() > 0
    ex = x[users]
    als = pdb.als_scorer(x, ALS_POINT, ALS_SEED)
    b = pdb.ease_weights(x, EASE_LAMBDA)
    pop = pdb.popularity_scorer(x)
    return {
        "als": top_n(als(users), ex, candidates, POOL),
        "ease": top_n(np.asarray(x[users] @ b), ex, candidates, POOL),
        "popular": top_n(np.array(pop(users)), ex, candidates, POOL),
    }


def blend_top10(lists: dict[str, np.ndarray], w, n_items: int) -> np.ndarray:
    n_users = lists["als"].shape[0]
    score = np.zeros((n_users, n_items))
    rows = np.arange(n_users)[:, None]
    contrib = 1.0 / (RRF_K + np.arange(POOL))[None, :]
    for s, ws in zip(SOURCES, w, strict=True):
        if ws > 0:
            np.add.at(score, (np.broadcast_to(rows, lists[s].shape), lists[s]), ws * contrib)
    # pool = union of the lists; items outside it cannot enter (score 0 with -1 guard)
    in_pool = np.zeros((n_users, n_items), dtype=bool)
    for s in SOURCES:
        in_pool[np.broadcast_to(rows, lists[s].shape), lists[s]] = True
    score[~in_pool] = -1.0
    part = np.argpartition(-score, 10, axis=1)[:, :10]
    ps = np.take_along_axis(score, part, axis=1)
    order = np.lexsort((part, -ps), axis=1)
    return np.take_along_axis(part, order, axis=1)


# ----------------------------------------------------------------- project-style carving


def carve(pairs: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """The project's _hold_out_pairs('user_random') on (user, item) rows: returns carved rows."""
    p = pairs.assign(us=pairs["user"].astype(str), its=pairs["item"].astype(str))
    p = p.sort_values(["us", "its"], kind="stable")
    rng = np.random.default_rng(seed)
    out = []
    for _, g in p.groupby("us", sort=True):
        n = len(g)
        if n < 2:
            continue
        k = min(n - 1, max(1, round(share * n)))
        out.append(g.index.to_numpy()[rng.choice(n, size=k, replace=False)])
    return pairs.loc[np.concatenate(out)]


def to_matrix(df: pd.DataFrame, enc: pdb.Encoded) -> sp.csr_matrix:
    u = np.searchsorted(enc.users, df["user"].to_numpy())
    i = np.searchsorted(enc.items, df["item"].to_numpy())
    x = sp.csr_matrix((np.ones(len(u)), (u, i)), shape=enc.x.shape, dtype=np.float64)
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def grade(r: float) -> int:
    return 3 if r >= 5 else 2 if r >= 4 else 1


def relevance(val: pd.DataFrame, enc: pdb.Encoded, graded: bool) -> dict[int, dict[int, int]]:
    u = np.searchsorted(enc.users, val["user"].to_numpy())
    i = np.searchsorted(enc.items, val["item"].to_numpy())
    out: dict[int, dict[int, int]] = {}
    for uu, ii, r in zip(u.tolist(), i.tolist(), val["rating"].tolist(), strict=True):
        g = grade(r) if graded else 1
        d = out.setdefault(uu, {})
        d[ii] = max(d.get(ii, 0), g)
    return out


# ----------------------------------------------------------------- one validation carve


class Carve:
    """Fit part -> source lists for validation users; per-weighting per-user NDCG cached."""

    def __init__(self, enc, train, heldout_share, val_share, seed_h, seed_v):
        pairs = train[["user", "item", "rating"]]
        rest = pairs
        self.heldout = None
        if heldout_share:
            self.heldout = carve(pairs, heldout_share, seed_h)
            rest = pairs.drop(self.heldout.index)
        self.val = carve(rest, val_share, seed_v)
        fit = rest.drop(self.val.index)
        self.fit_n = len(fit)
        x = to_matrix(fit, enc)
        self.users = np.array(sorted(set(np.searchsorted(enc.users, self.val["user"]).tolist())))
        t0 = time.perf_counter()
        lists = source_lists(x, self.users)
        self.top = {w: blend_top10(lists, w, x.shape[1]) for w in WEIGHTS}
        self.rel = {g: relevance(self.val, enc, g) for g in (True, False)}
        self.enc = enc
        self.cache: dict = {}
        log(
            f"  carve h={heldout_share} v={val_share} seeds=({seed_h},{seed_v}): fit "
            f"{self.fit_n} ratings, {len(self.val)} validation pairs, "
            f"{time.perf_counter() - t0:.1f}s"
        )

    def per_user(self, w, graded: bool) -> dict[int, float]:
        key = (w, graded)
        if key not in self.cache:
            rel = self.rel[graded]
            self.cache[key] = {
                int(u): ndcg_at_k(row.tolist(), rel[int(u)], 10)
                for u, row in zip(self.users, self.top[w], strict=True)
            }
        return self.cache[key]

    def vec(self, w, graded: bool, users=None) -> np.ndarray:
        d = self.per_user(w, graded)
        us = sorted(d) if users is None else sorted(users)
        return np.array([d[u] for u in us])


# ----------------------------------------------------------------- one outer seed


def run_seed(seed: int, ratings: pd.DataFrame) -> dict:
    log(f"outer seed {seed}")
    train, test = pdb.stratified_split(ratings, 0.75, seed)
    enc = pdb.encode(train, test)
    t0 = time.perf_counter()
    lists = source_lists(enc.x, enc.eval_users)
    test_ndcg = {}
    for w in WEIGHTS:
        top = blend_top10(lists, w, enc.x.shape[1])
        recs = {int(u): row.tolist() for u, row in zip(enc.eval_users, top, strict=True)}
        test_ndcg[w] = pdb.ranking_metrics(recs, enc.truth, enc.eval_users.tolist())["ndcg@10"]
    log(f"  test lists + 15 blends {time.perf_counter() - t0:.1f}s")

    today = Carve(enc, train, 0.15, 0.15, 42, 43)  # project default SplitParams.seed = 42
    _, half_b = split_users([str(u) for u in enc.users[today.users]], seed=7)
    index_of = {str(u): i for i, u in enumerate(enc.users)}
    half_b_idx = [index_of[s] for s in half_b]
    c3 = Carve(enc, train, 0.0, 0.15, 0, 43)
    c_multi = [Carve(enc, train, 0.0, 0.15, 0, s) for s in (1, 2, 3)]
    c_five = c_multi + [Carve(enc, train, 0.0, 0.15, 0, s) for s in (4, 5)]
    c10 = [Carve(enc, train, 0.0, 0.10, 0, s) for s in (43, 1, 2)]
    c25 = Carve(enc, train, 0.0, 0.25, 0, 43)

    def avg(carves, graded):
        # same users in every carve (all with >= 2 train items): average per user
        return lambda w: np.mean([c.vec(w, graded) for c in carves], axis=0)

    designs = {
        "1 today: heldout .15 + val .15, graded, half B": lambda w: today.vec(w, True, half_b_idx),
        "2 today, all users": lambda w: today.vec(w, True),
        "2b today, all users, binary": lambda w: today.vec(w, False),
        "3 no heldout, val .15, graded": lambda w: c3.vec(w, True),
        "4 no heldout, val .15, binary": lambda w: c3.vec(w, False),
        "5 no heldout, val .15, graded, 3 carves": avg(c_multi, True),
        "5b no heldout, val .15, binary, 3 carves": avg(c_multi, False),
        "5c no heldout, val .15, binary, 5 carves": avg(c_five, False),
        "6a no heldout, val .10, graded, 3 carves": avg(c10, True),
        "6b no heldout, val .10, binary, 3 carves": avg(c10, False),
        "6c no heldout, val .25, graded": lambda w: c25.vec(w, True),
        "6d no heldout, val .25, binary": lambda w: c25.vec(w, False),
    }
    per_user = {name: {w: f(w) for w in WEIGHTS} for name, f in designs.items()}
    tables = {n: {w: float(v.mean()) for w, v in d.items()} for n, d in per_user.items()}
    simplest = {n: parsimonious(d) for n, d in per_user.items()}
    # paired standard error of (pick - runner-up) on validation users
    margin_se = {}
    for n, d in per_user.items():
        r = sorted(WEIGHTS, key=lambda w: -tables[n][w])
        diff = d[r[0]] - d[r[1]]
        margin_se[n] = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    als_noise = {}
    if seed == 42:
        global ALS_SEED
        keep = ALS_SEED
        for als_seed in (0, 1, 2):
            ALS_SEED = als_seed
            lists = source_lists(enc.x, enc.eval_users)
            for w in WEIGHTS:
                top = blend_top10(lists, w, enc.x.shape[1])
                recs = {int(u): row.tolist() for u, row in zip(enc.eval_users, top, strict=True)}
                als_noise[(als_seed, w)] = pdb.ranking_metrics(
                    recs, enc.truth, enc.eval_users.tolist()
                )["ndcg@10"]
        ALS_SEED = keep
    fit_sizes = {
        "today": today.fit_n,
        "no heldout .15": c3.fit_n,
        "no heldout .10": c10[0].fit_n,
        "no heldout .25": c25.fit_n,
        "train part": len(train),
        "all": len(ratings),
    }
    return {
        "seed": seed,
        "test": test_ndcg,
        "tables": tables,
        "fit_sizes": fit_sizes,
        "margin_se": margin_se,
        "als_noise": als_noise,
        "simplest": simplest,
    }


def parsimonious(per_user: dict) -> tuple:
    """The simplest weighting no richer one beats beyond noise on the validation users.

    The best single source first; then the best weighting of two sources replaces it only when
    its paired lift over it has a 95% lower bound above 0 (normal approximation over users);
    then the best of three likewise over the pick so far.
    """

    def size(w) -> int:
        return sum(x > 0 for x in w)

    pick = max((w for w in WEIGHTS if size(w) == 1), key=lambda w: per_user[w].mean())
    for k in (2, 3):
        best = max((w for w in WEIGHTS if size(w) == k), key=lambda w: per_user[w].mean())
        lift = per_user[best] - per_user[pick]
        if lift.mean() - 1.96 * lift.std(ddof=1) / np.sqrt(len(lift)) > 0:
            pick = best
    return pick


def report(res: dict, full_for: tuple[str, ...]) -> None:
    seed, test, tables = res["seed"], res["test"], res["tables"]
    oracle = max(test, key=test.get)
    print(f"\n## Outer seed {seed}\n")
    print("fit sizes (ratings): " + ", ".join(f"{k} {v}" for k, v in res["fit_sizes"].items()))
    print(f"\nTEST NDCG@10 of every weighting (oracle best: {label(oracle)} {test[oracle]:.4f})\n")
    print("| weighting (als, ease, pop) | test NDCG@10 |")
    print("|---|---|")
    for w in sorted(WEIGHTS, key=lambda w: -test[w]):
        print(f"| {label(w)} | {test[w]:.4f} |")
    print(
        "\n| design | picks | val NDCG of pick | val margin to 2nd | TEST NDCG@10 of pick "
        "| regret vs oracle | Spearman val~test | Kendall |"
    )
    print("|---|---|---|---|---|---|---|---|")
    se = res["margin_se"]
    for name, tab in tables.items():
        ranked = sorted(WEIGHTS, key=lambda w: -tab[w])
        pick = ranked[0]
        xs = [tab[w] for w in WEIGHTS]
        ys = [test[w] for w in WEIGHTS]
        rho = spearmanr(xs, ys).statistic
        tau = kendalltau(xs, ys).statistic
        print(
            f"| {name} | {label(pick)} | {tab[pick]:.4f} | "
            f"{tab[pick] - tab[ranked[1]]:.4f} (SE {se[name]:.4f}) | "
            f"{test[pick]:.4f} | {test[oracle] - test[pick]:.4f} | {rho:.2f} | {tau:.2f} |"
        )
    if res["als_noise"]:
        print("\nTEST NDCG@10 with other ALS random_state (test-side noise; main runs use 42)\n")
        print("| weighting | ALS seed 42 | 0 | 1 | 2 |")
        print("|---|---|---|---|---|")
        for w in sorted(WEIGHTS, key=lambda w: -test[w])[:9]:
            print(
                f"| {label(w)} | {test[w]:.4f} | "
                + " | ".join(f"{res['als_noise'][(s, w)]:.4f}" for s in (0, 1, 2))
                + " |"
            )
    for name in full_for:
        tab = tables[name]
        print(f"\nFull table, design {name!r} (sorted by validation)\n")
        print("| weighting | val NDCG@10 | test NDCG@10 |")
        print("|---|---|---|")
        for w in sorted(WEIGHTS, key=lambda w: -tab[w]):
            print(f"| {label(w)} | {tab[w]:.4f} | {test[w]:.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="42,43,44", help="outer split seeds, comma-separated")
    ap.add_argument("--out", default=None, help="write the raw numbers to this JSON file")
    ap.add_argument(
        "--als",
        default=None,
        help="ALS point factors,regularization,alpha (default: 18,1.317,3.765)",
    )
    args = ap.parse_args()
    if args.als:
        global ALS_POINT
        f, r, a = args.als.split(",")
        ALS_POINT = pdb.AlsPoint(int(f), float(r), float(a))
    ratings = pdb.load_ml100k()
    results = []
    for s in [int(x) for x in args.seeds.split(",")]:
        res = run_seed(s, ratings)
        results.append(res)
        report(
            res,
            (
                "1 today: heldout .15 + val .15, graded, half B",
                "3 no heldout, val .15, graded",
                "4 no heldout, val .15, binary",
            ),
        )
        sys.stdout.flush()
    print(
        "\n## Popularity's pull: val NDCG(best blend with popular > 0) - val NDCG(best without),"
        " relative to the best-without (percent); TEST row for reference\n"
    )
    print("| design | " + " | ".join(f"seed {r['seed']}" for r in results) + " |")
    print("|---|" + "---|" * len(results))

    def gap(tab):
        a = max(tab[w] for w in WEIGHTS if w[2] > 0)
        b = max(tab[w] for w in WEIGHTS if w[2] == 0)
        return 100.0 * (a - b) / b

    for name in results[0]["tables"]:
        print(
            f"| {name} | " + " | ".join(f"{gap(r['tables'][name]):+.2f}%" for r in results) + " |"
        )
    print("| TEST | " + " | ".join(f"{gap(r['test']):+.2f}%" for r in results) + " |")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(
                [
                    {
                        "seed": r["seed"],
                        "test": {label(w): v for w, v in r["test"].items()},
                        "tables": {
                            n: {label(w): v for w, v in t.items()} for n, t in r["tables"].items()
                        },
                        "margin_se": r["margin_se"],
                        "fit_sizes": r["fit_sizes"],
                    }
                    for r in results
                ],
                fh,
                indent=1,
            )
    if len(results) > 1:
        print("\n## Across outer seeds: TEST NDCG@10 of each design's pick (oracle last)\n")
        names = list(results[0]["tables"])
        print("| design | " + " | ".join(f"seed {r['seed']}" for r in results) + " | mean |")
        print("|---|" + "---|" * (len(results) + 1))
        for name in names:
            vals = []
            cells = []
            for r in results:
                tab = r["tables"][name]
                pick = max(WEIGHTS, key=lambda w: tab[w])
                vals.append(r["test"][pick])
                cells.append(f"{r['test'][pick]:.4f} ({label(pick)})")
            print(f"| {name} | " + " | ".join(cells) + f" | {np.mean(vals):.4f} |")
        for name in names:
            vals = [r["test"][r["simplest"][name]] for r in results]
            cells = [
                f"{r['test'][r['simplest'][name]]:.4f} ({label(r['simplest'][name])})"
                for r in results
            ]
            print(
                f"| {name}, simplest not beaten | "
                + " | ".join(cells)
                + f" | {np.mean(vals):.4f} |"
            )
        cells = []
        vals = []
        for r in results:
            o = max(WEIGHTS, key=lambda w: r["test"][w])
            vals.append(r["test"][o])
            cells.append(f"{r['test'][o]:.4f} ({label(o)})")
        print("| oracle | " + " | ".join(cells) + f" | {np.mean(vals):.4f} |")
        for fixed in [(0.5, 0.5, 0.0), (0.0, 1.0, 0.0), (0.25, 0.75, 0.0), (0.75, 0.0, 0.25)]:
            fixed = tuple(float(v) for v in fixed)
            vals = [r["test"][fixed] for r in results]
            print(
                f"| fixed {label(fixed)} | "
                + " | ".join(f"{v:.4f}" for v in vals)
                + f" | {np.mean(vals):.4f} |"
            )


if __name__ == "__main__":
    main()
