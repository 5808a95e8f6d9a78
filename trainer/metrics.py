"""Evaluation metrics for embeddings: retrieval, k-NN classification, verification, linear probe.

Pure math on numpy arrays, with FAISS for neighbour search and torch for the linear probe; no I/O.
The k-NN vote itself is ``trainer.knn.vote``, which the service's ``/classify`` calls too, so the two
agree by construction (a test checks it end to end).

Conventions shared by every function here:

* ``cosine`` distance is ``1 - cos`` in ``[0, 2]``; a zero vector has cosine 0 with everything
  (distance 1) rather than NaN. ``euclidean`` is the plain (not squared) L2 distance.
* Neighbour lists are sorted by ``(distance, reference index)``. Exact ties only arise with
  duplicate points; when several tied candidates compete for the last place of a top-k list,
  FAISS decides which are kept (deterministically, but FAISS does not document the rule).
* Leave-one-out metrics (``precision_at_1``, ``map_at_r``) skip queries whose label occurs once,
  as pytorch-metric-learning's AccuracyCalculator does: such a query cannot be answered right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np
import torch

from trainer.knn import Weighting, vote

Distance = Literal["cosine", "euclidean"]

__all__ = [
    "Distance",
    "RocResult",
    "ThresholdResult",
    "calibrate_threshold",
    "evaluate_embeddings",
    "knn_accuracy",
    "knn_predict",
    "knn_search",
    "linear_probe_accuracy",
    "map_at_r",
    "operating_point",
    "pairwise_distance",
    "pca",
    "pca_2d",
    "precision_at_1",
    "verification_pairs",
    "verification_roc",
]

# Bound on the elements of any (rows x k) or (rows x dim) temporary, so memory stays flat on big sets.
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------- validation helpers


def _check_distance(distance: str) -> None:
    if distance not in ("cosine", "euclidean"):
        raise ValueError(f"distance must be 'cosine' or 'euclidean', got {distance!r}")


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """Float64 (n, d) view of ``x`` with n, d >= 1 and finite values."""
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty 2-D array (n, dim), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _same_dim(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{a_name} has dim {a.shape[1]} but {b_name} has dim {b.shape[1]}")


def _as_labels(y: np.ndarray, n: int, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array of length {n}, got shape {arr.shape}")
    return arr


def _as_scores(distances: np.ndarray, is_same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(distances, dtype=np.float64)
    s = np.asarray(is_same)
    if d.ndim != 1 or s.shape != d.shape:
        raise ValueError(f"distances and is_same must be 1-D of equal length, got {d.shape} and {s.shape}")
    if not np.isfinite(d).all():
        raise ValueError("distances contain NaN or infinite values")
    return d, s.astype(bool)


def _check_k(k: int, available: int, what: str) -> None:
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if k > available:
        raise ValueError(f"k={k} exceeds the {available} {what} available")


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero (cosine 0 to everything, not NaN)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


# --------------------------------------------------------------------------- distances and search


def pairwise_distance(a: np.ndarray, b: np.ndarray, distance: Distance) -> np.ndarray:
    """Full (len(a), len(b)) float64 distance matrix; the exact reference the FAISS paths approximate."""
    _check_distance(distance)
    a = _as_matrix(a, "a")
    b = _as_matrix(b, "b")
    _same_dim(a, b, "a", "b")
    if distance == "cosine":
        return np.clip(1.0 - _unit(a) @ _unit(b).T, 0.0, 2.0)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0))


def _paired_distance(a: np.ndarray, b: np.ndarray, distance: Distance) -> np.ndarray:
    """Row-wise distance between a[i] and b[i]; inputs already unit-normalised for cosine."""
    if distance == "cosine":
        return np.clip(1.0 - np.einsum("ij,ij->i", a, b), 0.0, 2.0)
    diff = a - b
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


def _faiss_ready(x: np.ndarray, distance: Distance) -> np.ndarray:
    """Normalise in float64 (for cosine), then hand FAISS the float32 C-contiguous copy it needs."""
    if distance == "cosine":
        x = _unit(x)
    return np.ascontiguousarray(x, dtype=np.float32)


def _build_index(ref32: np.ndarray, distance: Distance) -> faiss.Index:
    dim = ref32.shape[1]
    index = faiss.IndexFlatIP(dim) if distance == "cosine" else faiss.IndexFlatL2(dim)
    index.add(ref32)
    return index


def _search(
    index: faiss.Index,
    query32: np.ndarray,
    k: int,
    distance: Distance,
    self_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours; ``self_ids[i]`` is the reference row that query i must not return."""
    extra = 0 if self_ids is None else 1
    raw, idx = index.search(query32, int(k) + extra)
    # FAISS's squared L2 comes from |x|^2 + |y|^2 - 2xy, which can dip just below zero.
    dist = np.clip(1.0 - raw, 0.0, 2.0) if distance == "cosine" else np.sqrt(np.maximum(raw, 0.0))
    # FAISS orders exact ties arbitrarily (heap order); sort by (distance, index) for determinism.
    order = np.lexsort((idx, dist), axis=1)
    dist = np.take_along_axis(dist, order, axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    if self_ids is not None:
        # Drop the query's own row specifically: with duplicates it need not come first, and with
        # more than k duplicates it may be missing altogether, in which case the extra last one goes.
        drop = idx == self_ids[:, None]
        drop[~drop.any(axis=1), -1] = True
        keep = ~drop
        dist = dist[keep].reshape(len(idx), k)
        idx = idx[keep].reshape(len(idx), k)
    return dist.astype(np.float32, copy=False), idx.astype(np.int64, copy=False)


def knn_search(
    query: np.ndarray,
    ref: np.ndarray,
    k: int,
    distance: Distance,
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN with FAISS: float32 distances (n, k) and int64 reference indices (n, k).

    Cosine searches an inner-product index over unit vectors (distance ``1 - ip``); Euclidean an
    L2 index (distance ``sqrt`` of FAISS's squared distance). With ``exclude_self`` query row i
    *is* reference row i (same shape required) and is left out of its own neighbours.
    """
    _check_distance(distance)
    q = _as_matrix(query, "query")
    r = _as_matrix(ref, "ref")
    _same_dim(q, r, "query", "ref")
    if exclude_self:
        if q.shape != r.shape:
            raise ValueError(f"exclude_self needs query to be ref, got shapes {q.shape} and {r.shape}")
        _check_k(k, r.shape[0] - 1, "other reference points")
    else:
        _check_k(k, r.shape[0], "reference points")
    ref32 = _faiss_ready(r, distance)
    query32 = ref32 if exclude_self else _faiss_ready(q, distance)
    self_ids = np.arange(q.shape[0]) if exclude_self else None
    return _search(_build_index(ref32, distance), query32, k, distance, self_ids)


# --------------------------------------------------------------------------- k-NN classification


def knn_predict(
    neigh_labels: np.ndarray,
    neigh_dist: np.ndarray | None,
    weighting: Weighting = "uniform",
) -> np.ndarray:
    """Vote among each row's neighbours (columns sorted nearest first, as ``knn_search`` returns).

    ``uniform``: one vote per neighbour. ``distance``: a neighbour votes ``1/d``; when some
    neighbours sit at distance 0, only those vote (like scikit-learn). Ties in the vote go to
    the label with the smallest summed neighbour distance, then to the label that appears
    first in the row (the nearest). Deterministic given its inputs, so the service and the
    evaluation agree whenever they pass the same neighbour lists.
    """
    labels = np.asarray(neigh_labels)
    if labels.ndim != 2 or labels.shape[0] < 1 or labels.shape[1] < 1:
        raise ValueError(f"neigh_labels must be a non-empty 2-D array (n, k), got shape {labels.shape}")
    if weighting not in ("uniform", "distance"):
        raise ValueError(f"weighting must be 'uniform' or 'distance', got {weighting!r}")
    n, k = labels.shape
    if neigh_dist is None:
        if weighting == "distance":
            raise ValueError("weighting='distance' needs neigh_dist")
        dist = np.zeros((n, k))
    else:
        dist = np.asarray(neigh_dist, dtype=np.float64)
        if dist.shape != labels.shape:
            raise ValueError(f"neigh_dist has shape {dist.shape}, neigh_labels {labels.shape}")
        if not np.isfinite(dist).all():
            raise ValueError("neigh_dist contains NaN or infinite values")
        if weighting == "distance" and (dist < 0).any():
            raise ValueError("weighting='distance' needs non-negative distances")
    rows = labels.tolist()  # python scalars: the vote compares labels by value, as the service's do
    winners = [vote(row, d, weighting).label for row, d in zip(rows, dist.tolist(), strict=True)]
    return np.asarray(winners, dtype=labels.dtype)


def knn_accuracy(
    query_emb: np.ndarray,
    query_y: np.ndarray,
    ref_emb: np.ndarray,
    ref_y: np.ndarray,
    k: int,
    distance: Distance,
) -> float:
    """Accuracy of a uniform k-NN vote of queries (e.g. test) against a reference set (e.g. train)."""
    q = _as_matrix(query_emb, "query_emb")
    r = _as_matrix(ref_emb, "ref_emb")
    qy = _as_labels(query_y, q.shape[0], "query_y")
    ry = _as_labels(ref_y, r.shape[0], "ref_y")
    dist, idx = knn_search(q, r, k, distance)
    return float(np.mean(knn_predict(ry[idx], dist) == qy))


# --------------------------------------------------------------------------- retrieval (leave-one-out)


def _others_with_label(y: np.ndarray) -> np.ndarray:
    """R per sample: how many *other* samples share its label."""
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)] - 1


def precision_at_1(emb: np.ndarray, y: np.ndarray, distance: Distance) -> float:
    """Fraction of samples whose nearest other sample has their label (lone labels skipped)."""
    _check_distance(distance)
    x = _as_matrix(emb, "emb")
    y = _as_labels(y, x.shape[0], "y")
    rows = np.flatnonzero(_others_with_label(y) > 0)
    if rows.size == 0:
        raise ValueError("precision_at_1 needs at least one label that occurs twice")
    x32 = _faiss_ready(x, distance)
    _, idx = _search(_build_index(x32, distance), x32[rows], 1, distance, self_ids=rows)
    return float(np.mean(y[idx[:, 0]] == y[rows]))


def map_at_r(emb: np.ndarray, y: np.ndarray, distance: Distance) -> float:
    """MAP@R (Musgrave et al. 2020), leave-one-out within one set.

    For a query with R other samples of its label, retrieve its R nearest others; AP@R is the
    sum of precision@i over the correct positions i <= R, divided by R. Unlike recall-based
    scores it rewards putting *all* same-label samples first. Queries with R = 0 are skipped.
    """
    return _retrieval(emb, y, distance, "map_at_r")[1]


def _retrieval(emb: np.ndarray, y: np.ndarray, distance: Distance, caller: str) -> tuple[float, float]:
    """(precision@1, MAP@R) from one leave-one-out search: the nearest other sample is the first of the R."""
    _check_distance(distance)
    x = _as_matrix(emb, "emb")
    y = _as_labels(y, x.shape[0], "y")
    r_all = _others_with_label(y)
    rows_all = np.flatnonzero(r_all > 0)
    if rows_all.size == 0:
        raise ValueError(f"{caller} needs at least one label that occurs twice")
    x32 = _faiss_ready(x, distance)
    index = _build_index(x32, distance)
    ap = np.empty(rows_all.size)
    first = np.empty(rows_all.size, dtype=bool)
    step = max(1, _CHUNK_ELEMENTS // int(r_all.max()))
    for start in range(0, rows_all.size, step):
        rows = rows_all[start : start + step]
        r = r_all[rows]
        k = int(r.max())
        _, idx = _search(index, x32[rows], k, distance, self_ids=rows)
        hit = y[idx] == y[rows][:, None]
        correct = hit & (np.arange(k)[None, :] < r[:, None])
        precision = np.cumsum(correct, axis=1) / np.arange(1, k + 1)
        ap[start : start + step] = (precision * correct).sum(axis=1) / r
        first[start : start + step] = hit[:, 0]
    return float(first.mean()), float(ap.mean())


# --------------------------------------------------------------------------- verification


def _unrank_pairs(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map linear indices over pairs (i < j), ordered by j then i, back to (i, j)."""
    t = np.asarray(t, dtype=np.int64)
    j = ((1.0 + np.sqrt(1.0 + 8.0 * t)) // 2).astype(np.int64)
    # The float square root can be one off for huge t; nudge j into place.
    j -= (j * (j - 1) // 2 > t).astype(np.int64)
    j += ((j + 1) * j // 2 <= t).astype(np.int64)
    return t - j * (j - 1) // 2, j


def verification_pairs(
    emb: np.ndarray,
    y: np.ndarray,
    distance: Distance,
    max_pairs: int | None = 2_000_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (float64) and is_same for the unordered pairs i < j, ordered by (i, j).

    Above ``max_pairs`` the pairs are subsampled with ``seed``: every same-label pair is kept as
    long as they fill at most half the budget (otherwise a uniform half-budget sample of them),
    and different-label pairs are sampled uniformly to fill the rest. FAR and TAR are rates
    within each class of pair, so this keeps them unbiased while making rare positives count.
    """
    _check_distance(distance)
    x = _as_matrix(emb, "emb")
    n = x.shape[0]
    y = _as_labels(y, n, "y")
    if n < 2:
        raise ValueError("verification_pairs needs at least 2 samples")
    if max_pairs is not None and (isinstance(max_pairs, bool) or max_pairs < 1):
        raise ValueError(f"max_pairs must be >= 1 or None, got {max_pairs!r}")
    total = n * (n - 1) // 2

    if max_pairs is None or total <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        # Same-label pairs, enumerated class by class (members sorted by index, so a < b gives i < j).
        members = np.argsort(y, kind="stable")
        _, sizes = np.unique(y[members], return_counts=True)
        class_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        class_pairs = sizes * (sizes - 1) // 2
        pair_start = np.concatenate([[0], np.cumsum(class_pairs)[:-1]])
        n_pos_total = int(class_pairs.sum())
        n_neg_total = total - n_pos_total
        n_neg = min(n_neg_total, max_pairs - min(n_pos_total, max_pairs // 2))
        n_pos = min(n_pos_total, max_pairs - n_neg)

        p = np.arange(n_pos_total) if n_pos == n_pos_total else rng.choice(n_pos_total, n_pos, replace=False)
        cls = np.searchsorted(pair_start, p, side="right") - 1
        a, b = _unrank_pairs(p - pair_start[cls])
        pos_i, pos_j = members[class_start[cls] + a], members[class_start[cls] + b]

        # Different-label pairs: a uniform random ordered subset of all pairs, filtered, is a
        # uniform sample of the negatives; grow the draw until it holds enough of them.
        draw = min(total, int(n_neg * total / max(n_neg_total, 1) * 1.1) + 64)
        while True:
            u = rng.choice(total, draw, replace=False)
            ci, cj = _unrank_pairs(u)
            neg = np.flatnonzero(y[ci] != y[cj])
            if neg.size >= n_neg or draw == total:
                break
            draw = min(total, 2 * draw)
        neg = neg[:n_neg]
        i = np.concatenate([pos_i, ci[neg]])
        j = np.concatenate([pos_j, cj[neg]])
        order = np.argsort(i * n + j)
        i, j = i[order], j[order]

    if distance == "cosine":
        x = _unit(x)
    dist = np.empty(i.size)
    step = max(1, _CHUNK_ELEMENTS // x.shape[1])
    for start in range(0, i.size, step):
        sl = slice(start, start + step)
        dist[sl] = _paired_distance(x[i[sl]], x[j[sl]], distance)
    return dist, y[i] == y[j]


@dataclass
class RocResult:
    """ROC of "same when distance <= threshold"; ``thresholds[0] = -inf`` is the accept-nothing point."""

    auc: float
    eer: float
    eer_threshold: float
    tar_at_far: dict[float, float]
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def _roc_points(d: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (thresholds, true accepts, false accepts) at each distinct distance, ascending.

    Tied distances form one step: a threshold accepts all of them or none, which is what makes
    the AUC equal the tie-aware Mann-Whitney statistic.
    """
    order = np.argsort(d, kind="stable")
    d_sorted, s_sorted = d[order], s[order]
    last = np.append(d_sorted[1:] != d_sorted[:-1], True)
    return d_sorted[last], np.cumsum(s_sorted)[last], np.cumsum(~s_sorted)[last]


def _pair_counts(s: np.ndarray) -> tuple[int, int]:
    n_pos = int(s.sum())
    n_neg = int(s.size - n_pos)
    if n_neg == 0:
        raise ValueError("no different-label pairs: the false accept rate is undefined")
    if n_pos == 0:
        raise ValueError("no same-label pairs: the true accept rate is undefined")
    return n_pos, n_neg


def verification_roc(
    distances: np.ndarray,
    is_same: np.ndarray,
    fars: Sequence[float] = (1e-2, 1e-3),
) -> RocResult:
    """ROC, AUC, equal error rate and TAR at fixed FARs for a verification threshold on distance."""
    d, s = _as_scores(distances, is_same)
    n_pos, n_neg = _pair_counts(s)
    for f in fars:
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"every FAR must lie in [0, 1], got {f!r}")
    thr, tp, fp = _roc_points(d, s)
    thresholds = np.concatenate([[-np.inf], thr])
    tpr = np.concatenate([[0.0], tp / n_pos])
    fpr = np.concatenate([[0.0], fp / n_neg])
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)  # trapezoid rule

    # FAR - FRR rises from -1 (accept nothing) to +1 (accept all); interpolate its zero crossing.
    gap = fpr - (1.0 - tpr)
    hi = int(np.argmax(gap >= 0))
    lo = hi - 1
    if gap[hi] == 0:
        eer, eer_threshold = fpr[hi], thresholds[hi]
    else:
        w = -gap[lo] / (gap[hi] - gap[lo])
        eer = fpr[lo] + w * (fpr[hi] - fpr[lo])
        # Between "accept nothing" (-inf) and the first distance there is nothing to interpolate.
        t_lo = thresholds[lo] if np.isfinite(thresholds[lo]) else thresholds[hi]
        eer_threshold = t_lo + w * (thresholds[hi] - t_lo)
    tar_at_far = {float(f): float(tpr[fpr <= f].max()) for f in fars}
    return RocResult(
        auc=auc,
        eer=float(eer),
        eer_threshold=float(eer_threshold),
        tar_at_far=tar_at_far,
        fpr=fpr,
        tpr=tpr,
        thresholds=thresholds,
    )


@dataclass
class ThresholdResult:
    """A verification threshold and the FAR/TAR it achieves on a set of pairs (``n_same + n_different``)."""

    threshold: float
    far: float
    tar: float
    n_pairs: int
    n_same: int = 0
    n_different: int = 0


def calibrate_threshold(distances: np.ndarray, is_same: np.ndarray, target_far: float) -> ThresholdResult:
    """Largest observed distance t whose empirical FAR (share of different pairs with d <= t) <= target.

    Tied distances are accepted together, so t never splits a tie group that would push FAR over
    the target. If even the smallest distance does, t is set just below it (accept nothing).
    """
    d, s = _as_scores(distances, is_same)
    if not 0.0 <= target_far <= 1.0:
        raise ValueError(f"target_far must lie in [0, 1], got {target_far!r}")
    n_pos, n_neg = _pair_counts(s)
    thr, tp, fp = _roc_points(d, s)
    far = fp / n_neg
    ok = np.flatnonzero(far <= target_far)  # FAR is non-decreasing, so ok is a prefix
    if ok.size == 0:
        return ThresholdResult(float(np.nextafter(thr[0], -np.inf)), 0.0, 0.0, int(d.size), n_pos, n_neg)
    g = int(ok[-1])
    return ThresholdResult(float(thr[g]), float(far[g]), float(tp[g] / n_pos), int(d.size), n_pos, n_neg)


def operating_point(distances: np.ndarray, is_same: np.ndarray, threshold: float) -> ThresholdResult:
    """The FAR and TAR that "same when distance <= threshold" achieves on these pairs.

    Used on the test split to report what a threshold calibrated elsewhere really does.
    """
    d, s = _as_scores(distances, is_same)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    n_pos, n_neg = _pair_counts(s)
    accept = d <= threshold
    return ThresholdResult(
        float(threshold),
        float(np.count_nonzero(accept & ~s) / n_neg),
        float(np.count_nonzero(accept & s) / n_pos),
        int(d.size),
        n_pos,
        n_neg,
    )


# --------------------------------------------------------------------------- linear probe and PCA


def linear_probe_accuracy(
    train_emb: np.ndarray,
    train_y: np.ndarray,
    test_emb: np.ndarray,
    test_y: np.ndarray,
    *,
    epochs: int = 100,
    lr: float = 0.1,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> float:
    """Test accuracy of a logistic regression on frozen embeddings (the two-stage evaluation).

    Features are standardised with train statistics; the probe is ``nn.Linear`` + cross-entropy
    trained full-batch with Adam for ``epochs`` steps on CPU. It is initialised from ``seed``
    without touching torch's global RNG, so evaluating mid-training does not shift the run.
    Test labels unseen in training count as errors.
    """
    xtr = _as_matrix(train_emb, "train_emb")
    xte = _as_matrix(test_emb, "test_emb")
    _same_dim(xtr, xte, "train_emb", "test_emb")
    ytr = _as_labels(train_y, xtr.shape[0], "train_y")
    yte = _as_labels(test_y, xte.shape[0], "test_y")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")

    classes, ytr_idx = np.unique(ytr, return_inverse=True)
    pos = np.minimum(np.searchsorted(classes, yte), classes.size - 1)
    yte_idx = np.where(classes[pos] == yte, pos, -1)

    mean = xtr.mean(axis=0)
    std = xtr.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)  # constant features stay 0 instead of NaN
    xtr_t = torch.from_numpy(((xtr - mean) / std).astype(np.float32))
    xte_t = torch.from_numpy(((xte - mean) / std).astype(np.float32))
    ytr_t = torch.from_numpy(ytr_idx.reshape(-1).astype(np.int64))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = torch.nn.Linear(xtr.shape[1], classes.size)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():  # callers often evaluate under no_grad
        for _ in range(epochs):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(probe(xtr_t), ytr_t).backward()
            optimizer.step()
    with torch.no_grad():
        pred = probe(xte_t).argmax(dim=1).numpy()
    return float(np.mean(pred == yte_idx))


def pca(emb: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Projection on the top principal axes and the share of the variance each axis explains.

    Returns ``(n, n_components)`` points and ``(n_components,)`` ratios (0 for padded axes). Signs
    are fixed (each axis's largest loading is positive, scikit-learn's ``svd_flip`` convention) so
    plots do not flip between runs. A 1-D embedding or a single sample pads the missing axes with 0.
    """
    x = _as_matrix(emb, "emb")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components!r}")
    x = x - x.mean(axis=0)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:n_components]
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    proj = x @ (comps * np.where(signs == 0, 1.0, signs)[:, None]).T
    total = float((sv**2).sum())
    ratio = (sv[:n_components] ** 2) / total if total > 0 else np.zeros(len(comps))
    missing = n_components - proj.shape[1]
    if missing > 0:
        proj = np.pad(proj, ((0, 0), (0, missing)))
        ratio = np.pad(ratio, (0, missing))
    return proj, ratio


def pca_2d(emb: np.ndarray) -> np.ndarray:
    """(n, 2) projection on the top two principal axes (see ``pca``)."""
    return pca(emb, 2)[0]


# --------------------------------------------------------------------------- per-epoch summary


def evaluate_embeddings(
    train_emb: np.ndarray,
    train_y: np.ndarray,
    eval_emb: np.ndarray,
    eval_y: np.ndarray,
    distance: Distance,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Per-epoch metrics: ``knn_{k}_accuracy`` (eval vs train) plus leave-one-out P@1 and MAP@R on eval.

    Small data sets must still train: k is capped at the number of references (the key keeps the
    asked-for k), and P@1 / MAP@R are left out when no eval label occurs twice.
    """
    if len(ks) == 0:
        raise ValueError("ks must name at least one k")
    # One search for the largest k serves every k (a top-k list starts with the top-j list), and one
    # leave-one-out search serves P@1 and MAP@R: on 48,000 references this halves an epoch's evaluation.
    q = _as_matrix(eval_emb, "eval_emb")
    ref = _as_matrix(train_emb, "train_emb")
    qy = _as_labels(eval_y, q.shape[0], "eval_y")
    ry = _as_labels(train_y, ref.shape[0], "train_y")
    capped = {k: min(k, len(ry)) for k in ks}
    dist, idx = knn_search(q, ref, max(capped.values()), distance)
    metrics = {
        f"knn_{k}_accuracy": float(np.mean(knn_predict(ry[idx[:, :c]], dist[:, :c]) == qy))
        for k, c in capped.items()
    }
    if np.bincount(np.asarray(eval_y, dtype=np.int64)).max(initial=0) >= 2:
        metrics["precision_at_1"], metrics["map_at_r"] = _retrieval(eval_emb, eval_y, distance, "evaluate")
    return metrics
