"""Scale: ingest, query latency, recall, memory and recovery at 100k and 1M items, with the defaults.

For each size, a real service (``python -m service``, default settings: no index flags) on 127.0.0.1:

1. ingest through ``POST /items``, 1,000 items a request, from ``--clients`` concurrent connections;
2. the same rows again through the bulk path (``client.import_items``: ``.npz`` imports) into a second
   collection, for its throughput;
3. once the index has settled (exact below ``--auto-index-threshold``, IVF past it, built in the
   background), single-item ``/classify`` and ``/search`` one after another: p50 / p99 latency;
4. recall@10 of ``/search`` against exact search, computed here from the same TorchScript model;
5. the server's RSS after all of the above (it includes what the deleted bulk collection left in the
   allocator), and again after the restart below and 100 queries (what a serving process holds); the
   data directory's size;
6. ``kill -9``, restart, seconds until ``/ready`` answers, and that every acknowledged item is there.

Items are 64-value digits (scikit-learn's, with noise), embedded by a digits MLP (256-d). ``--peer chroma``
runs the same 100k vectors through Chroma's own server (already embedded, HNSW) for comparison.

    python benchmarks/bench_scale.py --sizes 100000,1000000 [--peer chroma] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digits_model(out: Path) -> Path:
    """A digits MLP (64-value vectors in, 256-d embeddings out), trained once in a few seconds."""
    model = out / "digits-mlp"
    if not model.exists():
        cmd = [sys.executable, "-m", "trainer", "train", "--dataset", "digits", "--epochs", "3", "--quiet",
               "--out", str(out), "--name", "digits-mlp"]  # fmt: skip
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return model


def make_items(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(digits.target), n)
    x = digits.data[pick] + rng.normal(0, 1.0, (n, 64))
    return np.clip(x, 0, 16).astype(np.float32), digits.target[pick].astype(str)


class Server:
    def __init__(self, data: Path, model: Path | None, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "service", "--port", str(self.port), "--data-dir", str(data),
               "--no-worker", "--log-level", "warning"]  # fmt: skip
        if model is not None:
            cmd += ["--model", str(model)]
        self.log = open(log, "ab")  # noqa: SIM115 - closed in stop/kill
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 600) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError("not ready")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(120)
        self.log.close()


def ingest(url: str, x: np.ndarray, y: np.ndarray, clients: int, prefix: str = "i") -> float:
    """POST /items, 1,000 a request, ``clients`` at once; items per second."""
    import orjson

    chunks = list(range(0, len(x), 1000))
    lock = threading.Lock()

    def work() -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            while True:
                with lock:
                    if not chunks:
                        return
                    start = chunks.pop()
                items = [
                    {"id": f"{prefix}{i}", "vector": x[i].tolist(), "label": str(y[i])}
                    for i in range(start, min(start + 1000, len(x)))
                ]
                r = c.post(
                    "/items",
                    content=orjson.dumps({"items": items}),
                    headers={"content-type": "application/json"},
                )
                r.raise_for_status()

    t = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return len(x) / (time.perf_counter() - t)


def settle(url: str, collection: str, n: int, threshold: int, timeout: float = 1800) -> dict[str, Any]:
    """Wait until the collection's index is the kind its size calls for, with its recall sampled."""
    want = "ivf" if n >= threshold else "flat"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        col = httpx.get(f"{url}/collections/{collection}", timeout=30).json()
        index = col["index"]
        if index["type"] == want and index["size"] == n and (want == "flat" or index.get("recall_at_10")):
            return index
        time.sleep(1)
    raise TimeoutError(f"index never settled: {index}")


def latencies(url: str, route: str, queries: np.ndarray) -> tuple[float, float]:
    times = []
    with httpx.Client(base_url=url, timeout=30) as c:
        for q in queries:
            body = {"items": [q.tolist()], "k": 5} if route == "/classify" else {"item": q.tolist(), "k": 10}
            t = time.perf_counter()
            c.post(route, json=body).raise_for_status()
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


def embed_here(model: Path, x: np.ndarray) -> np.ndarray:
    """The embeddings the service computes, computed here with its own Encoder (one torch thread)."""
    import torch

    from service.encoder import Encoder

    torch.set_num_threads(1)
    encoder = Encoder.load(model)
    batch = x.reshape(len(x), *encoder.input_shape)
    return np.concatenate([encoder.embed(batch[i : i + 65536]) for i in range(0, len(x), 65536)])


