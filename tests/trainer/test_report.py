"""The report beside each model: what it says about the threshold, and figures big enough to read."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from trainer.card import DatasetInfo, ModelCard, OperatingPoint, Threshold, VectorInput
from trainer.metrics import calibrate_threshold, operating_point, verification_roc
from trainer.report import render_report


def test_report_states_the_test_operating_point_and_its_figures_are_readable():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    emb = rng.normal(size=(120, 6)) + 3 * np.eye(6)[y]
    same = rng.random(4000) < 0.2
    dist = rng.normal(np.where(same, 0.3, 0.8), 0.15)
    t = calibrate_threshold(dist[:2000], same[:2000], 0.01)
    point = operating_point(dist[2000:], same[2000:], t.threshold)
    card = ModelCard(
        model_id="m-1",
        input=VectorInput(dim=6),
        embedding_dim=6,
        loss={"name": "supcon", "temperature": 0.1},
        encoder={"name": "mlp", "exported": "projection"},
        dataset=DatasetInfo(
            name="toy", n_train=300, n_val=40, n_calib=40, n_test=120, label_names=["a", "b", "c"]
        ),
        metrics={"knn_5_accuracy": 0.9, "best_epoch": 3.0},
        threshold=Threshold(
            distance=t.threshold,
            target_far=0.01,
            far=t.far,
            tar=t.tar,
            n_pairs=t.n_pairs,
            n_same=t.n_same,
            n_different=t.n_different,
            test=OperatingPoint(
                split="test", far=point.far, tar=point.tar, n_same=point.n_same, n_different=point.n_different
            ),
        ),
        config={"epochs": 10},
        encoder_sha256="0" * 64,
    )
    history = [
        {"epoch": e, "loss": 1.0 / e, "val_knn_5_accuracy": 0.8, "val_map_at_r": 0.5 + 0.01 * e}
        for e in range(1, 6)
    ]
    plots = {
        "eval_emb": emb,
        "eval_y": y,
        "split": "test",
        "roc": verification_roc(dist[2000:], same[2000:]),
        "operating_point": point,
        "monitor": "map_at_r",
        "augmented": False,
    }
    files = render_report(card, history, plots)
    text = files["report.md"].decode()
    assert f"On the test split the same threshold gives **FAR {point.far:.4f}, TAR {point.tar:.4f}**" in text
    assert f"({point.n_same:,} same-label and {point.n_different:,} different-label pairs)" in text
    assert "the projection head's normalised output" in text
    assert (
        "epoch 3 exported (best validation map_at_r); augmentation off (auto, by training items per class)"
        in text
    )
    for name, min_width in (("curves.png", 1100), ("pca.png", 700), ("roc.png", 700)):
        width, height = Image.open(io.BytesIO(files[name])).size
        assert width >= min_width and height >= 500, (name, width, height)
