"""The peer side of bench_scale.py, run with a Python that has chromadb (its own venv; not a dependency).

peer_chroma.py VECTORS.npz DATA_DIR  ->  one JSON line: version, ingest/s, p50/p99 ms, recall@10, RSS MB
"""

from __future__ import annotations

import json
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import chromadb
import numpy as np


def main() -> None:
    arrays = np.load(sys.argv[1])
    emb, queries = arrays["emb"].astype(np.float32), arrays["q"].astype(np.float32)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chroma = Path(sys.executable).parent / "chroma"
    server = subprocess.Popen(
        [str(chroma), "run", "--path", sys.argv[2], "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(600):
            try:
                client = chromadb.HttpClient(host="127.0.0.1", port=port)
                client.heartbeat()
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        col = client.create_collection("bench", metadata={"hnsw:space": "cosine"})
        ids = [f"i{i}" for i in range(len(emb))]
        t = time.perf_counter()
        for i in range(0, len(emb), 5000):
            col.add(ids=ids[i : i + 5000], embeddings=emb[i : i + 5000].tolist())
        ingest = len(emb) / (time.perf_counter() - t)
        times, hits = [], 0
        unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        for q in queries:
            t = time.perf_counter()
            got = col.query(query_embeddings=[q.tolist()], n_results=10)["ids"][0]
            times.append((time.perf_counter() - t) * 1e3)
            exact = np.argsort(-(unit @ (q / np.linalg.norm(q))))[:10]
            hits += len(set(got) & {f"i{j}" for j in exact})
        times.sort()
        rss = next(
            int(line.split()[1]) / 1024
            for line in Path(f"/proc/{server.pid}/status").read_text().splitlines()
            if line.startswith("VmRSS")
        )
        print(json.dumps({
            "version": chromadb.__version__, "ingest": ingest, "p50": statistics.median(times),
            "p99": times[int(0.99 * (len(times) - 1))], "recall": hits / (10 * len(queries)), "rss_mb": rss,
        }))  # fmt: skip
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


if __name__ == "__main__":
    main()
