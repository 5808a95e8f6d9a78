"""Factories for service tests: toy exported models, settings on tmp_path, data, a real server process."""

from __future__ import annotations

import atexit
import base64
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from service.config import Settings
from trainer.card import DatasetInfo, ImageInput, ModelCard, Threshold, VectorInput
from trainer.export import write_model_dir

REPO = Path(__file__).resolve().parents[1]
_MODEL_ROOT = Path(tempfile.mkdtemp(prefix="service-test-models-"))
atexit.register(shutil.rmtree, _MODEL_ROOT, ignore_errors=True)
_built: dict[tuple[Any, ...], Path] = {}


class LinearEncoder(torch.nn.Module):
    """Flatten, project with a fixed matrix, optionally L2-normalise: a predictable toy encoder."""

    def __init__(self, weight: torch.Tensor, normalize: bool, slow: int = 0) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(weight)
        self.normalize = normalize
        self.slow = slow  # 256x256 identity products per call: a model that takes its time (kill tests)
        self.register_buffer("eye", torch.eye(256 if slow else 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x.flatten(1))
        work = self.eye
        for _ in range(self.slow):
            work = work @ self.eye
        y = y * work[0, 0]  # exactly 1: the products are of identities
        if self.normalize:
            y = F.normalize(y, dim=1)
        return y


def model_dir(
    model_id: str = "toy-vec",
    dim: int = 8,
    distance: str = "cosine",
    threshold: float | None = 0.5,
    image: tuple[int, int, int] | None = None,
    max_value: float = 255.0,
    scale: float = 1.0,
    labels: tuple[str, ...] = ("a", "b", "c"),
    slow: int = 0,
) -> Path:
    """An exported model directory (built once per parameter set and process, then reused read-only).

    Vector models are ``scale * identity`` (so cosine embeddings are the normalised inputs); image
    models are a fixed random projection of the flattened pixels to ``dim``.
    """
    key = (model_id, dim, distance, threshold, image, max_value, scale, labels, slow)
    if key in _built:
        return _built[key]
    if image is None:
        spec: VectorInput | ImageInput = VectorInput(dim=dim)
        weight = torch.eye(dim) * scale
        example = torch.randn(4, dim)
    else:
        spec = ImageInput(channels=image[0], height=image[1], width=image[2], max_value=max_value)
        weight = torch.randn(dim, spec.dim, generator=torch.Generator().manual_seed(0)) * scale
        example = torch.rand(4, *image)
    card = ModelCard(
        model_id=model_id,
        input=spec,
        embedding_dim=dim,
        normalized=distance == "cosine",
        distance=distance,  # type: ignore[arg-type]
        loss={"name": "toy"},
        dataset=DatasetInfo(name="toy", n_train=0, n_val=0, n_calib=0, label_names=list(labels)),
        threshold=None
        if threshold is None
        else Threshold(distance=threshold, target_far=0.01, far=0.01, tar=0.9),
        encoder_sha256="0" * 64,
    )
    encoder = LinearEncoder(weight, distance == "cosine", slow)
    out = write_model_dir(encoder, card, _MODEL_ROOT / f"{model_id}-{len(_built)}", example)
    _built[key] = out
    return out


def make_settings(tmp_path: Path, model: Path | None = None, **overrides: Any) -> Settings:
    """Settings isolated on tmp_path; periodic snapshots and the training worker off unless asked."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "model": model,
        "snapshot_interval": 0,
        "worker": False,
    }
    values.update(overrides)
    return Settings(**values)


def blobs(
    n_per: int, dim: int = 8, n_classes: int = 3, spread: float = 0.05, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """Well separated Gaussian blobs around orthogonal directions (cosine-friendly), labels c0, c1, ..."""
    rng = np.random.default_rng(seed)
    centers = np.eye(dim)[:n_classes] * 3.0
    x = np.concatenate([c + spread * rng.standard_normal((n_per, dim)) for c in centers]).astype(np.float32)
    y = [f"c{i}" for i in range(n_classes) for _ in range(n_per)]
    return x, y


def png_b64(pixels: np.ndarray, fmt: str = "PNG") -> str:
    """Encode a uint8 array (H, W) or (H, W, 3) as a base64 image file."""
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def vector_items(x: np.ndarray, labels: list[str] | None = None, prefix: str = "i") -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}{i}", "vector": row.tolist(), **({"label": labels[i]} if labels else {})}
        for i, row in enumerate(x)
    ]


LIMITS = {"max_items": 16, "max_k": 50}
GOOD = [0.1] * 8
BAD_BODIES = [
    # (path, body, status, words expected in the detail), for a vector model of dim 8 under LIMITS
    ("/embed", {"items": [[1.0, 2.0]]}, 422, "expects vectors of length 8"),
    ("/embed", {"items": [{"vector": [1.0] * 9}]}, 422, "item 0: vector has 9 values"),
    (
        "/embed",
        {"items": [GOOD, {"image": png_b64(np.zeros((4, 4)))}]},
        422,
        "item 1: model toy-vec takes vectors",
    ),
    ("/embed", {"items": [[1e39] * 8]}, 422, "finite"),
    ("/embed", {"items": [{"image": "%%%"}]}, 422, "base64"),
    ("/embed", {"items": [{"text": "hi"}]}, 422, "an item is"),
    ("/embed", {"items": []}, 422, "at least 1"),
    ("/embed", {"items": [GOOD] * 17}, 413, "limit is 16"),
    ("/embed", {}, 422, "Field required"),
    ("/items", {"items": [{"id": "a", "vector": GOOD}, {"id": "a", "vector": GOOD}]}, 422, "repeated"),
    ("/items", {"items": [{"vector": GOOD, "image": "eHg="}]}, 422, "exactly one"),
    ("/items", {"items": [{"id": "a/b", "vector": GOOD}]}, 422, "pattern"),
    ("/search", {"item": GOOD, "k": 0}, 422, "greater than or equal to 1"),
    ("/search", {"item": GOOD, "k": 51}, 422, "between 1 and 50"),
    ("/search", {"item": GOOD, "k": 10**30}, 422, ""),
    ("/search", {"item": {"id": "missing"}}, 404, "no item with id 'missing'"),
    ("/classify", {"items": [GOOD], "k": 51}, 422, "between 1 and 50"),
    ("/classify", {"items": [GOOD], "weighting": "cubic"}, 422, "uniform"),
    ("/verify", {"a": GOOD}, 422, "Field required"),
]


def unhandled_exceptions(metrics_text: str) -> float:
    """``embed_unhandled_exceptions_total`` from a /metrics page (every one of them is a bug)."""
    match = re.search(r"^embed_unhandled_exceptions_total (\S+)$", metrics_text, re.MULTILINE)
    assert match is not None, "no embed_unhandled_exceptions_total in /metrics"
    return float(match.group(1))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``python -m service`` in a subprocess on a free port; ``kill()`` is SIGKILL, ``stop()`` SIGTERM.

    ``stop()`` first reads /metrics and fails the test if the server answered any request with an
    unhandled exception (a bare 500): every end-to-end test checks that for free.
    """

    def __init__(
        self, data_dir: Path, *args: str, env: dict[str, str] | None = None, worker: bool = False
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"server-{self.port}.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "service", "--port", str(self.port), "--data-dir", str(data_dir), *args]
        if not worker:
            cmd.append("--no-worker")  # tests that need the training worker ask for it
        self._log_fh = open(self.log, "wb")  # noqa: SIM115 - closed in kill/stop
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=self._log_fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        key = args[args.index("--api-key") + 1] if "--api-key" in args else (env or {}).get("EMBED_API_KEY")
        self._auth = {"Authorization": f"Bearer {key}"} if key else {}
        self._was_ready = False

    def unhandled_exceptions(self) -> float | None:
        """The server's unhandled-exception count, or None when it does not answer."""
        try:
            response = httpx.get(self.url + "/metrics", headers=self._auth, timeout=10)
        except httpx.HTTPError:
            return None
        return unhandled_exceptions(response.text) if response.status_code == 200 else None

    def wait_ready(self, timeout: float = 90.0, path: str = "/ready") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    self._was_ready = True
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log_fh.close()

    def stop(self) -> int:
        alive = self.proc.poll() is None
        unhandled = self.unhandled_exceptions() if alive else None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log_fh.close()
        assert unhandled is not None or not (alive and self._was_ready), "the server did not answer /metrics"
        assert not unhandled, f"{unhandled:g} unhandled exception(s):\n{self.log.read_text()[-3000:]}"
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
