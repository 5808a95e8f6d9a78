"""trainer.metrics against naive references: explicit loops over pairs and queries, plus sklearn.

Data is small and seeded. Ties come from duplicated points; where tied points carry different
labels the FAISS choice among them is unspecified, so those tests check bounds, not equality.
"""

from __future__ import annotations

import math
import time

import faiss
import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve

from trainer import metrics
from trainer.metrics import (
    calibrate_threshold,
    evaluate_embeddings,
    knn_accuracy,
    knn_predict,
    knn_search,
    linear_probe_accuracy,
    map_at_r,
    operating_point,
    pairwise_distance,
    pca,
    pca_2d,
    precision_at_1,
    verification_pairs,
    verification_roc,
)

DISTANCES = ("cosine", "euclidean")


@pytest.fixture(autouse=True, scope="module")
def _single_threaded():
    """One torch and one FAISS thread: on a shared 2-core box, intra-op threads that wait on each
    other through every optimizer step turn milliseconds into seconds."""
    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)


# --------------------------------------------------------------------------- factories and references


def make_labelled(n: int, dim: int, classes: int, seed: int, dups: int = 0, spread: float = 1.0):
    """Gaussian clusters with ``dups`` extra rows duplicating earlier rows *and their labels*."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(classes, dim))
    y = rng.integers(0, classes, size=n)
    x = centers[y] + rng.normal(scale=spread, size=(n, dim))
    if dups:
        src = rng.integers(0, n, size=dups)
        x, y = np.vstack([x, x[src]]), np.concatenate([y, y[src]])
        perm = rng.permutation(len(y))
        x, y = x[perm], y[perm]
    return x, y


def naive_distance(u, v, distance: str) -> float:
    if distance == "euclidean":
        return math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v, strict=True)))
    nu = math.sqrt(sum(a * a for a in u))
    nv = math.sqrt(sum(b * b for b in v))
    if nu == 0 or nv == 0:
        return 1.0
    return 1.0 - sum(a * b for a, b in zip(u, v, strict=True)) / (nu * nv)


def naive_ranking(q, ref, distance: str, skip: int | None = None) -> list[tuple[float, int]]:
    """All (distance, index) of ref sorted by (distance, index), optionally leaving index ``skip`` out."""
    return sorted((naive_distance(q, r, distance), j) for j, r in enumerate(ref) if j != skip)


def naive_vote(labels, dists, weighting: str = "uniform"):
    """The documented rule, one neighbour at a time: max vote, then min summed distance, then nearest."""
    votes: dict = {}
    summed: dict = {}
    first: dict = {}
    any_zero = weighting == "distance" and any(d == 0 for d in dists)
    for col, (lab, d) in enumerate(zip(labels, dists, strict=True)):
        if weighting == "uniform":
            w = 1.0
        elif any_zero:
            w = 1.0 if d == 0 else 0.0
        else:
            w = 1.0 / d
        votes[lab] = votes.get(lab, 0.0) + w
        summed[lab] = summed.get(lab, 0.0) + d
        first.setdefault(lab, col)
    return min(votes, key=lambda lab: (-votes[lab], summed[lab], first[lab]))


def naive_average_precision(correct: list[bool], r: int) -> float:
    hits, total = 0, 0.0
    for i, c in enumerate(correct[:r], start=1):
        if c:
            hits += 1
            total += hits / i
    return total / r


def naive_map_at_r(x, y, distance: str, pessimistic: bool | None = None) -> float:
    """MAP@R by hand; ``pessimistic`` True/False sorts exact ties wrong-label-first/last (bounds)."""
    aps = []
    for i in range(len(x)):
        r = sum(1 for j in range(len(x)) if j != i and y[j] == y[i])
        if r == 0:
            continue
        ranked = naive_ranking(x[i], x, distance, skip=i)
        if pessimistic is not None:
            sign = 1 if pessimistic else -1
            ranked = sorted(ranked, key=lambda t: (round(t[0], 9), sign * (y[t[1]] == y[i]), t[1]))
        aps.append(naive_average_precision([y[j] == y[i] for _, j in ranked], r))
    return sum(aps) / len(aps)


# --------------------------------------------------------------------------- pairwise_distance


@pytest.mark.parametrize("distance", DISTANCES)
def test_pairwise_distance_matches_loops(distance):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 5))
    b = np.vstack([rng.normal(size=(5, 5)), a[:2], np.zeros((1, 5))])  # duplicates and a zero vector
    got = pairwise_distance(a.astype(np.float32), b, distance)
    assert got.shape == (7, 8) and got.dtype == np.float64
    want = np.array([[naive_distance(u, v, distance) for v in b] for u in a])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert (got >= 0).all()


def test_pairwise_distance_validates():
    x = np.ones((3, 4))
    with pytest.raises(ValueError, match="dim"):
        pairwise_distance(x, np.ones((2, 5)), "cosine")
    with pytest.raises(ValueError, match="2-D"):
        pairwise_distance(np.ones(4), x, "cosine")
    with pytest.raises(ValueError, match="NaN"):
        pairwise_distance(np.full((2, 4), np.nan), x, "euclidean")
    with pytest.raises(ValueError, match="distance must be"):
        pairwise_distance(x, x, "manhattan")


# --------------------------------------------------------------------------- knn_search


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("n_query", [5, 40])  # FAISS switches to BLAS at 20 queries
def test_knn_search_matches_brute_force(distance, n_query):
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(30, 6)).astype(np.float32)
    query = rng.normal(size=(n_query, 6))
    dist, idx = knn_search(query, ref, 4, distance)
    assert dist.shape == idx.shape == (n_query, 4)
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    for i in range(n_query):
        ranked = naive_ranking(query[i], ref, distance)[:4]
        assert idx[i].tolist() == [j for _, j in ranked]
        np.testing.assert_allclose(dist[i], [d for d, _ in ranked], atol=1e-5)


@pytest.mark.parametrize("distance", DISTANCES)
def test_knn_search_with_ties_is_a_valid_sorted_top_k(distance):
    # Six copies of one point and integer coordinates give many exact ties. (4, 1, 3) is not
    # parallel to any point of {0, 1, 2}^3, so only its copies are at cosine distance 0.
    rng = np.random.default_rng(2)
    ref = np.vstack([rng.integers(0, 3, size=(20, 3)), np.tile([[4, 1, 3]], (6, 1))]).astype(np.float64)
    query = np.vstack([[[4, 1, 3]], rng.integers(0, 3, size=(24, 3))]).astype(np.float64)
    k = 7
    dist, idx = knn_search(query, ref, k, distance)
    for i in range(len(query)):
        ranked = naive_ranking(query[i], ref, distance)
        np.testing.assert_allclose(dist[i], [d for d, _ in ranked[:k]], atol=1e-5)  # the k smallest
        assert len(set(idx[i].tolist())) == k
        truth = [naive_distance(query[i], ref[j], distance) for j in idx[i]]
        np.testing.assert_allclose(dist[i], truth, atol=1e-5)  # each index carries its own distance
        keys = list(zip(dist[i].tolist(), idx[i].tolist(), strict=True))
        assert keys == sorted(keys)  # (distance, index) order
    # The duplicated query finds its six copies first, at distance 0, in index order.
    assert idx[0, :6].tolist() == list(range(20, 26))
    np.testing.assert_allclose(dist[0, :6], 0.0, atol=1e-6)


@pytest.mark.parametrize("distance", DISTANCES)
def test_knn_search_exclude_self_with_duplicates(distance):
    rng = np.random.default_rng(3)
    base = rng.normal(size=(12, 4))
    x = np.vstack([base, base[:3], base[:1], base[:1], base[:1]])  # row 0: 5 copies, more than k + 1
    k = 3
    dist, idx = knn_search(x, x, k, distance, exclude_self=True)
    for i in range(len(x)):
        assert i not in idx[i]
        ranked = naive_ranking(x[i], x, distance, skip=i)
        np.testing.assert_allclose(dist[i], [d for d, _ in ranked[:k]], atol=1e-5)
        truth = [naive_distance(x[i], x[j], distance) for j in idx[i]]
        np.testing.assert_allclose(dist[i], truth, atol=1e-5)
    # Row 0 and its copies: every neighbour is another copy, at distance 0.
    copies = {0, 12, 15, 16, 17}
    for i in copies:
        assert set(idx[i].tolist()) <= copies - {i}
        np.testing.assert_allclose(dist[i], 0.0, atol=1e-3)


def test_knn_search_validates():
    x = np.ones((4, 2))
    with pytest.raises(ValueError, match="k must be"):
        knn_search(x, x, 0, "cosine")
    with pytest.raises(ValueError, match="exceeds"):
        knn_search(x, x, 5, "cosine")
    with pytest.raises(ValueError, match="exceeds"):
        knn_search(x, x, 4, "cosine", exclude_self=True)
    with pytest.raises(ValueError, match="query to be ref"):
        knn_search(x[:2], x, 1, "cosine", exclude_self=True)
    with pytest.raises(ValueError, match="dim"):
        knn_search(np.ones((2, 3)), x, 1, "euclidean")


# --------------------------------------------------------------------------- knn_predict / knn_accuracy


@pytest.mark.parametrize("weighting", ["uniform", "distance"])
@pytest.mark.parametrize(
    ("k", "values"),
    [
        (6, [0.25, 0.5, 1.0, 2.0]),  # dyadic: vote and summed-distance ties are exact
        (10, [0.1, 0.2, 0.3, 0.7]),  # decimal: equal sums may differ in the last bit depending on order
    ],
)
def test_knn_predict_matches_loop(weighting, k, values):
    # Few labels make ties common; a plain loop over each row, summing in neighbour order.
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, size=(400, k))
    dists = np.sort(rng.choice(values, size=(400, k)), axis=1)
    dists[:20, 0] = 0.0  # exact matches
    got = knn_predict(labels, dists, weighting)
    want = [naive_vote(lab.tolist(), d.tolist(), weighting) for lab, d in zip(labels, dists, strict=True)]
    assert got.tolist() == want


def test_knn_predict_tie_breaks_by_hand():
    labels = np.array(
        [
            ["a", "b", "b", "a"],  # 2-2 vote; summed distance a: .1+.4 = .5, b: .2+.3 = .5; a is nearest
            ["a", "b", "b", "a"],  # 2-2 vote; a: .1+.9 = 1.0, b: .2+.3 = .5 -> b
            ["c", "a", "b", "a"],  # plain majority -> a
        ]
    )
    dists = np.array([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.9], [0.1, 0.2, 0.3, 0.4]])
    assert knn_predict(labels, dists).tolist() == ["a", "b", "a"]
    # Without distances a vote tie goes to the nearest neighbour's label.
    assert knn_predict(np.array([[2, 1, 1, 2]]), None).tolist() == [2]
    # Distance weighting: 1/.1 = 10 for "c" beats 1/.2 + 1/.4 = 7.5 for "a".
    assert knn_predict(labels[2:], dists[2:], "distance").tolist() == ["c"]
    # An exact match (distance 0) outvotes everything else.
    assert knn_predict(np.array([[1, 2, 2]]), np.array([[0.0, 0.0, 0.1]]), "distance").tolist() == [1]


def test_knn_predict_validates():
    with pytest.raises(ValueError, match="needs neigh_dist"):
        knn_predict(np.zeros((2, 3)), None, "distance")
    with pytest.raises(ValueError, match="shape"):
        knn_predict(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        knn_predict(np.zeros(3), None)
    with pytest.raises(ValueError, match="non-negative"):
        knn_predict(np.zeros((1, 2)), np.array([[-0.1, 0.2]]), "distance")


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("k", [1, 5])
def test_knn_accuracy_matches_loop(distance, k):
    ref, ref_y = make_labelled(60, 5, 4, seed=5, dups=10, spread=2.5)
    query, query_y = make_labelled(25, 5, 4, seed=6, spread=2.5)
    query = np.vstack([query, ref[:5]])  # queries that coincide with reference points
    query_y = np.concatenate([query_y, ref_y[:5]])
    hits = 0
    for q, qy in zip(query, query_y, strict=True):
        ranked = naive_ranking(q, ref, distance)[:k]
        hits += naive_vote([ref_y[j] for _, j in ranked], [d for d, _ in ranked]) == qy
    assert knn_accuracy(query, query_y, ref, ref_y, k, distance) == pytest.approx(hits / len(query))


def test_knn_accuracy_validates():
    x, y = make_labelled(10, 3, 2, seed=0)
    with pytest.raises(ValueError, match="length"):
        knn_accuracy(x, y[:-1], x, y, 1, "cosine")
    with pytest.raises(ValueError, match="exceeds"):
        knn_accuracy(x, y, x[:3], y[:3], 5, "cosine")


# --------------------------------------------------------------------------- precision_at_1 / map_at_r


@pytest.mark.parametrize("distance", DISTANCES)
def test_precision_at_1_matches_loop(distance):
    x, y = make_labelled(50, 4, 5, seed=7, dups=8, spread=2.0)
    x, y = np.vstack([x, [[9.0, 9, 9, 9]]]), np.append(y, 99)  # a lone label: skipped
    hits, counted = 0, 0
    for i in range(len(x)):
        if sum(1 for j in range(len(x)) if j != i and y[j] == y[i]) == 0:
            continue
        _, nearest = naive_ranking(x[i], x, distance, skip=i)[0]
        hits += y[nearest] == y[i]
        counted += 1
    assert counted == len(x) - 1
    assert precision_at_1(x, y, distance) == pytest.approx(hits / counted)


def test_map_at_r_hand_examples():
    # 1-D points, Euclidean.
    x = np.array([[0.0], [1.0], [2.5], [10.0], [11.0]])
    y = np.array([0, 0, 0, 1, 1])
    # q=0.0 (R=2): others by distance 1.0(0) 2.5(0) -> both correct: (1/1 + 2/2)/2 = 1
    # q=1.0 (R=2): 0.0(0) at 1, 2.5(0) at 1.5 -> (1 + 1)/2 = 1
    # q=2.5 (R=2): 1.0(0) 1.5, 0.0(0) 2.5 -> 1
    # q=10 (R=1): 11(1) -> 1 ; q=11 (R=1): 10(1) -> 1
    assert map_at_r(x, y, "euclidean") == pytest.approx(1.0)

    x = np.array([[0.0], [1.0], [3.0], [4.0], [5.5]])
    y = np.array([0, 1, 0, 1, 0])
    # q=0.0 y0 (R=2): 1.0(y1) 3.0(y0) -> [x, v]: P@2 = 1/2 -> AP = (1/2)/2 = 0.25
    # q=1.0 y1 (R=1): 0.0(y0) -> [x] -> 0
    # q=3.0 y0 (R=2): 4.0(y1) 1.0(y1, d=2) vs 5.5(y0, d=2.5) -> [x, x] -> 0
    # q=4.0 y1 (R=1): 3.0(y0) -> 0
    # q=5.5 y0 (R=2): 4.0(y1) 3.0(y0) -> [x, v] -> 0.25
    # mean = (0.25 + 0 + 0 + 0 + 0.25)/5 = 0.1
    assert map_at_r(x, y, "euclidean") == pytest.approx(0.1)

    x = np.array([[0.0], [1.0], [2.0], [3.0], [100.0]])
    y = np.array([0, 1, 0, 0, 7])
    # The lone label 7 is skipped. q=0 (R=2): 1(y1) 2(y0) -> [x, v]: (1/2)/2 = 0.25
    # q=1 y1 (R=0): skipped.  q=2 (R=2): 1(y1) vs 3(y0) tie at d=1 -> lower index first: 1(y1), 3(y0)
    #   -> [x, v] = 0.25.  q=3 (R=2): 2(y0) 1(y1) -> [v, x]: (1/1)/2 = 0.5
    # mean over 3 queries = (0.25 + 0.25 + 0.5)/3 = 1/3
    assert map_at_r(x, y, "euclidean") == pytest.approx(1 / 3)
    # Precision@1: q=0 wrong, q=3 right, q=2 has a tied nearest pair of different labels (either).
    assert precision_at_1(x, y, "euclidean") in (pytest.approx(1 / 3), pytest.approx(2 / 3))


@pytest.mark.parametrize("distance", DISTANCES)
def test_map_at_r_matches_loop(distance, monkeypatch):
    x, y = make_labelled(60, 4, 4, seed=8, dups=10, spread=2.0)
    want = naive_map_at_r(x, y, distance)
    assert map_at_r(x, y, distance) == pytest.approx(want)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 50)  # force many query chunks
    assert map_at_r(x, y, distance) == pytest.approx(want)


@pytest.mark.parametrize("distance", DISTANCES)
def test_map_at_r_with_cross_label_ties_lies_between_tie_orders(distance):
    # Exact duplicates carrying different labels: any tie order is legitimate, so check the bounds.
    rng = np.random.default_rng(9)
    base = rng.normal(size=(8, 3))
    x = base[rng.integers(0, 8, size=40)]
    y = rng.integers(0, 3, size=40)
    got = map_at_r(x, y, distance)
    low, high = naive_map_at_r(x, y, distance, True), naive_map_at_r(x, y, distance, False)
    assert low < high
    assert low - 1e-12 <= got <= high + 1e-12


def test_map_at_r_perfect_and_degenerate():
    x, y = make_labelled(40, 6, 3, seed=10, spread=0.01)
    assert map_at_r(x, y, "cosine") == pytest.approx(1.0)
    assert precision_at_1(x, y, "euclidean") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="occurs twice"):
        map_at_r(x[:3], np.array([0, 1, 2]), "cosine")
    with pytest.raises(ValueError, match="occurs twice"):
        precision_at_1(x[:3], np.array([0, 1, 2]), "cosine")


# --------------------------------------------------------------------------- verification_pairs


@pytest.mark.parametrize("distance", DISTANCES)
def test_verification_pairs_all_pairs_match_loop(distance):
    x, y = make_labelled(15, 4, 3, seed=11, dups=3)
    dist, same = verification_pairs(x, y, distance)
    want = [(naive_distance(x[i], x[j], distance), y[i] == y[j]) for i in range(18) for j in range(i + 1, 18)]
    assert len(dist) == 18 * 17 // 2
    np.testing.assert_allclose(dist, [d for d, _ in want], atol=1e-9)
    assert same.tolist() == [s for _, s in want]


def _pair_lookup(x, y, distance):
    """(rounded distance, is_same) -> (i, j) over all pairs; continuous data makes the keys unique."""
    lookup = {}
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            lookup[(round(naive_distance(x[i], x[j], distance), 9), bool(y[i] == y[j]))] = (i, j)
    assert len(lookup) == len(x) * (len(x) - 1) // 2
    return lookup


def test_verification_pairs_subsample_keeps_all_positives_and_is_seeded():
    x, y = make_labelled(40, 5, 6, seed=12)  # 780 pairs, about 1/6 of them positive
    lookup = _pair_lookup(x, y, "euclidean")
    n_pos = sum(s for _, s in lookup)
    dist, same = verification_pairs(x, y, "euclidean", max_pairs=300, seed=1)
    assert len(dist) == 300 and same.sum() == n_pos
    pairs = [lookup[(round(d, 9), bool(s))] for d, s in zip(dist, same, strict=True)]
    assert len(set(pairs)) == 300 and pairs == sorted(pairs)  # distinct real pairs, in (i, j) order
    again = verification_pairs(x, y, "euclidean", max_pairs=300, seed=1)
    other = verification_pairs(x, y, "euclidean", max_pairs=300, seed=2)
    np.testing.assert_array_equal(dist, again[0])
    assert not np.array_equal(dist, other[0])
    assert same.sum() == other[1].sum() == n_pos


def test_verification_pairs_negatives_are_sampled_uniformly():
    # With all positives kept, each negative should be drawn with probability 60 / n_neg per seed.
    x, y = make_labelled(20, 3, 5, seed=13)  # 190 pairs, few of them positive
    lookup = _pair_lookup(x, y, "euclidean")
    n_pos = sum(s for _, s in lookup)
    assert n_pos <= 60
    counts: dict = {}
    for seed in range(200):
        dist, same = verification_pairs(x, y, "euclidean", max_pairs=n_pos + 60, seed=seed)
        assert same.sum() == n_pos
        for d in dist[~same]:
            key = lookup[(round(d, 9), False)]
            counts[key] = counts.get(key, 0) + 1
    n_neg = len(lookup) - n_pos
    assert len(counts) == n_neg
    expected = 200 * 60 / n_neg
    assert max(abs(c - expected) for c in counts.values()) < 5 * math.sqrt(expected)


def test_verification_pairs_caps_positives_at_half_the_budget():
    x, y = make_labelled(30, 3, 1, seed=14)
    y[:5] = 1  # 300 + 10 positive pairs out of 435
    dist, same = verification_pairs(x, y, "cosine", max_pairs=100)
    assert len(dist) == 100 and same.sum() == 50
    with pytest.raises(ValueError, match="max_pairs"):
        verification_pairs(x, y, "cosine", max_pairs=0)
    with pytest.raises(ValueError, match="at least 2"):
        verification_pairs(x[:1], y[:1], "cosine")


# --------------------------------------------------------------------------- verification_roc


def test_verification_roc_hand_example():
    # sorted: .1P .2P .3P .4N .5N .6P .7N .8N (4 positives, 4 negatives)
    d = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.5, 0.7, 0.8])
    s = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    roc = verification_roc(d, s, fars=(0.0, 0.25, 0.5))
    # Positive-before-negative pairs: 4 + 4 + 4 + 2 (0.6 beats 0.7, 0.8) = 14 of 16.
    assert roc.auc == pytest.approx(14 / 16)
    # At t = .4: FAR = 1/4, FRR = 1 - 3/4 = 1/4 exactly.
    assert roc.eer == pytest.approx(0.25) and roc.eer_threshold == pytest.approx(0.4)
    assert roc.tar_at_far == {0.0: 0.75, 0.25: 0.75, 0.5: 1.0}
    assert roc.thresholds[0] == -np.inf and roc.fpr[0] == roc.tpr[0] == 0.0
    assert roc.fpr[-1] == roc.tpr[-1] == 1.0


def test_verification_roc_interpolates_the_eer():
    # .1P .2N .3P .4N : ROC (0,.5) (.5,.5) (.5,1) (1,1). FAR-FRR goes -.5 at t=.1 to 0 at t=.2.
    roc = verification_roc(np.array([0.1, 0.2, 0.3, 0.4]), np.array([True, False, True, False]))
    assert roc.eer == pytest.approx(0.5) and roc.eer_threshold == pytest.approx(0.2)
    # .1P .2N : at t=.1 FAR = 0 and FRR = 0, a perfect split: EER 0 at .1.
    roc = verification_roc(np.array([0.1, 0.2]), np.array([True, False]))
    assert roc.eer == 0.0 and roc.eer_threshold == pytest.approx(0.1)
    # .1N .2P .3N : FAR-FRR is -.5 at t=.1 (FAR .5, FRR 1) and +.5 at t=.2 (FAR .5, FRR 0);
    # halfway between: EER .5 at threshold .15.
    roc = verification_roc(np.array([0.1, 0.2, 0.3]), np.array([False, True, False]))
    assert roc.eer == pytest.approx(0.5) and roc.eer_threshold == pytest.approx(0.15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_verification_roc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    s = rng.random(3000) < 0.2
    d = np.round(rng.normal(loc=np.where(s, 0.4, 0.8), scale=0.2), 2)  # rounding makes many ties
    fars = (1e-3, 1e-2, 0.1)
    roc = verification_roc(d, s, fars=fars)
    assert roc.auc == pytest.approx(roc_auc_score(s, -d), abs=1e-12)
    fpr, tpr, _ = roc_curve(s, -d, drop_intermediate=False)
    for f in fars:
        assert roc.tar_at_far[f] == pytest.approx(tpr[fpr <= f].max())
    # EER: FAR and FRR agree at the interpolated point, which lies between two adjacent ROC points.
    frr = 1 - roc.tpr
    k = int(np.argmax(roc.fpr >= frr))
    assert roc.fpr[k - 1] <= roc.eer <= roc.fpr[k] and frr[k] <= roc.eer <= frr[k - 1]
    assert roc.thresholds[k - 1] <= roc.eer_threshold <= roc.thresholds[k]


def test_verification_roc_validates():
    with pytest.raises(ValueError, match="no different-label"):
        verification_roc(np.array([0.1, 0.2]), np.array([True, True]))
    with pytest.raises(ValueError, match="no same-label"):
        verification_roc(np.array([0.1, 0.2]), np.array([False, False]))
    with pytest.raises(ValueError, match="equal length"):
        verification_roc(np.array([0.1, 0.2]), np.array([True]))
    with pytest.raises(ValueError, match="FAR"):
        verification_roc(np.array([0.1, 0.2]), np.array([True, False]), fars=(2.0,))


# --------------------------------------------------------------------------- calibrate_threshold


def naive_far_tar(d, s, t):
    neg = [di for di, si in zip(d, s, strict=True) if not si]
    pos = [di for di, si in zip(d, s, strict=True) if si]
    return sum(x <= t for x in neg) / len(neg), sum(x <= t for x in pos) / len(pos)


@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.2, 1.0])
def test_calibrate_threshold_is_maximal(target):
    rng = np.random.default_rng(15)
    s = rng.random(600) < 0.3
    d = np.round(rng.normal(loc=np.where(s, 0.3, 0.7), scale=0.15), 2)  # ties everywhere
    res = calibrate_threshold(d, s, target)
    far, tar = naive_far_tar(d, s, res.threshold)
    assert res.far == pytest.approx(far) and res.tar == pytest.approx(tar) and res.n_pairs == 600
    assert (res.n_same, res.n_different) == (int(s.sum()), int((~s).sum()))
    assert far <= target
    assert res.threshold in d
    larger = d[d > res.threshold]
    if larger.size:
        assert naive_far_tar(d, s, larger.min())[0] > target  # the next distinct distance overshoots


def test_calibrate_threshold_never_splits_a_tie_group():
    d = np.array([0.1, 0.5, 0.5, 0.5, 0.9, 1.0])
    s = np.array([True, True, False, False, False, False])
    # Negatives: .5 .5 .9 1.0. Accepting .5 accepts both tied negatives: FAR 2/4 = 0.5.
    res = calibrate_threshold(d, s, 0.25)
    assert (res.threshold, res.far, res.tar) == (0.1, 0.0, 0.5)
    res = calibrate_threshold(d, s, 0.5)
    assert (res.threshold, res.far, res.tar) == (0.5, 0.5, 1.0)


def test_calibrate_threshold_when_the_closest_pair_is_negative():
    res = calibrate_threshold(np.array([0.2, 0.3, 0.4]), np.array([False, True, False]), 0.1)
    assert res.threshold < 0.2 and res.far == 0.0 and res.tar == 0.0


@pytest.mark.parametrize("threshold", [-1.0, 0.3, 0.45, 0.7, 5.0])
def test_operating_point_matches_loop(threshold):
    rng = np.random.default_rng(16)
    s = rng.random(500) < 0.2
    d = np.round(rng.normal(loc=np.where(s, 0.3, 0.7), scale=0.15), 2)  # ties at the threshold count
    got = operating_point(d, s, threshold)
    far, tar = naive_far_tar(d, s, threshold)
    assert (got.far, got.tar) == (pytest.approx(far), pytest.approx(tar))
    assert (got.threshold, got.n_pairs, got.n_same, got.n_different) == (threshold, 500, s.sum(), (~s).sum())


def test_a_threshold_calibrated_on_many_pairs_lands_near_its_target_on_fresh_pairs():
    """The calibrated FAR is a quantile estimate: on fresh pairs of the same distribution it holds."""
    rng = np.random.default_rng(17)

    def pairs(n):
        s = rng.random(n) < 0.1
        return rng.normal(loc=np.where(s, 0.3, 0.7), scale=0.12), s

    t = calibrate_threshold(*pairs(100_000), 0.01)
    fresh = operating_point(*pairs(100_000), t.threshold)
    assert 0.008 <= fresh.far <= 0.012


def test_operating_point_validates():
    with pytest.raises(ValueError, match="no different-label"):
        operating_point(np.array([0.1, 0.2]), np.array([True, True]), 0.1)
    with pytest.raises(ValueError, match="finite"):
        operating_point(np.array([0.1, 0.2]), np.array([True, False]), float("nan"))


def test_calibrate_threshold_validates():
    with pytest.raises(ValueError, match="no different-label"):
        calibrate_threshold(np.array([0.1, 0.2]), np.array([True, True]), 0.1)
    with pytest.raises(ValueError, match="no same-label"):
        calibrate_threshold(np.array([0.1, 0.2]), np.array([False, False]), 0.1)
    with pytest.raises(ValueError, match="target_far"):
        calibrate_threshold(np.array([0.1, 0.2]), np.array([True, False]), 1.5)
    with pytest.raises(ValueError, match="NaN"):
        calibrate_threshold(np.array([np.nan, 0.2]), np.array([True, False]), 0.1)


# --------------------------------------------------------------------------- linear probe, PCA


def test_linear_probe_on_separable_blobs_matches_sklearn():
    x, y = make_labelled(600, 16, 4, seed=16, spread=0.3)
    xtr, ytr, xte, yte = x[:400], y[:400], x[400:], y[400:]
    acc = linear_probe_accuracy(xtr, ytr, xte, yte)
    reference = LogisticRegression(max_iter=1000).fit(xtr, ytr).score(xte, yte)
    assert reference == pytest.approx(1.0)
    assert acc == pytest.approx(reference)


def test_linear_probe_on_random_labels_is_near_chance():
    rng = np.random.default_rng(17)
    x = rng.normal(size=(1000, 32))
    y = rng.integers(0, 4, size=1000)
    acc = linear_probe_accuracy(x[:600], y[:600], x[600:], y[600:])
    assert abs(acc - 0.25) < 0.1


def test_linear_probe_is_deterministic_fast_and_leaves_global_rng_alone():
    rng = np.random.default_rng(18)
    x = rng.normal(size=(5000, 128)).astype(np.float32)
    y = rng.integers(0, 10, size=5000)
    x[np.arange(5000), y] += 3.0  # informative but overlapping: sklearn's LogisticRegression scores 0.82
    # Warm up: the first torch.optim constructor in a process pays a one-off import (~1 s) that the
    # training loop has already paid by the time it evaluates.
    linear_probe_accuracy(x[:20], y[:20], x[:5], y[:5], epochs=1)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    start = time.perf_counter()
    acc = linear_probe_accuracy(x[:4000], y[:4000], x[4000:], y[4000:], seed=3)
    elapsed = time.perf_counter() - start
    assert torch.rand(1) == expected_next  # the caller's RNG stream is untouched
    assert linear_probe_accuracy(x[:4000], y[:4000], x[4000:], y[4000:], seed=3) == acc
    assert 0.78 < acc < 0.86
    assert elapsed < 1.0, f"linear probe took {elapsed:.2f}s for 4000x128"


def test_linear_probe_counts_unseen_test_labels_as_errors_and_works_under_no_grad():
    x, y = make_labelled(200, 4, 2, seed=19, spread=0.1)
    y_test = y[100:].copy()
    y_test[:10] = 7  # never seen in training
    with torch.no_grad():
        acc = linear_probe_accuracy(x[:100], y[:100], x[100:], y_test)
    assert acc == pytest.approx(0.9)


def test_pca_2d_matches_sklearn_up_to_sign():
    x, _ = make_labelled(80, 6, 3, seed=20)
    got = pca_2d(x)
    want = PCA(n_components=2).fit_transform(x)
    assert got.shape == (80, 2)
    for c in range(2):
        sign = np.sign(got[:, c] @ want[:, c])
        np.testing.assert_allclose(got[:, c], sign * want[:, c], atol=1e-8)
    np.testing.assert_allclose(pca_2d(x * 1.0), got)  # deterministic signs
    assert pca_2d(x[:, :1]).shape == (80, 2)  # 1-D embeddings are padded


def test_pca_explained_variance_matches_sklearn_and_a_variance_loop():
    x, _ = make_labelled(80, 6, 3, seed=22)
    points, ratio = pca(x, 3)
    np.testing.assert_allclose(ratio, PCA(n_components=3).fit(x).explained_variance_ratio_, atol=1e-10)
    total = sum(((x[:, j] - x[:, j].mean()) ** 2).sum() for j in range(x.shape[1]))
    for c in range(3):  # each ratio is the variance of the projected points over the total
        assert ratio[c] == pytest.approx(sum(v * v for v in points[:, c]) / total)
    points, ratio = pca(x[:, :1], 2)
    assert points.shape == (80, 2) and ratio.tolist() == [pytest.approx(1.0), 0.0]
    assert pca(np.ones((5, 3)), 2)[1].tolist() == [0.0, 0.0]  # no variance at all: no NaN


# --------------------------------------------------------------------------- evaluate_embeddings


def test_evaluate_embeddings_keys_and_values():
    x, y = make_labelled(120, 8, 4, seed=21, spread=1.5)
    train, train_y, val, val_y = x[:80], y[:80], x[80:], y[80:]
    got = evaluate_embeddings(train, train_y, val, val_y, "cosine")
    assert list(got) == ["knn_1_accuracy", "knn_5_accuracy", "precision_at_1", "map_at_r"]
    assert all(type(v) is float for v in got.values())
    assert got["knn_5_accuracy"] == knn_accuracy(val, val_y, train, train_y, 5, "cosine")
    assert got["knn_1_accuracy"] == knn_accuracy(
        val, val_y, train, train_y, 1, "cosine"
    )  # from the k=5 search
    assert got["precision_at_1"] == precision_at_1(val, val_y, "cosine")
    assert got["map_at_r"] == map_at_r(val, val_y, "cosine")
