"""Throughput of the service's hot routes against a minimal "floor" server running the same model.

    .venv/bin/python benchmarks/bench_service.py [--requests 4000] [--connections 32] [--rounds 3]
        [--quick] [--model DIR] [--index-size 4000] [--torch-threads 1] [--json OUT]

What it compares, on 127.0.0.1 only:

- *ours*: ``python -m service`` with its defaults, except ``--torch-threads`` (1), ``--log-level warning``
  and ``--no-worker`` (the training worker subprocess polls the database; it is not part of serving).
- *floor*: a FastAPI app written below, run by uvicorn with the same settings (h11, no access log), that
  calls the same TorchScript file through the project's one loader: the body is parsed with orjson, the
  items become one numpy array, the model runs inline, the answer is written by orjson from numpy.
  ``/classify`` searches a numpy matrix of the indexed embeddings (brute-force inner product) and votes.
  No validation, no limits, no database, no metrics, no micro-batcher: the least a server has to do.

Routes: ``/embed`` with 1 and with 64 items per request, ``/classify`` with 1 item and k=5 against
``--index-size`` indexed MNIST digits. The model is trained first (``python -m trainer train --dataset
mnist-5k --loss supcon --encoder mlp --epochs 3``, about 10 s) unless ``--model`` names an exported one.

The load generator is an asyncio ``Protocol`` client in this process: 32 keep-alive HTTP/1.1
connections, each sending pre-built request bytes and reading only the response head (the body is
counted, not parsed), so it costs a fraction of a core; its CPU share is reported. Every measurement is
bounded by a request count (``--requests``; the 64-item route sends an eighth as many) and by
``--max-seconds``. Both servers stay up; the rounds alternate which one goes first (ABBA order), after a
warm-up of each. Throughput is the median over rounds; latency percentiles pool every round's requests;
server CPU is read from ``/proc/<pid>/stat`` (all threads), per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response  # module level: FastAPI resolves handler annotations here

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
K = 5


# ---------------------------------------------------------------- the floor server (a separate process)


def floor_app(model_dir: Path, index_file: Path, threads: int) -> FastAPI:
    """The minimal server: orjson in, one numpy array, the TorchScript model inline, orjson out."""
    import torch

    from trainer.card import read_card
    from trainer.export import load_scripted

    torch.set_num_threads(threads)
    card = read_card(model_dir)
    module = load_scripted(model_dir / "encoder.pt")
    spec = card.input
    shape = (spec.channels, spec.height, spec.width) if spec.kind == "image" else (spec.dim,)
    cosine = card.distance == "cosine"
    threshold = card.threshold.distance if card.threshold is not None else None
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

    def encode(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            emb = module(torch.from_numpy(x.reshape(len(x), *shape))).numpy()
        if cosine:  # as the service does: unit rows, searched by inner product
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb

    index = np.load(index_file)
    ids = index["ids"].tolist()
    labels = index["labels"].tolist()
    matrix = encode(index["x"].astype(np.float32))

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/embed")
    async def embed(request: Request) -> Response:
        items = np.asarray(orjson.loads(await request.body())["items"], dtype=np.float32)
        emb = encode(items)
        body = {"model": card.model_id, "dim": int(emb.shape[1]), "embeddings": emb}
        return Response(orjson.dumps(body, option=option), media_type="application/json")

    @app.post("/classify")
    async def classify(request: Request) -> Response:
        payload = orjson.loads(await request.body())
        k = int(payload.get("k", K))
        emb = encode(np.asarray(payload["items"], dtype=np.float32))
        sims = emb @ matrix.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        predictions = []
        for row, cols in enumerate(top):
            cols = cols[np.argsort(-sims[row, cols])]
            dist = (1.0 - sims[row, cols]).tolist()
            neighbors = [
                {"id": ids[c], "label": labels[c], "distance": d}
                for c, d in zip(cols.tolist(), dist, strict=True)
            ]
            if threshold is not None and dist[0] > threshold:
                unknown = {
                    "label": None,
                    "confidence": 0.0,
                    "votes": {},
                    "neighbors": neighbors,
                    "unknown": True,
                }
                predictions.append(unknown)
                continue
            votes = Counter(n["label"] for n in neighbors)
            best = max(votes.values())
            tied = [lab for lab, v in votes.items() if v == best]
            label = min(tied, key=lambda lab: sum(n["distance"] for n in neighbors if n["label"] == lab))
            predictions.append(
                {
                    "label": label,
                    "confidence": best / k,
                    "votes": dict(votes),
                    "neighbors": neighbors,
                    "unknown": False,
                }
            )
        body = {"model": card.model_id, "predictions": predictions}
        return Response(orjson.dumps(body, option=option), media_type="application/json")

    return app


def serve_floor(args: argparse.Namespace) -> None:
    import uvicorn

    app = floor_app(Path(args.model), Path(args.index_file), args.torch_threads)
    uvicorn.run(app, host=HOST, port=args.port, log_level="warning", access_log=False)


# ---------------------------------------------------------------- the load generator


@dataclass
class Run:
    """One measurement: which pre-built requests to send, how many, until when; what came back."""

    requests: list[bytes]
    total: int
    deadline: float
    issued: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def take(self) -> bytes | None:
        if self.issued >= self.total or time.perf_counter() > self.deadline:
            return None
        request = self.requests[self.issued % len(self.requests)]
        self.issued += 1
        return request


class Connection(asyncio.Protocol):
    """A keep-alive connection that sends the next request as soon as the previous answer is complete."""

    def __init__(self, run: Run, done: asyncio.Future[None]) -> None:
        self.run = run
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.remaining = -1  # body bytes still to come; -1 while the head is incomplete
        self.status = 0
        self.started = 0.0
        self.in_flight = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send_next()

    def _send_next(self) -> None:
        assert self.transport is not None
        request = self.run.take()
        if request is None:
            self.transport.close()
            return
        self.head.clear()
        self.remaining = -1
        self.in_flight = True
        self.started = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        if self.remaining < 0:  # still reading the head; the body is only counted
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.head[:end])
            self.status = int(head[9:12])
            length = content_length(head)
            if length is None:
                self._fail("response without content-length")
                return
            self.remaining = length - (len(self.head) - end - 4)
        else:
            self.remaining -= len(data)
        if self.remaining == 0:
            self.in_flight = False
            self.run.latencies.append(time.perf_counter() - self.started)
            if self.status != 200:
                self.run.errors[f"HTTP {self.status}"] += 1
            self._send_next()
        elif self.remaining < 0:
            self._fail("more bytes than content-length")

    def _fail(self, why: str) -> None:
        self.run.errors[why] += 1
        self.in_flight = False
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_flight:
            self.run.errors["connection closed before the response was complete"] += 1
        if not self.done.done():
            self.done.set_result(None)


def content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None


async def drive(port: int, run: Run, connections: int) -> float:
    """Send ``run`` over ``connections`` keep-alive connections; returns the wall time in seconds."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(connections)]
    started = time.perf_counter()
    for future in futures:
        await loop.create_connection(lambda f=future: Connection(run, f), HOST, port)
    await asyncio.gather(*futures)
    return time.perf_counter() - started


