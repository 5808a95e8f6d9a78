"""Two API replicas on one database (SQLite or PostgreSQL), each with its own FAISS index, following
each other's writes."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from pg_server import PASSWORD
from service_helpers import ServerProcess, blobs, model_dir, vector_items
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.timeout(240)
SYNC = {"EMBED_SYNC_INTERVAL": "0.2"}


def eventually(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll until ``check`` returns something truthy (the replicas converge within a few intervals)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def nearest_id(client: httpx.Client, vector: np.ndarray) -> str | None:
    hits = client.post("/search", json={"item": vector.tolist(), "k": 1})
    neighbors = hits.json()["neighbors"] if hits.status_code == 200 else []
    return neighbors[0]["id"] if neighbors else None  # none: the nearest row was deleted elsewhere


def test_replicas_follow_each_others_writes_deletes_and_activations(tmp_path, database_url):
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    shutil.copytree(model_dir("toy-b", scale=2.0), data / "models" / "toy-b")  # registered at start
    env = SYNC | {"EMBED_DATABASE_URL": database_url}
    a = ServerProcess(data, "--model", str(model_dir()), env=env)
    b = None
    try:
        a.wait_ready()
        b = ServerProcess(data, env=env)
        b.wait_ready()
        ca, cb = httpx.Client(base_url=a.url, timeout=30), httpx.Client(base_url=b.url, timeout=30)
        x, y = blobs(10, seed=7)

        # written through A, found through B
        assert ca.post("/items", json={"items": vector_items(x, y)}).status_code == 201
        eventually(lambda: cb.get("/info").json()["index"]["size"] == 30, "B indexes A's items")
        assert nearest_id(cb, x[5]) == "i5"
        assert cb.get("/items/i5").json()["label"] == y[5]

        # deleted through B, gone from A; written through B, found through A
        assert cb.delete("/items/i5").status_code == 204
        eventually(lambda: nearest_id(ca, x[5]) not in (None, "i5"), "A drops B's delete from its index")
        assert cb.post("/items", json={"items": [{"id": "new", "vector": x[5].tolist()}]}).status_code == 201
        eventually(lambda: nearest_id(ca, x[5]) == "new", "A finds B's item")
        assert ca.get("/info").json()["index"]["size"] == 30

        # activated through A, followed by B, which keeps answering throughout
        statuses: list[int] = []
        followed = threading.Event()

        def classify_on_b() -> None:
            with httpx.Client(base_url=b.url, timeout=30) as client:
                while not followed.is_set():
                    statuses.append(client.post("/classify", json={"items": [x[0].tolist()]}).status_code)

        load = threading.Thread(target=classify_on_b)
        load.start()
        try:
            assert ca.post("/models/toy-b/activate").status_code in (200, 202)
            eventually(lambda: cb.get("/ready").json().get("model") == "toy-b", "B follows the activation")
        finally:
            followed.set()
            load.join(30)
        assert statuses and set(statuses) == {200}, f"B answered {sorted(set(statuses))} meanwhile"
        preds = cb.post("/classify", json={"items": x[[0, 15, 25]].tolist(), "k": 3}).json()
        assert preds["model"] == "toy-b" and [p["label"] for p in preds["predictions"]] == ["c0", "c1", "c2"]
        assert cb.get("/info").json()["index"]["size"] == 30
        assert ca.get("/info").json()["index"]["size"] == 30
        engine = create_engine(database_url)  # the shared table is the one the URL names
        with engine.connect() as conn:
            query = "SELECT count(*) FROM embeddings WHERE model_id = 'toy-b'"
            assert conn.execute(text(query)).scalar() == 30
            query = "SELECT model_id FROM collections WHERE name = 'default'"
            assert conn.execute(text(query)).scalar() == "toy-b"
        engine.dispose()
        assert not (data / "service.db").exists(), "no replica fell back to the data dir's SQLite file"
    finally:
        a.stop()
        if b is not None:
            b.stop()
    assert PASSWORD not in a.log.read_text() + b.log.read_text(), "no log shows the database password"


def test_replicas_follow_collections_created_written_rolled_back_and_deleted_elsewhere(tmp_path):
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    shutil.copytree(model_dir("toy-b", scale=2.0), data / "models" / "toy-b")
    a = ServerProcess(data, "--model", str(model_dir()), env=SYNC)
    b = None
    try:
        a.wait_ready()
        b = ServerProcess(data, env=SYNC)
        b.wait_ready()
        ca, cb = httpx.Client(base_url=a.url, timeout=30), httpx.Client(base_url=b.url, timeout=30)
        x, y = blobs(5, seed=3)
        assert ca.post("/collections", json={"name": "faces", "model": "toy-vec"}).status_code == 201
        eventually(lambda: cb.get("/collections/faces").status_code == 200, "B knows the new collection")
        assert ca.post("/collections/faces/items", json={"items": vector_items(x, y)}).status_code == 201
        eventually(lambda: cb.get("/collections/faces").json()["size"] == 15, "B indexes A's items")
        assert (
            cb.post("/collections/faces/search", json={"item": x[4].tolist(), "k": 1}).json()["neighbors"][0][
                "id"
            ]
            == "i4"
        )
        assert cb.get("/collections/default").json()["size"] == 0, "the default collection is untouched"

        # activated and rolled back on A: B follows both, no re-embedding needed
        assert ca.post("/collections/faces/activate", json={"model": "toy-b"}).status_code == 202
        eventually(
            lambda: cb.get("/collections/faces").json()["model"] == "toy-b", "B follows the activation"
        )
        assert ca.post("/collections/faces/rollback").status_code == 200
        eventually(
            lambda: cb.get("/collections/faces").json()["model"] == "toy-vec", "B follows the rollback"
        )
        hit = cb.post("/collections/faces/search", json={"item": {"id": "i7"}, "k": 1}).json()
        assert hit["model"] == "toy-vec" and hit["neighbors"][0]["id"] == "i7"

        assert cb.request("DELETE", "/collections/faces").status_code == 204
        eventually(lambda: ca.get("/collections/faces").status_code == 404, "A drops the deleted collection")
    finally:
        a.stop()
        if b is not None:
            b.stop()
