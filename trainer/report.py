"""The small report written beside each model: report.md and PNG plots (matplotlib, Agg).

Every figure names what it shows (which split, which embedding), labels both axes and marks the
points a reader looks for: the exported epoch and the early stop on the curves, the calibrated
operating point on the ROC, the explained variance on the PCA axes.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402

from trainer.card import ModelCard  # noqa: E402
from trainer.metrics import ThresholdResult, pca  # noqa: E402

DPI = 110
FONT = {"font.size": 11, "axes.titlesize": 13, "axes.labelsize": 12, "legend.fontsize": 10}
VAL_METRICS = {
    "val_knn_1_accuracy": "kNN-1 accuracy",
    "val_knn_5_accuracy": "kNN-5 accuracy",
    "val_precision_at_1": "precision@1",
    "val_map_at_r": "MAP@R",
}


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def plot_curves(
    history: list[dict[str, Any]],
    *,
    best_epoch: int | None = None,
    planned_epochs: int | None = None,
    monitor: str | None = None,
) -> bytes:
    """Training loss and validation metrics per epoch, with the exported epoch and the early stop marked.

    The run stopped early when it ran fewer epochs than ``planned_epochs``.
    """
    epochs = [h["epoch"] for h in history]
    last = epochs[-1] if epochs else 0
    with plt.rc_context(FONT):
        fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(13, 5))
        ax_loss.plot(epochs, [h["loss"] for h in history], marker="o", label="training loss")
        ax_loss.set(xlabel="epoch", ylabel="mean training loss per step", title="Training loss")
        for key, name in VAL_METRICS.items():
            if history and key in history[0]:
                bold = monitor is not None and key == f"val_{monitor}"
                ax_metric.plot(
                    epochs,
                    [h[key] for h in history],
                    marker="o",
                    linewidth=2.5 if bold else 1.5,
                    label=name + (" (early-stopping monitor)" if bold else ""),
                )
        ax_metric.set(xlabel="epoch", ylabel="score on the validation split", title="Validation")
        for ax in (ax_loss, ax_metric):
            if best_epoch is not None:
                ax.axvline(
                    best_epoch, color="tab:green", linestyle="--", label=f"exported: epoch {best_epoch}"
                )
            if planned_epochs is not None and last < planned_epochs:
                ax.axvline(
                    last,
                    color="tab:red",
                    linestyle=":",
                    label=f"early stop: epoch {last} of {planned_epochs}",
                )
            ax.grid(alpha=0.3)
            ax.legend(loc="best")
        return _png(fig)


def plot_pca(
    emb: np.ndarray, labels: np.ndarray, label_names: list[str], *, split: str, model_id: str
) -> bytes:
    """2-D PCA of one split's embeddings coloured by label, as in the seed article."""
    points, ratio = pca(emb, 2)
    with plt.rc_context(FONT):
        fig, ax = plt.subplots(figsize=(8, 7))
        cmap = plt.get_cmap("tab10" if len(label_names) <= 10 else "tab20")
        for code in np.unique(labels):
            mask = labels == code
            name = label_names[code] if code < len(label_names) else str(code)
            ax.scatter(points[mask, 0], points[mask, 1], s=6, color=cmap(int(code) % cmap.N), label=name)
        ax.set(
            title=f"PCA of the {split} split's embeddings ({len(labels)} items)\n{model_id}",
            xlabel=f"PC 1 ({ratio[0]:.1%} of the variance)",
            ylabel=f"PC 2 ({ratio[1]:.1%} of the variance)",
        )
        if len(label_names) <= 20:
            ax.legend(markerscale=3, loc="center left", bbox_to_anchor=(1.01, 0.5), title="label")
        return _png(fig)


def plot_roc(
    fpr: np.ndarray,
    tpr: np.ndarray,
    auc: float,
    *,
    split: str,
    point: ThresholdResult | None = None,
    target_far: float | None = None,
) -> bytes:
    """ROC of one split's pairs on a log FAR axis, with the calibrated threshold's operating point."""
    n_different = point.n_different if point is not None else 0
    left = max(1e-5, 0.5 / n_different) if n_different else 1e-4
    with plt.rc_context(FONT):
        fig, ax = plt.subplots(figsize=(8, 6.5))
        # Up to millions of ROC points: draw the curve's value on a log grid of FARs instead (what the eye
        # can see of it), which keeps rendering fast. TAR at FAR f is the last point with FPR <= f.
        chance = np.logspace(np.log10(left), 0, 600)
        last = np.searchsorted(fpr, chance, side="right") - 1
        ax.plot(chance, tpr[last], linewidth=2, label=f"ROC on the {split} pairs (AUC = {auc:.4f})")
        ax.plot(chance, chance, linestyle=":", color="grey", label="chance (TAR = FAR)")
        if target_far is not None:
            ax.axvline(target_far, color="tab:orange", linestyle="--", label=f"target FAR {target_far:g}")
        if point is not None:
            ax.plot(
                [max(point.far, left)],
                [point.tar],
                marker="o",
                markersize=10,
                color="tab:red",
                linestyle="none",
                label=f"calibrated threshold {point.threshold:.4f}: FAR {point.far:.4f}, TAR {point.tar:.4f}",
            )
        ax.set(
            xscale="log",
            xlim=(left, 1),
            ylim=(0, 1.02),
            xlabel="false accept rate (different-label pairs accepted)",
            ylabel="true accept rate (same-label pairs accepted)",
            title="Verification ROC"
            + (f" ({point.n_same:,} same / {point.n_different:,} different pairs)" if point else ""),
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        return _png(fig)


def describe_loss(loss: dict[str, Any]) -> str:
    """The card's loss for people: ``supcon (temperature=0.1, base_temperature=0.1)``."""
    params = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in loss.items() if k != "name"]
    name = str(loss.get("name", "?"))
    return f"{name} ({', '.join(params)})" if params else name


