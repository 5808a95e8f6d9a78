"""Every loss and mining mode against a plain Python loop over explicit pairs/triplets (float64).

The references below are written from the definitions in the README "Losses" section, one pair or triplet
at a time, sharing no code with ``trainer.losses``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from trainer import losses, mining
from trainer.losses import CRITERIA, LOSSES, build_criterion, build_loss, loss_names

Vec = list[float]
Ref = tuple[float, dict[str, int]]

# ---------------------------------------------------------------- references


def _norm(v: Vec) -> Vec:
    n = math.sqrt(sum(t * t for t in v))
    return [t / n for t in v]


def _dist(u: Vec, v: Vec, kind: str) -> float:
    sq = sum((a - b) ** 2 for a, b in zip(u, v, strict=True))
    if kind == "euclidean":
        return math.sqrt(sq)
    if kind == "squared_euclidean":
        return sq
    return 1 - sum(a * b for a, b in zip(_norm(u), _norm(v), strict=True))


def _rows(x: torch.Tensor, normalize: bool) -> list[Vec]:
    rows = x.detach().double().tolist()
    return [_norm(r) for r in rows] if normalize else rows


def ref_contrastive(
    x: torch.Tensor, y: list[int], margin=1.0, distance="euclidean", form="hadsell", normalize=True
) -> Ref:
    z = _rows(x, normalize)
    total, n_pairs, n_pos, n_neg, active = 0.0, 0, 0, 0, 0
    for i in range(len(z)):
        for j in range(i + 1, len(z)):
            d = _dist(z[i], z[j], distance)
            n_pairs += 1
            if y[i] == y[j]:
                n_pos += 1
                total += d**2
            else:
                n_neg += 1
                slack = margin - d if form == "hadsell" else margin - d**2
                active += slack > 0
                total += max(0.0, slack) ** 2 if form == "hadsell" else max(0.0, slack)
    stats = {"pairs": n_pairs, "pos_pairs": n_pos, "neg_pairs": n_neg, "active_neg_pairs": active}
    return (total / n_pairs if n_pairs else 0.0), stats


def ref_triplet(
    x: torch.Tensor,
    y: list[int],
    margin=0.2,
    distance="euclidean",
    mining="semihard",
    soft=False,
    normalize=True,
) -> Ref:
    z = _rows(x, normalize)
    n = len(z)
    d = [[_dist(z[i], z[j], distance) for j in range(n)] for i in range(n)]

    def h(t: float) -> float:
        return math.log1p(math.exp(t)) if soft else max(0.0, t + margin)

    values: list[float] = []
    stats: dict[str, int] = {}
    if mining == "all":
        for a in range(n):
            for p in range(n):
                for q in range(n):
                    if p != a and y[p] == y[a] and y[q] != y[a]:
                        values.append(h(d[a][p] - d[a][q]))
        active = [v for v in values if v > 0]
        stats = {"valid_triplets": len(values), "active_triplets": len(active)}
        return (sum(active) / len(active) if active else 0.0), stats
    semihard = 0
    for a in range(n):
        pos = [p for p in range(n) if p != a and y[p] == y[a]]
        neg = [q for q in range(n) if y[q] != y[a]]
        if not pos or not neg:
            continue
        if mining == "hard":
            values.append(h(max(d[a][p] for p in pos) - min(d[a][q] for q in neg)))
            continue
        for p in pos:
            farther = [q for q in neg if d[a][q] > d[a][p]]
            semihard += bool(farther)
            q = min(farther, key=lambda q: d[a][q]) if farther else max(neg, key=lambda q: d[a][q])
            values.append(h(d[a][p] - d[a][q]))
    stats = {"triplets": len(values), "active_triplets": sum(v > 0 for v in values)}
    if mining == "semihard":
        stats["semihard_triplets"] = semihard
    else:
        stats["anchors"] = len(values)
    return (sum(values) / len(values) if values else 0.0), stats


def ref_npair(x: torch.Tensor, y: list[int], l2_reg=0.0, normalize=True) -> Ref:
    raw = _rows(x, False)
    reg = l2_reg * sum(sum(t * t for t in r) for r in raw) / len(raw) if raw else 0.0
    z = _rows(x, normalize)
    n = len(z)

    def s(i: int, j: int) -> float:
        return sum(a * b for a, b in zip(z[i], z[j], strict=True))

    terms, with_neg = [], 0
    for i in range(n):
        for j in range(n):
            if i != j and y[i] == y[j]:
                negs = [k for k in range(n) if y[k] != y[i]]
                with_neg += bool(negs)
                terms.append(math.log(1 + sum(math.exp(s(i, k) - s(i, j)) for k in negs)))
    loss = (sum(terms) / len(terms) if terms else 0.0) + reg
    return loss, {"pos_pairs": len(terms), "active_pairs": with_neg}


def ref_supcon(x: torch.Tensor, y: list[int], temperature=0.1, base_temperature=None, normalize=True) -> Ref:
    tb = temperature if base_temperature is None else base_temperature
    if x.dim() == 3:
        y = [label for label in y for _ in range(x.shape[1])]
        x = x.reshape(-1, x.shape[-1])
    z = _rows(x, True)
    n = len(z)

    def s(i: int, j: int) -> float:
        return sum(a * b for a, b in zip(z[i], z[j], strict=True)) / temperature

    per_anchor, n_pos = [], 0
    for i in range(n):
        positives = [p for p in range(n) if p != i and y[p] == y[i]]
        if not positives:
            continue
        n_pos += len(positives)
        log_denominator = math.log(sum(math.exp(s(i, a)) for a in range(n) if a != i))
        per_anchor.append(
            -(temperature / tb) * sum(s(i, p) - log_denominator for p in positives) / len(positives)
        )
    loss = sum(per_anchor) / len(per_anchor) if per_anchor else 0.0
    return loss, {"anchors": len(per_anchor), "pos_pairs": n_pos}


def ref_ntxent(x: torch.Tensor, y: Any, temperature=0.5, normalize=True) -> Ref:
    return ref_supcon(x, list(range(len(x))), temperature, temperature)


REFS: dict[str, Callable[..., Ref]] = {
    "contrastive": ref_contrastive,
    "triplet": ref_triplet,
    "npair": ref_npair,
    "supcon": ref_supcon,
    "ntxent": ref_ntxent,
}

# ---------------------------------------------------------------- configurations

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    *[("contrastive", {"distance": d, "form": f}) for d in mining.DISTANCES for f in ("hadsell", "squared")],
    ("contrastive", {"margin": 0.5, "normalize": False}),
    *[
        ("triplet", {"mining": m, "distance": d, "soft": s})
        for m in ("all", "hard", "semihard")
        for d in mining.DISTANCES
        for s in (False, True)
    ],
    ("triplet", {"mining": "all", "margin": 0.5, "normalize": False}),
    ("npair", {}),
    ("npair", {"l2_reg": 0.1, "normalize": False}),
    ("supcon", {}),
    ("supcon", {"temperature": 0.2, "base_temperature": 0.07}),
    ("ntxent", {}),
    ("ntxent", {"temperature": 0.1}),
]
IDS = [name + "".join(f"-{v}" for v in params.values()) for name, params in CONFIGS]


def make_batch(
    name: str, labels: list[int], dim: int = 5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 embeddings for ``labels``; ntxent gets (B, 2, D) views."""
    g = torch.Generator().manual_seed(seed)
    shape = (len(labels), 2, dim) if name == "ntxent" else (len(labels), dim)
    return torch.randn(*shape, generator=g, dtype=torch.float64), torch.tensor(labels, dtype=torch.long)


