"""The article's findings, each judged from the grid's numbers by the rule its function states."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trainer.compare.grid import BASELINE, MINING_MODES
from trainer.compare.results import KNN, PROBE, Group, Groups, Stat, finished, loss_order

# An embedding counts as collapsed when its linear probe or kNN-5 accuracy ends this close to chance.
COLLAPSE_MARGIN = 0.1


@dataclass
class Finding:
    verdict: str  # "confirmed", "partly confirmed", "contradicted", "cannot say"
    evidence: str


FINDINGS = (
    "every contrastive loss except triplet with hard mining beats the MLP baseline",
    "semi-hard mining works best among the triplet variants (as FaceNet reported)",
    "accuracy falls as batch size grows for all losses",
    "supervised NT-Xent degrades least at large batch",
    "hard-mining triplet collapses",
    "semi-hard triplet ran out of memory at batch 2048 on a 16 GB machine",
)


def check_findings(groups: Groups, batch_sizes: Sequence[int], epoch: str) -> list[Finding]:
    """A verdict on each of :data:`FINDINGS`, from the mean linear-probe accuracies at ``epoch``."""
    losses = loss_order({loss for loss, _ in groups})
    contrastive = [loss for loss in losses if loss != BASELINE]
    small, large = (batch_sizes[0], batch_sizes[-1]) if batch_sizes else (0, 0)
    return [
        _beats_baseline(groups, contrastive, small, epoch),
        _semihard_best(groups, batch_sizes, small, epoch),
        _falls_with_batch(groups, losses, batch_sizes, epoch),
        _supcon_degrades_least(groups, contrastive, small, large, epoch),
        _hard_collapses(groups, batch_sizes, epoch),
        _semihard_oom(groups, large),
    ]


def _verdict(agree: int, total: int) -> str:
    return "confirmed" if agree == total else "contradicted" if agree == 0 else "partly confirmed"


def _names(losses: Iterable[str]) -> str:
    return ", ".join(f"`{x}`" for x in losses) or "none"


def _beats_baseline(groups: Groups, contrastive: list[str], b: int, epoch: str) -> Finding:
    """Judged at the smallest batch (B = 32, lr = 0.001 in the article). A loss beats the baseline
    when its mean is higher by more than the seeds' sd (the larger of the two); a smaller gap is a tie."""
    base = finished(groups, BASELINE, b)
    if base is None:
        return Finding("cannot say", f"No finished `{BASELINE}` baseline run at B = {b}.")
    rows, outcome = [], {}
    for loss in contrastive:
        group = finished(groups, loss, b)
        if group is None:
            continue
        diff = group.acc(epoch) - base.acc(epoch)
        noise = max(group.stat(PROBE, epoch).sd, base.stat(PROBE, epoch).sd)
        outcome[loss] = "beats" if diff > noise else "loses" if diff < -noise else "ties"
        rows.append(f"`{loss}` {diff:+.4f} ({outcome[loss]}, sd {noise:.4f})")
    claimed = [loss for loss in outcome if loss != "triplet:hard"]  # the losses that should beat it
    if not claimed:
        return Finding("cannot say", f"No finished contrastive run besides `triplet:hard` at B = {b}.")
    verdict = _verdict(sum(outcome[loss] == "beats" for loss in claimed), len(claimed))
    if verdict == "confirmed" and outcome.get("triplet:hard") == "beats":
        verdict = "partly confirmed"  # the exception the article names did not hold
    beats, ties, loses = ([loss for loss, o in outcome.items() if o == k] for k in ("beats", "ties", "loses"))
    return Finding(
        verdict,
        f"At B = {b}, lr = {base.lr:g} (the article's setting for this claim), linear-probe accuracy "
        f"minus the baseline's {base.acc(epoch):.4f}: {', '.join(rows)}. Beat it: {_names(beats)}; "
        f"tie (gap within the seeds' sd): {_names(ties)}; below it: {_names(loses)}.",
    )


