"""Export an encoder as TorchScript + model card, written atomically and checked by reloading.

The exported module takes raw float32 input, ``(N, dim)`` for vectors or ``(N, C, H, W)`` for
images in the range the card states, and returns ``(N, embedding_dim)`` embeddings
(L2-normalised when ``card.normalized``). All preprocessing lives inside the module.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from trainer.card import ENCODER_FILE, ModelCard, write_card

PARITY_TOLERANCE = 1e-5


@contextmanager
def quiet_jit() -> Iterator[None]:
    """torch 2.13 deprecates ``torch.jit``; TorchScript is still our artifact, so silence just that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*(jit|TorchScript).*")
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(jit|TorchScript).*")
        yield


def script_module(module: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Script the module; fall back to tracing where scripting cannot handle it."""
    module = module.eval()
    with quiet_jit():
        try:
            return torch.jit.script(module)
        except Exception:  # noqa: BLE001 - scripting fails in many ways; tracing is the fallback
            with torch.no_grad():
                return torch.jit.trace(module, example)


def load_scripted(path: str | Path, map_location: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The one loader for exported encoders (the service uses it too)."""
    with quiet_jit():
        module = torch.jit.load(str(path), map_location=map_location)
    return module.eval()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_parity(eager: torch.nn.Module, scripted_bytes: bytes, example: torch.Tensor) -> float:
    with quiet_jit():
        reloaded = torch.jit.load(io.BytesIO(scripted_bytes), map_location="cpu").eval()
    with torch.no_grad():
        want = eager.eval()(example)
        got = reloaded(example)
    diff = float((want - got).abs().max()) if want.numel() else 0.0
    if not diff <= PARITY_TOLERANCE:
        raise RuntimeError(
            f"exported encoder differs from the eager model by {diff:.3g} > {PARITY_TOLERANCE}"
        )
    return diff


def write_model_dir(
    module: torch.nn.Module,
    card: ModelCard,
    out_dir: str | Path,
    example: torch.Tensor,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Script ``module``, verify the reload matches eager output, and write the model directory.

    Files go to a temporary sibling directory that is renamed into place, so a reader never
    sees a half-written model. ``card.encoder_sha256`` is filled in here.
    """
    module = module.cpu().eval()
    example = example.cpu()
    scripted = script_module(module, example)
    buffer = io.BytesIO()
    with quiet_jit():
        torch.jit.save(scripted, buffer)
    data = buffer.getvalue()
    _check_parity(module, data, example)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists():
        raise FileExistsError(f"model directory already exists: {out_dir}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / ENCODER_FILE).write_bytes(data)
        final_card = card.model_copy(update={"encoder_sha256": hashlib.sha256(data).hexdigest()})
        write_card(final_card, tmp)
        for name, blob in (extra_files or {}).items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
