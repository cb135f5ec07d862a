"""k selection, fitting and stable segment-id matching (scikit-learn + scipy)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)

SEED = 20_240_601
SELECTION_SAMPLE = 10_000  # rows each candidate k is fitted on
# Silhouette is O(n^2): 5 k rows cost ~0.3 s per k on 2 busy cores, 10 k ~2 s;
# its sampling error at 5 k (~0.005) is far below the score gaps k selection acts on.
SILHOUETTE_SAMPLE = 5_000
MINIBATCH_FIT_SAMPLE = 200_000  # above the threshold: fit on this many, predict all
KMEANS_N_INIT = 10
MINIBATCH_N_INIT = 3
# k is chosen by a consensus of three internal criteria (silhouette, higher is
# better; Calinski-Harabasz, higher; Davies-Bouldin, lower), each min-max
# normalised over the candidates and averaged. Silhouette alone leans to
# neighbouring k within its sampling noise on mixed count/share data (it picked
# one k too many on zone2 set 1); the three agreed with the planted k on the
# sample generator and both zone2 sets (docs/segments.md).
# Keep the previous run's k unless another k scores clearly better: smaller
# differences would churn every segment for no real change in structure.
K_HYSTERESIS = 0.05
# Warm start from last run's centroids unless it is this much worse (inertia).
WARM_START_TOLERANCE = 0.01
# A new centroid keeps an old id if it is closer to it than this fraction of
# the distance to its nearest neighbouring centroid (old or new).
MATCH_RATIO = 0.5


@dataclass
class FitResult:
    model: KMeans | MiniBatchKMeans
    labels: np.ndarray
    centroids: np.ndarray
    inertia: float
    algorithm: str
    warm_started: bool


def stable_sample(customer_ids: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n customers with the smallest id hash, in row order.

    Hash-based rather than positional random sampling: adding or changing a
    few customers leaves almost the whole sample unchanged, which keeps k
    selection and the fit stable between runs.
    """
    if len(customer_ids) <= n:
        return np.arange(len(customer_ids))
    hashes = pd.util.hash_array(np.asarray(customer_ids, dtype=object))
    idx = np.argpartition(hashes, n - 1)[:n]
    return np.sort(idx)


# Two segments need three distinct points (k <= distinct - 1, see select_k).
MIN_DISTINCT = 3


class NotEnoughToCluster(ValueError):
    """The data cannot be split into segments yet (too few distinct customers).

    Deterministic: the same data gives the same answer, so the caller skips the
    run and keeps the previous segments instead of failing (and retrying).
    """


def _n_distinct(X: np.ndarray) -> int:
    return len(np.unique(X, axis=0))