def _semihard_best(groups: Groups, batch_sizes: Sequence[int], b: int, epoch: str) -> Finding:
    """Judged at the smallest batch, where the article compares them; other batch sizes for context."""
    rows, best_at = [], {}
    for size in batch_sizes:
        found = {m: g for m in MINING_MODES if (g := finished(groups, f"triplet:{m}", size))}
        if len(found) < 2:
            continue
        best_at[size] = max(found, key=lambda m: found[m].acc(epoch))
        shown = ", ".join(f"{m} {pm(g.stat(PROBE, epoch))}" for m, g in found.items())
        rows.append(f"B = {size}: {shown} (best: {best_at[size]})")
    if b not in best_at:
        return Finding("cannot say", f"Fewer than two triplet variants finished at B = {b}.")
    if best_at[b] != "semihard":
        verdict = "contradicted"
    else:
        verdict = "confirmed" if all(m == "semihard" for m in best_at.values()) else "partly confirmed"
    return Finding(
        verdict,
        f"Linear-probe accuracy of the triplet variants (judged at B = {b}; confirmed outright only if "
        f"semi-hard is best at every batch size): {'; '.join(rows)}.",
    )


def _falls_with_batch(groups: Groups, losses: list[str], batch_sizes: Sequence[int], epoch: str) -> Finding:
    """Each loss's accuracy must fall strictly at every step up in batch size; the baseline is shown only."""
    if len(batch_sizes) < 2:
        return Finding("cannot say", "The grid has a single batch size.")
    rows, falling, judged = [], [], []
    for loss in losses:
        found = [finished(groups, loss, size) for size in batch_sizes]
        if any(g is None for g in found):
            rows.append(f"`{loss}` incomplete")
            continue
        accs = [g.acc(epoch) for g in found if g is not None]
        rows.append(f"`{loss}` " + " → ".join(f"{a:.4f}" for a in accs))
        if loss != BASELINE:
            judged.append(loss)
            if all(a > b for a, b in zip(accs, accs[1:], strict=False)):
                falling.append(loss)
    if not judged:
        return Finding("cannot say", "No contrastive loss finished at every batch size.")
    return Finding(
        _verdict(len(falling), len(judged)),
        f"Linear-probe accuracy at B = {' → '.join(map(str, batch_sizes))} (each with its paired lr): "
        f"{'; '.join(rows)}. Strictly falling: {_names(falling)} ({len(falling)} of the {len(judged)} "
        f"contrastive losses; the `{BASELINE}` baseline is shown for reference).",
    )


def _supcon_degrades_least(
    groups: Groups, contrastive: list[str], small: int, large: int, epoch: str
) -> Finding:
    """Confirmed if supcon loses the least accuracy from the smallest to the largest batch; partly if
    it is only the most accurate loss at the largest batch. Losses collapsed at the smallest batch
    are left out (they cannot degrade)."""
    drop, at_large, skipped = {}, {}, []
    for loss in contrastive:
        a, b = finished(groups, loss, small), finished(groups, loss, large)
        if a is not None and _collapsed(a, epoch):
            skipped.append(loss)  # at chance already: it has nothing left to lose
        elif a is not None and b is not None:
            drop[loss], at_large[loss] = a.acc(epoch) - b.acc(epoch), b.acc(epoch)
    if "supcon" not in drop or len(drop) < 2 or small == large:
        return Finding("cannot say", f"`supcon` and another loss must finish at B = {small} and B = {large}.")
    least = min(drop, key=lambda x: drop[x])
    best_large = max(at_large, key=lambda x: at_large[x])
    verdict = (
        "confirmed" if least == "supcon" else "partly confirmed" if best_large == "supcon" else "contradicted"
    )
    ranked = ", ".join(f"`{x}` {drop[x]:+.4f}" for x in sorted(drop, key=lambda x: drop[x]))
    return Finding(
        verdict,
        f"Drop in linear-probe accuracy from B = {small} to B = {large}, smallest first: {ranked}. "
        f"Most accurate at B = {large}: `{best_large}` ({at_large[best_large]:.4f}"
        + ("" if best_large == "supcon" else f"; `supcon` {at_large['supcon']:.4f}")
        + ")."
        + (f" Left out as collapsed at B = {small}: {_names(skipped)}." if skipped else ""),
    )


