"""API tests with ``TestClient(create_app(settings))`` on tmp_path and real toy models."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Iterator
from datetime import datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_helpers import blobs, make_settings, model_dir, png_b64, vector_items
from sqlalchemy import create_engine, select

from service.app import create_app
from service.config import Settings
from service.index import pair_distance
from service.tables import ItemRow

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client(tmp_path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path, model=model_dir()))) as c:
        yield c


@pytest.fixture
def db_client(tmp_path, database_url) -> Iterator[TestClient]:
    """For the tests whose outcome depends on the database: run on SQLite and on PostgreSQL."""
    settings = make_settings(tmp_path, model=model_dir(), database_url=database_url)
    with TestClient(create_app(settings)) as c:
        yield c
    assert not (settings.data_dir / "service.db").exists(), "the app used the URL it was given"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_health_ready_info_and_no_model_message(tmp_path):
    with TestClient(create_app(make_settings(tmp_path))) as c:
        assert c.get("/health").json() == {"status": "ok"}
        ready = c.get("/ready")
        assert ready.status_code == 503 and "--model" in ready.json()["detail"]
        for method, path, body in [
            ("POST", "/embed", {"items": [[1.0]]}),
            ("POST", "/items", {"items": [[1.0]]}),
            ("POST", "/search", {"item": [1.0]}),
            ("POST", "/classify", {"items": [[1.0]]}),
            ("POST", "/verify", {"a": [1.0], "b": [1.0]}),
        ]:
            r = c.request(method, path, json=body)
            assert r.status_code == 503 and "POST /models/{id}/activate" in r.json()["detail"], path
            assert "POST /train" in r.json()["detail"], path
        info = c.get("/info").json()
        assert info["model"] is None and info["limits"]["max_items"] == 1024
        assert info["limits"]["max_upload_bytes"] == Settings.model_fields["max_upload_bytes"].default


def test_embed_returns_normalised_embeddings(client):
    x = np.array([[3.0, 4.0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0]], dtype=np.float32)
    r = client.post("/embed", json={"items": [x[0].tolist(), {"vector": x[1].tolist()}]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["model"] == "toy-vec" and body["dim"] == 8
    np.testing.assert_allclose(body["embeddings"], _unit(x), atol=1e-6)


def test_items_crud_upsert_and_listing(db_client):
    client = db_client
    x, y = blobs(5)
    r = client.post("/items", json={"items": vector_items(x, y) + [x[0].tolist()]})
    assert r.status_code == 201
    ids = r.json()["ids"]
    assert ids[:15] == [f"i{i}" for i in range(15)] and len(ids[15]) == 32  # uuid4 hex for the bare list

    item = client.get("/items/i3", params={"include_input": True, "include_embedding": True}).json()
    assert item["label"] == "c0" and item["model"] == "toy-vec"
    np.testing.assert_allclose(item["input"]["vector"], x[3], rtol=1e-6)
    np.testing.assert_allclose(item["embedding"], _unit(x[3]), atol=1e-6)
    assert client.get("/items/i3").json()["input"] is None

    dup = client.post("/items", json={"items": [{"id": "i3", "vector": x[0].tolist()}]})
    assert dup.status_code == 409 and "upsert=true" in dup.json()["detail"]
    up = client.post(
        "/items",
        params={"upsert": True},
        json={"items": [{"id": "i3", "vector": x[9].tolist(), "label": "new"}]},
    )
    assert up.status_code == 201 and client.get("/items/i3").json()["label"] == "new"
    near = client.post("/search", json={"item": x[9].tolist(), "k": 2}).json()["neighbors"]
    assert {n["id"] for n in near} == {"i3", "i9"}
    assert client.get("/info").json()["index"]["size"] == 16  # replaced, not duplicated

    page = client.get("/items", params={"label": "c1", "limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and [i["id"] for i in page["items"]] == ["i6", "i7"]
    assert client.get("/items").json()["total"] == 16

    assert client.delete("/items/i3").status_code == 204
    assert client.get("/items/i3").status_code == 404
    assert client.delete("/items/i3").status_code == 404
    assert client.get("/info").json()["index"]["size"] == 15


def test_search_similarity_and_verify(client):
    x, y = blobs(10)
    client.post("/items", json={"items": vector_items(x, y)})
    for i in (0, 14, 29):
        hits = client.post("/search", json={"item": {"vector": x[i].tolist()}, "k": 3}).json()["neighbors"]
        assert hits[0]["id"] == f"i{i}" and hits[0]["distance"] == pytest.approx(0, abs=1e-5)
        assert hits[0]["similarity"] == pytest.approx(1, abs=1e-5)
        assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    by_id = client.post("/search", json={"item": {"id": "i12"}, "k": 4, "label": "c0"}).json()["neighbors"]
    assert len(by_id) == 4 and {h["label"] for h in by_id} == {"c0"}
    assert client.post("/search", json={"item": {"id": "i12"}, "label": "nope"}).json()["neighbors"] == []

    want = pair_distance("cosine", _unit(x[0]), _unit(x[15]))
    sim = client.post("/similarity", json={"a": {"id": "i0"}, "b": x[15].tolist()}).json()
    assert sim["distance"] == pytest.approx(want, abs=1e-5) and sim["similarity"] == pytest.approx(
        1 - want, abs=1e-5
    )
    same = client.post("/verify", json={"a": {"id": "i0"}, "b": {"id": "i1"}}).json()
    assert same["same"] is True and same["threshold"] == 0.5  # the card's calibrated threshold
    other = client.post("/verify", json={"a": {"id": "i0"}, "b": {"id": "i15"}}).json()
    assert other["same"] is False
    assert client.post("/verify", json={"a": {"id": "i0"}, "b": {"id": "i15"}, "threshold": 2.0}).json()[
        "same"
    ]
    assert client.post("/verify", json={"a": {"id": "i0"}, "b": {"id": "nope"}}).status_code == 404


def test_classify_blobs_unknowns_and_weighting(client):
    x, y = blobs(30, seed=1)
    client.post("/items", json={"items": vector_items(x, y)})
    q, qy = blobs(10, seed=2)
    for weighting in ("uniform", "distance"):
        r = client.post("/classify", json={"items": q.tolist(), "k": 7, "weighting": weighting})
        assert r.status_code == 200
        preds = r.json()["predictions"]
        assert [p["label"] for p in preds] == qy
        assert all(p["confidence"] == 1.0 and not p["unknown"] and len(p["neighbors"]) == 7 for p in preds)
        assert set(preds[0]["votes"]) == {"c0"} and preds[0]["neighbors"][0]["label"] == "c0"
    far = -np.ones(8, dtype=np.float32)  # cosine distance > 1 to every blob: beyond the 0.5 threshold
    p = client.post("/classify", json={"items": [far.tolist()]}).json()["predictions"][0]
    assert p["unknown"] is True and p["label"] is None and p["confidence"] == 0 and len(p["neighbors"]) == 5
    p = client.post("/classify", json={"items": [far.tolist()], "threshold": 3.0}).json()["predictions"][0]
    assert p["unknown"] is False and p["label"] is not None


def test_classify_labels_follow_upserts_deletes_and_restarts(tmp_path, database_url):
    """/classify reads labels from the in-memory row cache: it must never answer a replaced label."""
    x, y = blobs(4, seed=5)
    settings = make_settings(tmp_path, model=model_dir(), database_url=database_url)
    with TestClient(create_app(settings)) as c:
        c.post("/items", json={"items": vector_items(x, y)})
        q = {"items": [x[0].tolist()], "k": 1}
        first = c.post("/classify", json=q).json()["predictions"][0]
        assert first["label"] == "c0" and first["neighbors"][0]["id"] == "i0"
        c.post(
            "/items",
            params={"upsert": True},
            json={"items": [{"id": "i0", "vector": x[0].tolist(), "label": "moved"}]},
        )
        assert c.post("/classify", json=q).json()["predictions"][0]["label"] == "moved"
        c.post("/items", params={"upsert": True}, json={"items": [{"id": "i0", "vector": x[0].tolist()}]})
        unlabelled = c.post("/classify", json=q).json()["predictions"][0]
        assert unlabelled["unknown"] is True and unlabelled["neighbors"][0]["label"] is None
        assert c.delete("/items/i0").status_code == 204
        after = c.post("/classify", json=q).json()["predictions"][0]
        assert after["neighbors"][0]["id"] != "i0" and after["label"] == "c0"
    with TestClient(create_app(settings)) as c:  # a fresh process: empty cache, labels from the database
        again = c.post("/classify", json={"items": [x[5].tolist()], "k": 3}).json()["predictions"][0]
        assert again["label"] == y[5] and all(n["label"] == y[5] for n in again["neighbors"])


def test_euclidean_model_without_threshold(tmp_path):
    model = model_dir("toy-l2", distance="euclidean", threshold=None)
    with TestClient(create_app(make_settings(tmp_path, model=model))) as c:
        x, y = blobs(10, seed=3)
        c.post("/items", json={"items": vector_items(x, y)})
        hit = c.post("/search", json={"item": x[4].tolist(), "k": 2}).json()["neighbors"]
        d = float(np.linalg.norm(x[4] - x[int(hit[1]["id"][1:])]))
        assert hit[0]["id"] == "i4" and hit[1]["distance"] == pytest.approx(d, rel=1e-4)
        assert hit[1]["similarity"] == pytest.approx(1 / (1 + d), rel=1e-4)
        r = c.post("/verify", json={"a": {"id": "i0"}, "b": {"id": "i1"}})
        assert r.status_code == 409 and "no calibrated threshold" in r.json()["detail"]
        far = (x[0] * 100).tolist()  # far from everything, but without a threshold every neighbour votes
        p = c.post("/classify", json={"items": [far], "k": 3}).json()["predictions"][0]
        assert p["label"] == "c0" and not p["unknown"]


def test_image_model_accepts_png_jpeg_and_flat_vectors(tmp_path):
    model = model_dir("toy-img", dim=4, image=(1, 4, 4), max_value=16.0)
    with TestClient(create_app(make_settings(tmp_path, model=model))) as c:
        img = (np.arange(16).reshape(4, 4) * 16).astype(np.uint8)
        flat = (img.astype(np.float32) / 255 * 16).reshape(-1)
        r = c.post("/embed", json={"items": [{"image": png_b64(img)}, flat.tolist()]})
        assert r.status_code == 200
        e = np.asarray(r.json()["embeddings"])
        np.testing.assert_allclose(e[0], e[1], atol=1e-5)  # same pixels, two ways in
        r = c.post("/items", json={"items": [{"id": "img", "image": png_b64(img, "JPEG"), "label": "x"}]})
        assert r.status_code == 201
        raw = c.get("/items/img", params={"include_input": True}).json()["input"]
        assert set(raw) == {"image"}
        bad = c.post("/embed", json={"items": [flat[:5].tolist()]})
        assert bad.status_code == 422 and "16" in bad.json()["detail"]


def test_metrics_are_per_app_and_count_routes(tmp_path, client):
    client.post("/embed", json={"items": [[1.0] * 8] * 3})
    client.get("/items/nope")
    text = client.get("/metrics").text
    assert 'embed_http_requests_total{method="POST",route="/embed",status="200"} 1.0' in text
    assert 'route="/items/{item_id}",status="404"' in text
    assert "embed_batch_size_count 1.0" in text and "embed_queue_seconds_count 1.0" in text
    assert 'embed_active_model{collection="default",index_type="flat",model_id="toy-vec"} 1.0' in text
    assert 'embed_index_size{collection="default"} 0.0' in text
    with TestClient(create_app(make_settings(tmp_path / "other", model=model_dir()))) as other:
        assert 'route="/embed"' not in other.get("/metrics").text  # its own registry


def test_model_registry_activation_reembeds_and_refuses_incompatible(tmp_path, database_url):
    settings = make_settings(tmp_path, model=model_dir("toy-b", scale=2.0), database_url=database_url)
    with TestClient(create_app(settings)):
        pass  # registers and activates toy-b
    with TestClient(create_app(settings.model_copy(update={"model": model_dir("toy-small", dim=4)}))):
        pass  # registers toy-small (4-d vectors)
    with TestClient(create_app(settings.model_copy(update={"model": model_dir()}))) as c:
        x, y = blobs(20, seed=4)
        assert c.post("/items", json={"items": vector_items(x, y)}).status_code == 201
        models = {m["id"]: m for m in c.get("/models").json()}
        assert set(models) == {"toy-b", "toy-small", "toy-vec"} and models["toy-vec"]["active"]

        r = c.post("/models/toy-small/activate")
        assert r.status_code == 409 and "60 vector item(s) of length 8" in r.json()["detail"]
        assert c.post("/models/nope/activate").status_code == 404
        assert c.post("/models/toy-vec/activate").json()["status"] == "active"

        r = c.post("/models/toy-b/activate")
        assert r.status_code == 202 and r.headers["location"] == "/models/toy-b"
        deadline = time.monotonic() + 20
        while (
            c.get("/models/toy-b").json()["activation"]["status"] == "activating"
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        activation = c.get("/models/toy-b").json()["activation"]
        assert activation["status"] == "active" and activation["done"] == activation["total"] == 60
        assert activation["gate"]["checked"] and activation["gate"]["passed"], activation["gate"]
        info = c.get("/info").json()
        assert info["model"]["model_id"] == "toy-b" and info["index"] == {
            "size": 60,
            "type": "flat",
            "configured_type": "auto",
            "model_id": "toy-b",
        }
        item = c.get("/items/i7", params={"include_embedding": True}).json()
        assert item["model"] == "toy-b"
        hits = c.post("/search", json={"item": {"id": "i7"}, "k": 1}).json()
        assert hits["model"] == "toy-b" and hits["neighbors"][0]["id"] == "i7"
    with TestClient(create_app(settings.model_copy(update={"model": None}))) as c:
        assert c.get("/ready").json()["model"] == "toy-b"  # the activation was persisted


def test_a_stopped_app_can_be_garbage_collected(tmp_path):
    """The lifespan freezes start-up objects for the GC's sake; shutdown must unfreeze them.

    The threads that served the app must be joined first: anyio's worker thread reports a result
    (close_state's, which takes the state) *before* it drops its reference to the call's arguments,
    and nothing joins it when the event loop stops, so right after the ``with`` block it may still
    hold the state for a moment (this test used to fail about one run in three on that race).
    """
    before = set(threading.enumerate())
    app = create_app(make_settings(tmp_path, model=model_dir()))
    with TestClient(app) as c:
        c.post("/items", json={"items": vector_items(*blobs(2))})
        state = weakref.ref(app.state.service)
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=10)
        assert not thread.is_alive(), f"{thread.name} outlived the app"
    del app, c
    # The thread that ran the shutdown still holds its arguments for a moment after handing back the
    # result (anyio deletes them after call_soon_threadsafe): poll, do not collect just once.
    deadline = time.monotonic() + 10
    gc.collect()
    while state() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
        gc.collect()
    assert state() is None, "the app's state outlived it"
    assert gc.get_freeze_count() == 0


def test_keys_are_never_reused_and_stored_values_come_back_as_written(tmp_path, database_url):
    """What the index and the replicas rely on, on either database: a deleted key is never handed out
    again (not even the last one, not after a restart); metadata JSON, input bytes and times round-trip."""
    settings = make_settings(tmp_path, model=model_dir(), database_url=database_url)
    meta = {"text": "é ✓ ok", "nested": {"n": [1, 2.5, None, True]}, "big": 2**53}  # NUL is refused
    x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    engine = create_engine(database_url)

    def keys() -> dict[str, int]:
        with engine.connect() as conn:
            return dict(conn.execute(select(ItemRow.id, ItemRow.key)).all())

    with TestClient(create_app(settings)) as c:
        items = [{"id": "a", "vector": x[0].tolist(), "metadata": meta}, {"id": "b", "vector": x[1].tolist()}]
        assert c.post("/items", json={"items": items}).status_code == 201
        first = keys()
        assert c.delete("/items/b").status_code == 204  # the highest key
        c.post("/items", json={"items": [{"id": "c", "vector": x[2].tolist()}]})
        assert keys()["c"] > first["b"]
        got = c.get("/items/a", params={"include_input": True}).json()
        assert got["metadata"] == meta and got["input"]["vector"] == x[0].tolist()
        assert datetime.fromisoformat(got["created_at"]).utcoffset() == timedelta(0), got["created_at"]
        hit = c.post("/search", json={"item": x[0].tolist(), "k": 1}).json()["neighbors"][0]
        assert hit["id"] == "a" and hit["metadata"] == meta
    with TestClient(create_app(settings)) as c:  # a restart: the counter is stored, not recomputed
        assert c.delete("/items/c").status_code == 204
        c.post("/items", json={"items": [{"id": "d", "vector": x[2].tolist()}]})
        assert keys()["d"] > keys()["a"] and keys()["d"] not in (first["b"], first["a"] + 2)
    engine.dispose()


def test_values_a_database_cannot_hold_are_refused_and_change_nothing(db_client, database_url):
    """PostgreSQL refuses text with NUL characters and strings longer than their column, where SQLite
    takes them: what would be stored is refused on both (422), a lookup is answered (404, or an empty
    page) or refused (422), and nothing is ever a 500 or half-written."""
    c = db_client
    c.post("/items", json={"items": [{"id": "keep", "vector": [1.0] * 8, "label": "x"}]})
    stored = [
        c.post("/items", json={"items": [{"id": "a\u0000b", "vector": [1.0] * 8}]}),
        c.post("/items", json={"items": [{"id": "n", "vector": [1.0] * 8, "label": "a\u0000b"}]}),
        c.post("/search", json={"item": [1.0] * 8, "label": "x\u0000"}),
        c.post("/train", json={"dataset": "digits\u0000"}),
        c.post("/datasets", files={"file": ("n" * 300 + ".npz", b"PK")}),
    ]
    for r in stored:
        assert r.status_code in (400, 422), (r.request.url, r.status_code, r.text)
    looked_up = {
        c.get("/items/keep%00"): 404,
        c.delete("/items/keep%00"): 404,
        c.get("/items", params={"label": "x\x00"}): 200,
        c.get("/jobs/job%00"): 404,
        c.post("/jobs/job%00/cancel"): 404,
        c.get("/models/toy-vec%00"): 404,
        c.post("/models/toy-vec%00/activate"): 404,
        c.get("/datasets/ds%00"): 404,
    }
    for r, sqlite_status in looked_up.items():
        if database_url.startswith("postgresql"):
            assert r.status_code == 422 and "cannot contain NUL" in r.json()["detail"], r.text
            assert "SELECT" not in r.text and "/tmp" not in r.text, "no SQL, no server path"
        else:
            assert r.status_code == sqlite_status, (r.request.url, r.status_code, r.text)
    assert [i["id"] for i in c.get("/items").json()["items"]] == ["keep"]
    assert c.get("/info").json()["index"]["size"] == 1
    assert c.get("/jobs").json()["total"] == 0 and c.get("/datasets").json() == []
    assert c.get("/items/keep").json()["label"] == "x", "the service still answers from the database"