def select_k(
    X_sample: np.ndarray,
    sample_ids: np.ndarray,
    k_min: int,
    k_max: int,
    prev_k: int | None,
    prev_centroids: np.ndarray | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Fit each k on the sample and score it; return the choice and all candidates.

    Each candidate records silhouette, Calinski-Harabasz, Davies-Bouldin, their
    normalised mean ``score`` (the rule: highest wins, then kept at the previous
    k if that is within ``K_HYSTERESIS``) and split-half ``stability``.

    For the previous run's k, last run's centroids (mapped into this run's
    space) compete with the fresh fits: a few random restarts can land in a
    worse local optimum and make k flip although the structure did not change.
    """
    k_max = min(k_max, len(X_sample) - 1, _n_distinct(X_sample) - 1)
    if k_max < 2:
        raise NotEnoughToCluster(
            f"{len(X_sample)} sampled customers have {_n_distinct(X_sample)} distinct feature "
            f"vector(s); at least {MIN_DISTINCT} are needed for 2 segments"
        )
    k_min = min(k_min, k_max)
    sil_idx = stable_sample(sample_ids, SILHOUETTE_SAMPLE)
    halves = _split_halves(sample_ids)
    candidates: list[dict[str, Any]] = []
    for k in range(k_min, k_max + 1):
        km = KMeans(n_clusters=k, n_init=3, random_state=SEED).fit(X_sample)
        if k == prev_k and prev_centroids is not None and len(prev_centroids) == k:
            warm = KMeans(n_clusters=k, init=prev_centroids, n_init=1).fit(X_sample)
            km = warm if warm.inertia_ < km.inertia_ else km
        labels = km.labels_[sil_idx]
        sil = silhouette(X_sample[sil_idx], labels)
        several = len(np.unique(km.labels_)) > 1
        candidates.append(
            {
                "k": k,
                "silhouette": sil,
                "inertia": float(km.inertia_),
                "calinski_harabasz": float(calinski_harabasz_score(X_sample, km.labels_))
                if several
                else 0.0,
                "davies_bouldin": float(davies_bouldin_score(X_sample, km.labels_))
                if several
                else None,  # undefined for one cluster (JSON has no infinity)
                # Reported, not used by the rule: production has no truth, so this
                # is how a reader sees whether a k is reproducible.
                "stability": split_half_stability(X_sample, halves, k),
            }
        )
    _consensus_scores(candidates)
    top = max(c["score"] for c in candidates)
    # Round before comparing: bit-level float noise must not decide a tie,
    # which goes to the largest k (splitting a group keeps both halves usable).
    chosen = max(c["k"] for c in candidates if round(c["score"] - top, 9) >= 0)
    if prev_k is not None:
        prev = next((c for c in candidates if c["k"] == prev_k), None)
        if prev is not None and round(prev["score"] - (top - K_HYSTERESIS), 9) >= 0:
            chosen = prev_k
    for c in candidates:
        c["chosen"] = c["k"] == chosen
    return chosen, candidates


def _consensus_scores(candidates: list[dict[str, Any]]) -> None:
    """Set ``score`` in place: mean of the min-max normalised criteria (1 = best on all)."""

    def normalised(values: list[float | None], higher_is_better: bool) -> list[float]:
        finite = [v for v in values if v is not None and math.isfinite(v)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
        out = []
        for v in values:
            if v is None or not math.isfinite(v):
                out.append(0.0)  # undefined counts as the worst
            elif hi - lo <= 1e-12:
                out.append(1.0)
            else:
                frac = (v - lo) / (hi - lo)
                out.append(frac if higher_is_better else 1.0 - frac)
        return out

    parts = [
        normalised([c["silhouette"] for c in candidates], True),
        normalised([c["calinski_harabasz"] for c in candidates], True),
        normalised([c["davies_bouldin"] for c in candidates], False),
    ]
    for i, c in enumerate(candidates):
        c["score"] = float(np.mean([p[i] for p in parts]))


def _split_halves(sample_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of the sample by id hash (the same customers every run)."""
    odd = pd.util.hash_array(np.asarray(sample_ids, dtype=object)) % 2 == 1
    return np.flatnonzero(~odd), np.flatnonzero(odd)


def split_half_stability(
    X: np.ndarray, halves: tuple[np.ndarray, np.ndarray], k: int
) -> float:
    """ARI between k-means fitted on each half, both predicting the whole sample.

    1.0: the same k finds the same segments in two independent halves of the
    customers; low values mean this k splits noise. Production has no truth,
    so this is what tells a reader whether a k is reproducible.
    """
    a, b = halves
    if min(len(a), len(b)) <= k:
        return 0.0
    fits = [KMeans(n_clusters=k, n_init=2, random_state=SEED).fit(X[h]) for h in halves]
    return float(adjusted_rand_score(fits[0].predict(X), fits[1].predict(X)))


def silhouette(X: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette, or -1 when it is undefined (a single cluster in the sample)."""
    if len(np.unique(labels)) < 2 or len(labels) < 3:
        return -1.0
    return float(silhouette_score(X, labels))


def _inertia(X: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    total = 0.0
    # Chunked so 1 M rows never materialise an n x d difference matrix at once.
    for start in range(0, len(X), 200_000):
        diff = X[start : start + 200_000] - centroids[labels[start : start + 200_000]]
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


def fit_clusters(
    X: np.ndarray,
    k: int,
    *,
    customer_ids: np.ndarray,
    minibatch_threshold: int,
    init: np.ndarray | None = None,
    assign: Callable[[KMeans], np.ndarray] | None = None,
) -> FitResult:
    """KMeans below the threshold, MiniBatchKMeans (on a sample, Lloyd-polished) above.

    ``init``: previous centroids mapped into this run's scaled space. A warm
    start is tried next to a fresh fit and kept unless clearly worse, so
    segments only move when the data says so.

    ``assign``: labels every row of ``X`` with the chosen model (the engine's
    scoring step, :mod:`segment_warehouse.clustering.scoring`); by default
    ``model.predict(X)`` here.
    """
    big = len(X) > minibatch_threshold
    fit_idx = stable_sample(customer_ids, MINIBATCH_FIT_SAMPLE) if big else np.arange(len(X))
    X_fit = X[fit_idx]

    def lloyd(init_arg: Any, n_init: int) -> KMeans:
        # tol=0: iterate until no label changes (a true fixed point), so a warm
        # start from these centroids on unchanged data reproduces them exactly.
        return KMeans(
            n_clusters=k, init=init_arg, n_init=n_init, tol=0.0, max_iter=500, random_state=SEED
        ).fit(X_fit)

    if big:
        # MiniBatchKMeans finds the centroids fast; a Lloyd pass on the same
        # sample then settles them on an exact fixed point, so a warm start
        # from them next time (same data) reproduces them instead of drifting.
        mbk = MiniBatchKMeans(
            n_clusters=k,
            n_init=MINIBATCH_N_INIT,
            batch_size=4096,
            max_iter=50,
            random_state=SEED,
        ).fit(X_fit)
        fresh = lloyd(mbk.cluster_centers_, 1)
    else:
        fresh = lloyd("k-means++", KMEANS_N_INIT)
    model, warm = fresh, False
    if init is not None and init.shape == (k, X.shape[1]):
        warm_model = lloyd(init, 1)
        if warm_model.inertia_ <= fresh.inertia_ * (1 + WARM_START_TOLERANCE):
            model, warm = warm_model, True
    labels = (assign(model) if assign is not None else model.predict(X)).astype(np.int64)
    centroids = np.asarray(model.cluster_centers_, dtype=np.float64)
    return FitResult(
        model=model,
        labels=labels,
        centroids=centroids,
        inertia=_inertia(X, centroids, labels),
        algorithm="MiniBatchKMeans" if big else "KMeans",
        warm_started=warm,
    )


def match_segment_ids(
    new_centroids: np.ndarray,
    sizes: np.ndarray,
    previous: dict[int, np.ndarray],
    next_id: int,
) -> dict[int, int]:
    """Map cluster label -> segment id, keeping ids of matching previous segments.

    Hungarian assignment on Euclidean distance (same scaled space); a pair is
    accepted only when the distance is small relative to how far apart the
    centroids are, so a genuinely new cluster gets a fresh id (max id + 1)
    instead of inheriting a meaning it does not have.
    """
    k = len(new_centroids)
    mapping: dict[int, int] = {}
    if previous:
        prev_ids = sorted(previous)
        prev = np.vstack([previous[i] for i in prev_ids])
        cost = cdist(new_centroids, prev)
        everything = np.vstack([new_centroids, prev])
        spread = cdist(everything, everything)
        np.fill_diagonal(spread, np.inf)
        for i, j in zip(*linear_sum_assignment(cost), strict=True):
            # nearest neighbour of either centroid within its own run
            nn = min(spread[i, :k].min(), spread[k + j, k:].min())
            if cost[i, j] <= MATCH_RATIO * nn:
                mapping[int(i)] = prev_ids[j]
    # Unmatched clusters get new ids, largest first, so ids read by importance.
    for label in sorted(range(k), key=lambda lab: (-int(sizes[lab]), lab)):
        if label not in mapping:
            mapping[label] = next_id
            next_id += 1
    return mapping