def recall_at_10(url: str, model: Path, x: np.ndarray, queries: np.ndarray) -> float:
    """/search's top-10 against exact search over the same embeddings, computed here."""
    import faiss

    emb, q = embed_here(model, x), embed_here(model, queries)
    flat = faiss.IndexFlatIP(emb.shape[1])
    flat.add(emb)
    _, exact = flat.search(q, 10)
    hits = 0
    with httpx.Client(base_url=url, timeout=30) as c:
        for row, want in zip(queries, exact, strict=True):
            answer = c.post("/search", json={"item": row.tolist(), "k": 10}).json()
            got = {neighbor["id"] for neighbor in answer["neighbors"]}
            hits += len(got & {f"i{j}" for j in want})
    return hits / (10 * len(queries))


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def run_size(n: int, model: Path, clients: int, threshold: int, work: Path) -> dict[str, Any]:
    data = work / f"data-{n}"
    shutil.rmtree(data, ignore_errors=True)
    x, y = make_items(n)
    queries = make_items(300, seed=7)[0]
    server = Server(data, model, work / f"server-{n}.log")
    server.wait_ready()
    row: dict[str, Any] = {"items": n}
    row["ingest"] = ingest(server.url, x, y, clients)
    from service.client import Client

    with Client(server.url, timeout=600) as client:
        client.create_collection("bulk", model="digits-mlp")
        t = time.perf_counter()
        client.collection("bulk").import_items(x, labels=list(y), chunk=50_000)
        row["bulk"] = n / (time.perf_counter() - t)
        client.delete_collection("bulk")
    index = settle(server.url, "default", n, threshold)
    row["index"] = f"{index['type']}" + (
        f" (nlist {index['nlist']}, nprobe {index['nprobe']})" if index["type"] == "ivf" else ""
    )
    row["classify"] = latencies(server.url, "/classify", queries[:300])
    row["search"] = latencies(server.url, "/search", queries[:300])
    row["recall"] = recall_at_10(server.url, model, x, queries[:100])
    row["sampled_recall"] = index.get("recall_at_10")
    row["rss_mb"] = server.rss_mb()
    server.kill()
    server = Server(data, None, work / f"server-{n}.log")
    row["ready_s"] = server.wait_ready()
    row["kept"] = httpx.get(f"{server.url}/collections/default", timeout=60).json()["size"] == n
    latencies(server.url, "/search", queries[:100])  # what a serving replica holds: after some queries
    row["rss_after_restart_mb"] = server.rss_mb()
    server.stop()
    row["disk_mb"] = dir_mb(data)
    return row


def run_chroma(n: int, model: Path, work: Path) -> dict[str, Any] | None:
    """Chroma's own server (HNSW), the vectors already embedded: ingest, latency, recall@10, RSS."""
    peer_python = Path(os.environ.get("CHROMA_PYTHON", "/work/peer-venv/bin/python"))
    if not peer_python.exists():
        print(f"(no Chroma: {peer_python} missing)", file=sys.stderr)
        return None
    script = ROOT / "benchmarks" / "peer_chroma.py"
    x, queries = make_items(n)[0], make_items(300, seed=7)[0]
    np.savez(work / "peer.npz", emb=embed_here(model, x), q=embed_here(model, queries))
    out = subprocess.run(
        [str(peer_python), str(script), str(work / "peer.npz"), str(work / "chroma-data")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def fmt_row(r: dict[str, Any]) -> str:
    sampled = "n/a" if r["sampled_recall"] is None else f"{r['sampled_recall']:.3f}"
    lost = "" if r["kept"] else " (ITEMS LOST)"
    return (
        f"| {r['items']:,} | {r['index']} | {r['ingest'] / 1e3:.1f}k/s | {r['bulk'] / 1e3:.1f}k/s | "
        f"{r['classify'][0]:.1f} / {r['classify'][1]:.1f} ms | "
        f"{r['search'][0]:.1f} / {r['search'][1]:.1f} ms | "
        f"{r['recall']:.3f} ({sampled}) | {r['rss_mb'] / 1024:.2f} GiB | "
        f"{r['rss_after_restart_mb'] / 1024:.2f} GiB | {r['ready_s']:.1f} s{lost} | "
        f"{r['disk_mb'] / 1024:.2f} GiB |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--threshold", type=int, default=50_000, help="the service's --auto-index-threshold")
    parser.add_argument("--peer", choices=["chroma"], default=None)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    model = digits_model(work / "models")
    print(f"machine: {os.cpu_count()} CPUs; work dir {work}", file=sys.stderr)
    print("| items | index (chosen) | ingest POST /items | bulk import | /classify p50 / p99 | "
          "/search p50 / p99 | recall@10 (sampled) | RSS after it all | RSS after restart | "
          "back to ready after kill -9 | disk |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        print(fmt_row(run_size(n, model, args.clients, args.threshold, work)), flush=True)
    if args.peer == "chroma":
        peer = run_chroma(100_000, model, work)
        if peer:
            print(f"\nChroma {peer['version']} server, 100,000 vectors already embedded (HNSW): ingest "
                  f"{peer['ingest'] / 1e3:.1f}k/s, query p50 / p99 {peer['p50']:.1f} / {peer['p99']:.1f} ms, "
                  f"recall@10 {peer['recall']:.3f}, server RSS {peer['rss_mb'] / 1024:.2f} GiB")  # fmt: skip


if __name__ == "__main__":
    main()