def _training_line(card: ModelCard, plots: dict[str, Any]) -> list[str]:
    """How the run went: epochs run and exported, and whether batches were augmented (and why)."""
    parts = []
    if "epochs_run" in card.metrics:
        parts.append(f"{card.metrics['epochs_run']:.0f} of {card.config.get('epochs', '?')} epochs run")
    if "best_epoch" in card.metrics:
        parts.append(
            f"epoch {card.metrics['best_epoch']:.0f} exported (best validation {plots.get('monitor', '?')})"
        )
    if "augmented" in plots:
        how = "set" if card.config.get("augment") is not None else "auto, by training items per class"
        parts.append(f"augmentation {'on' if plots['augmented'] else 'off'} ({how})")
    return [("Training: " + "; ".join(parts) + "."), ""] if parts else []


def _exported(card: ModelCard) -> str:
    """Which layer the exported embedding comes from, in words (cards before the field say nothing)."""
    return {
        "projection": "the projection head's normalised output",
        "backbone": "the encoder's normalised output",
    }.get(str(card.encoder.get("exported")), "the exported module's output")


def render_report(card: ModelCard, history: list[dict[str, Any]], plots: dict[str, Any]) -> dict[str, bytes]:
    """Return the report files (name → bytes) to be written atomically with the model."""
    files: dict[str, bytes] = {}
    split = str(plots.get("split", "test"))
    lines = [
        f"# Model `{card.model_id}`",
        "",
        f"Loss `{describe_loss(card.loss)}`, encoder `{card.encoder.get('name')}`, "
        f"data set `{card.dataset.name}` "
        f"({card.dataset.n_train} train / {card.dataset.n_val} val / {card.dataset.n_calib} calib / "
        f"{card.dataset.n_test} test).",
        "",
        *_training_line(card, plots),
        f"Metrics of the exported embedding ({card.embedding_dim} dimensions, {_exported(card)}) "
        f"on the {split} split:",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {v:.4f} |" for k, v in card.metrics.items()),
        "",
    ]
    if card.threshold:
        t = card.threshold
        lines += [
            f"Verification threshold (cosine distance) **{t.distance:.4f}**, "
            f"calibrated for FAR ≤ {t.target_far:g} on the calibration split: "
            f"FAR {t.far:.4f}, TAR {t.tar:.4f} over {t.n_pairs:,} pairs"
            + (f" ({t.n_same:,} same, {t.n_different:,} different)." if t.n_same is not None else "."),
            "",
        ]
        if t.test is not None:
            lines += [
                f"On the {t.test.split} split the same threshold gives **FAR {t.test.far:.4f}, "
                f"TAR {t.test.tar:.4f}** ({t.test.n_same:,} same-label and {t.test.n_different:,} "
                "different-label pairs): what `/verify` should be expected to do.",
                "",
            ]
    if history:
        files["curves.png"] = plot_curves(
            history,
            best_epoch=int(card.metrics["best_epoch"]) if "best_epoch" in card.metrics else None,
            planned_epochs=card.config.get("epochs"),
            monitor=plots.get("monitor"),
        )
        lines.append("![training curves](curves.png)")
    if len(plots.get("eval_emb", [])) > 1:
        files["pca.png"] = plot_pca(
            plots["eval_emb"], plots["eval_y"], card.label_names, split=split, model_id=card.model_id
        )
        lines.append(f"![PCA of the {split} embeddings](pca.png)")
    if "roc" in plots:
        roc = plots["roc"]
        files["roc.png"] = plot_roc(
            roc.fpr,
            roc.tpr,
            roc.auc,
            split=split,
            point=plots.get("operating_point"),
            target_far=card.threshold.target_far if card.threshold else None,
        )
        lines.append("![ROC](roc.png)")
    files["report.md"] = ("\n".join(lines) + "\n").encode()
    return files
