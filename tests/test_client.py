"""``service.client`` end to end: Client and AsyncClient against a real ``python -m service`` process.

One server (with an API key, an image model and a second registered model) serves the whole module;
each test uses its own ids and labels, and the activation test restores the model it started with.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from service_helpers import REPO, ServerProcess, model_dir, png_b64

from service.client import (
    ApiError,
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    NotFoundError,
    OverloadedError,
    UnprocessableError,
    encode_items,
)

pytestmark = pytest.mark.timeout(120)

KEY = "s3cret-key"
SHAPE = (1, 4, 4)  # the toy image model: 4x4 grayscale, pixels in [0, 255]; also takes 16-float vectors
DIM = 16
MAIN, OTHER = "toy-img", "toy-img2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("client") / "data"
    other = model_dir(OTHER, image=SHAPE, scale=2.0)
    shutil.copytree(other, data / "models" / OTHER)  # found and registered at start
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


def patterns(n: int, seed: int) -> np.ndarray:
    """n random, well separated 4x4 pixel patterns, flattened (float32 in [0, 255])."""
    return np.random.default_rng(seed).uniform(0, 255, (n, DIM)).astype(np.float32)


def png(pixels: np.ndarray) -> bytes:
    return base64.b64decode(png_b64(pixels.reshape(4, 4).round()))


def test_importing_the_client_pulls_in_neither_torch_nor_fastapi():
    code = (
        "import sys, service.client; "
        "print([m for m in ('torch', 'fastapi', 'starlette', 'sqlalchemy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_service_routes(client: Client):
    assert client.health() == {"status": "ok"}
    ready = client.wait_ready(timeout=5)
    assert ready.status == "ready" and ready.model == MAIN
    info = client.info()
    assert info.model is not None and info.model["model_id"] == MAIN
    assert info.limits["max_items"] == 1024 and "torch" in info.versions
    assert "embed_http_requests" in client.metrics()
    models = {m.id: m for m in client.models()}
    assert set(models) == {MAIN, OTHER}
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
    assert done.active and done.activation is not None and done.activation["status"] == "done"
    assert client.ready().model == OTHER and client.embed(patterns(1, seed=9)).model == OTHER
    assert client.activate_model(OTHER).status == "active"  # already active: 200
    assert client.activate_model(MAIN).status == "activating"
    assert client.wait_active(MAIN, timeout=30).active
    assert client.ready().model == MAIN


def test_async_client_covers_every_route(server: ServerProcess, tmp_path: Path):
    async def main() -> None:
        x = patterns(6, seed=10)
        async with AsyncClient(server.url, api_key=KEY) as c:
            assert (await c.health())["status"] == "ok"
            assert (await c.wait_ready(timeout=5)).model == MAIN
            assert (await c.info()).version and "embed_index_size" in await c.metrics()
            assert {m.id for m in await c.models()} == {MAIN, OTHER}
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
