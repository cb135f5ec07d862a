"""k selection, fitting and stable segment-id matching (scikit-learn + scipy)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import silhouette_score

SEED = 20_240_601
SELECTION_SAMPLE = 10_000  # rows each candidate k is fitted on
# Silhouette is O(n^2): 5 k rows cost ~0.3 s per k on 2 busy cores, 10 k ~2 s;
# its sampling error at 5 k (~0.005) is below K_HYSTERESIS.
SILHOUETTE_SAMPLE = 5_000
MINIBATCH_FIT_SAMPLE = 200_000  # above the threshold: fit on this many, predict all
KMEANS_N_INIT = 10
MINIBATCH_N_INIT = 3
# Keep the previous run's k unless another k is clearly better: silhouette
# differences this small are sampling noise and would churn every segment.
K_HYSTERESIS = 0.01
# Silhouettes within this of the best are a tie, and the tie goes to the
# largest such k: merging two real groups loses a segment (and silhouette
# barely notices), while splitting one keeps both halves meaningful.
K_TIE = 0.01
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
    """Fit each k on the sample, score it by silhouette; return the choice and all candidates.

    The choice is the largest k whose silhouette is within ``K_TIE`` of the best
    (then kept at the previous k if that is within ``K_HYSTERESIS``).

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
    candidates: list[dict[str, Any]] = []
    for k in range(k_min, k_max + 1):
        km = KMeans(n_clusters=k, n_init=3, random_state=SEED).fit(X_sample)
        if k == prev_k and prev_centroids is not None and len(prev_centroids) == k:
            warm = KMeans(n_clusters=k, init=prev_centroids, n_init=1).fit(X_sample)
            km = warm if warm.inertia_ < km.inertia_ else km
        labels = km.labels_[sil_idx]
        sil = silhouette(X_sample[sil_idx], labels)
        candidates.append({"k": k, "silhouette": sil, "inertia": float(km.inertia_)})
    top = max(c["silhouette"] for c in candidates)
    # Round before comparing: bit-level float noise must not decide a tie.
    tied = [c["k"] for c in candidates if round(c["silhouette"] - (top - K_TIE), 9) >= 0]
    chosen = max(tied)
    if prev_k is not None:
        prev = next((c for c in candidates if c["k"] == prev_k), None)
        if prev is not None and round(prev["silhouette"] - (top - K_HYSTERESIS), 9) >= 0:
            chosen = prev_k
    for c in candidates:
        c["chosen"] = c["k"] == chosen
    return chosen, candidates


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
) -> FitResult:
    """KMeans below the threshold, MiniBatchKMeans (on a sample, Lloyd-polished) above.

    ``init``: previous centroids mapped into this run's scaled space. A warm
    start is tried next to a fresh fit and kept unless clearly worse, so
    segments only move when the data says so.
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
    labels = model.predict(X).astype(np.int64)
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
