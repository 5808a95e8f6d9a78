"""Serving quality: what the real service answers is what the model card promises.

A default-configuration model is trained on small labelled data made here, then served by
``python -m service --model DIR``. Over HTTP:

* ``/classify`` (k = 5, the service's defaults otherwise) of the test split against the indexed
  training split gives exactly the trainer's kNN-5 accuracy from the card, item by item;
* ``/verify`` (the card's calibrated threshold) on every pair of the test split accepts exactly the
  share of same-label and different-label pairs that the card's ``threshold.test`` reports.

Tolerance for ``/verify``: the service computes each distance in float32 from its stored
embeddings, the trainer in float64, so they agree to ~1e-6; a pair may only be decided
differently when its distance lies within ``NEAR`` of the threshold. The test counts those pairs
(none, for this data) and allows exactly that many differences.
"""

from __future__ import annotations

import asyncio
import itertools

import httpx
import numpy as np
import pytest
from service_helpers import ServerProcess

from trainer.config import TrainConfig
from trainer.export import load_scripted
from trainer.metrics import knn_predict, knn_search, verification_pairs
from trainer.train import embed, train

pytestmark = pytest.mark.timeout(240)

NEAR = 1e-5  # |trainer distance - threshold| below which float32 vs float64 may decide a pair differently
CLASSES = 10


def overlapping_blobs(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten Gaussian classes in 8 informative dimensions among 24 noise ones, overlapping enough
    that verification is neither perfect nor hopeless (test TAR at FAR 1% lands well inside (0, 1))."""
    centers = np.random.default_rng(0).normal(0.0, 1.0, size=(CLASSES, 8))
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(CLASSES), n_per_class)
    signal = centers[y] + rng.normal(0.0, 0.45, size=(len(y), 8))
    noise = rng.normal(0.0, 1.0, size=(len(y), 24))
    return np.concatenate([signal, noise], axis=1).astype(np.float32), y


async def verify_all(url: str, pairs: list[tuple[int, int]]) -> list[dict]:
    """POST /verify for every pair, 16 at a time (one connection each)."""
    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=16)) as client:

        async def one(i: int, j: int) -> dict:
            async with limit:
                r = await client.post("/verify", json={"a": {"id": f"t{i}"}, "b": {"id": f"t{j}"}})
                assert r.status_code == 200, r.text
                return r.json()

        return await asyncio.gather(*(one(i, j) for i, j in pairs))


def test_served_classify_and_verify_match_the_card(tmp_path):
    names = [f"class-{c}" for c in range(CLASSES)]
    x, y = overlapping_blobs(100, seed=1)
    x_test, y_test = overlapping_blobs(6, seed=2)
    np.savez(tmp_path / "train.npz", x=x, y=np.array(names)[y])
    np.savez(tmp_path / "test.npz", x=x_test, y=np.array(names)[y_test])
    config = TrainConfig(
        dataset=str(tmp_path / "train.npz"), test_dataset=str(tmp_path / "test.npz"), name="m"
    )
    result = train(config, out_dir=tmp_path / "models")
    card, splits = result.card, result.splits
    assert splits.test is not None and card.threshold is not None and card.threshold.test is not None
    assert card.label_names == names  # label codes below index these names

    # What the trainer says, recomputed here from the exported TorchScript file.
    module = load_scripted(result.model_dir / "encoder.pt")
    train_emb = embed(module, splits.train.x, "cpu")
    test_emb = embed(module, splits.test.x, "cpu")
    dist, idx = knn_search(test_emb, train_emb, 5, "cosine")
    trainer_labels = knn_predict(splits.train.y[idx], dist)
    assert np.mean(trainer_labels == splits.test.y) == card.metrics["knn_5_accuracy"]
    d, same = verification_pairs(test_emb, splits.test.y, "cosine")  # all 1770 pairs, ordered (i, j)
    pairs = list(itertools.combinations(range(len(splits.test.y)), 2))
    t = card.threshold
    assert (int(same.sum()), int((~same).sum())) == (t.test.n_same, t.test.n_different) == (150, 1620)
    assert 0.5 * t.target_far <= t.test.far <= 2 * t.target_far  # calibrated on other pairs, and it holds
    assert 0.2 < t.test.tar < 0.99  # the data leave room for mistakes either way

    server = ServerProcess(tmp_path / "data", "--model", str(result.model_dir))
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            items = [
                {"id": f"r{i}", "vector": row.tolist(), "label": names[label]}
                for i, (row, label) in enumerate(zip(splits.train.x, splits.train.y, strict=True))
            ]
            assert client.post("/items", json={"items": items}).status_code == 201
            body = {"items": [row.tolist() for row in splits.test.x], "k": 5}
            predictions = client.post("/classify", json=body).json()["predictions"]
            # Only now the test items join the index (unlabelled neighbours would take kNN slots above).
            items = [{"id": f"t{i}", "vector": row.tolist()} for i, row in enumerate(splits.test.x)]
            assert client.post("/items", json={"items": items}).status_code == 201
        answers = asyncio.run(verify_all(server.url, pairs))
    finally:
        server.stop()

    served_labels = [p["label"] for p in predictions]
    assert not any(p["unknown"] for p in predictions)
    assert served_labels == [names[c] for c in trainer_labels]  # item by item, so accuracy is exact
    served_accuracy = float(
        np.mean([s == names[c] for s, c in zip(served_labels, splits.test.y, strict=True)])
    )
    assert served_accuracy == card.metrics["knn_5_accuracy"]

    served_d = np.array([a["distance"] for a in answers])
    accepted = np.array([a["same"] for a in answers])
    assert all(a["threshold"] == t.distance for a in answers)
    np.testing.assert_allclose(served_d, d, atol=1e-5)
    near = np.abs(d - t.distance) < NEAR
    differ = accepted != (d <= t.distance)
    assert not (differ & ~near).any()
    served_far = accepted[~same].mean()
    served_tar = accepted[same].mean()
    assert abs(served_far - t.test.far) <= near[~same].sum() / t.test.n_different
    assert abs(served_tar - t.test.tar) <= near[same].sum() / t.test.n_same