def post(path: str, body: dict[str, Any]) -> bytes:
    data = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


# ---------------------------------------------------------------- orchestration


@dataclass
class Scenario:
    route: str
    items: int
    requests: list[bytes]
    count: int  # requests per measurement


@dataclass
class Measurement:
    rps: float
    latencies: list[float]
    server_cpu_ms: float  # server CPU per request (all threads)
    client_cpu: float  # share of one core used by this load generator
    errors: dict[str, int]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def measure(
    pid: int, port: int, scenario: Scenario, count: int, connections: int, max_s: float
) -> Measurement:
    run = Run(scenario.requests, count, time.perf_counter() + max_s)
    cpu0, client0 = cpu_seconds(pid), time.process_time()
    wall = asyncio.run(drive(port, run, connections))
    cpu1, client1 = cpu_seconds(pid), time.process_time()
    done = len(run.latencies)
    return Measurement(
        rps=done / wall,
        latencies=run.latencies,
        server_cpu_ms=(cpu1 - cpu0) / max(done, 1) * 1000,
        client_cpu=(client1 - client0) / wall,
        errors=dict(run.errors),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_up(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not up after {timeout}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def train_model(out: Path) -> Path:
    cmd = [sys.executable, "-m", "trainer", "train", "--dataset", "mnist-5k", "--loss", "supcon"]
    cmd += ["--encoder", "mlp", "--epochs", "3", "--out", str(out)]
    print(f"training: {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    (model,) = [p for p in out.iterdir() if (p / "model.json").is_file()]
    return model


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000 if values else float("nan")


def machine() -> str:
    from trainer.compare import machine_info  # the reproduction report's description of a machine

    m = machine_info()
    return (
        f"{m['cpus']} cores ({m['cpu']}), Python {m['python']}, torch {m['torch']}, "
        f"{m['gpu'] or 'no GPU'}, code at {revision()}"
    )


def revision() -> str:
    """The commit measured (and whether the tree had changes), since the service changes often."""
    try:
        run = subprocess.run
        head = run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
        dirty = run(
            ["git", "status", "--porcelain", "service"], cwd=REPO, capture_output=True, text=True
        ).stdout
    except OSError:
        return "unknown"
    return head.strip() + (" + uncommitted changes in service/" if dirty.strip() else "")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per measurement (64 items: /8)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per server and route (ABBA)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 600 requests, 1 round, 1000 indexed")
    parser.add_argument("--model", type=Path, help="an exported model directory (default: train one)")
    parser.add_argument("--index-size", type=int, default=4000, help="MNIST digits indexed for /classify")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads, both servers")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time bound of one measurement")
    parser.add_argument("--json", type=Path, help="also write the results here")
    # the floor server mode (the benchmark starts it as a subprocess)
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--index-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds, args.index_size = 600, 1, 1000
    return args


def start_servers(
    args: argparse.Namespace, work: Path, model: Path, index_file: Path, procs: list[subprocess.Popen[bytes]]
) -> dict[str, tuple[subprocess.Popen[bytes], int]]:
    """Start ours and the floor (appending them to ``procs`` for cleanup); name -> (process, port)."""
    threads = str(args.torch_threads)
    ours_port, floor_port = free_port(), free_port()
    ours = [sys.executable, "-m", "service", "--port", str(ours_port), "--data-dir", str(work / "data")]
    ours += ["--model", str(model), "--torch-threads", threads, "--log-level", "warning"]
    ours += ["--no-worker"]  # the training worker is a separate process, not part of serving
    floor = [sys.executable, __file__, "--serve-floor", "--port", str(floor_port), "--model", str(model)]
    floor += ["--index-file", str(index_file), "--torch-threads", threads]
    # numpy's OpenBLAS would spin a second thread on the floor's (1 x 256) @ (256 x 4000) product;
    # one BLAS thread in both servers, as one torch thread (FAISS already searches 1 query on 1 thread)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    servers = {}
    for name, cmd, port, ready in (
        ("ours", ours, ours_port, "/ready"),
        ("floor", floor, floor_port, "/health"),
    ):
        log = work / f"{name}.log"
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        procs.append(proc)
        wait_up(proc, f"http://{HOST}:{port}{ready}", log)
        servers[name] = (proc, port)
    return servers


def run_rounds(
    args: argparse.Namespace, servers: dict[str, tuple[subprocess.Popen[bytes], int]], scenario: Scenario
) -> dict[str, list[Measurement]]:
    """Warm both servers up, then ``--rounds`` measurements of each, alternating who goes first."""
    for proc, port in servers.values():  # warm-up: a tenth of a measurement, not recorded
        measure(proc.pid, port, scenario, max(scenario.count // 10, 20), args.connections, args.max_seconds)
    out: dict[str, list[Measurement]] = {"ours": [], "floor": []}
    for r in range(args.rounds):
        for name in ("ours", "floor") if r % 2 == 0 else ("floor", "ours"):
            proc, port = servers[name]
            m = measure(proc.pid, port, scenario, scenario.count, args.connections, args.max_seconds)
            out[name].append(m)
            p50, p99 = percentile(m.latencies, 50), percentile(m.latencies, 99)
            print(
                f"{scenario.route} x{scenario.items} round {r + 1} {name:5s}: {m.rps:8.1f} req/s, "
                f"p50 / p99 {p50:5.1f} / {p99:5.1f} ms, server CPU {m.server_cpu_ms:.2f} ms/req, "
                f"load gen. {m.client_cpu:.0%} of a core" + (f", errors {m.errors}" if m.errors else ""),
                flush=True,
            )
    return out


def main() -> None:
    args = parse_args()
    if args.serve_floor:
        serve_floor(args)
        return
    from trainer.data import load_dataset

    work = Path(tempfile.mkdtemp(prefix="bench-service-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        model = args.model.resolve() if args.model else train_model(work / "model")
        data = load_dataset("mnist-5k")
        x = data.x.reshape(len(data.x), -1).astype(np.float32)
        names = [data.label_names[c] for c in data.y]
        n_index = min(args.index_size, len(x) - 256)  # the last 256 digits are the queries
        ids = [f"mnist-{i}" for i in range(n_index)]
        index_file = work / "index.npz"
        np.savez(index_file, x=x[:n_index], ids=np.array(ids), labels=np.array(names[:n_index]))

        servers = start_servers(args, work, model, index_file, procs)
        index_ours(servers["ours"][1], x[:n_index], ids, names[:n_index])
        check_parity(servers["ours"][1], servers["floor"][1], x[-64:])

        pool = [q.tolist() for q in x[-256:]]
        batches = [pool[i : i + 64] for i in range(0, 256, 64)]
        scenarios = [
            Scenario("/embed", 1, [post("/embed", {"items": [q]}) for q in pool[:64]], args.requests),
            Scenario(
                "/embed", 64, [post("/embed", {"items": b}) for b in batches], max(args.requests // 8, 50)
            ),
            Scenario(
                "/classify", 1, [post("/classify", {"items": [q], "k": K}) for q in pool[:64]], args.requests
            ),
        ]
        report(args, {(s.route, s.items): run_rounds(args, servers, s) for s in scenarios})
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def index_ours(port: int, x: np.ndarray, ids: list[str], labels: list[str]) -> None:
    import httpx

    with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=120) as http:
        for start in range(0, len(x), 500):
            items = [
                {"id": ids[i], "vector": x[i].tolist(), "label": labels[i]}
                for i in range(start, min(start + 500, len(x)))
            ]
            http.post("/items", json={"items": items}).raise_for_status()
        assert http.get("/ready").json()["index_size"] == len(x)


def check_parity(ours: int, floor: int, queries: np.ndarray) -> None:
    """Both servers must compute the same thing, or the comparison means nothing."""
    import httpx

    body = {"items": queries.tolist()}
    a = httpx.post(f"http://{HOST}:{ours}/embed", json=body, timeout=60).json()["embeddings"]
    b = httpx.post(f"http://{HOST}:{floor}/embed", json=body, timeout=60).json()["embeddings"]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    body = {"items": queries.tolist(), "k": K}
    pa = [
        p["label"]
        for p in httpx.post(f"http://{HOST}:{ours}/classify", json=body, timeout=60).json()["predictions"]
    ]
    pb = [
        p["label"]
        for p in httpx.post(f"http://{HOST}:{floor}/classify", json=body, timeout=60).json()["predictions"]
    ]
    agree = sum(p == q for p, q in zip(pa, pb, strict=True)) / len(pa)
    print(f"parity: /embed identical (atol 1e-5); /classify labels agree on {agree:.0%} of {len(pa)} queries")


def report(args: argparse.Namespace, results: dict[tuple[str, int], dict[str, list[Measurement]]]) -> None:
    rows = []
    for (route, items), by in results.items():
        ours, floor = by["ours"], by["floor"]
        ours_rps = statistics.median(m.rps for m in ours)
        floor_rps = statistics.median(m.rps for m in floor)
        lat_o = [v for m in ours for v in m.latencies]
        lat_f = [v for m in floor for v in m.latencies]
        rows.append(
            {
                "route": route,
                "items": items,
                "ours_rps": ours_rps,
                "floor_rps": floor_rps,
                "ratio": ours_rps / floor_rps,
                "ours_p50_ms": percentile(lat_o, 50),
                "ours_p99_ms": percentile(lat_o, 99),
                "floor_p50_ms": percentile(lat_f, 50),
                "floor_p99_ms": percentile(lat_f, 99),
                "ours_cpu_ms": statistics.median(m.server_cpu_ms for m in ours),
                "floor_cpu_ms": statistics.median(m.server_cpu_ms for m in floor),
                "ours_rounds": [round(m.rps, 1) for m in ours],
                "floor_rounds": [round(m.rps, 1) for m in floor],
                "client_cpu_max": max(m.client_cpu for m in ours + floor),
                "errors": sum(sum(m.errors.values()) for m in ours + floor),
            }
        )
    print()
    print(f"Machine: {machine()}")
    print(
        f"Settings: {args.connections} connections, {args.requests} requests per measurement "
        f"(64 items: {max(args.requests // 8, 50)}), {args.rounds} round(s), "
        f"torch threads {args.torch_threads}, {args.index_size} indexed items, k={K}"
    )
    print()
    header = ["route", "items/request", "ours req/s", "floor req/s", "ratio"]
    header += ["ours p50 / p99 (ms)", "floor p50 / p99 (ms)", "server CPU ms/req ours / floor"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = [f"`{r['route']}`", str(r["items"]), f"{r['ours_rps']:.0f}", f"{r['floor_rps']:.0f}"]
        cells += [f"{r['ratio']:.2f}×", f"{r['ours_p50_ms']:.1f} / {r['ours_p99_ms']:.1f}"]
        cells += [f"{r['floor_p50_ms']:.1f} / {r['floor_p99_ms']:.1f}"]
        cells += [f"{r['ours_cpu_ms']:.2f} / {r['floor_cpu_ms']:.2f}"]
        print("| " + " | ".join(cells) + " |")
    print()
    print(
        f"Load generator: at most {max(r['client_cpu_max'] for r in rows):.0%} of one core; "
        f"errors: {sum(r['errors'] for r in rows)}"
    )
    for r in rows:
        print(
            f"  {r['route']} x{r['items']} rounds req/s: ours {r['ours_rounds']}, floor {r['floor_rounds']}"
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "args": sys.argv[1:], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