# Random classes of 1-4 members: singletons always present.
LAYOUTS = {
    "mixed": [3, 0, 2, 0, 1, 5, 1, 0, 2, 4, 1, 6],
    "single": [7],
    "pair": [1, 1],
    "same": [2] * 6,
    "distinct": list(range(7)),
}


def check_against_reference(name: str, params: dict[str, Any], x: torch.Tensor, y: torch.Tensor) -> None:
    fn = build_loss(name, **params)
    got = fn(x, y)
    want, want_stats = REFS[name](x, y.tolist(), **params)
    assert got.dtype == x.dtype
    assert float(got.detach()) == pytest.approx(want, rel=1e-9, abs=1e-9)
    for key, value in want_stats.items():
        assert fn.last_stats[key] == value, key


# ---------------------------------------------------------------- against the references


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
def test_matches_python_loop(name: str, params: dict[str, Any], layout: str) -> None:
    x, y = make_batch(name, LAYOUTS[layout])
    check_against_reference(name, params, x, y)


@pytest.mark.parametrize("views", [1, 3])
def test_supcon_accepts_views(views: int) -> None:
    x = torch.randn(6, views, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    check_against_reference("supcon", {}, x, y)


def test_ntxent_is_supcon_with_views_as_the_only_positives() -> None:
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    ntxent = build_loss("ntxent", temperature=0.3)(x, None)
    supcon = build_loss("supcon", temperature=0.3)(x, torch.arange(5))
    assert torch.allclose(ntxent, supcon)


@settings(max_examples=20, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=1, max_size=10),
    seed=st.integers(0, 2**16),
    config=st.sampled_from([c for c in CONFIGS if c[0] != "ntxent"]),
)
def test_random_label_layouts(labels: list[int], seed: int, config: tuple[str, dict[str, Any]]) -> None:
    name, params = config
    x, y = make_batch(name, labels, dim=3, seed=seed)
    check_against_reference(name, params, x, y)


