"""Serving quality: /classify on held-out MNIST digits matches the trainer's own kNN accuracy.

The trainer measures kNN-5 accuracy of the test split against the training split. Serving the
exported model with the training split indexed and classifying the test split over HTTP must give
the same number: same embeddings, same neighbours, same vote.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from service_helpers import ServerProcess

from trainer.config import TrainConfig
from trainer.data import load_dataset, split_dataset
from trainer.train import train

pytestmark = pytest.mark.timeout(300)


def test_classify_accuracy_equals_trainer_knn_on_mnist(tmp_path):
    config = TrainConfig(dataset="mnist-5k", epochs=6, patience=0, name="mnist-mlp")
    dataset = load_dataset("mnist-5k")
    result = train(config, out_dir=tmp_path / "models", dataset=dataset)
    splits = split_dataset(
        dataset,
        val_fraction=config.val_fraction,
        calib_fraction=config.calib_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )
    assert splits.test is not None
    names = result.card.label_names

    server = ServerProcess(tmp_path / "data", "--model", str(result.model_dir))
    try:
        server.wait_ready()
        client = httpx.Client(base_url=server.url, timeout=120)
        train_x = splits.train.x.reshape(len(splits.train.x), -1)
        for start in range(0, len(train_x), 1000):
            items = [
                {"vector": row.tolist(), "label": names[label]}
                for row, label in zip(
                    train_x[start : start + 1000], splits.train.y[start : start + 1000], strict=True
                )
            ]
            assert client.post("/items", json={"items": items}).status_code == 201
        test_x = splits.test.x.reshape(len(splits.test.x), -1)
        body = {"items": test_x.tolist(), "k": 5}
        predictions = client.post("/classify", json=body).json()["predictions"]
    finally:
        server.stop()
    predicted = [p["label"] for p in predictions]
    truth = [names[label] for label in splits.test.y]
    served = float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))
    unknown = sum(p["unknown"] for p in predictions)
    trainer_knn5 = result.card.metrics["knn_5_accuracy"]
    assert abs(served - trainer_knn5) <= 0.005, (served, trainer_knn5, unknown)
    assert served >= 0.93
