"""Distances and miners against plain Python loops over explicit pairs/triplets."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer import mining
from trainer.mining import (
    DISTANCES,
    BatchHardMiner,
    CosineDistance,
    DotProductSimilarity,
    EuclideanDistance,
    SemiHardMiner,
    SquaredEuclideanDistance,
    get_distance,
    label_masks,
    row_chunks,
)

Triplets = list[tuple[int, int, int]]
RefMiner = Callable[[list[list[float]], list[int]], Triplets]
MinerType = type[mining.TripletMiner]


def ref_batch_hard(d: list[list[float]], y: list[int]) -> Triplets:
    out = []
    for a in range(len(y)):
        pos = [p for p in range(len(y)) if p != a and y[p] == y[a]]
        neg = [n for n in range(len(y)) if y[n] != y[a]]
        if pos and neg:
            out.append((a, max(pos, key=lambda p: d[a][p]), min(neg, key=lambda n: d[a][n])))
    return out


def ref_semihard(d: list[list[float]], y: list[int]) -> Triplets:
    out = []
    for a in range(len(y)):
        neg = [n for n in range(len(y)) if y[n] != y[a]]
        for p in range(len(y)):
            if p == a or y[p] != y[a] or not neg:
                continue
            farther = [n for n in neg if d[a][n] > d[a][p]]
            n = min(farther, key=lambda n: d[a][n]) if farther else max(neg, key=lambda n: d[a][n])
            out.append((a, p, n))
    return out


def as_list(triplets: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> Triplets:
    assert all(t.dtype == torch.long for t in triplets)
    return sorted(zip(*(t.tolist() for t in triplets), strict=True))


MINERS: list[tuple[MinerType, RefMiner]] = [(BatchHardMiner, ref_batch_hard), (SemiHardMiner, ref_semihard)]


def random_case(n: int, seed: int, n_classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A random (not even symmetric) matrix without ties; miners must not assume more."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, n, generator=g, dtype=torch.float64), torch.randint(0, n_classes, (n,), generator=g)


@pytest.mark.parametrize(("miner", "ref"), MINERS)
@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 1, 2, 3, 0, 2, 5], [4], [1, 1, 1], [0, 1, 2, 3], [0, 0]])
def test_miners_match_python_loop(miner: MinerType, ref: RefMiner, labels: list[int]) -> None:
    d, _ = random_case(len(labels), seed=0)
    y = torch.tensor(labels)
    assert as_list(miner()(d, y)) == ref(d.tolist(), labels)


@settings(max_examples=30, deadline=None)
@given(labels=st.lists(st.integers(0, 3), min_size=1, max_size=12), seed=st.integers(0, 2**16))
def test_miners_on_random_label_layouts(labels: list[int], seed: int) -> None:
    d, _ = random_case(len(labels), seed)
    for miner, ref in MINERS:
        assert as_list(miner()(d, torch.tensor(labels))) == ref(d.tolist(), labels)


@pytest.mark.parametrize(("miner", "ref"), MINERS)
def test_miners_chunk_over_anchors_without_changing_results(
    miner: MinerType, ref: RefMiner, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, y = random_case(23, seed=1)
    want = as_list(miner()(d, y))
    for budget in (1, 30, 100):
        monkeypatch.setattr(mining, "ROW_CHUNK_ELEMENTS", budget)
        assert as_list(miner()(d, y)) == want == ref(d.tolist(), y.tolist())


@pytest.mark.parametrize(("miner", "ref"), MINERS)
def test_similarities_are_mined_by_negation(miner: MinerType, ref: RefMiner) -> None:
    s, y = random_case(15, seed=2)
    assert as_list(miner(larger_is_closer=True)(s, y)) == ref((-s).tolist(), y.tolist())


def test_semihard_ties_are_not_semihard() -> None:
    # Anchor 0: positive 1 at 0.5; negatives at 0.5 (tie), 0.7 and 0.2. The tie is not farther.
    d = torch.tensor(
        [
            [0.0, 0.5, 0.5, 0.7, 0.2],
            [0.5, 0.0, 0.9, 0.9, 0.9],
            [0.5, 0.9, 0.0, 0.1, 0.1],
            [0.7, 0.9, 0.1, 0.0, 0.1],
            [0.2, 0.9, 0.1, 0.1, 0.0],
        ]
    )
    y = torch.tensor([0, 0, 1, 1, 1])
    a, p, n = SemiHardMiner()(d, y)
    assert (int(n[(a == 0) & (p == 1)]), int(n[(a == 1) & (p == 0)])) == (3, 2)  # anchor 1: none farther


def test_miners_return_no_grad_index_tensors() -> None:
    x = torch.randn(8, 3, requires_grad=True)
    mat = EuclideanDistance().pairwise(x)
    for miner, _ in MINERS:
        triplets = miner()(mat, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        assert all(not t.requires_grad and t.dtype == torch.long for t in triplets)


def test_empty_batches_give_empty_triplets() -> None:
    for miner, _ in MINERS:
        for labels in ([0], [0, 0, 0], [0, 1, 2]):
            a, p, n = miner()(torch.zeros(len(labels), len(labels)), torch.tensor(labels))
            assert len(a) == len(p) == len(n) == 0


# ---------------------------------------------------------------- distances


def test_distances_match_their_formulas() -> None:
    x = torch.randn(7, 4, dtype=torch.float64)
    rows = x.tolist()
    for i in range(7):
        for j in range(7):
            u, v = rows[i], rows[j]
            sq = sum((a - b) ** 2 for a, b in zip(u, v, strict=True))
            dot = sum(a * b for a, b in zip(u, v, strict=True))
            cos = dot / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))
            want = {"euclidean": math.sqrt(sq), "squared_euclidean": sq, "cosine": 1 - cos, "dot": dot}
            for cls in (EuclideanDistance, SquaredEuclideanDistance, CosineDistance, DotProductSimilarity):
                assert float(cls().pairwise(x)[i, j]) == pytest.approx(want[cls.name], abs=1e-7), cls.name


def test_distance_registry_and_direction() -> None:
    assert list(DISTANCES) == ["euclidean", "squared_euclidean", "cosine"]
    assert not any(cls.larger_is_closer for cls in DISTANCES.values())
    assert DotProductSimilarity.larger_is_closer
    ap, an = torch.tensor(1.0), torch.tensor(3.0)
    assert float(EuclideanDistance().triplet_gap(ap, an)) == -2.0
    assert float(DotProductSimilarity().triplet_gap(ap, an)) == 2.0
    with pytest.raises(ValueError, match="valid: euclidean, squared_euclidean, cosine"):
        get_distance("chebyshev")


def test_euclidean_gradient_is_zero_not_nan_at_coincident_points() -> None:
    x = torch.ones(4, 3, requires_grad=True)
    d = EuclideanDistance().pairwise(x)
    assert float(d.detach().abs().max()) == 0.0
    d.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    sq = torch.zeros(3, requires_grad=True)
    mining.safe_sqrt(sq).sum().backward()
    assert torch.equal(sq.grad, torch.zeros(3))


@pytest.mark.parametrize("cls", [EuclideanDistance, SquaredEuclideanDistance, CosineDistance])
def test_distance_gradcheck(cls: type[mining.Distance]) -> None:
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    off_diagonal = ~torch.eye(5, dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda t: cls().pairwise(t)[off_diagonal], (x,))
    assert torch.autograd.gradgradcheck(lambda t: cls().pairwise(t)[off_diagonal], (x,))


def test_label_masks_and_row_chunks() -> None:
    pos, neg = label_masks(torch.tensor([0, 0, 1]))
    assert pos.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    assert neg.tolist() == [[False, False, True], [False, False, True], [True, True, False]]
    chunks = list(row_chunks(10, 4, budget=9))
    assert [(c.start, c.stop) for c in chunks] == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert [(c.start, c.stop) for c in row_chunks(3, 100, budget=1)] == [(0, 1), (1, 2), (2, 3)]