def _collapsed(group: Group, epoch: str) -> bool:
    """The embedding carries (almost) no class information: probe or kNN-5 within a margin of chance."""
    chance = 1.0 / len(group.ok[0]["dataset"]["label_names"])
    worst = min(group.acc(epoch), group.stat(KNN, epoch).mean)
    return worst <= chance + COLLAPSE_MARGIN


def _hard_collapses(groups: Groups, batch_sizes: Sequence[int], epoch: str) -> Finding:
    """Confirmed if triplet:hard collapses at the smallest batch (the article's setting)."""
    rows, collapsed, others = [], [], []
    for size in batch_sizes:
        group = finished(groups, "triplet:hard", size)
        if group is None:
            continue
        ranked = sorted((g.acc(epoch), loss) for (loss, b), g in groups.items() if b == size and g.ok)
        rank = [loss for _, loss in ranked[::-1]].index("triplet:hard") + 1
        rows.append(
            f"B = {size}: probe {group.acc(epoch):.4f}, kNN-5 {group.stat(KNN, epoch).mean:.4f} "
            f"(rank {rank} of {len(ranked)}), last-epoch mean pairwise cosine "
            f"{group.stat('mean_cosine', 'last').mean:.3f}"
        )
        if _collapsed(group, epoch):
            collapsed.append(size)
        others += [
            f"`{loss}` at B = {size}"
            for (loss, b), g in groups.items()
            if b == size and loss != "triplet:hard" and g.ok and _collapsed(g, epoch)
        ]
    if not rows:
        return Finding("cannot say", "No finished `triplet:hard` run.")
    if batch_sizes[0] in collapsed:
        verdict = "confirmed"
    else:
        verdict = "partly confirmed" if collapsed else "contradicted"
    return Finding(
        verdict,
        f"Collapsed here means the embedding carries almost no class information: linear probe or kNN-5 "
        f"within {COLLAPSE_MARGIN:g} of chance. `triplet:hard`: {'; '.join(rows)}. "
        f"Collapsed at: {', '.join(f'B = {b}' for b in collapsed) or 'no batch size'}; other losses "
        f"collapsed: {', '.join(others) or 'none'}. (A mean pairwise cosine near 1 means the embeddings "
        f"crowd into a narrow cone; classes can still be separable inside it.)",
    )


def _semihard_oom(groups: Groups, large: int) -> Finding:
    """About the article's machine, not testable here: report what our semi-hard miner needed."""
    group = groups.get(("triplet:semihard", large))
    if group is None:
        return Finding("cannot say", f"No `triplet:semihard` run at B = {large}.")
    statuses = ", ".join(f"{n} {s}" for s, n in group.statuses.items())
    if group.statuses.get("oom"):
        return Finding(
            "cannot say", f"Ours ran out of memory too: {statuses}, peak RSS {group.peak_mb:.0f} MB."
        )
    others = [g.peak_mb for (loss, b), g in groups.items() if b == large and loss != "triplet:semihard"]
    return Finding(
        "cannot say",
        f"It is a statement about the article's implementation and machine, which we do not have. "
        f"Ours at B = {large}: {statuses}, peak RSS {group.peak_mb:.0f} MB per run (the most any other "
        f"loss needed at B = {large}: {max(others, default=math.nan):.0f} MB). Our semi-hard miner keeps "
        f"O(B²) memory (no B×B×B tensor), so the out-of-memory failure does not happen here.",
    )


def pm(stat: Stat) -> str:
    return "n/a" if stat.n == 0 else f"{stat.mean:.4f} ± {stat.sd:.4f}"