def _dense_all_triplets(d: torch.Tensor, y: torch.Tensor, margin: float, soft: bool) -> torch.Tensor:
    """Vectorised (B, B, B) reference for mining="all", fine at test sizes."""
    same = y[:, None] == y[None, :]
    valid = (same & ~torch.eye(len(y), dtype=torch.bool))[:, :, None] & ~same[:, None, :]
    z = d[:, :, None] - d[:, None, :]
    v = torch.nn.functional.softplus(z) if soft else (z + margin).clamp_min(0)
    active = valid & (v > 0)
    return (v * active).sum() / active.sum()


@pytest.mark.parametrize(("soft", "block"), [(False, 30), (True, 30), (True, 100), (True, 10_000)])
def test_all_triplets_closed_form_matches_dense_values_and_gradients(
    soft: bool, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small budgets force many anchor chunks, and soft tiles of 1, 2 and all positives per anchor.
    monkeypatch.setattr(mining, "ROW_CHUNK_ELEMENTS", 50)
    monkeypatch.setattr(losses, "BLOCK_CHUNK_ELEMENTS", block)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (48,), generator=g)
    got = build_loss("triplet", mining="all", soft=soft, margin=0.3)(x, y)
    (grad_got,) = torch.autograd.grad(got, x)
    d = mining.EuclideanDistance().pairwise(torch.nn.functional.normalize(x, dim=-1))
    want = _dense_all_triplets(d, y, 0.3, soft)
    (grad_want,) = torch.autograd.grad(want, x)
    assert torch.allclose(got, want, rtol=1e-10)
    assert torch.allclose(grad_got, grad_want, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("mode", ["all", "hard", "semihard"])
def test_exact_ties_follow_the_strict_inequalities(mode: str) -> None:
    # Integer points and squared distances make d(a,p) + m == d(a,n) and d(a,n) == d(a,p) common:
    # a tie is an inactive "all" triplet and not a semi-hard negative.
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 3, (14, 2), generator=g).double().requires_grad_()
    y = torch.randint(0, 3, (14,), generator=g)
    params = {"mining": mode, "distance": "squared_euclidean", "margin": 1.0, "normalize": False}
    check_against_reference("triplet", params, x, y)
    if mode == "all":
        (grad_got,) = torch.autograd.grad(build_loss("triplet", **params)(x, y), x)
        want = _dense_all_triplets(mining.SquaredEuclideanDistance().pairwise(x), y, 1.0, False)
        (grad_want,) = torch.autograd.grad(want, x)
        assert torch.allclose(grad_got, grad_want)


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
def test_chunking_does_not_change_the_result(
    name: str, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = make_batch(name, [i % 4 for i in range(20)] + [9], seed=3)
    want = build_loss(name, **params)(x, y)
    monkeypatch.setattr(mining, "ROW_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(losses, "BLOCK_CHUNK_ELEMENTS", 1)
    assert torch.allclose(build_loss(name, **params)(x, y), want, rtol=1e-12)


# ---------------------------------------------------------------- gradients and invariances


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
def test_gradcheck(name: str, params: dict[str, Any]) -> None:
    x, y = make_batch(name, [0, 0, 1, 1, 1, 2], dim=3, seed=4)
    fn = build_loss(name, **params)
    assert torch.autograd.gradcheck(lambda t: fn(t, y), (x.requires_grad_(),))


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
def test_permutation_invariance(name: str, params: dict[str, Any]) -> None:
    x, y = make_batch(name, LAYOUTS["mixed"], seed=5)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    fn = build_loss(name, **params)
    x1, x2 = x.clone().requires_grad_(), x[perm].clone().requires_grad_()
    l1, l2 = fn(x1, y), fn(x2, y[perm])
    l1.backward()
    l2.backward()
    assert torch.allclose(l1, l2, rtol=1e-10, atol=1e-12)
    assert torch.allclose(x1.grad[perm], x2.grad, rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("layout", ["single", "same", "distinct"])
def test_degenerate_batches_give_finite_values_that_backpropagate(
    name: str, params: dict[str, Any], layout: str
) -> None:
    x, y = make_batch(name, LAYOUTS[layout])
    x.requires_grad_()
    loss = build_loss(name, **params)(x, y)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if layout == "single" and not params.get("l2_reg"):
        assert float(loss.detach()) == 0.0 and not x.grad.any()


def test_empty_triplet_batches_return_zero_with_zero_stats() -> None:
    for mode in ("all", "hard", "semihard"):
        fn = build_loss("triplet", mining=mode)
        for labels in ([0, 0, 0], [0, 1, 2]):
            x, y = make_batch("triplet", labels)
            assert float(fn(x, y)) == 0.0
            assert fn.last_stats["terms"] == 0


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
def test_identical_embeddings_are_finite(name: str, params: dict[str, Any]) -> None:
    x, y = make_batch(name, LAYOUTS["mixed"])
    x = x[:1].expand_as(x).clone().requires_grad_()
    loss = build_loss(name, **params)(x, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
def test_bf16_autocast_runs_in_fp32(name: str, params: dict[str, Any]) -> None:
    x, y = make_batch(name, LAYOUTS["mixed"])
    x = x.float().requires_grad_()
    layer = torch.nn.Linear(x.shape[-1], 8)
    fn = build_loss(name, **params)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = layer(x)
        assert z.dtype == torch.bfloat16
        loss = fn(z, y)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.weight.grad).all()
    assert float(loss.detach()) == pytest.approx(float(fn(z.detach().float(), y)), rel=1e-5, abs=1e-6)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
def test_no_tensor_grows_beyond_b_squared(
    name: str, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 96
    monkeypatch.setattr(losses, "BLOCK_CHUNK_ELEMENTS", n * n)
    x, y = make_batch(name, [i % 6 for i in range(n // 2 if name == "ntxent" else n)])
    x.requires_grad_()
    with _LargestTensor() as probe:
        build_loss(name, **params)(x, y).backward()
    assert probe.largest <= 2 * n * n  # (B, B+1) prefix sums are the largest; a (B, B, B) tensor is 96x more


# ---------------------------------------------------------------- registry and validation


def test_registry() -> None:
    assert loss_names() == ["contrastive", "triplet", "npair", "supcon", "ntxent"]
    assert set(LOSSES) == set(loss_names())
    for cls in LOSSES.values():
        assert tuple(inspect.signature(cls.__init__).parameters)[1:] == cls.PARAMS


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)
def test_params_resolve_every_parameter_and_rebuild_the_same_loss(name: str, params: dict[str, Any]) -> None:
    fn = build_loss(name, **params)
    assert list(fn.params) == list(LOSSES[name].PARAMS)
    assert fn.params == {**build_loss(name).params, **params}, "given values kept, the rest at defaults"
    x, y = make_batch(name, LAYOUTS["mixed"])
    assert torch.equal(build_loss(name, **fn.params)(x, y), fn(x, y))


def test_params_fill_in_defaults_the_caller_left_out() -> None:
    assert build_loss("supcon").params == {"temperature": 0.1, "base_temperature": 0.1, "normalize": True}
    assert build_loss("supcon", temperature=0.3).params["base_temperature"] == 0.3
    assert build_loss("ntxent").params == {"temperature": 0.5, "normalize": True}
    assert build_loss("triplet").params == {
        "margin": 0.2,
        "distance": "euclidean",
        "mining": "semihard",
        "soft": False,
        "normalize": True,
    }


def test_build_loss_rejects_unknown_names_and_parameters() -> None:
    with pytest.raises(ValueError, match="valid: contrastive, triplet, npair, supcon, ntxent"):
        build_loss("arcface")
    with pytest.raises(ValueError, match="temprature.*valid: temperature, base_temperature, normalize"):
        build_loss("supcon", temprature=0.1)
    with pytest.raises(ValueError, match="valid: all, hard, semihard"):
        build_loss("triplet", mining="easy")
    with pytest.raises(ValueError, match="valid: euclidean, squared_euclidean, cosine"):
        build_loss("contrastive", distance="manhattan")
    with pytest.raises(ValueError, match="valid: hadsell, squared"):
        build_loss("contrastive", form="quartic")
    with pytest.raises(ValueError, match="temperature"):
        build_loss("ntxent", temperature=0)
    with pytest.raises(ValueError, match="margin"):
        build_loss("triplet", margin=-1)


def test_bad_inputs_raise_value_error() -> None:
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="integer"):
        build_loss("triplet")(x, torch.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        build_loss("triplet")(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="required"):
        build_loss("supcon")(x, None)
    with pytest.raises(ValueError, match=r"\(B, 2, D\)"):
        build_loss("ntxent")(x, None)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        build_loss("npair")(x[None], torch.zeros(1, dtype=torch.long))


def test_last_stats_are_plain_python_numbers() -> None:
    for name, params in CONFIGS:
        x, y = make_batch(name, LAYOUTS["mixed"])
        fn = build_loss(name, **params)
        fn(x, y)
        assert fn.last_stats and all(type(v) in (int, float) for v in fn.last_stats.values())


def test_each_loss_declares_what_it_asks_of_the_training_loop() -> None:
    table = {
        name: (cls.views, cls.needs_pairs, cls.class_balanced, cls.batch_wide, cls.classifier)
        for name, cls in CRITERIA.items()
    }
    assert table == {
        "ce": (1, False, True, False, True),
        "contrastive": (1, True, True, True, False),
        "triplet": (1, True, True, True, False),
        "npair": (1, True, True, True, False),
        "supcon": (1, True, True, True, False),
        "ntxent": (2, False, False, True, False),
    }
    logits, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    want = -sum(torch.log_softmax(logits[i], 0)[y[i]] for i in range(6)) / 6  # plain loop
    assert torch.allclose(build_criterion("ce")(logits, y), want)


def test_the_training_loop_never_branches_on_a_loss_name() -> None:
    import ast
    from pathlib import Path

    import trainer.train

    tree = ast.parse(Path(trainer.train.__file__).read_text())
    compared = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        and any(
            isinstance(side, ast.Attribute) and side.attr == "loss" for side in [node.left, *node.comparators]
        )
    ]
    assert compared == [], f"use the loss's capabilities instead: {compared}"
