"""Hostile input over real HTTP (issue #12): ``python -m service`` in a subprocess, spoken to with httpx,
raw sockets and the typed client. What only a real server shows: HTTP framing that lies, a decompression
bomb measured by the server process's peak memory, statuses seen through ``Client``. ``ServerProcess.stop``
then checks that the server counted no unhandled exception.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import GOOD, REPO, ServerProcess, blobs, model_dir, vector_items

from service import jobs
from service.client import ActivationFailedError, Client
from service.tables import open_db

pytestmark = pytest.mark.timeout(240)
KEY = "hostile-key"
UPLOAD_LIMIT = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("hostile") / "data"
    proc = ServerProcess(
        data, "--model", str(model_dir()), "--max-upload-bytes", str(UPLOAD_LIMIT), env={"EMBED_API_KEY": KEY}
    )
    try:
        proc.wait_ready()
        with httpx.Client(base_url=proc.url, headers={"Authorization": f"Bearer {KEY}"}) as c:
            x, y = blobs(2)
            assert c.post("/items", json={"items": vector_items(x, y)}).status_code == 201
        yield proc
    finally:
        proc.stop()  # asserts that no request met an unhandled exception


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """An authorised client that checks, on the way out, that no answer showed a server path."""
    answers: list[str] = []

    def record(response: httpx.Response) -> None:
        response.read()
        answers.append(response.text)

    with httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
        event_hooks={"response": [record]},
    ) as c:
        yield c
    tmp = str(_data_dir(server).resolve().parent)
    for text in answers:
        for secret in (tmp, str(REPO)):
            assert secret not in text, text[:300]


def _raw_http(server: ServerProcess, request: bytes) -> bytes:
    """Send bytes as they are (no client fixes the framing) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _statuses(answer: bytes) -> list[int]:
    return [int(line.split()[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def test_bodies_that_are_not_json_over_http(http: httpx.Client):
    for path in ("/embed", "/items", "/search", "/similarity", "/verify", "/classify", "/train"):
        r = http.post(path, content=b"\xff\xfe\x00\x80", headers={"content-type": "application/octet-stream"})
        assert r.status_code == 415 and "application/json" in r.json()["detail"], (path, r.text)
        r = http.post(path, files={"file": ("x.png", b"\x89PNG\r\n\x1a\n\xff")})  # curl -F file=@x.png
        assert r.status_code == 415, (path, r.text)
        chunked = http.post(
            path, content=iter([b'{"items": ', b"[]}"]), headers={"content-type": "text/plain"}
        )
        assert chunked.status_code == 415, (path, chunked.text)
        utf16 = http.post(
            path,
            content=json.dumps({"items": [GOOD]}).encode("utf-16"),
            headers={"content-type": "application/json"},
        )
        assert utf16.status_code == 422 and "UTF-8" in utf16.text, (path, utf16.text)
    assert http.get("/items").json()["total"] == 6


def test_lying_framing_never_gets_a_5xx(server: ServerProcess):
    auth = f"Authorization: Bearer {KEY}\r\n".encode()
    body = json.dumps({"items": [GOOD]}).encode()
    post, as_json = b"POST /embed HTTP/1.1\r\nHost: x\r\n", b"Content-Type: application/json\r\n"
    for head, answered in (
        (post + as_json + b"Content-Length: 5\r\n", True),  # the rest of the body reads as a next request
        (post + as_json + b"Content-Length: abc\r\n", True),
        (post + b"Content-Type: text/plain\r\nContent-Length: 0\r\n", True),  # a body it says is not there
        (post + as_json + b"Transfer-Encoding: chunked\r\n", False),  # no chunks: the server just hangs up
        (b"GET /items/" + b"x" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n", False),  # h11's line limit
        (post + as_json + b"X-Junk: y\r\n" * 2000, True),
    ):
        statuses = _statuses(_raw_http(server, head + auth + b"Connection: close\r\n\r\n" + body))
        assert all(s < 500 for s in statuses) and (statuses or not answered), (head[:80], statuses)
    assert httpx.get(server.url + "/health").status_code == 200


def test_deep_metadata_long_ids_and_strict_numbers_over_http(http: httpx.Client):
    deep = '{"a": ' * 1000 + "1" + "}" * 1000  # json.dumps would recurse too deep for Python itself
    body = f'{{"items": [{{"id": "deep", "vector": {GOOD}, "metadata": {deep}}}]}}'
    r = http.post("/items", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "metadata_max_depth" in r.text and len(r.content) < 4000
    assert http.post("/embed", json={"items": [[True] * 8]}).status_code == 422
    for threshold in ("NaN", "Infinity", "-Infinity"):
        r = http.post("/verify", json={"a": GOOD, "b": GOOD, "threshold": threshold})
        assert r.status_code == 422 and "valid number" in r.text
    assert http.post("/search", json={"item": GOOD, "k": 2.0}).status_code == 422
    r = http.get("/items/" + "x" * 10_000)
    assert r.status_code == 404 and len(r.text) < 2500
    for item in http.get("/items").json()["items"]:
        assert http.get(f"/items/{item['id']}").status_code == 200
    assert http.post("/search", json={"item": GOOD, "k": 50}).status_code == 200
    assert http.get("/models").json()[0]["path"] == "models/toy-vec"


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _gzip_bomb(inflated: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    chunk = b"0" * (1 << 20)
    out = io.BytesIO()
    for _ in range(inflated // len(chunk)):
        out.write(packer.compress(chunk))
    out.write(packer.flush())
    return out.getvalue()


def test_a_gzip_bomb_does_not_inflate_in_the_server(server: ServerProcess, http: httpx.Client):
    bomb = _gzip_bomb(512 << 20)  # 512 MiB of "0" in ~0.5 MB: under the 1 MiB upload limit
    assert len(bomb) < UPLOAD_LIMIT
    before = _peak_rss(server.proc.pid)
    r = http.post("/datasets", files={"file": ("bomb.csv", bomb)})
    assert r.status_code == 413 and "--max-upload-bytes" in r.json()["detail"], r.text
    grown = _peak_rss(server.proc.pid) - before
    assert grown < 64 << 20, f"the server's peak memory grew by {grown >> 20} MiB for a 512 MiB bomb"
    assert http.get("/datasets").json() == []


def _poll(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not done(value := fetch()):
        assert time.monotonic() < deadline, value
        time.sleep(0.1)
    return value


def test_job_statuses_say_what_happened(server: ServerProcess):
    """The test plays the training worker on the server's own database (as ``python -m trainer worker``
    would): it claims jobs, and for one leaves an image model where the job's model goes, which the
    service then cannot activate over the stored vectors."""
    data_dir = _data_dir(server)
    engine, sessions = open_db(f"sqlite:///{data_dir / 'service.db'}")
    try:
        with Client(server.url, api_key=KEY, timeout=30) as client:
            running = client.train({"dataset": "digits", "epochs": 1, "name": "to-cancel"})
            assert jobs.claim_next(sessions, "w-e2e").id == running.id
            cancelling = client.cancel_job(running.id)
            assert cancelling.status == "cancelling" and cancelling.cancel_requested
            assert [j.id for j in client.jobs(status="cancelling").jobs] == [running.id]
            assert jobs.finish(sessions, running.id, "w-e2e", jobs.CANCELLED, error="cancelled")
            assert client.job(running.id).status == "cancelled"

            created = client.train({"dataset": "digits", "epochs": 1, "name": "img-e2e"}, activate=True)
            assert jobs.claim_next(sessions, "w-e2e").id == created.id
            shutil.copytree(model_dir("img-e2e", image=(1, 4, 4)), data_dir / "models" / "img-e2e")
            assert jobs.finish(sessions, created.id, "w-e2e", jobs.SUCCEEDED, result={})
            job = _poll(lambda: client.job(created.id), lambda j: (j.activation or "").startswith("failed"))
            assert job.status == "succeeded" and job.error is not None
            assert "activating it failed" in job.error and "takes images" in job.error
            with pytest.raises(ActivationFailedError) as failed:
                client.wait_active("img-e2e", timeout=30)
            assert failed.value.model_id == "img-e2e" and "takes images" in failed.value.reason
            assert isinstance(
                failed.value, RuntimeError
            )  # what wait_active raised before: callers still catch it
    finally:
        engine.dispose()


def _data_dir(server: ServerProcess) -> Path:
    args = list(server.proc.args)
    return Path(args[args.index("--data-dir") + 1])
