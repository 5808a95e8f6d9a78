"""Loads an exported model directory and turns items into embeddings.

Loading checks what the card promises (sha256 of encoder.pt, output width) with a dry run, so a model
the service cannot honour is refused with a clear message instead of failing on the first request.
Decoding follows the card's input spec (see ``trainer.card.ImageInput``).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from service.errors import ErrorCode, ServiceError
from service.schemas import RawInput
from trainer.card import ENCODER_FILE, CardError, ImageInput, ModelCard, read_card
from trainer.export import load_scripted, sha256_file

logger = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs long before PIL's own (larger) limit


class Encoder:
    """One loaded model: its card, its TorchScript module and the input shape it takes."""

    def __init__(self, model_dir: Path, card: ModelCard, module: torch.jit.ScriptModule) -> None:
        self.model_dir = model_dir
        self.card = card
        self.module = module
        spec = card.input
        self.input_shape: tuple[int, ...] = (
            (spec.channels, spec.height, spec.width) if isinstance(spec, ImageInput) else (spec.dim,)
        )
        self.input_dim = int(np.prod(self.input_shape))

    @property
    def model_id(self) -> str:
        return self.card.model_id

    @classmethod
    def load(cls, model_dir: str | Path) -> Encoder:
        """Read the card, verify encoder.pt against it, load it and check a dry run's output shape."""
        model_dir = Path(model_dir)
        card = read_card(model_dir)
        encoder_path = model_dir / ENCODER_FILE
        if not encoder_path.is_file():
            raise CardError(f"{encoder_path} is missing")
        digest = sha256_file(encoder_path)
        if digest != card.encoder_sha256:
            raise CardError(
                f"{encoder_path} does not match the card (sha256 {digest[:12]}..., card says "
                f"{card.encoder_sha256[:12]}...): the model directory is corrupt or was modified"
            )
        try:
            module = load_scripted(encoder_path)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad archive
            raise CardError(f"cannot load {encoder_path}: {exc}") from exc
        encoder = cls(model_dir, card, module)
        encoder._dry_run()
        logger.info("loaded model %s from %s", card.model_id, model_dir)
        return encoder

    def _dry_run(self) -> None:
        try:
            out = self.embed(np.zeros((2, *self.input_shape), dtype=np.float32))
        except Exception as exc:  # noqa: BLE001 - any failure means the card does not fit the module
            raise CardError(f"model {self.model_id} fails on input shape {self.input_shape}: {exc}") from exc
        if out.shape != (2, self.card.embedding_dim):
            raise CardError(
                f"model {self.model_id} returns embeddings of shape {tuple(out.shape[1:])}, "
                f"but its card says embedding_dim={self.card.embedding_dim}"
            )

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Run the module on a decoded float32 batch; cosine models get unit rows (for inner product)."""
        with torch.inference_mode():
            out = self.module(torch.from_numpy(batch))
        emb = out.detach().float().numpy()
        emb = np.ascontiguousarray(emb.reshape(emb.shape[0], -1))
        if self.card.distance == "cosine":
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
            emb /= np.maximum(norms, 1e-12)
        return emb

    def can_read(self, kind: str, dim: int | None) -> bool:
        """Whether a stored input (``vector`` of length ``dim``, or ``image``) can be fed to this model."""
        if kind == "image":
            return isinstance(self.card.input, ImageInput)
        return dim == self.input_dim

    def describe_input(self) -> str:
        spec = self.card.input
        if isinstance(spec, ImageInput):
            return (
                f"images ({spec.channels}x{spec.height}x{spec.width}) or vectors of length {self.input_dim}"
            )
        return f"vectors of length {spec.dim}"

    def decode(self, items: Sequence[RawInput]) -> np.ndarray:
        """Decode every item into one float32 batch ``(N, *input_shape)``; the first bad item raises 422."""
        out = np.empty((len(items), *self.input_shape), dtype=np.float32)
        for i, item in enumerate(items):
            if isinstance(item, bytes):
                out[i] = self._decode_image(i, item)
            elif item.shape[0] != self.input_dim:
                raise ServiceError(
                    ErrorCode.INVALID_INPUT,
                    f"item {i}: vector has {item.shape[0]} values, but model {self.model_id} expects "
                    f"{self.describe_input()}",
                )
            else:
                out[i] = item.reshape(self.input_shape)
        return out

    def _decode_image(self, i: int, data: bytes) -> np.ndarray:
        spec = self.card.input
        if not isinstance(spec, ImageInput):
            raise ServiceError(
                ErrorCode.INVALID_INPUT,
                f"item {i}: model {self.model_id} takes {self.describe_input()}, not images",
            )
        try:
            with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise ServiceError(
                        ErrorCode.INVALID_INPUT,
                        f"item {i}: image is {img.width}x{img.height}, over {MAX_IMAGE_PIXELS} pixels",
                    )
                img = img.convert("L" if spec.channels == 1 else "RGB")
                img = img.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
                pixels = np.asarray(img, dtype=np.float32)
        except (
            UnidentifiedImageError,
            OSError,
            ValueError,
            SyntaxError,
            Image.DecompressionBombError,
        ) as exc:
            raise ServiceError(
                ErrorCode.INVALID_INPUT, f"item {i}: cannot decode the image as PNG or JPEG ({exc})"
            ) from None
        pixels = pixels[None] if spec.channels == 1 else pixels.transpose(2, 0, 1)
        return pixels / np.float32(255.0) * np.float32(spec.max_value)  # the card's formula, verbatim
