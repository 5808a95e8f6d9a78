"""``service.client`` end to end: Client and AsyncClient against a real ``python -m service`` process.

One server (with an API key, an image model active in ``default``, a second image model and three vector
models registered, and no training worker, so jobs stay queued) serves most of the module; each test uses
its own ids, labels and collections, and the activation test restores the model it started with. A second
server, with a worker and no model, runs real training jobs on tiny configs.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from service_helpers import LinearEncoder, ServerProcess, blobs, model_dir, png_b64
from sklearn.datasets import load_digits

from service.client import (
    ActivationFailedError,
    ApiError,
    AsyncClient,
    AsyncCollection,
    AuthenticationError,
    Client,
    Collection,
    CollectionOut,
    ConflictError,
    HistoryEntry,
    NotFoundError,
    OverloadedError,
    TrainConfig,
    UnavailableError,
    UnprocessableError,
    encode_items,
)
from trainer.card import ModelCard
from trainer.export import write_model_dir

pytestmark = pytest.mark.timeout(120)

KEY = "s3cret-key"
SHAPE = (1, 4, 4)  # the toy image model: 4x4 grayscale, pixels in [0, 255]; also takes 16-float vectors
DIM = 16
MAIN, OTHER = "toy-img", "toy-img2"
# vector models of 8 values for the collections: VEC_B embeds exactly as VEC does (cosine of a scaled
# identity), so the promotion gate lets it through; VEC_BAD keeps only the noise dimensions of blobs()
VEC, VEC_B, VEC_BAD = "toy-vec", "toy-b", "toy-bad"
ALL_MODELS = {MAIN, OTHER, VEC, VEC_B, VEC_BAD}


def blind_model(model_id: str, parent: Path) -> Path:
    """A vector model that drops the three dimensions blobs() separates its classes by: worse than VEC."""
    card = ModelCard.model_validate_json((model_dir(VEC) / "model.json").read_text())
    encoder = LinearEncoder(torch.diag(torch.tensor([0.0, 0, 0, 1, 1, 1, 1, 1])), normalize=True)
    card = card.model_copy(update={"model_id": model_id})
    return write_model_dir(encoder, card, parent / model_id, torch.randn(4, 8))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("client") / "data"
    for model_id, path in [
        (OTHER, model_dir(OTHER, image=SHAPE, scale=2.0)),
        (VEC, model_dir(VEC)),
        (VEC_B, model_dir(VEC_B, scale=2.0)),
        (VEC_BAD, blind_model(VEC_BAD, tmp_path_factory.mktemp("blind"))),
    ]:
        shutil.copytree(path, data / "models" / model_id)  # found and registered at start
    proc = ServerProcess(data, "--model", str(model_dir(MAIN, image=SHAPE)), env={"EMBED_API_KEY": KEY})
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, api_key=KEY, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def trainer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with its training worker and no model yet (jobs run; the first activation needs none)."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("client-train") / "data", worker=True, env={"EMBED_API_KEY": KEY}
    )
    try:
        proc.wait_ready(path="/health")
        yield proc
    finally:
        proc.stop()


# digits in seconds on two cores: one small MLP, two epochs
TINY: dict[str, Any] = {
    "epochs": 2,
    "hidden": [32],
    "embedding_dim": 16,
    "projection_dim": 0,
    "patience": 0,
}


def patterns(n: int, seed: int) -> np.ndarray:
    """n random, well separated 4x4 pixel patterns, flattened (float32 in [0, 255])."""
    return np.random.default_rng(seed).uniform(0, 255, (n, DIM)).astype(np.float32)


def png(pixels: np.ndarray) -> bytes:
    return base64.b64decode(png_b64(pixels.reshape(4, 4).round()))


def test_service_routes(client: Client):
    assert client.health() == {"status": "ok"}
    ready = client.wait_ready(timeout=5)
    assert ready.status == "ready" and ready.model == MAIN
    info = client.info()
    assert info.model is not None and info.model["model_id"] == MAIN
    assert info.limits["max_items"] == 1024 and "torch" in info.versions
    assert "embed_http_requests" in client.metrics()
    models = {m.id: m for m in client.models()}
    assert set(models) == ALL_MODELS
    assert models[MAIN].active and not models[OTHER].active
    one = client.model(MAIN)
    assert one.active and one.card["input"]["kind"] == "image"


def test_embed_accepts_arrays_lists_bytes_paths_and_dicts(client: Client, tmp_path: Path):
    x = patterns(3, seed=1).round()
    batch = client.embed(x)
    assert batch.model == MAIN and batch.dim == 8
    assert batch.embeddings.shape == (3, 8) and batch.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch.embeddings, axis=1), 1.0, atol=1e-5)  # cosine model

    file = tmp_path / "digit.png"
    file.write_bytes(png(x[2]))
    mixed = client.embed([png(x[0]), x[1].tolist(), file, {"vector": x[0]}, x[1].reshape(SHAPE)])
    np.testing.assert_allclose(mixed.embeddings[[0, 1, 2]], batch.embeddings, atol=1e-5)
    np.testing.assert_allclose(mixed.embeddings[[3, 4]], batch.embeddings[[0, 1]], atol=1e-5)
    # image-shaped batches go as flattened rows
    np.testing.assert_allclose(client.embed(x.reshape(3, *SHAPE)).embeddings, batch.embeddings, atol=1e-6)


def test_item_lifecycle(client: Client):
    x = patterns(4, seed=2)
    ids = client.add_items(
        x[:3], ids=["lc-0", "lc-1", "lc-2"], labels=["lc-a", "lc-a", None], metadata=[{"n": 0}, None, None]
    )
    assert ids == ["lc-0", "lc-1", "lc-2"]
    (generated,) = client.add_items([{"image": png(x[3]), "label": "lc-b"}])
    assert len(generated) == 32  # uuid4 hex

    item = client.get_item("lc-0")
    assert (item.id, item.label, item.metadata, item.model) == ("lc-0", "lc-a", {"n": 0}, MAIN)
    assert item.input is None and item.embedding is None and item.created_at.year >= 2024
    full = client.get_item("lc-0", include_input=True, include_embedding=True)
    assert isinstance(full.input, np.ndarray)
    np.testing.assert_array_equal(full.input, x[0])
    assert full.embedding is not None
    np.testing.assert_allclose(full.embedding, client.embed(x[:1]).embeddings[0], atol=1e-6)
    image = client.get_item(generated, include_input=True)
    assert image.input == png(x[3]) and image.label == "lc-b"

    page = client.list_items(label="lc-a", limit=1)
    assert page.total == 2 and page.limit == 1 and page.offset == 0 and [i.id for i in page.items] == ["lc-0"]
    assert [i.id for i in client.iter_items(label="lc-a", page_size=1)] == ["lc-0", "lc-1"]

    with pytest.raises(ConflictError) as err:
        client.add_items([x[3]], ids=["lc-0"])
    assert err.value.status_code == 409 and "upsert" in err.value.detail
    assert client.add_items([x[3]], ids=["lc-0"], labels=["lc-c"], upsert=True) == ["lc-0"]
    assert client.get_item("lc-0").label == "lc-c"
    # numpy labels, as scikit-learn data sets give them, are sent as strings
    assert client.add_items([x[3]], ids=["lc-0"], labels=np.array([7]), upsert=True) == ["lc-0"]
    assert client.get_item("lc-0").label == "7"
    (picked,) = client.add_items([x[3]], ids=[None])  # None: the service picks the id
    assert len(picked) == 32 and picked != "None"
    client.delete_item(picked)

    client.delete_item("lc-0")
    with pytest.raises(NotFoundError) as missing:
        client.get_item("lc-0")
    assert missing.value.status_code == 404 and "lc-0" in missing.value.detail
    with pytest.raises(NotFoundError):
        client.delete_item("lc-0")


def test_search_similarity_verify_classify(client: Client):
    centers = patterns(3, seed=3)
    noise = np.random.default_rng(4).uniform(-1, 1, (3, 3, DIM)).astype(np.float32)
    x = (centers[:, None, :] + noise).reshape(9, DIM)
    labels = [f"cl-{c}" for c in range(3) for _ in range(3)]
    client.add_items(x, ids=[f"cl-{i}" for i in range(9)], labels=labels)

    hits = client.search(x[4], k=3)
    assert hits.model == MAIN and hits.neighbors[0].id == "cl-4" and hits.neighbors[0].distance < 1e-5
    assert {n.label for n in hits.neighbors} == {"cl-1"}
    by_id = client.search({"id": "cl-4"}, k=2, label="cl-2")
    assert [n.label for n in by_id.neighbors] == ["cl-2", "cl-2"]

    same = client.similarity({"id": "cl-0"}, x[0])
    assert same.distance < 1e-5 and same.similarity > 1 - 1e-5
    apart = client.similarity(x[0], x[8])
    assert apart.distance > same.distance

    verdict = client.verify(x[0], {"id": "cl-1"})
    assert verdict.same and verdict.threshold == 0.5
    strict = client.verify(x[0], x[1], threshold=0.0)
    assert not strict.same and strict.threshold == 0.0

    result = client.classify(centers, k=3, weighting="distance")
    assert [p.label for p in result.predictions] == ["cl-0", "cl-1", "cl-2"]
    assert all(p.confidence == 1.0 and not p.unknown and len(p.neighbors) == 3 for p in result.predictions)
    unknown = client.classify([patterns(1, seed=5)[0]], k=3, threshold=1e-9).predictions[0]
    assert unknown.unknown and unknown.label is None


def test_errors_are_typed(client: Client, server: ServerProcess):
    with pytest.raises(UnprocessableError) as wrong_dim:
        client.embed([[1.0, 2.0]])
    assert wrong_dim.value.status_code == 422 and "expects" in wrong_dim.value.detail
    assert str(wrong_dim.value).startswith("422 POST /embed: ")

    with pytest.raises(UnprocessableError) as bad_k:
        client.search(patterns(1, seed=6)[0], k=0)  # FastAPI's own validation: a list of errors
    assert isinstance(bad_k.value.detail, list) and bad_k.value.detail[0]["loc"][-1] == "k"
    assert "body.k: " in str(bad_k.value)

    with pytest.raises(NotFoundError):
        client.search({"id": "no-such-item"})
    with pytest.raises(NotFoundError):
        client.model("no-such-model")
    with pytest.raises(ApiError) as conflict:  # every typed error is an ApiError
        client.verify({"id": "no-such-item"}, {"id": "x"})
    assert conflict.value.status_code == 404

    with Client(server.url) as anonymous:
        assert anonymous.health() == {"status": "ok"}  # public routes need no key
        assert anonymous.ready().model == MAIN
        with pytest.raises(AuthenticationError) as denied:
            anonymous.embed([patterns(1, seed=7)[0]])
    assert denied.value.status_code == 401 and "API key" in denied.value.detail
    assert denied.value.headers["www-authenticate"].startswith("Bearer")
    with Client(server.url, api_key="wrong") as wrong, pytest.raises(AuthenticationError):
        wrong.info()

    with pytest.raises(ValueError, match="NaN"):  # refused before sending: JSON cannot carry NaN
        client.embed([[float("nan")] * DIM])
    with pytest.raises(TypeError):
        client.embed(np.zeros(DIM))  # a single vector is not a batch
    with pytest.raises(ValueError, match="2 labels for 1 items"):
        client.add_items([patterns(1, seed=8)[0]], labels=["a", "b"])


def test_activation_switches_models_and_back(client: Client):
    started = client.activate_model(OTHER)
    assert (started.id, started.status) == (OTHER, "activating")
    done = client.wait_active(OTHER, timeout=30)
    assert done.active and done.activation is not None and done.activation["status"] == "active"
    assert client.ready().model == OTHER and client.embed(patterns(1, seed=9)).model == OTHER
    assert client.activate_model(OTHER).status == "active"  # already active: 200
    assert client.activate_model(MAIN).status == "activating"
    assert client.wait_active(MAIN, timeout=30).active
    assert client.ready().model == MAIN


class Recording(httpx.HTTPTransport):
    """A real transport that notes each request's method and path (which routes a client called)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        return super().handle_request(request)


