"""Model card schema and the atomic, parity-checked TorchScript export."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
import torch
from torch import nn

from trainer.card import (
    CARD_VERSION,
    CardError,
    DatasetInfo,
    ImageInput,
    ModelCard,
    OperatingPoint,
    Threshold,
    VectorInput,
    read_card,
)
from trainer.export import load_scripted, sha256_file, write_model_dir
from trainer.models import EmbeddingModel, Standardize, build_model
from trainer.report import describe_loss


def make_card(**overrides: object) -> ModelCard:
    fields: dict[str, object] = {
        "model_id": "toy-1",
        "input": VectorInput(dim=4),
        "embedding_dim": 3,
        "loss": {"name": "supcon", "temperature": 0.1},
        "dataset": DatasetInfo(name="toy", n_train=10, n_val=2, n_calib=2, label_names=["a", "b"]),
        "encoder_sha256": "0" * 64,
    }
    fields.update(overrides)
    return ModelCard(**fields)  # type: ignore[arg-type]


def test_card_round_trip_keeps_every_field(tmp_path):
    card = make_card(
        input=ImageInput(channels=1, height=8, width=8, max_value=16),
        metrics={"knn_5_accuracy": 0.9},
        config={"loss": "supcon", "hidden": [256]},
    )
    (tmp_path / "model.json").write_text(card.model_dump_json())
    again = read_card(tmp_path)
    assert again == card
    assert again.input.kind == "image" and again.input.dim == 64
    assert again.label_names == ["a", "b"]


def test_card_threshold_reports_the_test_operating_point_and_older_cards_still_load(tmp_path):
    card = make_card(
        threshold=Threshold(
            distance=0.3,
            target_far=0.01,
            far=0.0099,
            tar=0.9,
            n_pairs=1000,
            n_same=100,
            n_different=900,
            test=OperatingPoint(split="test", far=0.011, tar=0.88, n_same=400, n_different=3600),
        )
    )
    (tmp_path / "model.json").write_text(card.model_dump_json())
    assert read_card(tmp_path) == card
    # A card written before these fields existed (card_version 1, threshold without them) loads as before.
    data = json.loads(card.model_dump_json())
    for key in ("n_same", "n_different", "test"):
        del data["threshold"][key]
    (tmp_path / "model.json").write_text(json.dumps(data))
    old = read_card(tmp_path)
    assert old.card_version == CARD_VERSION == 1
    assert old.threshold is not None and old.threshold.test is None and old.threshold.n_same is None
    assert old.threshold.distance == 0.3


def test_card_refuses_newer_version_and_garbage(tmp_path):
    data = json.loads(make_card().model_dump_json())
    data["card_version"] = CARD_VERSION + 1
    (tmp_path / "model.json").write_text(json.dumps(data))
    with pytest.raises(CardError, match="newer than this code supports"):
        read_card(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(CardError, match="invalid model card"):
        read_card(tmp_path)
    with pytest.raises(CardError, match="cannot read model card"):
        read_card(tmp_path / "missing")


def test_card_rejects_unknown_distance_and_bad_ids():
    with pytest.raises(ValueError):
        make_card(distance="manhattan")
    with pytest.raises(ValueError):
        make_card(model_id="../escape")


def test_a_card_written_without_a_time_zone_reads_as_utc():
    naive = make_card(created_at="2026-01-31T12:00:00").created_at
    assert naive.utcoffset() == timedelta(0) and (naive.hour, naive.minute) == (12, 0)
    paris = make_card(created_at="2026-01-31T12:00:00+01:00").created_at
    assert paris.utcoffset() == timedelta(hours=1)  # a zone it has is kept


def test_export_writes_verified_scripted_model(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(32, 1, 8, 8) * 16
    model = build_model(
        encoder="cnn", input_shape=(1, 8, 8), standardize=Standardize.fit(x), embedding_dim=3, channels=[4]
    )
    encoder = model.encoder.eval()
    out = write_model_dir(
        encoder, make_card(input=ImageInput(channels=1, height=8, width=8)), tmp_path / "m", x[:4]
    )
    card = read_card(out)
    assert card.encoder_sha256 == sha256_file(out / "encoder.pt")
    assert card.encoder_sha256 == hashlib.sha256((out / "encoder.pt").read_bytes()).hexdigest()
    loaded = load_scripted(out / "encoder.pt")
    with torch.no_grad():
        got, want = loaded(x), encoder(x)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(got.norm(dim=1), torch.ones(len(x)), atol=1e-5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary directory left behind"


def test_export_refuses_existing_dir_and_leaves_nothing_on_failure(tmp_path):
    class Broken(nn.Module):
        """Scripts fine but differs between calls, so the parity check must fail."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.rand_like(x)

    with pytest.raises(RuntimeError, match="differs from the eager model"):
        write_model_dir(Broken(), make_card(), tmp_path / "m", torch.ones(2, 4))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "taken").mkdir()
    encoder = EmbeddingModel(Standardize(torch.zeros(1, 4), torch.ones(1, 4)), nn.Linear(4, 3))
    with pytest.raises(FileExistsError):
        write_model_dir(encoder, make_card(), tmp_path / "taken", torch.ones(2, 4))


def test_standardize_floors_constant_vector_features():
    x = torch.tensor([[0.0, 1.0], [0.0, 3.0], [0.0, 5.0]])
    std = Standardize.fit(x)
    out = std(x)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[:, 0], torch.zeros(3))
    assert torch.allclose(out[:, 1], torch.tensor([-1.0, 0.0, 1.0]))


def test_describe_loss_reads_as_text():
    assert describe_loss({"name": "supcon", "temperature": 0.1, "base_temperature": 0.1}) == (
        "supcon (temperature=0.1, base_temperature=0.1)"
    )
    triplet = {"name": "triplet", "margin": 0.2, "distance": "cosine", "mining": "hard", "soft": False}
    assert describe_loss(triplet) == "triplet (margin=0.2, distance=cosine, mining=hard, soft=False)"
    assert describe_loss({"name": "npair", "l2_reg": 1e-05}) == "npair (l2_reg=1e-05)"
    assert describe_loss({"name": "ce"}) == "ce"
