"""The job queue on a real database (SQLite and PostgreSQL), and the training routes through TestClient.

End-to-end runs with a real worker process are in ``test_jobs_e2e.py``.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pg_server import PASSWORD
from pydantic import ValidationError
from service_helpers import REPO, make_settings, model_dir
from sqlalchemy import select, update

from service import jobs
from service.app import create_app
from service.housekeeping import maintain_jobs
from service.paths import DataDir
from service.tables import JobRow, open_db
from service.worker import without_foreign_loss_fields
from trainer.config import TrainConfig
from trainer.data import load_dataset


@pytest.fixture()
def sessions(database_url):
    engine, factory = open_db(database_url)
    yield factory
    engine.dispose()


def add_jobs(sessions, n: int) -> list[str]:
    ids = []
    for i in range(n):
        with sessions() as session:
            ids.append(
                jobs.enqueue(
                    session,
                    job_id=f"job-{i}",
                    config={},
                    dataset_spec="digits",
                    model_id=f"m{i}",
                    activate=False,
                ).id
            )
    return ids


def test_claim_takes_the_oldest_job_first(sessions):
    add_jobs(sessions, 3)
    assert jobs.claim_next(sessions, "w1").id == "job-0"
    assert jobs.claim_next(sessions, "w1").id == "job-1"
    with sessions() as session:
        job = session.scalars(select(JobRow).where(JobRow.id == "job-0")).one()
        assert (job.status, job.worker_id, job.attempts) == ("running", "w1", 1)
        assert job.started_at is not None and job.heartbeat_at is not None


def test_concurrent_workers_never_take_the_same_job(sessions):
    ids = add_jobs(sessions, 40)
    claimed: dict[str, list[str]] = {f"w{i}": [] for i in range(6)}
    barrier = threading.Barrier(len(claimed))

    def work(worker: str) -> None:
        barrier.wait()
        while (job := jobs.claim_next(sessions, worker)) is not None:
            claimed[worker].append(job.id)

    threads = [threading.Thread(target=work, args=(w,)) for w in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    taken = [job_id for got in claimed.values() for job_id in got]
    assert sorted(taken) == sorted(ids), "every job claimed exactly once"
    with sessions() as session:
        owners = dict(session.execute(select(JobRow.id, JobRow.worker_id)).all())
    for worker, got in claimed.items():
        assert all(owners[j] == worker for j in got)


def _age_heartbeat(sessions, job_id: str, seconds: float) -> None:
    with sessions() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(heartbeat_at=jobs.now() - timedelta(seconds=seconds))
        )
        session.commit()


def test_stale_jobs_are_requeued_then_failed_after_max_attempts(sessions):
    add_jobs(sessions, 1)
    for attempt in (1, 2):
        assert jobs.claim_next(sessions, f"w{attempt}").attempts == attempt
        assert jobs.reap_stale(sessions, stale_after_s=60, max_attempts=2) == [], (
            "fresh heartbeat: left alone"
        )
        _age_heartbeat(sessions, "job-0", 120)
        assert jobs.reap_stale(sessions, stale_after_s=60, max_attempts=2) == ["job-0"]
    with sessions() as session:
        job = session.scalars(select(JobRow)).one()
    assert job.status == "failed" and job.finished_at is not None
    assert "stopped heartbeating" in job.error and "gave up after 2 attempt(s)" in job.error
    assert "re-queued to resume" in job.log


def test_heartbeat_reports_loss_and_cancellation(sessions):
    add_jobs(sessions, 1)
    jobs.claim_next(sessions, "w1")
    assert jobs.heartbeat(sessions, "job-0", "w1") == (True, False)
    with sessions() as session:
        jobs.request_cancel(session, "job-0")
    assert jobs.heartbeat(sessions, "job-0", "w1") == (True, True)
    assert jobs.heartbeat(sessions, "job-0", "someone-else") == (False, True)


def test_cancel_queued_running_and_finished(sessions):
    add_jobs(sessions, 2)
    with sessions() as session:
        assert jobs.request_cancel(session, "job-0").status == "cancelled"
    running = jobs.claim_next(sessions, "w1")
    assert running.id == "job-1", "a cancelled job is never claimed"
    with sessions() as session:
        job = jobs.request_cancel(session, "job-1")
        assert job.status == "running" and job.cancel_requested
    assert jobs.finish(sessions, "job-1", "w1", jobs.CANCELLED, error="cancelled")
    with sessions() as session, pytest.raises(jobs.JobStateError, match="already cancelled"):
        jobs.request_cancel(session, "job-1")


def test_a_graceful_stop_does_not_use_up_an_attempt(sessions):
    add_jobs(sessions, 1)
    for _ in range(5):  # five deploys during one long job
        jobs.claim_next(sessions, "w")
        assert jobs.release_worker(sessions, "w", "stopped", max_attempts=2, graceful=True) == ["job-0"]
    with sessions() as session:
        job = session.scalars(select(JobRow)).one()
    assert (job.status, job.attempts) == ("queued", 0)


def test_finish_refuses_a_job_taken_away_and_marks_activation(sessions):
    with sessions() as session:
        jobs.enqueue(session, job_id="j", config={}, dataset_spec="digits", model_id="m", activate=True)
    jobs.claim_next(sessions, "w1")
    assert jobs.release_worker(sessions, "w1", "worker died", max_attempts=3) == ["j"]
    assert not jobs.finish(sessions, "j", "w1", jobs.SUCCEEDED), "the job went back to the queue"
    jobs.claim_next(sessions, "w2")
    assert jobs.finish(sessions, "j", "w2", jobs.SUCCEEDED, result={"knn_5_accuracy": 0.9})
    with sessions() as session:
        job = session.scalars(select(JobRow)).one()
    assert (job.status, job.activation, job.attempts) == ("succeeded", "pending", 2)


# -- the routes ------------------------------------------------------------------------------------
@contextmanager
def service_client(tmp_path, **overrides) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, model_dir("toy-vec", dim=8), max_upload_bytes=64 * 1024, **overrides)
    (settings.data_dir / "datasets").mkdir(parents=True)
    np.savez(settings.data_dir / "datasets" / "pets.npz", x=np.random.rand(20, 8), y=np.repeat([0, 1], 10))
    (settings.data_dir / "secret.npz").write_bytes(b"not for training")
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture()
def client(tmp_path):
    with service_client(tmp_path) as c:
        yield c


def job_count(client) -> int:
    return client.get("/jobs").json()["total"]


@pytest.mark.parametrize(
    "body,status,words",
    [
        ({"dataset": "../secret.npz"}, 400, "escapes the datasets folder"),
        ({"dataset": "/etc/passwd"}, 400, "escapes the datasets folder"),
        ({"dataset": "idx:../a,b"}, 400, "escapes the datasets folder"),
        ({"dataset": "idx:a,b,c"}, 422, "expected 'idx:IMAGES_FILE[,LABELS_FILE]'"),
        ({"dataset": "missing.npz"}, 422, "is not a built-in data set"),
        ({"dataset": {"source": "items"}}, 422, "no labelled items"),
        ({"dataset": {"source": "elsewhere"}}, 422, "items"),
        ({"dataset": "digits", "loss": "magic"}, 422, "loss"),
        ({"dataset": "digits", "epochs": 0}, 422, "epochs"),
        ({"dataset": "digits", "batch_size": 4, "samples_per_class": 8}, 422, "samples_per_class"),
        ({"dataset": "digits", "batch_size": 15, "samples_per_class": 8}, 422, "batch_size >= 16"),
        ({"dataset": "digits", "loss": "npair", "margin": 0.5}, 422, "margin is a parameter of"),
        ({"dataset": "digits", "loss": "triplet", "temperature": 0.3}, 422, "temperature"),
        ({"dataset": "digits", "name": "toy-vec"}, 409, "already exists"),
        ({"dataset": "digits", "name": "../x"}, 422, "name"),
        ({"dataset": "digits", "bogus": 1}, 422, "bogus"),
        ({"dataset": "a" * 300}, 400, "too long"),
        ({"dataset": "x/" * 3000}, 400, "dataset"),
        ({"dataset": "digits", "hidden": [-3]}, 422, "hidden"),
        ({"dataset": "digits", "hidden": [0]}, 422, "hidden"),
        ({"dataset": "digits", "embedding_dim": 10**12}, 422, "embedding_dim"),
        ({"dataset": "digits", "seed": 2**70}, 422, "seed"),
        ({"dataset": "digits", "encoder": "cnn", "channels": []}, 422, "channels"),
        ('{"dataset": "digits", "margin": NaN, "loss": "triplet"}', 422, "json_invalid"),  # not JSON
        ('{"dataset": "digits", "weight_decay": Infinity}', 422, "json_invalid"),
        ({"dataset": "digits", "epochs": 2.0}, 422, "epochs"),  # strict: integers are integers
        ({"dataset": "digits", "epochs": "3"}, 422, "epochs"),
        ({"dataset": "digits", "augment": 1}, 422, "augment"),
    ],
)
def test_bad_train_requests_are_refused_and_queue_nothing(client, body, status, words):
    if isinstance(body, str):  # NaN and Infinity: Python's json module writes them, JSON has no such values
        response = client.post("/train", content=body, headers={"content-type": "application/json"})
    else:
        response = client.post("/train", json=body)
    assert response.status_code == status, response.text
    assert words in str(response.json()["detail"])
    assert job_count(client) == 0


def test_concurrent_requests_for_one_name_queue_one_job(tmp_path, database_url):
    """The partial unique index (one pending job per name) decides the race, on either database."""
    from concurrent.futures import ThreadPoolExecutor

    with service_client(tmp_path, database_url=database_url) as client, ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda _: client.post("/train", json={"dataset": "digits", "name": "race"}).status_code,
                range(12),
            )
        )
        assert sorted(codes) == [202] + [409] * 11
        assert job_count(client) == 1


def test_huge_pagination_offsets_are_refused(client):
    assert client.get("/jobs", params={"offset": 2**63}).status_code == 422


def test_train_queues_a_job_with_location(client):
    response = client.post(
        "/train", json={"dataset": "pets.npz", "epochs": 2, "activate": True, "name": "pets"}
    )
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    shown = client.get(f"/jobs/{job['id']}").json()
    assert shown["status"] == "queued" and shown["dataset"] == "datasets/pets.npz" and shown["activate"]
    assert shown["config"]["epochs"] == 2 and "activate" not in shown["config"]
    assert client.post("/train", json={"dataset": "digits", "name": "pets"}).status_code == 409, (
        "pending name"
    )
    assert client.get("/jobs", params={"status": "queued"}).json()["total"] == 1
    assert client.get("/jobs", params={"status": "running"}).json()["total"] == 0
    assert client.get("/jobs", params={"status": "exploded"}).status_code == 422
    cancelled = client.post(f"/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert client.post(f"/jobs/{job['id']}/cancel").status_code == 409
    assert client.get("/jobs/job-nope").status_code == 404


def test_train_from_items_checks_the_stored_labels(client):
    items = [{"vector": list(np.random.rand(8)), "label": lab} for lab in ["a", "a", "b"]]
    client.post("/items", json={"items": items})
    response = client.post("/train", json={"dataset": {"source": "items"}, "loss": "supcon"})
    assert response.status_code == 422 and "single labelled item" in response.json()["detail"]
    client.post("/items", json={"items": [{"vector": list(np.random.rand(8)), "label": "b"}]})
    cnn = client.post("/train", json={"dataset": {"source": "items"}, "encoder": "cnn"})
    assert cnn.status_code == 422 and "shape (8,)" in cnn.json()["detail"]
    response = client.post("/train", json={"dataset": {"source": "items"}, "loss": "supcon"})
    assert response.status_code == 202
    assert client.get(f"/jobs/{response.json()['id']}").json()["dataset"] == "items:default"


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_dataset_upload_validates_and_is_trainable(client):
    data = npz_bytes(x=np.random.rand(30, 4).astype(np.float32), y=np.array(["x", "y", "z"] * 10))
    response = client.post("/datasets", files={"file": ("mine.npz", data)})
    assert response.status_code == 201, response.text
    uploaded = response.json()
    assert uploaded["n"] == 30 and uploaded["classes"] == ["x", "y", "z"] and uploaded["shape"] == [4]
    assert client.get(f"/datasets/{uploaded['id']}").json() == uploaded
    assert [d["id"] for d in client.get("/datasets").json()] == [uploaded["id"]]
    queued = client.post("/train", json={"dataset": uploaded["id"]})
    assert queued.status_code == 202
    assert client.get(f"/jobs/{queued.json()['id']}").json()["dataset"] == f"datasets/{uploaded['filename']}"

    cnn = client.post("/train", json={"dataset": uploaded["id"], "encoder": "cnn"})
    assert cnn.status_code == 422 and "encoder 'cnn' needs image data" in cnn.text, cnn.text

    csv = b"f1,f2,kind\n1,2,a\n2,3,a\n5,5,b\n6,5,b\n"
    response = client.post("/datasets", files={"file": ("t.csv", csv)}, data={"label_column": "kind"})
    assert response.status_code == 201 and response.json()["classes"] == ["a", "b"]
    # kept as what was validated, so a job needs no label_column to read it
    stored = client.app.state.service.settings.paths.datasets / response.json()["filename"]
    assert stored.suffix == ".npz" and response.json()["original_name"] == "t.csv"
    data = load_dataset(str(stored))
    assert data.label_names == ["a", "b"] and data.y.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(data.x, [[1, 2], [2, 3], [5, 5], [6, 5]])


CLAIMER = """
import json, sys, time
from pathlib import Path
from service import jobs
from service.tables import open_db
url, worker, go = sys.argv[1:]
engine, sessions = open_db(url)
Path(f"{go}.{worker}").touch()  # connected
while not Path(go).exists():  # until both are: then they start together
    time.sleep(0.005)
