"""The whole loop over HTTP: uvicorn + real worker processes, SQLite and model files on disk.

train → poll → activate while /classify keeps answering → train from the stored items →
upload a data set → cancel a running job → kill -9 a worker mid-job and see the job resume.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from service_helpers import REPO, ServerProcess
from sklearn.datasets import load_digits

pytestmark = pytest.mark.timeout(420)


def wait_for(
    client: httpx.Client,
    job_id: str,
    done: Any,
    timeout: float = 240.0,
    what: str = "finish",
    logs: Path | None = None,
) -> dict[str, Any]:
    """Poll GET /jobs/{id} until ``done(job)`` holds; on a timeout, show the ``*.log`` files in ``logs``."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if done(job):
            return job
        if job["status"] in ("failed", "cancelled") and not done(job):
            raise AssertionError(f"job {job_id} ended {job['status']}: {job['error']}\n{job['log'][-2000:]}")
        time.sleep(0.3)
    shown = "".join(
        f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((logs or Path()).glob("*.log"))
    )
    raise AssertionError(f"job {job_id} did not {what} in {timeout} s: {job}{shown if logs else ''}")


def succeeded(job: dict[str, Any]) -> bool:
    return job["status"] == "succeeded"


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn digits as flat 64-value vectors; every fifth one held out."""
    x, y = load_digits(return_X_y=True)
    held = np.arange(len(y)) % 5 == 0
    return x[~held], y[~held], x[held], y[held]


def add_items(client: httpx.Client, x: np.ndarray, y: np.ndarray) -> None:
    for start in range(0, len(y), 500):
        items = [
            {"id": f"d{start + i}", "vector": row.tolist(), "label": str(label)}
            for i, (row, label) in enumerate(zip(x[start : start + 500], y[start : start + 500], strict=True))
        ]
        response = client.post("/items", json={"items": items})
        assert response.status_code == 201, response.text


FAST_DIGITS = {"dataset": "digits", "epochs": 4, "hidden": [128], "embedding_dim": 64, "patience": 0}


def test_train_activate_while_classifying_then_train_from_items(tmp_path):
    server = ServerProcess(tmp_path / "data", worker=True)
    try:
        server.wait_ready(path="/health")
        client = httpx.Client(base_url=server.url, timeout=60)
        assert client.get("/ready").status_code == 503

        # Malformed requests over HTTP: each its 4xx, nothing queued.
        for body, status in [
            ({"dataset": "../service.db"}, 400),
            ({"dataset": "nope.npz"}, 422),
            ({"dataset": "digits", "lr": -1}, 422),
            ({"dataset": {"source": "items"}}, 422),
        ]:
            assert client.post("/train", json=body).status_code == status
        assert (
            client.post(
                "/train", content=b"{not json", headers={"content-type": "application/json"}
            ).status_code
            == 422
        )
        assert client.get("/jobs").json()["total"] == 0

        # 1. Train on the built-in digits and activate.
        response = client.post("/train", json={**FAST_DIGITS, "name": "digits-a", "activate": True})
        assert response.status_code == 202
        first = wait_for(
            client, response.json()["id"], lambda j: j["activation"] == "active", what="activate"
        )
        assert [m["epoch"] for m in first["metrics"]] == [1, 2, 3, 4]
        assert first["result"]["knn_5_accuracy"] > 0.85
        assert client.get("/ready").json()["model"] == "digits-a"
        assert "digits-a" in [m["id"] for m in client.get("/models").json()]
        assert client.get("/models/digits-a/report").json()["markdown"].startswith("# Model")

        x_train, y_train, x_held, y_held = digits_split()
        add_items(client, x_train, y_train)

        # 2. Train from the stored items and activate, while another thread keeps classifying.
        answers: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def classify_forever() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as c:
                while not stop.is_set():
                    r = c.post("/classify", json={"items": [x_held[0].tolist(), x_held[1].tolist()], "k": 5})
                    answers.append((r.status_code, r.json().get("model") if r.status_code == 200 else r.text))

        hammer = threading.Thread(target=classify_forever)
        hammer.start()
        try:
            response = client.post(
                "/train",
                # few epochs on few items: maybe not as good as digits-a, so past the gate with force
                json={
                    **FAST_DIGITS,
                    "dataset": {"source": "items"},
                    "name": "items-b",
                    "activate": True,
                    "force": True,
                },
            )
            assert response.status_code == 202, response.text
            second = wait_for(
                client, response.json()["id"], lambda j: j["activation"] == "active", what="activate"
            )
            time.sleep(0.5)
        finally:
            stop.set()
            hammer.join(60)
        assert second["dataset"] == "items:default" and second["force"] is True
        assert answers and all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][
            :3
        ]
        models = [model for _, model in answers]
        switch = models.index("items-b")
        assert set(models[:switch]) == {"digits-a"} and set(models[switch:]) == {"items-b"}, (
            "no mixed answers"
        )

        # Held-out digits are classified well by the model trained on the stored items.
        predictions = client.post("/classify", json={"items": x_held.tolist()[:300], "k": 5}).json()
        assert predictions["model"] == "items-b"
        labels = [p["label"] for p in predictions["predictions"]]
        accuracy = np.mean([label == str(y) for label, y in zip(labels, y_held[:300], strict=True)])
        assert accuracy > 0.9, accuracy
    finally:
        server.stop()


def npz_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def worker_pid(job: dict[str, Any]) -> int:
    return int(job["worker_id"].rsplit(":", 1)[1])


def test_upload_cancel_and_kill_the_worker(tmp_path):
    server = ServerProcess(tmp_path / "data", worker=True)
    try:
        server.wait_ready(path="/health")
        client = httpx.Client(base_url=server.url, timeout=60)

        # Upload a data set and train from it.
        rng = np.random.default_rng(0)
        y = np.repeat(np.array(["left", "right", "up"]), 40)
        x = (rng.normal(size=(120, 6)) + np.repeat(np.eye(3, 6) * 4, 40, axis=0)).astype(np.float32)
        uploaded = client.post("/datasets", files={"file": ("arrows.npz", npz_bytes(x, y))}).json()
        response = client.post("/train", json={"dataset": uploaded["id"], "epochs": 2, "name": "arrows"})
        job = wait_for(client, response.json()["id"], succeeded)
        assert job["model_id"] == "arrows"
        card = client.get("/models/arrows").json()["card"]
        assert card["dataset"]["label_names"] == ["left", "right", "up"]

        # Cancel a running job: it stops, and leaves no model behind.
        long = {"dataset": "mnist-5k", "epochs": 60, "patience": 0}
        job_id = client.post("/train", json={**long, "name": "too-long"}).json()["id"]
        wait_for(client, job_id, lambda j: j["progress"].get("epoch", 0) >= 1, what="start")
        assert client.post(f"/jobs/{job_id}/cancel").json()["cancel_requested"]
        job = wait_for(client, job_id, lambda j: j["status"] == "cancelled", timeout=60, what="cancel")
        models_dir = tmp_path / "data" / "models"
        assert not (models_dir / "too-long").exists()
        assert not (models_dir / ".runs" / job_id).exists(), "no checkpoint survives a cancelled job"
        assert "too-long" not in [m["id"] for m in client.get("/models").json()]

        # kill -9 the worker mid-job: the supervisor restarts it and the job resumes from its checkpoint.
        job_id = client.post("/train", json={**long, "epochs": 5, "name": "survivor"}).json()["id"]
        job = wait_for(client, job_id, lambda j: j["progress"].get("epoch", 0) >= 2, what="reach epoch 2")
        os.kill(worker_pid(job), signal.SIGKILL)
        job = wait_for(client, job_id, succeeded, timeout=300)
        assert job["attempts"] == 2
        assert [m["epoch"] for m in job["metrics"]] == [1, 2, 3, 4, 5]
        assert "re-queued to resume" in job["log"] and "resuming from" in job["log"]
        assert client.get("/models/survivor").status_code == 200
    finally:
        server.stop()


def start_worker(data_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "service",
        "worker",
        "--data-dir",
        str(data_dir),
        "--worker-heartbeat-interval",
        "0.5",
    ]
    log = open(data_dir.parent / f"worker-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 - read on failure
    return subprocess.Popen([*cmd, *extra], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def test_separate_worker_killed_is_detected_by_heartbeat(tmp_path):
    """docker-compose layout: the API runs --no-worker, workers are their own processes."""
    data = tmp_path / "data"
    server = ServerProcess(data, "--job-stale-after", "3")
    first = start_worker(data)
    second = None
    try:
        server.wait_ready(path="/health")
        client = httpx.Client(base_url=server.url, timeout=60)
        job_id = client.post("/train", json={**FAST_DIGITS, "epochs": 40, "name": "lonely"}).json()["id"]
        job = wait_for(client, job_id, lambda j: j["progress"].get("epoch", 0) >= 2, what="reach epoch 2")
        assert worker_pid(job) == first.pid
        first.kill()
        first.wait()
        job = wait_for(client, job_id, lambda j: j["status"] == "queued", timeout=30, what="be re-queued")
        assert "stopped heartbeating" in job["log"]
        second = start_worker(data)
        job = wait_for(client, job_id, succeeded, timeout=240, logs=data.parent)
        assert job["attempts"] == 2 and worker_pid(job) == second.pid
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        server.stop()
