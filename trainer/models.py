"""Encoders, the projection head, and the exported embedding module.

What gets exported is ``EmbeddingModel``: input standardisation + backbone + projection head +
L2 normalisation, so the service feeds raw values (pixels in their source range, or raw features)
and gets unit-length embeddings back. The exported embedding is the space the loss was trained in:
the projection head's output when there is a head, the backbone's otherwise. SupCon and SimCLR keep
the representation *before* the head, which transfers better to new tasks through a linear probe;
for what the service does (cosine search, verification and kNN on the training classes) the head's
output is much better (docs/benchmarks.md, "Served embedding": on MNIST-5k the CNN's TAR at FAR 1 %
is 0.98 from the head's output, 0.96 without a head, and far lower before the head). Only the
cross-entropy classifier stays behind: its logits are not an embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Standardize(nn.Module):
    """``(x - mean) / std`` with statistics of the training split, stored as buffers."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    @classmethod
    def fit(cls, x: torch.Tensor) -> Standardize:
        """Per-channel statistics for images (N, C, H, W), per-feature for vectors (N, D).

        Vector features that barely vary get a floored std (1% of the mean std), so constant
        columns do not amplify noise into the embedding.
        """
        x = x.float()
        if x.ndim == 4:
            mean = x.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
            std = x.std(dim=(0, 2, 3)).view(1, -1, 1, 1)
            std = std.clamp_min(1e-6)
        else:
            mean = x.mean(dim=0, keepdim=True)
            std = x.std(dim=0, keepdim=True) if x.shape[0] > 1 else torch.ones_like(mean)
            std = std.clamp_min(float(std.mean()) * 0.01 + 1e-6)
        return cls(mean, std)


def mlp(in_features: int, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    """Flatten → [Linear → BatchNorm → ReLU]* → Linear (the seed's 784-256-256 by default)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def cnn(
    in_channels: int, height: int, width: int, channels: Sequence[int], out_features: int
) -> nn.Sequential:
    """A small conv net for small images: [Conv3×3 → BN → ReLU → MaxPool2]* → Linear.

    Pooling stops once the feature map is 4 pixels wide, so 8×8 digits and 28×28 MNIST both work.
    """
    layers: list[nn.Module] = []
    c, h, w = in_channels, height, width
    for out_c in channels:
        layers += [
            nn.Conv2d(c, out_c, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_c),
            nn.ReLU(inplace=True),
        ]
        if min(h, w) >= 8:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c = out_c
    layers += [nn.Flatten(), nn.Linear(c * h * w, out_features)]
    return nn.Sequential(*layers)


def projection_head(in_features: int, out_features: int) -> nn.Module:
    """SupCon/SimCLR head on the backbone output: ReLU → Linear → ReLU → Linear; 0 means no head."""
    if out_features == 0:
        return nn.Identity()
    return nn.Sequential(
        nn.ReLU(),
        nn.Linear(in_features, in_features),
        nn.ReLU(inplace=True),
        nn.Linear(in_features, out_features),
    )


class EmbeddingModel(nn.Module):
    """The exported artifact: raw input → standardise → backbone → head → (optional) L2 normalise.

    ``head`` is the projection head (``nn.Identity`` when there is none, or for ``ce``).
    """

    def __init__(
        self,
        standardize: Standardize,
        backbone: nn.Module,
        head: nn.Module | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.standardize = standardize
        self.backbone = backbone
        self.head = head if head is not None else nn.Identity()
        self.normalize = normalize

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding before normalisation: what the losses see (they normalise themselves)."""
        return self.head(self.backbone(self.standardize(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x)
        if self.normalize:
            z = F.normalize(z.float(), dim=1)
        return z


class TrainingModel(nn.Module):
    """The exported encoder plus what only training uses: the classifier of ``ce``, or the projection
    head when the backbone's output is exported (else nothing)."""

    def __init__(self, encoder: EmbeddingModel, training_head: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.training_head = training_head if training_head is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.training_head(self.encoder.features(x))


def build_model(
    *,
    encoder: str,
    input_shape: Sequence[int],
    standardize: Standardize,
    embedding_dim: int,
    hidden: Sequence[int] = (256,),
    channels: Sequence[int] = (32, 64),
    projection_dim: int = 128,
    n_classes: int | None = None,
    export_head: bool = True,
) -> TrainingModel:
    """Build the training model for one sample shape ``(D,)`` or ``(C, H, W)``.

    With ``n_classes`` a linear classifier sits on the backbone instead of a projection head (the
    cross-entropy baseline); ``projection_dim`` is then unused. ``export_head=False`` keeps the
    projection head out of the exported encoder (its embedding is then the backbone's output).
    """
    if encoder == "mlp":
        in_features = 1
        for size in input_shape:
            in_features *= int(size)
        backbone = mlp(in_features, hidden, embedding_dim)
    elif encoder == "cnn":
        if len(input_shape) != 3:
            raise ValueError("the cnn encoder needs image data (N, C, H, W); use encoder 'mlp' for vectors")
        backbone = cnn(int(input_shape[0]), int(input_shape[1]), int(input_shape[2]), channels, embedding_dim)
    else:
        raise ValueError(f"unknown encoder {encoder!r}; valid: cnn, mlp")
    if n_classes is not None:
        classifier = nn.Sequential(nn.ReLU(), nn.Linear(embedding_dim, n_classes))
        return TrainingModel(EmbeddingModel(standardize, backbone), classifier)
    head = projection_head(embedding_dim, projection_dim)
    if export_head:
        return TrainingModel(EmbeddingModel(standardize, backbone, head))
    return TrainingModel(EmbeddingModel(standardize, backbone), head)
