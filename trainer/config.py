"""The training configuration: one pydantic model shared by the CLI, config files and ``POST /train``.

Only pydantic here (no torch), so the service can validate training requests cheaply.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_WIDTH = 16_384  # layer widths beyond this are a typo, not a model: refuse before a worker OOMs
Width = Annotated[int, Field(gt=0, le=MAX_WIDTH)]
LossName = Literal["ce", "contrastive", "triplet", "npair", "supcon", "ntxent"]
LOSS_NAMES: tuple[str, ...] = ("ce", "contrastive", "triplet", "npair", "supcon", "ntxent")
# Config field -> the losses that take it (``build_loss`` keyword of the same name).
LOSS_FIELDS: dict[str, tuple[str, ...]] = {
    "margin": ("contrastive", "triplet"),
    "distance": ("contrastive", "triplet"),
    "form": ("contrastive",),
    "mining": ("triplet",),
    "soft": ("triplet",),
    "l2_reg": ("npair",),
    "temperature": ("supcon", "ntxent"),
}


class ItemsSource(BaseModel):
    """Train on the labelled items already stored in one of the service's collections."""

    model_config = ConfigDict(extra="forbid")
    source: Literal["items"] = Field(default="items", description="always 'items'")
    collection: str = Field(
        default="default",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="the collection whose labelled items to train on",
    )


class TrainConfig(BaseModel):
    """Every knob of a training run. CLI flag ``--batch-size`` is field ``batch_size``."""

    # NaN/inf never make sense here and would only fail later, inside a worker.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # data
    dataset: str | ItemsSource = Field(
        default="digits",
        description="built-in name (digits, mnist-5k, fashion-mnist), a path (.npz/.csv/IDX/image folder; "
        "over HTTP a name under the data dir's datasets/, or an uploaded data set id), "
        "'idx:IMAGES[,LABELS]', or {'source': 'items'}",
    )
    test_dataset: str | None = Field(
        default=None,
        description="a separate test set (same forms as dataset, same classes); then test_fraction is "
        "unused. fashion-mnist brings its official t10k test split without it",
    )
    label_column: str = Field(default="label", description="label column of a .csv data set")
    val_fraction: float = Field(
        default=0.1, ge=0.0, lt=0.5, description="held out to validate each epoch (early stopping)"
    )
    calib_fraction: float = Field(
        default=0.1, ge=0.0, lt=0.5, description="held out to calibrate the verification threshold"
    )
    test_fraction: float = Field(
        default=0.2, ge=0.0, lt=0.6, description="held out for the final test (unless data bring their own)"
    )
    augment: bool | None = Field(
        default=None,
        description="augment training batches; unset (null) = auto: on when the training split has fewer "
        "than 1,000 items per class, where it helps (MNIST-5k), off above, where it hurt (Fashion-MNIST). "
        "ntxent always augments",
    )

    # loss
    loss: LossName = Field(
        default="supcon",
        description="ce (cross-entropy baseline), contrastive, triplet, npair, supcon (default), ntxent",
    )
    mining: Literal["all", "hard", "semihard"] = Field(
        default="semihard", description="triplet selection: every valid triplet, batch-hard, or semi-hard"
    )
    margin: float | None = Field(default=None, description="contrastive/triplet margin (loss default)")
    temperature: float | None = Field(default=None, gt=0, description="supcon/ntxent temperature")
    distance: Literal["euclidean", "squared_euclidean", "cosine"] | None = Field(
        default=None, description="contrastive/triplet distance (loss default: euclidean)"
    )
    soft: bool = Field(default=False, description="soft-margin triplet (softplus)")
    form: Literal["hadsell", "squared"] = Field(
        default="hadsell", description="contrastive negatives: max(0, m - d)^2 (hadsell) or max(0, m - d^2)"
    )
    l2_reg: float = Field(default=0.0, ge=0.0, description="npair embedding L2 regulariser")

    # model
    encoder: Literal["mlp", "cnn"] = Field(default="mlp", description="mlp (any input) or cnn (images only)")
    hidden: list[Width] = Field(default_factory=lambda: [256], max_length=16, description="MLP hidden widths")
    channels: list[Width] = Field(
        default_factory=lambda: [32, 64], min_length=1, max_length=16, description="CNN conv widths"
    )
    embedding_dim: int = Field(default=256, gt=0, le=MAX_WIDTH, description="exported embedding width")
    projection_dim: int = Field(
        default=128, ge=0, le=MAX_WIDTH, description="projection head width; 0 = none"
    )
    export: Literal["projection", "backbone"] = Field(
        default="projection",
        description="the served embedding: the projection head's output (the space the loss trained, best "
        "for search and verification), or the backbone's before the head (as SupCon/SimCLR keep it for "
        "linear probes on new tasks)",
    )

    # optimisation
    epochs: int = Field(default=20, gt=0, le=10_000, description="most epochs (patience may stop sooner)")
    batch_size: int = Field(
        default=256, ge=2, le=65_536, description="samples per step (P classes x samples_per_class)"
    )
    samples_per_class: int = Field(default=8, ge=2, description="K of the PxK sampler")
    lr: float = Field(default=1e-3, gt=0, description="peak learning rate (warm-up, then cosine decay to 0)")
    weight_decay: float = Field(default=1e-4, ge=0, description="the optimizer's weight decay")
    optimizer: Literal["adamw", "sgd"] = Field(
        default="adamw", description="adamw, or sgd (Nesterov momentum 0.9)"
    )
    warmup_epochs: float = Field(default=1.0, ge=0, description="epochs of linear learning-rate warm-up")
    patience: int = Field(default=5, ge=0, description="early-stopping patience in epochs; 0 = off")
    seed: int = Field(default=0, ge=0, lt=2**63, description="seeds the splits, sampler and weights")

    # evaluation and export
    target_far: float = Field(
        default=0.01, gt=0, lt=1, description="false accept rate the verification threshold is calibrated for"
    )
    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=100,
        description="the model id; default <loss>-<UTC time>-<random>",
    )

    # runtime
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA when available (a service job: the worker's --worker-device)"
    )
    amp: bool = Field(default=True, description="bf16 autocast on CUDA (ignored on CPU)")
    num_workers: int = Field(default=0, ge=0, description="unused: batches are cut from data held in memory")

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        if self.batch_size // self.samples_per_class < 2:  # the P×K sampler needs P >= 2 classes per batch
            raise ValueError(
                f"batch_size {self.batch_size} holds fewer than 2 classes of samples_per_class "
                f"{self.samples_per_class}: use batch_size >= {2 * self.samples_per_class} "
                "or a smaller samples_per_class"
            )
        if self.val_fraction + self.calib_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + calib_fraction + test_fraction must stay below 0.9")
        self._check_loss_fields()
        return self

    def _check_loss_fields(self) -> None:
        """A parameter of another loss would be silently ignored: refuse it unless left at its default."""
        for name in foreign_loss_fields(self.loss, {name: getattr(self, name) for name in LOSS_FIELDS}):
            losses = LOSS_FIELDS[name]
            raise ValueError(
                f"{name} is a parameter of the {'/'.join(losses)} loss, not of the chosen loss "
                f"{self.loss!r}: leave {name} unset or choose loss {' or '.join(losses)}"
            )

    def loss_params(self) -> dict[str, Any]:
        """Keyword arguments for ``trainer.losses.build_loss``: this loss's fields that are set.

        Fields left None take the loss's own default (``build_loss(...).params`` has the resolved values).
        """
        return {
            name: getattr(self, name)
            for name, losses in LOSS_FIELDS.items()
            if self.loss in losses and getattr(self, name) is not None
        }

    def loss_label(self) -> str:
        """Short name for tables: ``triplet:semihard``, ``supcon``..."""
        return f"triplet:{self.mining}" if self.loss == "triplet" else self.loss


