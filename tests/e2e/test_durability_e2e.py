"""Snapshots and start-up reconciliation: the index always ends up equal to the items table (the tests
that depend on the database run on SQLite and on PostgreSQL)."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_helpers import make_settings, model_dir, vector_items
from sqlalchemy import create_engine, delete

from service.app import create_app
from service.tables import EmbeddingRow

pytestmark = pytest.mark.timeout(60)


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)


def _assert_consistent(c: TestClient, live: dict[str, np.ndarray], gone: list[str]) -> None:
    """Every live item is found by id and is its own nearest neighbour; deleted ones are nowhere."""
    assert c.get("/items").json()["total"] == len(live)
    assert c.get("/info").json()["index"]["size"] == len(live)
    ids = list(live)
    preds = c.post("/classify", json={"items": [live[i].tolist() for i in ids], "k": 1}).json()["predictions"]
    assert [p["neighbors"][0]["id"] for p in preds] == ids
    for item_id in gone:
        assert c.get(f"/items/{item_id}").status_code == 404


def test_stale_snapshot_is_reconciled_with_the_database(tmp_path, database_url):
    settings = make_settings(tmp_path, model=model_dir(), database_url=database_url)
    index_dir = settings.paths.index / "default"
    a, b, new_a7 = _vectors(40, 0), _vectors(25, 1), _vectors(1, 9)[0]
    with TestClient(create_app(settings)) as c:
        c.post("/items", json={"items": vector_items(a, prefix="a")})
    stale = tmp_path / "stale"
    shutil.copytree(index_dir, stale)  # the snapshot as it was before the next session's writes
    assert json.loads((stale / "toy-vec.json").read_text())["size"] == 40

    with TestClient(create_app(settings)) as c:
        c.post("/items", json={"items": vector_items(b, prefix="b")})
        for i in range(5):
            assert c.delete(f"/items/a{i}").status_code == 204
        # upsert gives the id a new key: the stale snapshot still holds the old key and vector
        c.post("/items", params={"upsert": True}, json={"items": [{"id": "a7", "vector": new_a7.tolist()}]})
    shutil.rmtree(index_dir)
    shutil.copytree(stale, index_dir)  # as if killed right after those writes, before any snapshot

    live = {f"a{i}": a[i] for i in range(5, 40)} | {f"b{i}": b[i] for i in range(25)} | {"a7": new_a7}
    with TestClient(create_app(settings)) as c:
        _assert_consistent(c, live, gone=[f"a{i}" for i in range(5)])
        hit = c.post("/search", json={"item": a[7].tolist(), "k": 1}).json()["neighbors"][0]
        assert hit["id"] != "a7" or hit["distance"] > 1e-3  # the old a7 vector is gone from the index


@pytest.mark.parametrize("damage", ["delete", "corrupt", "other-type"])
def test_missing_corrupt_or_mismatched_snapshot_is_rebuilt(tmp_path, damage, caplog):
    settings = make_settings(tmp_path, model=model_dir())
    x = _vectors(60, 2)
    with TestClient(create_app(settings)) as c:
        c.post("/items", json={"items": vector_items(x)})
    faiss_file = settings.paths.index / "default" / "toy-vec.faiss"
    if damage == "delete":
        faiss_file.unlink()
    elif damage == "corrupt":
        faiss_file.write_bytes(b"\0garbage" * 10)
    else:
        settings = settings.model_copy(update={"index_type": "hnsw"})
    with TestClient(create_app(settings)) as c:
        _assert_consistent(c, {f"i{i}": x[i] for i in range(60)}, [])
        expected = "flat" if settings.index_type == "auto" else settings.index_type  # 60 vectors: exact
        assert c.get("/info").json()["index"]["type"] == expected
    if damage == "corrupt":
        assert "snapshot unusable" in caplog.text


def test_ivf_trains_from_stored_embeddings_at_start(tmp_path):
    settings = make_settings(tmp_path, model=model_dir(), index_type="ivf", ivf_nlist=2, ivf_nprobe=2)
    x = _vectors(100, 3)
    with TestClient(create_app(settings)) as c:
        c.post("/items", json={"items": vector_items(x[:50])})
        assert c.get("/info").json()["index"]["type"] == "flat"  # 50 < 39 * 2: flat stand-in
        c.post("/items", json={"items": vector_items(x[50:], prefix="j")})
    with TestClient(create_app(settings)) as c:  # (re)built as IVF, in the background or at this start
        info = c.get("/info").json()["index"]
        assert info["type"] == "ivf" and info["size"] == 100
        assert c.post("/search", json={"item": x[3].tolist(), "k": 1}).json()["neighbors"][0]["id"] == "i3"
        assert c.delete("/items/i3").status_code == 204 and c.get("/info").json()["index"]["size"] == 99


def test_periodic_snapshots_run_in_the_background(tmp_path):
    settings = make_settings(tmp_path, model=model_dir(), snapshot_interval=0.2)
    meta = settings.paths.index / "default" / "toy-vec.json"
    with TestClient(create_app(settings)) as c:
        c.post("/items", json={"items": vector_items(_vectors(10, 4))})
        deadline = time.monotonic() + 10
        while json.loads(meta.read_text())["size"] != 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert json.loads(meta.read_text()) | {"version": 0} == {
            "model_id": "toy-vec",
            "dim": 8,
            "distance": "cosine",
            "kind": "flat",
            "size": 10,
            "max_key": 10,
            "tombstones": [],
            "nprobe": 0,
            "trained_size": 0,
            "recall": None,
            "version": 0,
        }


def test_rows_left_without_the_active_models_embedding_are_embedded_at_start(tmp_path, database_url):
    settings = make_settings(tmp_path, model=model_dir("toy-b", scale=2.0), database_url=database_url)
    with TestClient(create_app(settings)):
        pass  # registers toy-b
    settings = settings.model_copy(update={"model": model_dir()})
    x = _vectors(20, 5)
    with TestClient(create_app(settings)) as c:
        c.post("/items", json={"items": vector_items(x)})
    engine = create_engine(database_url)
    with engine.begin() as db:  # as if rows were written behind our back
        gone = db.execute(
            delete(EmbeddingRow).where(EmbeddingRow.key <= 5, EmbeddingRow.model_id == "toy-vec")
        )
        assert gone.rowcount == 5
    engine.dispose()
    with TestClient(create_app(settings)) as c:
        _assert_consistent(c, {f"i{i}": x[i] for i in range(20)}, [])
        assert {c.get(f"/items/i{i}").json()["model"] for i in range(20)} == {"toy-vec"}
