"""Metric-learning losses: contrastive, triplet (all / batch-hard / semi-hard), N-pair, SupCon, NT-Xent.

Pure PyTorch and no I/O. ``build_loss(name, **params)`` returns a module called as
``loss_fn(embeddings, labels) -> scalar``; after each call ``loss_fn.last_stats`` holds plain-python counts
(how many pairs / triplets / anchors the loss averaged over), so the trainer can log them.

Conventions shared by every loss:

* The math runs in float32 (float64 inputs stay float64) with autocast disabled, because softmax and
  distance terms lose too much in bf16/fp16. Masks use finite ``finfo(dtype).max/min`` sentinels, never
  ``inf`` (``inf - inf`` and ``0 * inf`` are NaN) nor ``1e9`` (overflows fp16).
* A batch with nothing to learn from returns ``embeddings.sum() * 0``: a zero that still backpropagates.
* Memory is O(B^2) for every loss and mining mode: a few ``(B, B)`` tensors plus bounded chunk temporaries.
  Miners (``trainer.mining``) return O(B^2) index tuples at most; ``mining="all"`` never lists its O(B^3)
  triplets (see ``_all_triplets``).
* A loss only sees the batch it is given, so a distributed caller can pass all-gathered embeddings/labels.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from trainer.mining import (
    MINERS,
    Distance,
    DotProductSimilarity,
    get_distance,
    label_masks,
    pack_rows,
    row_chunks,
)

Stats = dict[str, int | float]

# Entries of one dense (anchors x positives x negatives) tile of the soft-margin "all" triplet loss, the one
# computation with no closed form. 2**18 float32 entries (1 MiB per temporary) stay in cache and in malloc's
# heap: measured 3-7x faster on CPU than 2**24-entry tiles, which page-fault on every allocation.
BLOCK_CHUNK_ELEMENTS = 2**18


def _zero(x: torch.Tensor) -> torch.Tensor:
    """A 0.0 that is connected to the graph, so ``backward()`` works on an empty batch."""
    return x.sum() * 0


def _as_float(embeddings: torch.Tensor) -> torch.Tensor:
    if not torch.is_floating_point(embeddings):
        raise ValueError(f"embeddings must be a floating-point tensor, got {embeddings.dtype}")
    # Half precision is upcast; float64 is kept so gradcheck and reference tests stay exact.
    return embeddings if embeddings.dtype in (torch.float32, torch.float64) else embeddings.float()


def _check_labels(labels: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    if labels is None:
        raise ValueError("labels are required for this loss")
    if labels.dim() != 1 or len(labels) != n:
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if torch.is_floating_point(labels) or torch.is_complex(labels):
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    return labels.to(device)


class Capabilities:
    """What a loss asks of the training loop, declared once per class (the loop never branches on names)."""

    views: ClassVar[int] = 1  # inputs per sample: NT-Xent compares two augmented views of each
    needs_pairs: ClassVar[bool] = True  # positives come from labels: every class needs 2+ samples
    class_balanced: ClassVar[bool] = True  # batches from the P×K sampler; False: plain shuffled batches
    batch_wide: ClassVar[bool] = True  # couples the samples of a batch: DDP gathers every rank's outputs
    classifier: ClassVar[bool] = False  # trains through a linear classifier head, not a projection head


class MetricLoss(Capabilities, torch.nn.Module):
    """Base class: input checks, fp32 without autocast, and ``last_stats`` bookkeeping.

    Subclasses implement ``_compute(x, labels) -> (loss, stats)`` on a float32/64 ``(N, D)`` batch.
    """

    name: ClassVar[str] = ""
    # Constructor keywords accepted by build_loss; kept equal to __init__'s signature (a test checks it).
    PARAMS: ClassVar[tuple[str, ...]] = ("normalize",)

    def __init__(self, normalize: bool = True) -> None:
        super().__init__()
        self.normalize = bool(normalize)
        self.last_stats: Stats = {}

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        x, y = self._prepare(embeddings, labels)
        with torch.autocast(device_type=x.device.type, enabled=False):
            loss, stats = self._compute(x, y)
        self.last_stats = stats
        return loss

    def _prepare(
        self, embeddings: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if embeddings.dim() != 2:
            raise ValueError(f"embeddings must have shape (B, D), got {tuple(embeddings.shape)}")
        return _as_float(embeddings), _check_labels(labels, len(embeddings), embeddings.device)

    def _compute(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        raise NotImplementedError

    @property
    def params(self) -> dict[str, Any]:
        """Every constructor parameter as resolved, defaults included (the model card records them).

        ``build_loss(self.name, **self.params)`` rebuilds an identical loss.
        """
        return {p: getattr(self, p) for p in self.PARAMS}

    def extra_repr(self) -> str:
        return ", ".join(f"{p}={v!r}" for p, v in self.params.items())


def _check_choice(param: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {param} {value!r}; valid: {', '.join(valid)}")


def _check_positive(param: str, value: float, allow_zero: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{param} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value}")
    return value


class ContrastiveLoss(MetricLoss):
    """Contrastive loss (Hadsell, Chopra & LeCun 2006), averaged over all unordered pairs i < j.

    ``form="hadsell"``: positives add d^2, negatives max(0, m - d)^2.
    ``form="squared"``: positives add d^2, negatives max(0, m - d^2).
    """

    name = "contrastive"
    PARAMS = ("margin", "distance", "form", "normalize")
    FORMS: ClassVar[tuple[str, ...]] = ("hadsell", "squared")

    def __init__(
        self, margin: float = 1.0, distance: str = "euclidean", form: str = "hadsell", normalize: bool = True
    ) -> None:
        super().__init__(normalize)
        self.margin = _check_positive("margin", margin, allow_zero=True)
        self.dist: Distance = get_distance(distance)
        self.distance = distance
        _check_choice("form", form, self.FORMS)
        self.form = form

    def _compute(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        n = len(x)
        n_pairs = n * (n - 1) // 2
        if n_pairs == 0:
            return _zero(x), {"pairs": 0, "pos_pairs": 0, "neg_pairs": 0, "active_neg_pairs": 0, "terms": 0}
        if self.normalize:
            x = F.normalize(x, dim=-1)
        d = self.dist.pairwise(x)
        pos, neg = label_masks(labels)
        upper = torch.ones_like(pos).triu_(1)
        # Gather each kind of pair into a flat vector, then apply its formula: no (B, B) term matrices.
        d_pos = d.masked_select(pos & upper)
        d_neg = d.masked_select(neg & upper)
        slack = self.margin - (d_neg if self.form == "hadsell" else d_neg * d_neg)
        neg_terms = slack.clamp_min(0).pow(2) if self.form == "hadsell" else slack.clamp_min(0)
        loss = (d_pos.pow(2).sum() + neg_terms.sum()) / n_pairs
        stats: Stats = {
            "pairs": n_pairs,
            "pos_pairs": len(d_pos),
            "neg_pairs": len(d_neg),
            "active_neg_pairs": int((slack > 0).sum()),
            "terms": n_pairs,
        }
        return loss, stats


class _PrecomputedGrad(torch.autograd.Function):
    """Return ``value`` with d(value)/d(mat) = ``grad``, both computed by the caller without autograd.

    Used where the loss is a sum of O(B^3) terms reduced chunk by chunk: keeping each chunk's autograd graph
    alive until backward would store O(B^3) tensors; the (B, B) gradient is all backward needs.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, mat: torch.Tensor, value: torch.Tensor, grad: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(grad)
        return value.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        (grad,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return g * grad, None, None


def _all_triplets_hinge(
    d: torch.Tensor, labels: torch.Tensor, margin: float
) -> tuple[float, int, torch.Tensor]:
    """Sum and count of the positive terms max(0, d(a,p) - d(a,n) + m) over all triplets, in closed form.

    Per anchor, with its negative distances sorted ascending (y_1 <= y_2 <= ...) and x = d(a,p) + m, the
    active negatives of the positive p are those with y < x; if there are c of them, they contribute
    c * x - (y_1 + ... + y_c). ``searchsorted`` finds c and a prefix sum gives the rest, so the exact loss
    costs O(B^2 log B) time and O(rows x B) memory per anchor chunk. The gradient w.r.t. the matrix is just as
    cheap: d(a,p) gets c, d(a,n) gets minus the number of positives with x > d(a,n).
    """
    big = torch.finfo(d.dtype).max
    n = len(labels)
    grad = torch.zeros_like(d)
    total = torch.zeros((), dtype=torch.float64, device=d.device)
    count = torch.zeros((), dtype=torch.long, device=d.device)
    col = torch.arange(n, device=d.device)
    for rows in row_chunks(n, n):
        pos, neg = label_masks(labels, rows)
        a, p, slot, width = pack_rows(pos)
        if width == 0:
            continue
        dr = d[rows]
        sorted_neg = dr.masked_fill(~neg, big).sort(1).values
        # Each anchor's thresholds x = d(a,p) + m, packed left; padding -max counts no negative below it.
        thresh = dr.new_full((len(dr), width), -big)
        thresh[a, slot] = dr[a, p] + margin
        active = torch.searchsorted(sorted_neg, thresh, right=False)
        # Prefix sums in float64: c * x - sum(y) cancels, and both grow with B.
        real = col[None, :] < neg.sum(1, keepdim=True)
        prefix = torch.zeros(len(dr), n + 1, dtype=torch.float64, device=d.device)
        torch.cumsum(sorted_neg.masked_fill(~real, 0), 1, dtype=torch.float64, out=prefix[:, 1:])
        total += (active * thresh.double() - prefix.gather(1, active)).sum()
        count += active.sum()
        # Minus the number of the anchor's positives with x > d(a,n), for each negative.
        beaten_by = width - torch.searchsorted(thresh.sort(1).values, dr, right=True)
        grad_rows = torch.where(neg, -beaten_by.to(d.dtype), 0)
        grad_rows[a, p] = active[a, slot].to(d.dtype)
        grad[rows] = grad_rows
    return float(total), int(count), grad


def _all_triplets_soft(d: torch.Tensor, labels: torch.Tensor) -> tuple[float, int, torch.Tensor]:
    """Sum and count of softplus(d(a,p) - d(a,n)) over all triplets, with its gradient w.r.t. ``d``.

    softplus has no closed-form reduction, so the terms are evaluated densely, but class by class (anchors of
    class k only meet the n_k positives and B - n_k negatives of k, not B x B entries) and in tiles of at
    most ``BLOCK_CHUNK_ELEMENTS`` entries: O(B^3 / classes) time, O(B^2) memory. The gradient is
    accumulated on the fly (sigmoid of the same block), so nothing is kept for backward but one (B, B) matrix.
    """
    big = torch.finfo(d.dtype).max
    grad = torch.zeros_like(d)
    total = torch.zeros((), dtype=torch.float64, device=d.device)
    count = 0
    classes, counts = torch.unique(labels, return_counts=True)
    for cls, n_k in zip(classes.tolist(), counts.tolist(), strict=True):
        n_neg = len(labels) - n_k
        if n_k < 2 or n_neg == 0:
            continue
        members = (labels == cls).nonzero().squeeze(1)
        others = (labels != cls).nonzero().squeeze(1)
        d_pos = d[members[:, None], members[None, :]]
        # An anchor is not its own positive: push d(a,a) to -max so softplus and sigmoid give exactly 0.
        d_pos.fill_diagonal_(-big)
        d_neg = d[members[:, None], others[None, :]]
        g_pos = torch.zeros_like(d_pos)
        g_neg = torch.zeros_like(d_neg)
        # Tiles of (anchors x positives x negatives) under the budget; a tile of one anchor's positives
        # when a whole anchor is already too big.
        per_anchor = n_k * n_neg
        anchor_step = max(1, BLOCK_CHUNK_ELEMENTS // per_anchor)
        pos_step = n_k if per_anchor <= BLOCK_CHUNK_ELEMENTS else max(1, BLOCK_CHUNK_ELEMENTS // n_neg)
        for a0 in range(0, n_k, anchor_step):
            a = slice(a0, a0 + anchor_step)
            for p0 in range(0, n_k, pos_step):
                p = slice(p0, p0 + pos_step)
                z = d_pos[a, p, None] - d_neg[a, None, :]
                total += F.softplus(z).sum(dtype=torch.float64)
                sig = torch.sigmoid(z)
                g_pos[a, p] = sig.sum(2)
                g_neg[a] -= sig.sum(1)
        grad[members[:, None], members[None, :]] = g_pos
        grad[members[:, None], others[None, :]] = g_neg
        count += n_k * (n_k - 1) * n_neg
    return float(total), count, grad


def _all_triplets(
    mat: torch.Tensor, labels: torch.Tensor, margin: float, soft: bool, larger_is_closer: bool
) -> tuple[torch.Tensor, Stats]:
    """Mean over all active triplets, without materialising them (O(B^2) memory, see the helpers)."""
    n = len(labels)
    n_k = torch.unique(labels, return_counts=True)[1].long()
    valid = int((n_k * (n_k - 1) * (n - n_k)).sum())
    with torch.no_grad():
        d = -mat.detach() if larger_is_closer else mat.detach()
        if soft:
            total, active, grad = _all_triplets_soft(d, labels)
        else:
            total, active, grad = _all_triplets_hinge(d, labels, margin)
    stats: Stats = {"valid_triplets": valid, "active_triplets": active, "terms": active}
    if active == 0:
        return _zero(mat), stats
    if larger_is_closer:
        grad = -grad
    value = torch.tensor(total / active, dtype=mat.dtype, device=mat.device)
    return _PrecomputedGrad.apply(mat, value, grad / active), stats


class TripletLoss(MetricLoss):
    """Triplet loss h(d(a,p) - d(a,n)) with h(x) = max(0, x + margin), or softplus(x) when ``soft``.

    ``mining="all"``: mean over the valid triplets whose term is > 0 (with ``soft`` every term is > 0).
    ``mining="hard"``: batch-hard, one triplet per anchor (farthest positive, nearest negative).
    ``mining="semihard"``: one triplet per positive pair, with the nearest negative farther than the positive
    (else the farthest negative).
    """

    name = "triplet"
    PARAMS = ("margin", "distance", "mining", "soft", "normalize")
    MINING: ClassVar[tuple[str, ...]] = ("all", "hard", "semihard")

    def __init__(
        self,
        margin: float = 0.2,
        distance: str = "euclidean",
        mining: str = "semihard",
        soft: bool = False,
        normalize: bool = True,
    ) -> None:
        super().__init__(normalize)
        self.margin = _check_positive("margin", margin, allow_zero=True)
        self.dist: Distance = get_distance(distance)
        self.distance = distance
        _check_choice("mining", mining, self.MINING)
        self.mining = mining
        self.soft = bool(soft)
        self.miner = None if mining == "all" else MINERS[mining](self.dist.larger_is_closer)

    def _hinge(self, gap: torch.Tensor) -> torch.Tensor:
        return F.softplus(gap) if self.soft else (gap + self.margin).clamp_min(0)

    def _compute(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        if self.normalize:
            x = F.normalize(x, dim=-1)
        mat = self.dist.pairwise(x)
        if self.miner is None:
            return _all_triplets(mat, labels, self.margin, self.soft, self.dist.larger_is_closer)
        a, p, n = self.miner(mat, labels)
        # One flat gather for both ends: its backward builds one (B, B) gradient, not two.
        ap, an = mat.reshape(-1)[torch.cat([a * len(mat) + p, a * len(mat) + n])].chunk(2)
        gap = self.dist.triplet_gap(ap, an)
        terms = self._hinge(gap)
        stats: Stats = {"triplets": len(a), "active_triplets": int((terms > 0).sum()), "terms": len(a)}
        if self.mining == "hard":
            stats["anchors"] = len(a)
        else:
            stats["semihard_triplets"] = int((gap < 0).sum())
        return (terms.mean() if len(a) else _zero(mat)), stats


class NPairLoss(MetricLoss):
    """Multi-class N-pair loss (Sohn 2016) over every ordered positive pair (i, j).

    With s the inner product: log(1 + sum_{k: yk != yi} exp(s(i,k) - s(i,j))), computed as
    softplus(logsumexp_k s(i,k) - s(i,j)) and averaged over positive pairs (0 for an anchor without
    negatives). ``l2_reg * mean ||zi||^2`` on the raw embeddings is added, which only matters with
    ``normalize=False``.
    """

    name = "npair"
    PARAMS = ("l2_reg", "normalize")

    def __init__(self, l2_reg: float = 0.0, normalize: bool = True) -> None:
        super().__init__(normalize)
        self.l2_reg = _check_positive("l2_reg", l2_reg, allow_zero=True)

    def _compute(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        reg = self.l2_reg * x.pow(2).sum(1).mean() if self.l2_reg and len(x) else None
        if self.normalize:
            x = F.normalize(x, dim=-1)
        s = DotProductSimilarity().pairwise(x)
        pos, neg = label_masks(labels)
        n_pos = int(pos.sum())
        has_neg = neg.any(1)
        stats: Stats = {
            "pos_pairs": n_pos,
            "active_pairs": int((pos & has_neg[:, None]).sum()),
            "terms": n_pos,
        }
        if n_pos == 0:
            loss = _zero(x)
        else:
            # LSE over the anchor's negatives (rows without any give ~finfo.min, hence a softplus of 0), then
            # the formula on the flat vector of positive pairs (row-major, like masked_select).
            neg_lse = s.masked_fill(~neg, torch.finfo(s.dtype).min).logsumexp(1)
            z = neg_lse.repeat_interleave(pos.sum(1)) - s.masked_select(pos)
            loss = F.softplus(z).sum() / n_pos
        return (loss + reg if reg is not None else loss), stats


def _supcon(
    x: torch.Tensor, labels: torch.Tensor, temperature: float, base_temperature: float
) -> tuple[torch.Tensor, Stats]:
    """SupCon L_out on flat ``(N, D)`` rows; shared by ``supcon`` and ``ntxent``.

    Uses masked row sums instead of a (N, N) log-probability matrix, so autograd keeps one float (N, N)
    tensor (the logsumexp input) plus boolean masks.
    """
    pos, _ = label_masks(labels)
    n_pos = pos.sum(1)
    anchors = n_pos > 0
    stats: Stats = {"anchors": int(anchors.sum()), "pos_pairs": int(n_pos.sum()), "terms": int(anchors.sum())}
    if stats["anchors"] == 0:
        return _zero(x), stats
    xn = F.normalize(x, dim=-1)
    s = (xn / temperature) @ xn.T
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    lse = s.masked_fill(eye, torch.finfo(s.dtype).min).logsumexp(1)
    mean_pos = s.masked_fill(~pos, 0).sum(1) / n_pos.clamp_min(1)
    per_anchor = -(temperature / base_temperature) * (mean_pos - lse)
    return per_anchor[anchors].mean(), stats


class SupConLoss(MetricLoss):
    """Supervised contrastive loss L_out (Khosla et al. 2020) on s = cos / temperature.

    Per anchor i with positives P(i): -(t / t_b) * mean_{p in P(i)} [s(i,p) - log sum_{a != i} exp(s(i,a))],
    averaged over anchors with positives. Accepts ``(B, D)`` or ``(B, V, D)`` (V views, labels ``(B,)``).
    The cosine ignores the norm, so ``normalize`` has no effect here.
    """

    name = "supcon"
    PARAMS = ("temperature", "base_temperature", "normalize")

    def __init__(
        self, temperature: float = 0.1, base_temperature: float | None = None, normalize: bool = True
    ) -> None:
        super().__init__(normalize)
        self.temperature = _check_positive("temperature", temperature)
        self.base_temperature = (
            self.temperature
            if base_temperature is None
            else _check_positive("base_temperature", base_temperature)
        )

    def _prepare(
        self, embeddings: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if embeddings.dim() not in (2, 3):
            raise ValueError(f"embeddings must have shape (B, D) or (B, V, D), got {tuple(embeddings.shape)}")
        y = _check_labels(labels, len(embeddings), embeddings.device)
        if embeddings.dim() == 3:
            # Views of one sample share its label; row order does not matter to the loss.
            y = y.repeat_interleave(embeddings.shape[1])
            embeddings = embeddings.reshape(-1, embeddings.shape[-1])
        return _as_float(embeddings), y

    def _compute(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        return _supcon(x, labels, self.temperature, self.base_temperature)


class NTXentLoss(MetricLoss):
    """NT-Xent (SimCLR, Chen et al. 2020): SupCon where a sample's two views are each other's only positive.

    Embeddings ``(B, 2, D)``; labels are ignored and may be None. Equals ``supcon`` with
    ``base_temperature = temperature`` on labels ``0..B-1``.
    """

    name = "ntxent"
    PARAMS = ("temperature", "normalize")
    views = 2
    needs_pairs = False  # self-supervised: labels play no part
    class_balanced = False

    def __init__(self, temperature: float = 0.5, normalize: bool = True) -> None:
        super().__init__(normalize)
        self.temperature = _check_positive("temperature", temperature)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(embeddings, labels)

    def _prepare(
        self, embeddings: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if embeddings.dim() != 3 or embeddings.shape[1] != 2:
            raise ValueError(f"embeddings must have shape (B, 2, D), got {tuple(embeddings.shape)}")
        sample = torch.arange(len(embeddings), device=embeddings.device).repeat_interleave(2)
        return _as_float(embeddings.reshape(-1, embeddings.shape[-1])), sample

    def _compute(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        return _supcon(x, labels, self.temperature, self.temperature)


LOSSES: dict[str, type[MetricLoss]] = {
    cls.name: cls for cls in (ContrastiveLoss, TripletLoss, NPairLoss, SupConLoss, NTXentLoss)
}


class ClassifierLoss(Capabilities, torch.nn.Module):
    """The ``ce`` baseline: cross-entropy of a linear classifier head over the encoder's output.

    A per-sample mean, so it is not batch-wide: DDP's gradient average over equal shards is already exact.
    """

    name: ClassVar[str] = "ce"
    PARAMS: ClassVar[tuple[str, ...]] = ()
    needs_pairs = False
    batch_wide = False
    classifier = True

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    @property
    def params(self) -> dict[str, Any]:
        return {}


Criterion = MetricLoss | ClassifierLoss
CRITERIA: dict[str, type[Criterion]] = {ClassifierLoss.name: ClassifierLoss, **LOSSES}


def build_criterion(name: str, **params: Any) -> Criterion:
    """What training minimises: any metric loss by name, or ``ce`` (the classifier baseline)."""
    return ClassifierLoss() if name == ClassifierLoss.name and not params else build_loss(name, **params)


def loss_names() -> list[str]:
    """Names accepted by ``build_loss``."""
    return list(LOSSES)


def build_loss(name: str, **params: Any) -> MetricLoss:
    """Instantiate a loss by name; ``ValueError`` lists the valid names or parameters."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    cls = LOSSES[name]
    unknown = sorted(set(params) - set(cls.PARAMS))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for loss {name!r}; valid: {', '.join(cls.PARAMS)}"
        )
    return cls(**params)