class AsyncRecording(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        return await super().handle_async_request(request)


def test_a_collection_scopes_every_item_route(server: ServerProcess):
    x, y = blobs(4, seed=11)  # 12 vectors of 8 values, labels c0..c2
    wire = Recording()
    with Client(server.url, api_key=KEY, transport=wire) as client:
        created = client.create_collection("faces-s", model=VEC)
        assert isinstance(created, CollectionOut)
        assert (created.name, created.model, created.size, created.previous_model) == (
            "faces-s",
            VEC,
            0,
            None,
        )
        with pytest.raises(ConflictError) as exists:
            client.create_collection("faces-s")
        assert "faces-s" in exists.value.detail
        assert {"default", "faces-s"} <= {c.name for c in client.collections()}

        faces = client.collection("faces-s")
        wire.calls.clear()
        ids = faces.add_items(x, ids=[f"f{i}" for i in range(12)], labels=y)
        assert ids == [f"f{i}" for i in range(12)]
        assert faces.embed(x[:2]).model == VEC
        hits = faces.search(x[4], k=4)
        assert (
            hits.model == VEC and hits.neighbors[0].id == "f4" and {n.label for n in hits.neighbors} == {"c1"}
        )
        assert faces.similarity({"id": "f0"}, x[0]).distance < 1e-5
        assert faces.verify({"id": "f0"}, {"id": "f1"}).same and not faces.verify({"id": "f0"}, x[8]).same
        assert [p.label for p in faces.classify(x[[0, 4, 8]], k=3).predictions] == ["c0", "c1", "c2"]
        assert faces.get_item("f3", include_input=True).label == "c0"
        assert faces.list_items(label="c2").total == 4
        assert [i.id for i in faces.iter_items(label="c1", page_size=3)] == ["f4", "f5", "f6", "f7"]
        faces.delete_item("f11")
        info = faces.info()
        assert (info.name, info.model, info.size) == ("faces-s", VEC, 11)
        scoped = "POST /collections/faces-s/"
        assert wire.calls[:9] == [
            f"{scoped}items",
            f"{scoped}embed",
            f"{scoped}search",
            f"{scoped}similarity",
            f"{scoped}verify",
            f"{scoped}verify",
            f"{scoped}classify",
            "GET /collections/faces-s/items/f3",
            "GET /collections/faces-s/items",
        ]
        assert wire.calls[-2:] == ["DELETE /collections/faces-s/items/f11", "GET /collections/faces-s"]

        # the client's own item routes mean default: the collection's items are not there
        with pytest.raises(NotFoundError):
            client.get_item("f0")
        assert client.list_items(label="c0").total == 0 and client.embed(patterns(1, seed=12)).model == MAIN

        assert faces.clear() == 11
        assert faces.list_items().total == 0 and faces.info().model == VEC  # emptied, its model stays
        client.delete_collection("faces-s")
        with pytest.raises(NotFoundError):
            faces.info()
        with pytest.raises(NotFoundError):
            faces.search(x[0])
        assert "faces-s" not in {c.name for c in client.collections()}

        empty = client.collection("empty-s")
        assert client.create_collection("empty-s").model is None
        with pytest.raises(ConflictError):  # no model yet: it takes no items
            empty.add_items(x[:1])
        with pytest.raises(UnprocessableError):
            client.create_collection("Not A Name")
        client.delete_collection("empty-s")


def test_collection_activate_wait_history_and_rollback(client: Client):
    x, y = blobs(4, seed=13)
    client.create_collection("swap-s", model=VEC)
    swap = client.collection("swap-s")
    swap.add_items(x, labels=y)
    try:
        started = swap.activate(VEC_B)
        assert (started.status, started.model) == ("activating", VEC_B) and started.activation is not None
        done = swap.wait_active(VEC_B, timeout=30)
        assert (done.model, done.previous_model, done.size) == (VEC_B, VEC, 12)
        assert done.activation is not None and done.activation.seq == started.activation
        assert swap.embed(x[:1]).model == VEC_B
        assert swap.activate(VEC_B).status == "active"  # already active

        latest = swap.history()[0]
        assert isinstance(latest, HistoryEntry)
        assert (latest.model, latest.previous_model, latest.kind, latest.status) == (
            VEC_B,
            VEC,
            "activation",
            "active",
        )
        assert latest.requested_by == "request" and latest.done == latest.total == 12
        gate = latest.gate or {}
        assert gate["checked"] and gate["passed"] and gate["sample"] == 12
        assert gate["candidate"] == gate["current"]  # the same embeddings: the same numbers

        back = swap.rollback()
        assert (back.status, back.model) == ("active", VEC)
        assert swap.info().model == VEC and swap.info().previous_model == VEC_B
        assert swap.history()[0].kind == "rollback" and swap.search(x[0], k=1).model == VEC

        # the gate refuses a worse model, with both models' numbers; wait_active then raises
        with pytest.raises(ConflictError) as refused:
            swap.activate(VEC_BAD)
        assert re.search(r"knn_accuracy 0\.\d{4} vs 1\.0000, map_at_r \d\.\d{4} vs", refused.value.detail)
        assert f"active model {VEC}" in refused.value.detail
        assert '"force": true' in refused.value.detail
        entry = swap.history()[0]
        assert (entry.model, entry.status) == (VEC_BAD, "refused") and entry.gate is not None
        assert entry.gate["candidate"]["knn_accuracy"] < entry.gate["current"]["knn_accuracy"] == 1.0
        with pytest.raises(ActivationFailedError) as failed:
            swap.wait_active(VEC_BAD, timeout=5)
        assert failed.value.model_id == VEC_BAD and failed.value.reason.startswith("refused: worse than")
        assert swap.info().model == VEC

        assert swap.activate(VEC_BAD, force=True).status == "activating"  # past the gate
        assert swap.wait_active(VEC_BAD, timeout=30).model == VEC_BAD
        assert swap.history()[0].gate == {**(swap.history()[0].gate or {}), "checked": False}
        assert swap.rollback().model == VEC
        with pytest.raises(NotFoundError):
            swap.activate("no-such-model")
        assert client.model(VEC).collections == ["swap-s"] and not client.model(VEC).active
    finally:
        client.delete_collection("swap-s")


def test_async_collections(server: ServerProcess):
    x, y = blobs(3, seed=14)

    async def main() -> None:
        wire = AsyncRecording()
        async with AsyncClient(server.url, api_key=KEY, transport=wire) as c:
            assert (await c.create_collection("faces-a", model=VEC)).model == VEC
            faces = c.collection("faces-a")
            assert await faces.add_items(x, ids=[f"a{i}" for i in range(9)], labels=y) == [
                f"a{i}" for i in range(9)
            ]
            results = await asyncio.gather(faces.search(x[3], k=3), faces.classify(x[[0, 6]], k=3))
            assert {n.label for n in results[0].neighbors} == {"c1"}
            assert [p.label for p in results[1].predictions] == ["c0", "c2"]
            assert (await faces.verify({"id": "a0"}, x[0])).same
            assert [i.id async for i in faces.iter_items(label="c2", page_size=2)] == ["a6", "a7", "a8"]
            assert (await faces.activate(VEC_B)).status == "activating"
            assert (await faces.wait_active(VEC_B, timeout=30, interval=0.05)).model == VEC_B
            assert [h.model for h in await faces.history()][:2] == [VEC_B, VEC]
            assert (await faces.rollback()).model == VEC and (await faces.info()).model == VEC
            with pytest.raises(ConflictError):
                await faces.activate(VEC_BAD)
            with pytest.raises(ActivationFailedError):
                await faces.wait_active(VEC_BAD)
            assert await faces.clear() == 9
            await c.delete_collection("faces-a")
            with pytest.raises(NotFoundError):
                await faces.info()
            assert "faces-a" not in {col.name for col in await c.collections()}
        paths = {call.split(" ", 1)[1] for call in wire.calls}
        assert {
            "/collections/faces-a/items",
            "/collections/faces-a/search",
            "/collections/faces-a/classify",
        } <= paths
        assert not paths & {"/items", "/search", "/classify", "/verify"}  # nothing went to default

    asyncio.run(main())


def test_async_client_covers_every_route(server: ServerProcess, tmp_path: Path):
    async def main() -> None:
        x = patterns(6, seed=10)
        async with AsyncClient(server.url, api_key=KEY) as c:
            assert (await c.health())["status"] == "ok"
            assert (await c.wait_ready(timeout=5)).model == MAIN
            assert (await c.info()).version and "embed_index_size" in await c.metrics()
            assert {m.id for m in await c.models()} == ALL_MODELS
            assert (await c.model(MAIN)).active

            # concurrent requests share the micro-batcher; results keep their order
            parts = await asyncio.gather(*(c.embed(x[i : i + 1]) for i in range(6)))
            whole = await c.embed(x)
            np.testing.assert_allclose(
                np.concatenate([p.embeddings for p in parts]), whole.embeddings, atol=1e-6
            )

            ids = await c.add_items(x, ids=[f"as-{i}" for i in range(6)], labels=["as-a"] * 3 + ["as-b"] * 3)
            assert ids == [f"as-{i}" for i in range(6)]
            assert await c.add_items([x[0]], ids=["as-0"], labels=["as-b"], upsert=True) == ["as-0"]
            item = await c.get_item("as-0", include_embedding=True)
            assert item.label == "as-b" and item.embedding is not None
            page = await c.list_items(label="as-b", limit=10)
            assert page.total == 4 and {i.id for i in page.items} == {"as-0", "as-3", "as-4", "as-5"}
            assert (await c.search({"id": "as-1"}, k=1)).neighbors[0].id == "as-1"
            assert (await c.similarity(x[2], {"id": "as-2"})).distance < 1e-5
            assert (await c.verify(x[2], {"id": "as-2"})).same
            prediction = (await c.classify([x[4]], k=1)).predictions[0]
            assert prediction.label == "as-b" and prediction.neighbors[0].id == "as-4"
            await c.delete_item("as-5")
            with pytest.raises(NotFoundError):
                await c.get_item("as-5")
            with pytest.raises(ConflictError):
                await c.add_items([x[1]], ids=["as-1"])
            with pytest.raises(UnprocessableError) as bad:
                await c.embed([{"vector": [1.0] * (DIM + 1)}])
            assert "17 values" in bad.value.detail
            status = (await c.activate_model(MAIN)).status
            assert status == "active"
        async with AsyncClient(server.url) as anonymous:
            with pytest.raises(AuthenticationError):
                await anonymous.models()

    asyncio.run(main())


def test_overloaded_error_carries_retry_after():
    """A 429 (hard to provoke on a real server) through a mock transport."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = {"detail": "the encoder queue is full; retry shortly"}
        return httpx.Response(429, json=body, headers={"Retry-After": "2"})

    with (
        Client("http://test", transport=httpx.MockTransport(handler)) as c,
        pytest.raises(OverloadedError) as err,
    ):
        c.embed([[0.0] * DIM])
    assert err.value.retry_after == 2.0 and err.value.status_code == 429


def test_batches_encode_without_the_server():
    rows = encode_items(np.arange(6, dtype=np.float32).reshape(2, 1, 3))
    assert rows == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert encode_items([b"\x89PNG", {"id": "a"}, (1, 2)]) == [
        {"image": base64.b64encode(b"\x89PNG").decode()},
        {"id": "a"},
        {"vector": [1, 2]},
    ]
    with pytest.raises(TypeError):
        encode_items([object()])  # type: ignore[list-item]


def npz(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def arrows() -> tuple[np.ndarray, np.ndarray]:
    """120 six-value vectors in three well separated classes."""
    y = np.repeat(np.array(["left", "right", "up"]), 40)
    x = np.random.default_rng(0).normal(size=(120, 6)) + np.repeat(np.eye(3, 6) * 4, 40, axis=0)
    return x.astype(np.float32), y


def test_jobs_queue_list_and_cancel(client: Client):
    """No worker on this server: jobs stay queued, which is what cancelling and timing out need."""
    before = client.jobs().total
    first = client.train({"dataset": "digits", "epochs": 1, "name": "q-first"})
    assert first.status == "queued" and first.model_id == "q-first" and first.id.startswith("job-")
    second = client.train(TrainConfig(epochs=3, hidden=[8], name="q-second"), activate=True)
    job = client.job(second.id)
    assert (job.id, job.status, job.model_id, job.dataset) == (second.id, "queued", "q-second", "digits")
    assert job.activate and job.config["epochs"] == 3 and job.config["hidden"] == [8]
    assert job.worker_id is None and job.started_at is None and job.metrics == []
    assert not client.job(first.id).activate

    with pytest.raises(ConflictError) as taken:  # a pending job holds the name
        client.train({"name": "q-first"})
    assert taken.value.status_code == 409 and "q-first" in taken.value.detail
    with pytest.raises(TimeoutError, match="still queued"):
        client.wait_job(first.id, timeout=0.3, interval=0.05)

    page = client.jobs(status="queued")
    assert [j.id for j in page.jobs][:2] == [second.id, first.id]  # newest first
    older = client.jobs(status="queued", limit=1, offset=1)
    assert [j.id for j in older.jobs] == [first.id]
    assert (older.total, older.limit, older.offset) == (page.total, 1, 1)

    cancelled = client.cancel_job(first.id)
    assert cancelled.status == "cancelled" and cancelled.cancel_requested
    assert cancelled.error == "cancelled before it started" and cancelled.finished_at is not None
    assert client.wait_job(first.id, timeout=0).status == "cancelled"  # over: returned, not raised
    with pytest.raises(ConflictError) as again:
        client.cancel_job(first.id)
    assert "already cancelled" in again.value.detail
    assert client.jobs(status="cancelled").jobs[0].id == first.id
    assert [j.id for j in client.jobs(status="queued").jobs][:1] == [second.id]
    assert client.jobs(status="queued").total == page.total - 1
    assert client.cancel_job(second.id).status == "cancelled"
    assert client.jobs().total == before + 2


def test_training_errors_are_typed(client: Client, server: ServerProcess):
    before = client.jobs().total
    with pytest.raises(NotFoundError) as missing:
        client.job("job-nope")
    assert missing.value.status_code == 404 and "job-nope" in missing.value.detail
    with pytest.raises(NotFoundError):
        client.cancel_job("job-nope")
    with pytest.raises(NotFoundError):
        client.dataset("ds-nope")
    with pytest.raises(NotFoundError) as no_model:
        client.model_report("no-such-model")
    assert "no-such-model" in no_model.value.detail
    with pytest.raises(NotFoundError) as no_report:  # registered, but not trained here: no report.md
        client.model_report(MAIN)
    assert "report.md" in no_report.value.detail

    with pytest.raises(UnprocessableError) as bad_lr:  # FastAPI's validation of the config
        client.train({"dataset": "digits", "lr": -1})
    assert bad_lr.value.detail[0]["loc"][-1] == "lr" and "body.lr: " in str(bad_lr.value)
    with pytest.raises(UnprocessableError) as unknown:
        client.train({"epochs": 1, "epoch": 2})  # a misspelt field is refused, not ignored
    assert unknown.value.detail[0]["loc"][-1] == "epoch"
    with pytest.raises(UnprocessableError) as no_data:  # the service's own check of the data set
        client.train({"dataset": "nope.npz"})
    assert "not a built-in data set" in no_data.value.detail
    with pytest.raises(UnprocessableError) as nothing_stored:
        client.train({"dataset": {"source": "items"}, "loss": "triplet"})  # the items are images and vectors
    assert nothing_stored.value.detail.startswith("dataset: ")
    with pytest.raises(UnprocessableError):
        client.jobs(limit=0)
    with pytest.raises(ValueError, match="NaN"):  # refused before sending
        client.train({"lr": float("nan")})
    assert client.jobs().total == before  # nothing above was queued

    with Client(server.url) as anonymous, pytest.raises(AuthenticationError):
        anonymous.jobs()


def test_dataset_uploads(client: Client, tmp_path: Path):
    x, y = arrows()
    ds = client.upload_dataset(("arrows.npz", npz(x, y)))
    assert ds.id.startswith("ds-") and ds.original_name == "arrows.npz" and ds.filename == f"{ds.id}.npz"
    assert (ds.n, ds.classes, ds.shape) == (120, ["left", "right", "up"], [6])
    csv = tmp_path / "pairs.csv"
    csv.write_text("a,b,kind\n" + "".join(f"{i},{i % 3},k{i % 2}\n" for i in range(8)))
    table = client.upload_dataset(csv, label_column="kind")  # a path, streamed from the file
    assert (table.original_name, table.n, table.classes, table.shape) == ("pairs.csv", 8, ["k0", "k1"], [2])
    assert [d.id for d in client.datasets()][:2] == [table.id, ds.id]
    assert client.dataset(ds.id) == ds

    job = client.train({"dataset": ds.id, "epochs": 1, "name": "ds-queued"})
    assert client.job(job.id).dataset == f"datasets/{ds.filename}"
    client.cancel_job(job.id)

    with pytest.raises(UnprocessableError) as wrong_kind:
        client.upload_dataset(("notes.txt", b"hello"))
    assert "not a .npz or .csv" in wrong_kind.value.detail
    with pytest.raises(UnprocessableError) as bad_column:
        client.upload_dataset(csv, label_column="nope")
    assert "nope" in bad_column.value.detail


def test_train_into_a_collection_wait_and_report(trainer_server: ServerProcess):
    """The README's Python client example, with a tiny config: train into a collection, then use it."""
    x, y = load_digits(return_X_y=True)
    with Client(trainer_server.url, api_key=KEY) as client:
        client.create_collection("digits")
        config = TrainConfig(dataset="digits", name="cl-digits", **TINY)
        created = client.train(config, activate=True, collection="digits")
        job = client.wait_job(created.id, timeout=60, interval=0.2)
        assert job.status == "succeeded", (job.error, job.log[-2000:])
        assert job.model_id == "cl-digits" and [m["epoch"] for m in job.metrics] == [1, 2]
        assert job.result is not None and job.result["knn_5_accuracy"] > 0.6
        assert (job.collection, job.activate, job.force) == ("digits", True, False)

        digits = client.collection("digits")
        active = digits.wait_active(job.model_id, timeout=30, interval=0.1)
        assert active.model == "cl-digits" and active.activation is not None
        assert active.activation.requested_by == f"job {created.id}" and active.activation.status == "active"
        deadline = time.monotonic() + 30  # the job's own field follows the history at housekeeping's pace
        while (activation := client.job(created.id).activation) != "active":
            assert activation == "activating" and time.monotonic() < deadline, activation
            time.sleep(0.1)
        digits.add_items(x[:500], labels=y[:500])
        predictions = digits.classify(x[500:600], k=5).predictions
        accuracy = np.mean([p.label == str(label) for p, label in zip(predictions, y[500:600], strict=True)])
        assert accuracy > 0.6, accuracy

        model = client.model("cl-digits")
        assert model.collections == ["digits"] and not model.active  # not in default
        assert model.card["embedding_dim"] == 16 and "cl-digits" in [m.id for m in client.models()]
        with pytest.raises(UnavailableError):  # default still has no model
            client.ready()
        report = client.model_report("cl-digits")
        assert report.model_id == "cl-digits" and report.markdown.startswith("# Model")
        assert (
            report.files["report.md"] == "/models/cl-digits/files/report.md" and "curves.png" in report.files
        )
        assert client.jobs(status="succeeded").jobs[0].id == created.id


def test_async_client_trains_on_an_upload_and_activates(trainer_server: ServerProcess, tmp_path: Path):
    x, y = arrows()
    file = tmp_path / "arrows.npz"
    file.write_bytes(npz(x, y))

    async def main() -> None:
        async with AsyncClient(trainer_server.url, api_key=KEY) as c:
            ds = await c.upload_dataset(file)
            assert ds.n == 120 and ds.id in [d.id for d in await c.datasets()]
            assert (await c.dataset(ds.id)).classes == ["left", "right", "up"]
            config = {**TINY, "dataset": ds.id, "name": "cl-arrows"}
            created = await c.train(config, activate=True)
            assert (await c.job(created.id)).activate
            with pytest.raises(ConflictError):
                await c.train(config)  # the name is taken while the job is pending
            job = await c.wait_job(created.id, timeout=60, interval=0.2)
            assert job.status == "succeeded", (job.error, job.log[-2000:])
            assert job.dataset == f"datasets/{ds.filename}"
            model = await c.wait_active("cl-arrows", timeout=30)
            assert model.card["dataset"]["label_names"] == ["left", "right", "up"]
            assert (await c.ready()).model == "cl-arrows"
            assert (await c.model_report("cl-arrows")).markdown.startswith("# Model")
            assert created.id in [j.id for j in (await c.jobs(status="succeeded")).jobs]
            with pytest.raises(ConflictError) as over:
                await c.cancel_job(created.id)
            assert "already succeeded" in over.value.detail
            with pytest.raises(NotFoundError):
                await c.job("job-nope")
            with pytest.raises(UnprocessableError):
                await c.train({"dataset": ds.id, "batch_size": 1})

    asyncio.run(main())


def test_wait_job_returns_a_failed_job_and_polls_until_then():
    """A failed job is an answer, not an error: the caller decides (mock transport, no training needed)."""
    statuses = iter(["queued", "running", "failed"])
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        status = next(statuses)
        job = {
            "id": "job-1",
            "status": status,
            "model_id": "m",
            "dataset": "digits",
            "config": {},
            "activate": False,
            "progress": {},
            "metrics": [],
            "error": "boom" if status == "failed" else None,
            "log": "",
            "attempts": 1,
            "worker_id": None,
            "cancel_requested": False,
            "created_at": "2025-01-01T00:00:00Z",
            "started_at": None,
            "finished_at": None,
            "heartbeat_at": None,
        }
        return httpx.Response(200, json=job)

    with Client("http://test", transport=httpx.MockTransport(handler)) as c:
        job = c.wait_job("job-1", timeout=5, interval=0.01)
    assert (job.status, job.error) == ("failed", "boom") and seen == ["/jobs/job-1"] * 3


def test_train_sends_only_what_the_config_sets():
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(202, json={"id": "job-1", "status": "queued", "model_id": "m"})

    with Client("http://test", transport=httpx.MockTransport(handler)) as c:
        c.train(TrainConfig(epochs=3, name="m"))
        c.train(TrainConfig(dataset={"source": "items"}), activate=True)  # type: ignore[arg-type]
        c.train({"epochs": 1, "activate": True})
        c.train(TrainConfig(epochs=2), activate=True, collection="faces", force=True)
        c.train({"dataset": {"source": "items", "collection": "faces"}, "collection": "faces"})
    assert bodies == [
        {"epochs": 3, "name": "m"},
        {"dataset": {"source": "items"}, "activate": True},
        {"epochs": 1, "activate": True},
        {"epochs": 2, "activate": True, "collection": "faces", "force": True},
        {"dataset": {"source": "items", "collection": "faces"}, "collection": "faces"},
    ]


def test_wait_ready_retries_refused_connections_and_503():
    """The flow of ``wait_ready`` catches what the driver throws into it (mock transport: no server)."""
    answers = ["refused", "503", "200"]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if answer == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        if answer == "503":
            return httpx.Response(503, json={"detail": "no model yet"})
        return httpx.Response(200, json={"status": "ready", "model": "m", "index_size": 0})

    with Client("http://test", transport=httpx.MockTransport(handler)) as c:
        assert c.wait_ready(timeout=5, interval=0.01).model == "m"
    answers[:] = ["refused", "503", "200"]

    async def main() -> None:
        async with AsyncClient("http://test", transport=httpx.MockTransport(handler)) as c:
            assert (await c.wait_ready(timeout=5, interval=0.01)).model == "m"
        answers[:] = ["503"]
        async with AsyncClient("http://test", transport=httpx.MockTransport(handler)) as c:
            with pytest.raises(TimeoutError, match="not ready after 0.05s"):
                await c.wait_ready(timeout=0.05, interval=0.01)

    asyncio.run(main())
    assert answers == ["503"]


def test_sync_and_async_clients_offer_the_same_methods():
    """Both are bound from the same routes: same names, signatures and docstrings; async ones are
    coroutine functions (or async iterators), and ``help``/``inspect`` see plain methods."""

    def public(cls: type) -> dict[str, Any]:
        return {name: getattr(cls, name) for name in dir(cls) if not name.startswith("_")}

    for sync_cls, async_cls in [(Client, AsyncClient), (Collection, AsyncCollection)]:
        sync_methods, async_methods = public(sync_cls), public(async_cls)
        assert set(sync_methods) - {"close"} == set(async_methods) - {"aclose"}
        for name in set(sync_methods) - {"close", "aclose", "collection"}:
            sync_fn, async_fn = sync_methods[name], async_methods[name]
            assert sync_fn.__doc__ and sync_fn.__doc__ == async_fn.__doc__, name
            sync_sig, async_sig = inspect.signature(sync_fn), inspect.signature(async_fn)
            assert sync_sig.parameters == async_sig.parameters, name
            if name == "iter_items":
                assert (sync_sig.return_annotation, async_sig.return_annotation) == (
                    "Iterator[Item]",
                    "AsyncIterator[Item]",
                )
            else:
                assert sync_sig.return_annotation == async_sig.return_annotation, name
                assert inspect.iscoroutinefunction(async_fn) and not inspect.iscoroutinefunction(sync_fn)
    assert str(inspect.signature(Client.search)) == (
        "(self, item: 'ItemLike', *, k: 'int' = 10, label: 'str | None' = None) -> 'SearchResponse'"
    )
    assert {"search", "classify", "activate", "wait_active", "rollback", "history", "info"} <= set(
        public(Collection)
    )
    assert not {"train", "models", "collections"} & set(public(Collection))


def test_collection_wait_active_raises_on_a_failed_activation():
    """A job's activation that failed while re-embedding (mock transport: hard to provoke for real)."""
    polls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        polls.append(request.url.path)
        status = "activating" if len(polls) < 3 else "failed"
        entry = {
            "seq": 7,
            "collection": "faces",
            "model": "m2",
            "previous_model": "m1",
            "kind": "activation",
            "requested_by": "job job-1",
            "status": status,
            "gate": None,
            "error": "disk full" if status == "failed" else None,
            "done": 1,
            "total": 9,
            "started_at": "2025-01-01T00:00:00Z",
            "finished_at": None,
        }
        body = {
            "name": "faces",
            "model": "m1",
            "previous_model": None,
            "size": 9,
            "index": {"type": "flat"},
            "activation": entry,
            "created_at": "2025-01-01T00:00:00Z",
            "activated_at": None,
        }
        return httpx.Response(200, json=body)

    with Client("http://test", transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(ActivationFailedError) as failed:
            c.collection("faces").wait_active("m2", timeout=5, interval=0.01)
        assert c.collection("faces").wait_active("m1").model == "m1"  # the model that still serves
        with pytest.raises(TimeoutError, match="model m3 not active in collection 'faces'"):
            c.collection("faces").wait_active("m3", timeout=0.02, interval=0.01)
    assert (failed.value.model_id, failed.value.reason) == ("m2", "failed: disk full")
    assert polls[:3] == ["/collections/faces"] * 3
