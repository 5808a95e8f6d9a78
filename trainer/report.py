"""The small report written beside each model: report.md and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402

from trainer.card import ModelCard  # noqa: E402
from trainer.metrics import pca_2d  # noqa: E402


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def plot_curves(history: list[dict[str, Any]]) -> bytes:
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_loss.plot(epochs, [h["loss"] for h in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Loss")
    for key in ("val_knn_1_accuracy", "val_knn_5_accuracy", "val_precision_at_1", "val_map_at_r"):
        if history and key in history[0]:
            ax_metric.plot(epochs, [h[key] for h in history], marker="o", label=key.removeprefix("val_"))
    ax_metric.set(xlabel="epoch", title="Validation")
    ax_metric.legend(fontsize="small")
    return _png(fig)


def plot_pca(emb: np.ndarray, labels: np.ndarray, label_names: list[str], title: str) -> bytes:
    """2-D PCA of embeddings coloured by label, as in the seed article."""
    points = pca_2d(emb)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    cmap = plt.get_cmap("tab10" if len(label_names) <= 10 else "tab20")
    for code in np.unique(labels):
        mask = labels == code
        name = label_names[code] if code < len(label_names) else str(code)
        ax.scatter(points[mask, 0], points[mask, 1], s=4, color=cmap(int(code) % cmap.N), label=name)
    ax.set(title=title, xlabel="PC 1", ylabel="PC 2")
    if len(label_names) <= 20:
        ax.legend(markerscale=3, fontsize="small", loc="best")
    return _png(fig)


def plot_roc(fpr: np.ndarray, tpr: np.ndarray, auc: float) -> bytes:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(fpr, tpr, label=f"AUC = {auc:.4f}")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(
        xscale="log",
        xlim=(1e-4, 1),
        xlabel="false accept rate",
        ylabel="true accept rate",
        title="Verification ROC",
    )
    ax.legend(loc="lower right")
    return _png(fig)


def describe_loss(loss: dict[str, Any]) -> str:
    """The card's loss for people: ``supcon (temperature=0.1, base_temperature=0.1)``."""
    params = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in loss.items() if k != "name"]
    name = str(loss.get("name", "?"))
    return f"{name} ({', '.join(params)})" if params else name


def render_report(card: ModelCard, history: list[dict[str, Any]], plots: dict[str, Any]) -> dict[str, bytes]:
    """Return the report files (name → bytes) to be written atomically with the model."""
    files: dict[str, bytes] = {}
    lines = [
        f"# Model `{card.model_id}`",
        "",
        f"Loss `{describe_loss(card.loss)}`, encoder `{card.encoder.get('name')}`, "
        f"data set `{card.dataset.name}` "
        f"({card.dataset.n_train} train / {card.dataset.n_val} val / {card.dataset.n_calib} calib / "
        f"{card.dataset.n_test} test).",
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
            f"FAR {t.far:.4f}, TAR {t.tar:.4f} over {t.n_pairs} pairs.",
            "",
        ]
    if history:
        files["curves.png"] = plot_curves(history)
        lines.append("![training curves](curves.png)")
    if len(plots.get("eval_emb", [])) > 1:
        files["pca.png"] = plot_pca(plots["eval_emb"], plots["eval_y"], card.label_names, card.model_id)
        lines.append("![PCA of test embeddings](pca.png)")
    if "roc" in plots:
        roc = plots["roc"]
        files["roc.png"] = plot_roc(roc.fpr, roc.tpr, roc.auc)
        lines.append("![ROC](roc.png)")
    files["report.md"] = ("\n".join(lines) + "\n").encode()
    return files