taken = []
while (job := jobs.claim_next(sessions, worker)) is not None:
    taken.append(job.id)
print(json.dumps(taken))
"""


def test_two_worker_processes_claim_each_job_exactly_once(tmp_path, database_url):
    """Two processes, each with its own engine and connections, race through one queue with
    ``claim_next`` (what ``service worker`` calls): no job is lost or taken twice."""
    engine, factory = open_db(database_url)
    ids = add_jobs(factory, 60)
    go = tmp_path / "go"
    claimers = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, database_url, f"p{i}", str(go)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 60
    while not all(Path(f"{go}.p{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(c.poll() is None for c in claimers), "no start"
        time.sleep(0.01)
    go.touch()
    results = [c.communicate(timeout=60) for c in claimers]
    assert [c.returncode for c in claimers] == [0, 0], [err for _, err in results]
    taken = [json.loads(out) for out, _ in results]
    assert sorted(taken[0] + taken[1]) == sorted(ids), "every job claimed exactly once"
    with factory() as session:
        owners = dict(session.execute(select(JobRow.id, JobRow.worker_id)).all())
        attempts = set(session.scalars(select(JobRow.attempts)))
    engine.dispose()
    assert attempts == {1}
    for i, got in enumerate(taken):
        assert all(owners[job_id] == f"p{i}" for job_id in got)


def test_a_failed_job_names_files_relative_to_the_data_dir(tmp_path, database_url):
    data_dir = tmp_path / "data"
    (data_dir / "datasets").mkdir(parents=True)
    (data_dir / "datasets" / "broken.npz").write_bytes(b"not a zip")
    engine, factory = open_db(database_url)
    with factory() as session:
        job_id = jobs.enqueue(
            session,
            job_id="j-broken",
            config={"dataset": "broken.npz"},
            dataset_spec="datasets/broken.npz",
            model_id="broken",
            activate=False,
        ).id
    cmd = [sys.executable, "-m", "service", "worker", "--data-dir", str(data_dir), "--once"]
    cmd += ["--database-url", database_url]
    out = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True, timeout=120)
    assert "polling" in out.stderr and PASSWORD not in out.stderr, "the URL is logged without its password"
    with factory() as session:
        job = session.scalars(select(JobRow).where(JobRow.id == job_id)).one()
        assert job.status == "failed" and "datasets/broken.npz" in job.error, job.error
        assert str(tmp_path) not in job.error, "no server path in what API users see"
    engine.dispose()


@pytest.mark.parametrize(
    "name,content,words",
    [
        ("bad.npz", b"garbage", "mine"),
        ("one.npz", npz_bytes(x=np.random.rand(4, 2), y=np.zeros(4)), "class"),
        ("nan.npz", npz_bytes(x=np.full((4, 2), np.nan), y=np.array([0, 0, 1, 1])), "NaN"),
        ("t.csv", b"a,b\n1,2\n", "label"),
        ("x.exe", b"MZ", "not a .npz or .csv"),
    ],
)
def test_bad_uploads_are_refused_and_leave_nothing(client, name, content, words):
    response = client.post("/datasets", files={"file": (name, content)})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert words in detail or words == "mine", detail
    assert client.get("/datasets").json() == []
    folder = client.app.state.service.settings.paths.datasets
    assert sorted(p.name for p in folder.iterdir()) == ["pets.npz"], "no temporary or partial file survives"


def test_zip_bomb_upload_is_refused_before_unpacking(client):
    data = npz_bytes(x=np.zeros((2000, 100), np.float32), y=np.zeros(2000))  # 800 kB of zeros...
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros((2000, 100), np.float32), y=np.repeat([0, 1], 1000))
    assert len(buffer.getvalue()) < 64 * 1024 < len(data)  # ...that compresses under the upload limit
    response = client.post("/datasets", files={"file": ("bomb.npz", buffer.getvalue())})
    assert response.status_code == 413 and "unpack" in response.json()["detail"]
    assert client.get("/datasets").json() == []


def test_upload_over_the_limit_is_413(client):
    response = client.post("/datasets", files={"file": ("big.npz", b"0" * 100_000)})
    assert response.status_code == 413 and "--max-upload-bytes" in response.json()["detail"]


def test_report_routes_serve_only_report_files(client, tmp_path):
    from trainer.config import TrainConfig
    from trainer.data import dataset_from_arrays
    from trainer.train import train

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    ds = dataset_from_arrays((rng.normal(size=(40, 8)) + y[:, None] * 3).astype(np.float32), y, name="two")
    config = TrainConfig(
        epochs=1, batch_size=16, samples_per_class=4, hidden=[8], embedding_dim=4, name="rep"
    )
    state = client.app.state.service
    train(config, out_dir=state.settings.paths.models, dataset=ds)
    state.models.register_dir(state.settings.paths.models / "rep")
    report = client.get("/models/rep/report").json()
    assert report["markdown"].startswith("# Model `rep`")
    assert "pca.png" in report["files"] and "encoder.pt" not in report["files"]
    png = client.get(report["files"]["pca.png"])
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert client.get("/models/rep/files/encoder.pt").status_code == 404
    assert client.get("/models/rep/files/..%2Fservice.db").status_code == 404
    assert client.get(f"/models/rep/files/{'a' * 300}.png").status_code == 404
    assert client.get("/models/toy-vec/report").status_code == 404
    assert client.get("/models/nope/report").status_code == 404


def test_a_job_activation_refused_is_shown_on_the_model(client):
    """A job asked to activate a model that cannot read the stored items: the job and the model say so."""
    client.post("/items", json={"items": [{"vector": [1.0] * 8, "label": "a"}]})
    state = client.app.state.service
    shutil.copytree(model_dir("wide", dim=4), state.settings.paths.models / "wide")  # reads 4-d vectors
    with state.db.session() as session:
        jobs.enqueue(
            session, job_id="j-wide", config={}, dataset_spec="digits", model_id="wide", activate=True
        )
    with state.db.session() as session:
        finished = {"status": "succeeded", "activation": "pending"}  # as jobs.finish leaves it
        session.execute(update(JobRow).where(JobRow.id == "j-wide").values(**finished))
        session.commit()
    maintain_jobs(state)
    job = client.get("/jobs/j-wide").json()
    assert job["activation"].startswith("failed:") and "length 4" in job["activation"], job
    model = client.get("/models/wide").json()
    assert model["active"] is False and model["activation"]["status"] == "failed"
    assert model["activation"]["error"] in job["activation"]
    assert client.get("/info").json()["model"]["model_id"] == "toy-vec", "the old model keeps serving"


def test_job_errors_lose_the_data_dir_only_where_a_path_starts(tmp_path):
    paths = DataDir(tmp_path / "data")
    root = str(paths.root.resolve())
    assert paths.scrub(f"cannot read {root}/datasets/a.npz: bad") == "cannot read datasets/a.npz: bad"
    assert paths.scrub(f"'{root}/models/m1' exists") == "'models/m1' exists"
    untouched = f"{root}x/y, /srv{root}/z, {root}"  # a longer name, a path inside another, no separator
    assert paths.scrub(untouched) == untouched


def test_a_job_queued_with_a_parameter_of_another_loss_still_runs(sessions):
    """Queued before such parameters were refused: the worker drops them, as training always ignored them."""
    stored = TrainConfig(loss="npair").model_dump(mode="json") | {"margin": 0.5, "mining": "hard"}
    with sessions() as session:
        job = jobs.enqueue(
            session, job_id="old", config=stored, dataset_spec="digits", model_id="old", activate=False
        )
    with pytest.raises(ValidationError):
        TrainConfig.model_validate(stored)
    config = TrainConfig.model_validate(without_foreign_loss_fields(job))
    assert config.loss == "npair" and config.margin is None and config.mining == "semihard"
