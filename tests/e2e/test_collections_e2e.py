"""Collections over HTTP with the real worker: two kinds of items side by side, the promotion gate, rollback,
and a kill -9 during one collection's re-embedding."""

from __future__ import annotations

import base64
import io
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from service_helpers import ServerProcess, blobs, model_dir, vector_items

from trainer.data import load_dataset
from trainer.export import load_scripted
from trainer.metrics import knn_accuracy

QUICK = {"epochs": 3, "batch_size": 64, "hidden": [64], "embedding_dim": 32, "patience": 0}


def _png(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _npz(images: np.ndarray, y: np.ndarray) -> bytes:
    """A data set of flat vectors (so its model takes vectors only, not images)."""
    buf = io.BytesIO()
    np.savez(buf, x=images.reshape(len(images), -1), y=y)
    return buf.getvalue()


def _wait(c: httpx.Client, path: str, done: Any, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = c.get(path).json()
        if done(body):
            return body
        assert time.monotonic() < deadline, f"{path} never got there: {body}"
        time.sleep(0.2)


def _train(c: httpx.Client, **config: Any) -> dict[str, Any]:
    r = c.post("/train", json={**QUICK, **config})
    assert r.status_code == 202, r.text
    job = _wait(c, f"/jobs/{r.json()['id']}", lambda j: j["status"] in ("succeeded", "failed", "cancelled"))
    assert job["status"] == "succeeded", job
    return _wait(c, f"/jobs/{job['id']}", lambda j: j["activation"] not in ("pending", "activating"))


def _served_accuracy(c: httpx.Client, collection: str, queries: list[Any], labels: list[str]) -> float:
    body = {"items": queries, "k": 5, "threshold": 2.0}  # all vote (no "unknown"), as kNN accuracy counts
    got = c.post(f"/collections/{collection}/classify", json=body).json()["predictions"]
    return float(np.mean([p["label"] == y for p, y in zip(got, labels, strict=True)]))


def _local_accuracy(
    model: Path, refs: np.ndarray, ref_y: list[str], queries: np.ndarray, y: list[str]
) -> float:
    """The same k-NN vote the trainer's metrics count, with the exported encoder run here."""
    encoder = load_scripted(model / "encoder.pt")
    with torch.no_grad():
        r, q = encoder(torch.from_numpy(refs)).numpy(), encoder(torch.from_numpy(queries)).numpy()
    return knn_accuracy(q, np.asarray(y), r, np.asarray(ref_y), 5, "cosine")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = tmp_path_factory.mktemp("collections") / "data"
    with ServerProcess(data, "--worker-heartbeat-interval", "0.5", worker=True) as proc:
        proc.wait_ready(path="/health")
        yield proc, data


def test_two_kinds_of_items_trained_gated_rolled_back_and_deleted(server):
    proc, data = server
    digits, mnist = load_dataset("digits"), load_dataset("mnist-5k")
    rng = np.random.default_rng(0)
    d_idx, m_idx = rng.permutation(len(digits))[:600], rng.permutation(len(mnist))[:400]
    d_x = digits.x[d_idx].reshape(len(d_idx), -1)  # digits as 64-value vectors
    d_y = [digits.label_names[c] for c in digits.y[d_idx]]
    m_x, m_y = mnist.x[m_idx], [mnist.label_names[c] for c in mnist.y[m_idx]]
    with httpx.Client(base_url=proc.url, timeout=60) as c:
        for name in ("digits", "mnist"):
            assert c.post("/collections", json={"name": name}).status_code == 201
        assert c.post("/collections", json={"name": "digits"}).status_code == 409
        assert c.post("/collections", json={"name": "Bad Name"}).status_code == 422
        r = c.post("/collections/digits/items", json={"items": [d_x[0].tolist()]})
        assert r.status_code == 409 and "has no model yet" in r.json()["detail"]

        vectors = c.post("/datasets", files={"file": ("digits.npz", _npz(digits.x, digits.y))}).json()
        first = _train(c, dataset=vectors["id"], collection="digits", activate=True, name="dig-1")
        assert first["activation"] == "active", first
        assert (
            _train(c, dataset="mnist-5k", collection="mnist", activate=True, name="mn-1")["activation"]
            == "active"
        )
        listed = {col["name"]: col for col in c.get("/collections").json()}
        assert listed["digits"]["model"] == "dig-1" and listed["mnist"]["model"] == "mn-1"

        refs = [{"id": f"d{i}", "vector": d_x[i].tolist(), "label": d_y[i]} for i in range(400)]
        assert c.post("/collections/digits/items", json={"items": refs}).status_code == 201
        images = [{"id": f"m{i}", "image": _png(m_x[i, 0]), "label": m_y[i]} for i in range(300)]
        assert c.post("/collections/mnist/items", json={"items": images}).status_code == 201
        # items of the wrong kind: a 422 in the other collection, nothing written
        assert c.post("/collections/digits/items", json={"items": [images[0]]}).status_code == 422
        assert c.post("/collections/mnist/items", json={"items": [refs[0]]}).status_code == 422
        assert (
            c.get("/collections/digits").json()["size"] == 400
            and c.get("/collections/mnist").json()["size"] == 300
        )

        # classification in each collection is what the model gives on its own
        dq, dq_y = [d_x[i].tolist() for i in range(400, 600)], d_y[400:600]
        served = _served_accuracy(c, "digits", dq, dq_y)
        local = _local_accuracy(data / "models" / "dig-1", d_x[:400], d_y[:400], d_x[400:600], dq_y)
        assert served == pytest.approx(local, abs=1e-9) and served > 0.85
        mq = [{"image": _png(m_x[i, 0])} for i in range(300, 400)]
        served = _served_accuracy(c, "mnist", mq, m_y[300:400])
        local = _local_accuracy(data / "models" / "mn-1", m_x[:300], m_y[:300], m_x[300:400], m_y[300:400])
        assert served == pytest.approx(local, abs=0.011) and served > 0.7  # PNG round trip: same pixels

        # a model trained on shuffled labels is refused by the gate, with both models' numbers
        shuffled = np.random.default_rng(1).permutation(digits.y)
        upload = c.post("/datasets", files={"file": ("noise.npz", _npz(digits.x, shuffled))}).json()
        refused = _train(c, dataset=upload["id"], collection="digits", activate=True, name="dig-noise")
        assert refused["activation"].startswith("refused: worse than the active model dig-1"), refused
        history = c.get("/collections/digits/history").json()
        gate = history[0]["gate"]
        assert history[0]["status"] == "refused" and history[0]["requested_by"] == f"job {refused['id']}"
        assert gate["candidate"]["knn_accuracy"] < gate["current"]["knn_accuracy"] - gate["tolerance"]
        r = c.post("/collections/digits/activate", json={"model": "dig-noise"})
        assert r.status_code == 409 and "force" in r.json()["detail"]

        # forced in, then rolled back at once: the first model answers again, as before
        before = c.post("/collections/digits/classify", json={"items": dq[:20], "k": 5}).json()
        r = c.post("/collections/digits/activate", json={"model": "dig-noise", "force": True})
        assert r.status_code == 202
        _wait(
            c,
            "/collections/digits",
            lambda col: col["model"] == "dig-noise" and col["activation"]["status"] == "active",
        )
        assert c.post("/collections/digits/classify", json={"items": dq[:1]}).json()["model"] == "dig-noise"
        r = c.post("/collections/digits/rollback")
        assert r.status_code == 200 and r.json() == {
            "status": "active",
            "model": "dig-1",
            "activation": r.json()["activation"],
        }
        assert c.post("/collections/digits/classify", json={"items": dq[:20], "k": 5}).json() == before
        kinds = [
            (h["kind"], h["model"], h["status"]) for h in c.get("/collections/digits/history").json()[:3]
        ]
        assert kinds == [
            ("rollback", "dig-1", "active"),
            ("activation", "dig-noise", "active"),
            ("activation", "dig-noise", "refused"),
        ]

        # the flat routes mean the collection default
        assert c.get("/ready").status_code == 503
        assert c.post("/models/dig-1/activate").status_code in (200, 202)
        proc.wait_ready()
        assert c.post("/items", json={"items": refs[:50]}).status_code == 201
        assert c.post("/classify", json={"items": dq[:5]}).json()["model"] == "dig-1"
        assert (
            c.get("/collections/default").json()["size"] == 50
            and c.get("/collections/digits").json()["size"] == 400
        )

        # per-collection numbers in /metrics and /info
        metrics = c.get("/metrics").text
        assert 'embed_index_size{collection="mnist"} 300.0' in metrics
        assert c.get("/info").json()["collections"]["digits"] == {
            "model": "dig-1",
            "size": 400,
            "index_type": "flat",
            "recall_at_10": None,
        }

        # deleting a collection removes its items, index and snapshots, and nothing else
        assert (data / "index" / "mnist").is_dir()
        assert c.request("DELETE", "/collections/mnist").status_code == 204
        assert c.get("/collections/mnist").status_code == 404
        assert c.post("/collections/mnist/search", json={"item": {"id": "m1"}}).status_code == 404
        assert not (data / "index" / "mnist").exists()
        assert c.request("DELETE", "/collections/default").status_code == 409
        assert c.get("/collections/digits").json()["size"] == 400 and c.get("/items").json()["total"] == 50
        assert c.get("/models/mn-1").status_code == 200, "its model stays registered"
    with sqlite3.connect(data / "service.db") as db:
        assert db.execute("SELECT count(*) FROM items WHERE collection = 'mnist'").fetchone() == (0,)


def test_kill_9_during_one_collections_reembedding_leaves_every_collection_whole(tmp_path):
    data = tmp_path / "data"
    x, y = blobs(40)
    many = np.random.default_rng(2).standard_normal((3000, 8)).astype(np.float32)
    slow = model_dir("toy-slow", slow=1000)  # about 0.2 s per 64 items: re-embedding takes ~10 s
    shutil.copytree(slow, data / "models" / "toy-slow")  # registered at start, not active
    server = ServerProcess(data, "--model", str(model_dir()), "--snapshot-interval", "0")
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as c:
            assert c.post("/collections", json={"name": "steady", "model": "toy-vec"}).status_code == 201
            assert c.post("/collections/steady/items", json={"items": vector_items(x, y)}).status_code == 201
            for start in range(0, 3000, 500):
                chunk = vector_items(many[start : start + 500], prefix=f"b{start}-")
                assert c.post("/items", json={"items": chunk}).status_code == 201
            r = c.post("/collections/default/activate", json={"model": "toy-slow", "force": True})
            assert r.status_code == 202
            _wait(c, "/collections/default", lambda col: (col["activation"] or {}).get("done", 0) > 0, 60)
        server.kill()  # mid re-embedding
        server = ServerProcess(data, "--snapshot-interval", "0")
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as c:
            default = c.get("/collections/default").json()
            assert default["model"] == "toy-vec" and default["size"] == 3000, default
            assert default["activation"]["status"] == "failed"
            assert "interrupted by a restart" in default["activation"]["error"]
            steady = c.get("/collections/steady").json()
            assert steady["model"] == "toy-vec" and steady["size"] == 120
            hit = c.post("/search", json={"item": {"id": "b500-7"}, "k": 1}).json()
            assert hit["model"] == "toy-vec" and hit["neighbors"][0]["id"] == "b500-7"
        with sqlite3.connect(data / "service.db") as db:  # one model's embeddings per item, none half-written
            models = dict(
                db.execute("SELECT model_id, count(*) FROM embeddings GROUP BY model_id").fetchall()
            )
        assert models == {"toy-vec": 3120}, models
    finally:
        server.stop()
