"""The model card: the one contract between the trainer (writer) and the service (reader).

It lives in ``model.json`` beside ``encoder.pt``. It deliberately imports only pydantic so
that the service can read cards without pulling in the training stack.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

CARD_VERSION = 1
CARD_FILE = "model.json"
ENCODER_FILE = "encoder.pt"
REPORT_FILE = "report.md"

Distance = Literal["cosine", "euclidean"]


class VectorInput(BaseModel):
    """Items are float vectors of length ``dim``, passed to the encoder unchanged."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["vector"] = "vector"
    dim: int = Field(gt=0)


class ImageInput(BaseModel):
    """Items are images; the encoder takes float tensors ``(N, channels, height, width)``.

    Pixel values are fed to the encoder in the training data's own range, ``[0, max_value]``
    (255 for MNIST, 16 for scikit-learn's digits). A decoded 8-bit image ``p`` is therefore
    resized to ``height x width``, converted to ``channels`` (1 = grayscale "L", 3 = "RGB"),
    and rescaled as ``p / 255 * max_value``. Any further normalisation happens inside the
    scripted encoder, so the service needs nothing beyond this spec. A flat vector of length
    ``channels*height*width`` in that same range is accepted as well (row-major, C, H, W).
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["image"] = "image"
    channels: Literal[1, 3]
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    max_value: float = Field(default=255.0, gt=0)

    @property
    def dim(self) -> int:
        """Length of the flattened pixel vector."""
        return self.channels * self.height * self.width


InputSpec = Annotated[VectorInput | ImageInput, Field(discriminator="kind")]


class OperatingPoint(BaseModel):
    """What a threshold achieves on the pairs of one split it was not calibrated on."""

    split: str = Field(description="the split whose pairs were counted: test, or validation without one")
    far: float = Field(description="different-label pairs accepted / n_different")
    tar: float = Field(description="same-label pairs accepted / n_same")
    n_same: int = Field(ge=0)
    n_different: int = Field(ge=0)


class Threshold(BaseModel):
    """Verification threshold: two items are "the same" when ``distance <= distance_threshold``.

    Calibrated on the calibration split (never on test) for ``target_far``; ``far`` and
    ``tar`` are what that threshold achieved there, over ``n_pairs`` pairs (``n_same`` +
    ``n_different``). ``test`` is what it achieves on the held-out test pairs: the rates a user
    of ``/verify`` should expect. Fields after ``n_pairs`` came later and default to None, so
    older cards still load.
    """

    distance: float
    target_far: float
    far: float
    tar: float
    n_pairs: int = 0
    n_same: int | None = None
    n_different: int | None = None
    test: OperatingPoint | None = None


class DatasetInfo(BaseModel):
    name: str
    n_train: int
    n_val: int
    n_calib: int
    n_test: int = 0
    label_names: list[str]


def _as_utc(moment: datetime) -> datetime:
    """A card written by hand without a zone means UTC, so every timestamp the service shows carries one."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class ModelCard(BaseModel):
    """Everything the service needs to load and honour a model, with nothing else at hand."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    card_version: int = CARD_VERSION
    model_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    created_at: Annotated[datetime, AfterValidator(_as_utc)] = Field(
        default_factory=lambda: datetime.now(UTC)
    )
    input: InputSpec
    embedding_dim: int = Field(gt=0)
    normalized: bool = True
    distance: Distance = "cosine"
    loss: dict[str, Any]
    encoder: dict[str, Any] = Field(default_factory=dict)
    dataset: DatasetInfo
    metrics: dict[str, float] = Field(default_factory=dict)
    threshold: Threshold | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    encoder_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    versions: dict[str, str] = Field(default_factory=dict)

    @property
    def label_names(self) -> list[str]:
        return self.dataset.label_names


class CardError(ValueError):
    """The card is missing, malformed, or asks for something this code cannot honour."""


def read_card(model_dir: str | Path) -> ModelCard:
    """Read and validate ``model.json``; refuse newer card versions with a clear message."""
    path = Path(model_dir) / CARD_FILE
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CardError(f"cannot read model card {path}: {exc.strerror or exc}") from exc
    try:
        card = ModelCard.model_validate_json(raw)
    except ValueError as exc:
        raise CardError(f"invalid model card {path}: {exc}") from exc
    if card.card_version > CARD_VERSION:
        raise CardError(
            f"model card version {card.card_version} is newer than this code supports ({CARD_VERSION})"
        )
    return card


def write_card(card: ModelCard, model_dir: str | Path) -> Path:
    path = Path(model_dir) / CARD_FILE
    path.write_text(card.model_dump_json(indent=2), encoding="utf-8")
    return path
