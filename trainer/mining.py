"""Pairwise distances, label masks and triplet miners for the losses in ``trainer.losses``.

The contract follows pytorch-metric-learning: a ``Distance`` turns a batch into a ``(B, B)`` matrix and
knows whether a larger value means closer; a miner reads that matrix under ``no_grad`` and returns index
tensors ``(a, p, n)``; the loss gathers the *differentiable* matrix at those indices. The matrix is computed
once per step and shared by miner and loss.

Memory: every miner walks the anchors in row chunks of at most ``ROW_CHUNK_ELEMENTS`` matrix entries, so its
temporaries are bounded and the whole step stays O(B^2). No miner ever enumerates the O(B^3) set of all
triplets; ``mining="all"`` is reduced in closed form by the loss instead (see ``trainer.losses``).

Everything here works on whatever batch it is given, so a distributed caller can pass embeddings and labels
all-gathered from every rank and get the global-batch loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import torch

# Entries of a (rows x B) slice processed at once by row-chunked code. 2**22 float32 entries are 16 MiB per
# temporary, small enough that the ~10 temporaries of a chunk never rival the (B, B) matrix itself.
ROW_CHUNK_ELEMENTS = 2**22


def row_chunks(n_rows: int, row_len: int, budget: int | None = None) -> Iterator[slice]:
    """Yield row slices whose ``rows * row_len`` stays under the element budget (at least one row)."""
    budget = ROW_CHUNK_ELEMENTS if budget is None else budget
    step = max(1, budget // max(1, row_len))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


def pack_rows(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Coordinates that pack each row's True entries to the left of a ``(rows, width)`` matrix.

    Returns ``(row, col, slot, width)``: entry ``mask[row, col]`` goes to ``packed[row, slot]``. Per-anchor
    searches then run over an anchor's positives only (about B / classes per row) instead of all B columns.
    """
    row, col = mask.nonzero(as_tuple=True)  # row-major, so each row's entries are consecutive
    per_row = mask.sum(1)
    row_start = per_row.cumsum(0) - per_row
    slot = torch.arange(len(row), device=mask.device) - row_start[row]
    width = int(per_row.max()) if len(row) else 0
    return row, col, slot, width


def label_masks(labels: torch.Tensor, rows: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks of positives (same label, i != j) and negatives (different label).

    ``(B, B)``, or ``(len(rows), B)`` for the anchors in ``rows`` when working in chunks.
    """
    rows = slice(0, len(labels)) if rows is None else rows
    same = labels[rows, None] == labels[None, :]
    neg = ~same
    same[:, rows].fill_diagonal_(False)
    return same, neg


class _SafeSqrt(torch.autograd.Function):
    """sqrt with gradient 0 at 0, so coincident embeddings never produce inf/NaN gradients.

    A custom function (rather than ``where(sq > 0, sqrt(clamp(sq)), 0)``) saves one ``(B, B)`` tensor for
    backward instead of three, which matters at B = 8192.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, sq: torch.Tensor) -> torch.Tensor:
        d = sq.clamp_min(0).sqrt_()
        ctx.save_for_backward(d)
        return d

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (d,) = ctx.saved_tensors  # type: ignore[attr-defined]
        tiny = torch.finfo(d.dtype).tiny
        if torch.is_grad_enabled():  # create_graph=True: out-of-place, so double backward works
            return grad * torch.where(d > 0, (2 * d).clamp_min(tiny).reciprocal(), 0)
        # 1 / (2d), finite everywhere (tiny clamp), then exactly 0 where d == 0; in place saves two (B, B).
        return grad * (2 * d).clamp_min_(tiny).reciprocal_().masked_fill_(d == 0, 0)


def safe_sqrt(sq: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(sq, 0))`` whose gradient is 0 (not inf) where the value is 0."""
    return _SafeSqrt.apply(sq)  # type: ignore[no-any-return]


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """``||xi - xj||^2`` via the Gram matrix (O(B^2) memory, never a (B, B, D) difference tensor).

    Rounding can leave tiny negatives; callers clamp. ``addmm`` plus an in-place add (whose backward needs
    no saved input) costs one (B, B) tensor and two passes instead of four of each.
    """
    sq_norms = x.pow(2).sum(1)
    return torch.addmm(sq_norms[:, None], x, x.T, alpha=-2).add_(sq_norms[None, :])


class Distance:
    """A pairwise measure on the rows of one batch. ``larger_is_closer`` tells miners which way to sort."""

    name: ClassVar[str] = ""
    larger_is_closer: ClassVar[bool] = False

    def pairwise(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, B)`` matrix of the measure between all rows of ``x``."""
        raise NotImplementedError

    def triplet_gap(self, ap: torch.Tensor, an: torch.Tensor) -> torch.Tensor:
        """How much closer the negative is than the positive: d(a,p) - d(a,n), or s(a,n) - s(a,p)."""
        return an - ap if self.larger_is_closer else ap - an


