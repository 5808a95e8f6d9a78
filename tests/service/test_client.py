"""``service.client`` end to end: Client and AsyncClient against a real ``python -m service`` process.

One server (with an API key, an image model and a second registered model, and no training worker, so
jobs stay queued) serves most of the module; each test uses its own ids and labels, and the activation
test restores the model it started with. A second server, with a worker and no model, runs real
training jobs on tiny configs.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from service_helpers import ServerProcess, model_dir, png_b64

from service.client import (
    ApiError,
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    NotFoundError,
    OverloadedError,
    TrainConfig,
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


def test_train_wait_and_report(trainer_server: ServerProcess):
    with Client(trainer_server.url, api_key=KEY) as c:
        created = c.train(TrainConfig(dataset="digits", name="cl-digits", **TINY))
        job = c.wait_job(created.id, timeout=60, interval=0.2)
        assert job.status == "succeeded", (job.error, job.log[-2000:])
        assert job.model_id == "cl-digits" and [m["epoch"] for m in job.metrics] == [1, 2]
        assert job.result is not None and job.result["knn_5_accuracy"] > 0.6
        assert job.activation is None  # not asked to activate

        model = c.model("cl-digits")
        assert not model.active and model.card["embedding_dim"] == 16
        assert "cl-digits" in [m.id for m in c.models()]
        report = c.model_report("cl-digits")
        assert report.model_id == "cl-digits" and report.markdown.startswith("# Model")
        assert (
            report.files["report.md"] == "/models/cl-digits/files/report.md" and "curves.png" in report.files
        )
        assert c.jobs(status="succeeded").jobs[0].id == created.id


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
    assert bodies == [
        {"epochs": 3, "name": "m"},
        {"dataset": {"source": "items"}, "activate": True},
        {"epochs": 1, "activate": True},
    ]