def foreign_loss_fields(loss: Any, values: Mapping[str, Any]) -> list[str]:
    """The loss fields in ``values`` that belong to another loss than ``loss`` and are not at their default.

    Compared with the field default, not ``model_fields_set``: a dumped config (as the worker
    re-validates it) carries every field.
    """
    return [
        name
        for name, losses in LOSS_FIELDS.items()
        if loss not in losses
        and values.get(name, TrainConfig.model_fields[name].default) != TrainConfig.model_fields[name].default
    ]


def check_encoder_fits(config: TrainConfig, input_shape: tuple[int, ...]) -> None:
    """Refuse an encoder that cannot take the data's sample shape, before any job or run starts.

    ``input_shape`` is one sample's shape: ``(D,)`` for vectors, ``(C, H, W)`` for images. The MLP
    flattens anything; the CNN needs images. Raises ``ValueError`` naming the ``encoder`` field.
    """
    if config.encoder == "cnn" and len(input_shape) != 3:
        raise ValueError(
            "encoder 'cnn' needs image data, samples of shape (channels, height, width), but these "
            f"samples have shape {tuple(int(n) for n in input_shape)}: use encoder 'mlp' for vector data"
        )


def new_model_id(config: TrainConfig) -> str:
    """A fresh, readable model id: ``<loss>-<UTC time>-<random>``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{config.loss_label().replace(':', '-')}-{stamp}-{secrets.token_hex(3)}"


def format_validation_error(exc: ValidationError) -> str:
    """One line: ``field: reason; field: reason``."""
    parts = []
    for err in exc.errors():
        reason = err["msg"].removeprefix("Value error, ")  # our validators' messages say it all
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {reason}" if where else reason)
    return "invalid config: " + "; ".join(parts)