class EuclideanDistance(Distance):
    """``||zi - zj||_2``; the safe sqrt clamps rounding negatives and has zero gradient at 0."""

    name = "euclidean"

    def pairwise(self, x: torch.Tensor) -> torch.Tensor:
        return safe_sqrt(squared_distances(x))


class SquaredEuclideanDistance(Distance):
    """``||zi - zj||_2^2``."""

    name = "squared_euclidean"

    def pairwise(self, x: torch.Tensor) -> torch.Tensor:
        return squared_distances(x).relu_()  # relu_ saves only its output, the matrix itself


class CosineDistance(Distance):
    """``1 - cos(zi, zj)``; normalises internally, so it ignores the embedding norm."""

    name = "cosine"

    def pairwise(self, x: torch.Tensor) -> torch.Tensor:
        xn = torch.nn.functional.normalize(x, dim=-1)
        return (xn @ xn.T).neg_().add_(1)  # 1 - cos, in place: one (B, B) tensor


class DotProductSimilarity(Distance):
    """``zi . zj`` (the cosine when the rows are unit vectors); larger means closer."""

    name = "dot"
    larger_is_closer = True

    def pairwise(self, x: torch.Tensor) -> torch.Tensor:
        return x @ x.T


# The distances a user may choose for ``contrastive`` and ``triplet``.
DISTANCES: dict[str, type[Distance]] = {
    cls.name: cls for cls in (EuclideanDistance, SquaredEuclideanDistance, CosineDistance)
}


def get_distance(name: str) -> Distance:
    """Instantiate a distance by name; ``ValueError`` lists the valid names."""
    if name not in DISTANCES:
        raise ValueError(f"unknown distance {name!r}; valid: {', '.join(DISTANCES)}")
    return DISTANCES[name]()


class TripletMiner:
    """Base miner: ``miner(mat, labels) -> (a, p, n)`` long tensors, computed under ``no_grad``.

    ``mat`` is the pairwise matrix of a ``Distance``; with ``larger_is_closer`` it is a similarity and is
    negated first, so subclasses only ever see "smaller is closer".
    """

    def __init__(self, larger_is_closer: bool = False) -> None:
        self.larger_is_closer = larger_is_closer

    def __call__(
        self, mat: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            d = -mat.detach() if self.larger_is_closer else mat.detach()
            return self.mine(d, labels)

    def mine(self, d: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def _cat_triplets(
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not parts:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty.clone(), empty.clone()
    a, p, n = zip(*parts, strict=True)
    return torch.cat(a), torch.cat(p), torch.cat(n)


class BatchHardMiner(TripletMiner):
    """Batch-hard (Hermans et al. 2017): per anchor, its farthest positive and its nearest negative.

    Anchors without a positive or without a negative are skipped. One triplet per anchor, O(B) output.
    """

    def mine(self, d: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        big = torch.finfo(d.dtype).max
        parts = []
        for rows in row_chunks(len(labels), len(labels)):
            pos, neg = label_masks(labels, rows)
            anchors = (pos.any(1) & neg.any(1)).nonzero().squeeze(1)
            hardest_p = d[rows].masked_fill(~pos, -big).argmax(1)
            hardest_n = d[rows].masked_fill(~neg, big).argmin(1)
            parts.append((anchors + rows.start, hardest_p[anchors], hardest_n[anchors]))
        return _cat_triplets(parts, d.device)


class SemiHardMiner(TripletMiner):
    """Semi-hard (FaceNet 2015): one negative per positive pair (a, p) whose anchor has a negative.

    The negative is the nearest one that is still farther than the positive, d(a,n) > d(a,p); if there is
    none, the farthest negative. Each anchor row's negative distances are sorted once and only its positives
    are placed with ``searchsorted``: O(B^2 log B) time and O(rows x B) memory per anchor chunk, instead of
    PML's (B, B, B) comparison.
    """

    def mine(self, d: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        big = torch.finfo(d.dtype).max
        parts = []
        for rows in row_chunks(len(labels), len(labels)):
            pos, neg = label_masks(labels, rows)
            n_neg = neg.sum(1)
            pos &= (n_neg > 0)[:, None]
            a, p, slot, width = pack_rows(pos)
            if width == 0:
                continue
            dr = d[rows]
            # Non-negatives sort to the end behind a finite sentinel, so the first n_neg entries of each row
            # are its negatives in ascending order.
            sorted_neg, order = dr.masked_fill(~neg, big).sort(1)
            queries = dr.new_full((len(dr), width), big)
            queries[a, slot] = dr[a, p]
            # Position of the first negative strictly farther than the positive; past the end means none.
            k = torch.searchsorted(sorted_neg, queries, right=True)[a, slot]
            last = n_neg[a] - 1
            k = torch.where(k <= last, k, last)
            parts.append((a + rows.start, p, order[a, k]))
        return _cat_triplets(parts, d.device)


MINERS: dict[str, type[TripletMiner]] = {"hard": BatchHardMiner, "semihard": SemiHardMiner}
