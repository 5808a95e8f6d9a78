"""Bulk import of a .npz into a collection: checked whole before anything is written, then stored."""

from __future__ import annotations

import io

import numpy as np
from fastapi.testclient import TestClient
from service_helpers import make_settings, model_dir

from service.app import create_app


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _post(c: TestClient, path: str, body: bytes, **params: str):
    return c.post(path, content=body, params=params, headers={"content-type": "application/octet-stream"})


def test_an_import_stores_every_row_and_reads_back_like_post_items(tmp_path):
    x = np.random.default_rng(0).standard_normal((2500, 8)).astype(np.float32)
    ids = np.array([f"v{i}" for i in range(2500)])
    labels = np.array([f"c{i % 3}" for i in range(2500)])
    with TestClient(create_app(make_settings(tmp_path, model=model_dir()))) as c:
        r = _post(c, "/items/import", _npz(x=x, ids=ids, labels=labels))
        assert r.status_code == 201 and r.json() == {"imported": 2500, "ids": None}
        assert c.get("/items", params={"label": "c1"}).json()["total"] == len(
            [i for i in range(2500) if i % 3 == 1]
        )
        got = c.get("/items/v1234", params={"include_input": True, "include_embedding": True}).json()
        assert got["label"] == "c1" and got["input"]["vector"] == x[1234].tolist()
        want = x[1234] / np.linalg.norm(x[1234])  # the toy model: the normalised input
        assert np.allclose(got["embedding"], want, atol=1e-6)
        assert c.post("/search", json={"item": {"id": "v77"}, "k": 1}).json()["neighbors"][0]["id"] == "v77"
        # no ids given: the answer names the ones made up
        r = _post(c, "/items/import", _npz(x=x[:3]))
        assert r.status_code == 201 and len(r.json()["ids"]) == 3
        assert c.get("/ready").json()["index_size"] == 2503


def test_a_bad_import_is_refused_whole_and_writes_nothing(tmp_path):
    x = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    nan = x.copy()
    nan[30, 2] = np.nan
    cases = [
        (_npz(x=nan), 422, "row 30 of x is not finite"),
        (_npz(x=x[:, :5]), 422, "rows of x have 5 values"),
        (_npz(x=x, ids=np.array(["a"] * 50)), 422, "ids repeat"),
        (_npz(x=x, ids=np.array([f"i{i}" for i in range(49)] + ["a/b"])), 422, "ids[49]"),
        (_npz(x=x, labels=np.array(["ok"] * 49 + ["\x00"])), 422, "labels[49]"),
        (_npz(x=x, other=x), 422, "expected arrays x[, ids, labels]"),
        (_npz(x=np.array(["a", "b"])), 422, "2-D numeric"),
        (b"not an archive", 422, "not a .npz"),
    ]
    with TestClient(create_app(make_settings(tmp_path, model=model_dir(), max_import_items=100))) as c:
        assert _post(c, "/items/import", _npz(x=x[:2], ids=np.array(["taken", "t2"]))).status_code == 201
        for body, status, words in cases + [
            (_npz(x=np.zeros((101, 8), np.float32)), 422, "1 to 100 rows"),
            (_npz(x=x[:1], ids=np.array(["taken"])), 409, "already exist"),
        ]:
            r = _post(c, "/items/import", body)
            assert r.status_code == status and words in r.json()["detail"], (words, r.text)
        assert c.get("/items").json()["total"] == 2, "nothing written by a refused import"
        r = _post(c, "/items/import", _npz(x=x[:1] * 2, ids=np.array(["taken"])), upsert="true")
        assert r.status_code == 201 and c.get("/items").json()["total"] == 2


def test_an_import_goes_to_its_collection_and_obeys_the_upload_limit(tmp_path):
    settings = make_settings(tmp_path, model=model_dir(), max_upload_bytes=64 * 1024)
    with TestClient(create_app(settings)) as c:
        assert c.post("/collections", json={"name": "bulk", "model": "toy-vec"}).status_code == 201
        x = np.random.default_rng(2).standard_normal((100, 8)).astype(np.float32)
        assert _post(c, "/collections/bulk/items/import", _npz(x=x)).status_code == 201
        assert c.get("/collections/bulk").json()["size"] == 100 and c.get("/items").json()["total"] == 0
        big = _npz(x=np.zeros((4000, 8), np.float32))  # 128 KB
        r = _post(c, "/collections/bulk/items/import", big)
        assert r.status_code == 413 and "--max-upload-bytes" in r.json()["detail"]


def test_the_clients_import_items_sends_chunks_to_the_collection(tmp_path):
    from service.client import Client

    settings = make_settings(tmp_path, model=model_dir())
    x = np.random.default_rng(3).standard_normal((250, 8)).astype(np.float32)
    with TestClient(create_app(settings)) as c:
        c.post("/collections", json={"name": "bulk", "model": "toy-vec"})
        with Client("http://test", transport=c._transport) as client:  # the app itself, over httpx
            n = client.collection("bulk").import_items(x, ids=[f"r{i}" for i in range(250)], chunk=100)
            assert n == 250 and client.collection("bulk").get_item("r249").id == "r249"
            assert client.collection("bulk").search({"id": "r10"}, k=1).neighbors[0].id == "r10"
