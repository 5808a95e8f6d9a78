"""End to end: ``python -m service`` in a subprocess, spoken to over real HTTP with httpx."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from service_helpers import BAD_BODIES, LIMITS, REPO, ServerProcess, model_dir, vector_items

pytestmark = pytest.mark.timeout(180)


def test_cli_help_and_bad_flags():
    out = subprocess.run(
        [sys.executable, "-m", "service", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0 and "--data-dir" in out.stdout and "EMBED_DATA_DIR" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "service", "--index-type", "annoy"], cwd=REPO, capture_output=True, text=True
    )
    assert bad.returncode != 0 and "index_type" in bad.stderr


def test_an_unusable_model_stops_the_start_with_a_clear_message(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "service", "--data-dir", str(tmp_path), "--model", str(tmp_path / "nope")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "cannot read model card" in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr, "one line, no traceback"


def test_kill_9_loses_nothing_acknowledged(tmp_path):
    data = tmp_path / "data"
    x = np.random.default_rng(0).standard_normal((1050, 8)).astype(np.float32)
    ids = [f"item-{i}" for i in range(1050)]
    server = ServerProcess(data, "--model", str(model_dir()), "--snapshot-interval", "0.5")
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as c:
            first = [{"id": ids[i], "vector": x[i].tolist(), "label": f"l{i % 7}"} for i in range(500)]
            for chunk in range(0, 500, 100):
                assert c.post("/items", json={"items": first[chunk : chunk + 100]}).status_code == 201
            meta = data / "index" / "default" / "toy-vec.json"
            deadline = time.monotonic() + 20
            while not (meta.exists() and json.loads(meta.read_text())["size"] == 500):
                assert time.monotonic() < deadline, "no periodic snapshot"
                time.sleep(0.05)
            for i in range(50):  # deleted after the snapshot
                assert c.delete(f"/items/{ids[i]}").status_code == 204
            rest = [{"id": ids[i], "vector": x[i].tolist(), "label": f"l{i % 7}"} for i in range(500, 1050)]
            for chunk in range(0, 550, 110):  # added after the snapshot, acknowledged one by one
                assert c.post("/items", json={"items": rest[chunk : chunk + 110]}).status_code == 201
        server.kill()  # SIGKILL: no shutdown hook, no final snapshot

        server = ServerProcess(data, "--snapshot-interval", "0")
        server.wait_ready()
        live = list(range(50, 1050))
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.get("/ready").json()["index_size"] == 1000
            assert c.get("/items", params={"limit": 1}).json()["total"] == 1000
            for i in live:
                assert c.get(f"/items/{ids[i]}").json()["label"] == f"l{i % 7}"
            for i in live:
                hit = c.post("/search", json={"item": x[i].tolist(), "k": 1}).json()["neighbors"][0]
                assert hit["id"] == ids[i] and hit["distance"] < 1e-5
            for i in range(50):
                assert c.get(f"/items/{ids[i]}").status_code == 404
        # SIGTERM: graceful shutdown with a final snapshot (uvicorn then re-raises the signal: rc -15)
        assert server.stop() in (0, -15)
        assert json.loads((data / "index" / "default" / "toy-vec.json").read_text())["size"] == 1000
    finally:
        server.stop()


def test_concurrent_writers_and_readers(tmp_path):
    x = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    limits = ["--max-items", str(LIMITS["max_items"]), "--max-k", str(LIMITS["max_k"])]
    with ServerProcess(tmp_path / "data", "--model", str(model_dir()), *limits) as server:
        server.wait_ready()
        seed_items = vector_items(x, ["a", "b"] * 8, prefix="seed")
        seed = httpx.post(f"{server.url}/items", json={"items": seed_items})
        assert seed.status_code == 201
        errors: list[str] = []
        written: list[int] = []
        reads: list[int] = []
        stop = time.monotonic() + 4.0

        def writer(w: int) -> None:
            rng = np.random.default_rng(100 + w)
            with httpx.Client(base_url=server.url, timeout=30) as c:
                n = 0
                while time.monotonic() < stop:
                    batch = rng.standard_normal((8, 8)).astype(np.float32)
                    items = [
                        {"id": f"w{w}-{n + j}", "vector": v.tolist(), "label": "ab"[j % 2]}
                        for j, v in enumerate(batch)
                    ]
                    r = c.post("/items", json={"items": items})
                    if r.status_code != 201:
                        errors.append(f"write {r.status_code} {r.text}")
                    n += len(items)
                    if n % 32 == 0 and c.delete(f"/items/w{w}-{n - 1}").status_code != 204:
                        errors.append("delete failed")
                written.append(n - n // 32)

        def reader(r_: int) -> None:
            rng = np.random.default_rng(200 + r_)
            with httpx.Client(base_url=server.url, timeout=30) as c:
                n = 0
                while time.monotonic() < stop:
                    q = rng.standard_normal(8).tolist()
                    for path, body in [
                        ("/search", {"item": q, "k": 5}),
                        ("/classify", {"items": [q, q], "k": 3}),
                        ("/embed", {"items": [q]}),
                    ]:
                        r = c.post(path, json=body)
                        if r.status_code != 200:
                            errors.append(f"{path} {r.status_code} {r.text}")
                        n += 1
                reads.append(n)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        threads += [threading.Thread(target=reader, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[:5]
        assert len(written) == 4 and len(reads) == 4 and min(reads) > 0
        info = httpx.get(f"{server.url}/info").json()
        total = httpx.get(f"{server.url}/items", params={"limit": 1}).json()["total"]
        assert total == 16 + sum(written) and info["index"]["size"] == total
        metrics = httpx.get(f"{server.url}/metrics").text
        assert "embed_batch_size_count" in metrics and 'route="/classify",status="200"' in metrics

        with httpx.Client(base_url=server.url, timeout=30) as c:  # every bad-input case, over HTTP
            for path, body, status, words in BAD_BODIES:
                r = c.post(path, json=body)
                assert r.status_code == status and words in str(r.json()["detail"]), (path, r.text)
            assert c.get("/items", params={"limit": 1}).json()["total"] == total  # nothing half-written


def test_no_model_and_api_key_over_http(tmp_path):
    with ServerProcess(
        tmp_path / "data", "--api-key", "k3y", env={"EMBED_MAX_ITEMS": "3", "EMBED_MAX_BODY_BYTES": "4096"}
    ) as server:
        server.wait_ready(path="/health")
        assert httpx.get(f"{server.url}/ready").status_code == 503
        r = httpx.post(f"{server.url}/embed", json={"items": [[1.0]]})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        auth = {"Authorization": "Bearer k3y"}
        r = httpx.post(f"{server.url}/embed", json={"items": [[1.0]]}, headers=auth)
        assert r.status_code == 503 and "--model" in r.json()["detail"]
        info = httpx.get(f"{server.url}/info", headers=auth).json()
        assert info["limits"]["max_items"] == 3 and info["model"] is None  # env var reached the settings
        big = b'{"items": [' + b"[1.0]," * 10_000 + b"[1.0]]}"  # 60 kB > EMBED_MAX_BODY_BYTES
        headers = {**auth, "content-type": "application/json"}
        declared = httpx.post(f"{server.url}/embed", content=big, headers=headers)
        chunks = iter([big[i : i + 4096] for i in range(0, len(big), 4096)])  # chunked: no Content-Length
        streamed = httpx.post(f"{server.url}/embed", content=chunks, headers=headers)
        for r in (declared, streamed):
            assert r.status_code == 413 and "4096 bytes" in r.json()["detail"]
