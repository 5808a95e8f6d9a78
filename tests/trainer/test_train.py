"""The training loop end to end on small generated data: learning, export, resume, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.card import read_card
from trainer.config import TrainConfig
from trainer.data import dataset_from_arrays
from trainer.export import load_scripted
from trainer.losses import LOSSES
from trainer.metrics import evaluate_embeddings
from trainer.models import Standardize, build_model
from trainer.train import (
    Cancelled,
    Progress,
    TrainError,
    embed,
    lr_at,
    reference_sample,
    resolve_device,
    train,
    wants_augment,
)


def noisy_blobs(
    n_per_class: int = 60, classes: int = 4, informative: int = 6, noise_dims: int = 42, seed: int = 0
):
    """Gaussian class blobs in a few dimensions, buried among many noise dimensions.

    Raw kNN is mediocre here (the noise dominates distances), so a learned encoder has room to win.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1.2, size=(classes, informative))
    y = np.repeat(np.arange(classes), n_per_class)
    signal = centers[y] + rng.normal(0, 0.6, size=(len(y), informative))
    noise = rng.normal(0, 1.0, size=(len(y), noise_dims))
    x = np.concatenate([signal, noise], axis=1).astype(np.float32)
    return dataset_from_arrays(x, y, name="blobs", label_names=[f"c{i}" for i in range(classes)])


def tiny_images(n_per_class: int = 40, seed: int = 0):
    """8×8 grayscale images of three bar patterns with noise, in 0..255."""
    rng = np.random.default_rng(seed)
    patterns = np.zeros((3, 8, 8), dtype=np.float32)
    patterns[0, 3:5, :] = 1  # horizontal bar
    patterns[1, :, 3:5] = 1  # vertical bar
    patterns[2][np.eye(8, dtype=bool)] = 1  # diagonal
    y = np.repeat(np.arange(3), n_per_class)
    x = patterns[y] * 200 + rng.uniform(0, 55, size=(len(y), 8, 8))
    return dataset_from_arrays(x.astype(np.uint8), y, name="bars", label_names=["h", "v", "d"])


def quick_config(**overrides) -> TrainConfig:
    base = {
        "dataset": "blobs",
        "epochs": 6,
        "batch_size": 32,
        "samples_per_class": 8,
        "lr": 3e-3,
        "hidden": [64],
        "embedding_dim": 16,
        "projection_dim": 16,
        "patience": 0,
        "warmup_epochs": 0.5,
    }
    base.update(overrides)
    return TrainConfig(**base)


def test_training_lowers_loss_and_beats_the_untrained_encoder(tmp_path):
    ds = noisy_blobs()
    config = quick_config(epochs=10)
    result = train(config, out_dir=tmp_path, dataset=ds)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.8 * losses[0]

    torch.manual_seed(config.seed)
    untrained = build_model(
        encoder="mlp",
        input_shape=(48,),
        standardize=Standardize.fit(torch.from_numpy(ds.x)),
        embedding_dim=16,
        hidden=[64],
        projection_dim=16,
    ).encoder
    emb = embed(untrained, ds.x, torch.device("cpu"))
    half = len(ds.y) // 2
    order = np.random.default_rng(1).permutation(len(ds.y))
    tr, te = order[:half], order[half:]
    before = evaluate_embeddings(emb[tr], ds.y[tr], emb[te], ds.y[te], "cosine")["knn_5_accuracy"]
    after = result.card.metrics["knn_5_accuracy"]
    assert after > before + 0.1, (before, after)
    assert result.card.threshold is not None
    assert result.card.threshold.far <= config.target_far + 1e-12


@pytest.mark.parametrize(
    "loss,projection_dim,export,exported,width",
    [
        ("supcon", 8, "projection", "projection", 8),
        ("supcon", 8, "backbone", "backbone", 24),
        ("supcon", 0, "projection", "backbone", 24),
        ("ce", 8, "projection", "backbone", 24),
    ],
)
def test_the_exported_embedding_is_the_space_the_loss_trained(
    tmp_path, loss, projection_dim, export, exported, width
):
    """With a projection head the service gets the head's normalised output; without one (or for ce,
    whose head is a classifier, or when export="backbone" asks) the backbone's. The card says which."""
    ds = noisy_blobs(n_per_class=30, classes=3)
    config = quick_config(
        loss=loss, epochs=2, embedding_dim=24, projection_dim=projection_dim, export=export, name="m"
    )
    result = train(config, out_dir=tmp_path, dataset=ds)
    assert (result.card.encoder["exported"], result.card.embedding_dim) == (exported, width)
    # Rebuild the training model from the checkpoint's best weights and compare with the exported file.
    best = torch.load(tmp_path / ".runs" / "m" / "checkpoint.pt", weights_only=False)["best_state"]
    model = build_model(
        encoder="mlp",
        input_shape=(48,),
        standardize=Standardize.fit(torch.from_numpy(ds.x)),
        embedding_dim=24,
        hidden=[64],
        projection_dim=projection_dim,
        n_classes=3 if loss == "ce" else None,
        export_head=export == "projection",
    )
    model.encoder.load_state_dict(best)
    model.eval()
    x = torch.from_numpy(ds.x[:7])
    with torch.no_grad():
        loss_space = model.encoder.head(model.encoder.backbone(model.encoder.standardize(x)))
        served = load_scripted(result.model_dir / "encoder.pt")(x)
    assert served.shape == (7, width)
    torch.testing.assert_close(served, torch.nn.functional.normalize(loss_space, dim=1), atol=1e-5, rtol=0)


def test_card_metrics_and_test_operating_point_are_those_of_the_exported_module(tmp_path):
    ds = noisy_blobs(n_per_class=40, classes=4)
    result = train(quick_config(epochs=4), out_dir=tmp_path, dataset=ds)
    card, splits = result.card, result.splits
    module = load_scripted(result.model_dir / "encoder.pt")
    train_emb = embed(module, splits.train.x, torch.device("cpu"))
    test_emb = embed(module, splits.test.x, torch.device("cpu"))
    again = evaluate_embeddings(train_emb, splits.train.y, test_emb, splits.test.y, "cosine")
    for key, value in again.items():
        assert card.metrics[key] == pytest.approx(value, abs=1e-9), key
    # The threshold's test operating point, by a loop over every pair of the test split.
    t = card.threshold
    assert t is not None and t.test is not None and t.test.split == "test"
    accepted = {True: 0, False: 0}
    counts = {True: 0, False: 0}
    for i in range(len(test_emb)):
        for j in range(i + 1, len(test_emb)):
            same = bool(splits.test.y[i] == splits.test.y[j])
            cos = float(np.dot(test_emb[i], test_emb[j])) / float(
                np.linalg.norm(test_emb[i]) * np.linalg.norm(test_emb[j])
            )
            counts[same] += 1
            accepted[same] += (1.0 - cos) <= t.distance
    assert (t.test.n_same, t.test.n_different) == (counts[True], counts[False])
    assert t.test.tar == pytest.approx(accepted[True] / counts[True], abs=1.5 / counts[True])
    assert t.test.far == pytest.approx(accepted[False] / counts[False], abs=1.5 / counts[False])
    # ... and the calibration side records its pair counts.
    n_calib = len(splits.calib.y)
    assert t.n_pairs == t.n_same + t.n_different == n_calib * (n_calib - 1) // 2


def test_the_exported_epoch_is_the_one_with_the_best_validation_map_at_r(tmp_path):
    seen: list[Progress] = []
    result = train(quick_config(epochs=8), out_dir=tmp_path, dataset=noisy_blobs(), progress=seen.append)
    scores = [h["val_map_at_r"] for h in result.history]
    best = int(np.argmax(scores))  # the first of equal scores: a later tie does not replace it
    assert result.card.metrics["best_epoch"] == best + 1
    assert result.card.metrics["best_val_map_at_r"] == scores[best]
    final = next(p for p in seen if p.phase == "final")
    assert final.metrics["best_epoch"] == best + 1


@pytest.mark.parametrize(
    "loss,extra",
    [
        ("contrastive", {}),
        ("contrastive", {"form": "squared", "distance": "squared_euclidean"}),
        ("triplet", {"mining": "all"}),
        ("triplet", {"mining": "hard", "soft": True}),
        ("triplet", {"mining": "semihard", "distance": "cosine"}),
        ("npair", {}),
        ("supcon", {"temperature": 0.2}),
        ("ntxent", {}),
        ("ce", {}),
    ],
)
def test_every_loss_trains_and_exports_a_loadable_model(tmp_path, loss, extra):
    ds = noisy_blobs(n_per_class=30, classes=3)
    result = train(quick_config(loss=loss, epochs=2, **extra), out_dir=tmp_path, dataset=ds)
    card = read_card(result.model_dir)
    assert card.loss["name"] == loss
    # Every parameter of the loss is recorded, defaults included, and the given ones as given.
    assert set(card.loss) == {"name", *(LOSSES[loss].PARAMS if loss != "ce" else ())}
    assert all(card.loss[k] == v for k, v in extra.items())
    report = (result.model_dir / "report.md").read_text()
    assert f"Loss `{loss}" in report and "{" not in report, "the loss reads as text, not a dict"
    assert all(np.isfinite(v) for v in card.metrics.values())
    module = load_scripted(result.model_dir / "encoder.pt")
    with torch.no_grad():
        out = module(torch.from_numpy(ds.x[:5]))
    assert out.shape == (5, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)
    for name in ("report.md", "curves.png", "pca.png"):
        assert (result.model_dir / name).stat().st_size > 0


def test_cnn_on_images_exports_pixel_range_in_card(tmp_path):
    ds = tiny_images()
    result = train(quick_config(encoder="cnn", channels=[8, 16], epochs=3), out_dir=tmp_path, dataset=ds)
    card = result.card
    assert card.input.kind == "image"
    assert (card.input.channels, card.input.height, card.input.width, card.input.max_value) == (
        1,
        8,
        8,
        255.0,
    )
    assert card.metrics["knn_1_accuracy"] > 0.9
    module = load_scripted(result.model_dir / "encoder.pt")
    with torch.no_grad():
        assert module(torch.from_numpy(ds.x[:3])).shape == (3, 16)


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    ds = noisy_blobs(n_per_class=30, classes=3)
    config = quick_config(epochs=3, name="run-a", augment=True)

    def stop_after_two(p: Progress) -> None:
        if p.phase == "epoch" and p.epoch == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        train(config, out_dir=tmp_path / "a", dataset=ds, progress=stop_after_two)
    assert not (tmp_path / "a" / "run-a").exists(), "a cancelled run must not leave a model directory"
    resumed = train(config, out_dir=tmp_path / "a", dataset=ds, resume=True)
    straight = train(config, out_dir=tmp_path / "b", dataset=ds)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for got, want in zip(resumed.history, straight.history, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=1e-6)
        assert got["val_knn_5_accuracy"] == pytest.approx(want["val_knn_5_accuracy"])


def test_card_records_the_loss_defaults_it_trained_with(tmp_path):
    result = train(quick_config(loss="supcon", epochs=1), out_dir=tmp_path, dataset=noisy_blobs())
    assert result.card.loss == {
        "name": "supcon",
        "temperature": 0.1,
        "base_temperature": 0.1,
        "normalize": True,
    }
    assert result.card.config["temperature"] is None, "the config stays as given (None = the loss default)"
    report = (result.model_dir / "report.md").read_text()
    assert "Loss `supcon (temperature=0.1, base_temperature=0.1, normalize=True)`" in report


@pytest.mark.parametrize("resume", [False, True])
def test_a_taken_model_directory_is_refused_before_training(tmp_path, resume):
    ds = noisy_blobs(n_per_class=20, classes=3)
    config = quick_config(epochs=1, name="taken")
    train(config, out_dir=tmp_path, dataset=ds)
    card_before = (tmp_path / "taken" / "model.json").read_bytes()
    seen: list[Progress] = []
    longer = config.model_copy(update={"epochs": 2})
    with pytest.raises(TrainError, match=r"taken already exists: train under another --name, or delete"):
        train(longer, out_dir=tmp_path, dataset=ds, progress=seen.append, resume=resume)
    assert seen == [], "nothing may train"
    assert (tmp_path / "taken" / "model.json").read_bytes() == card_before
    assert torch.load(tmp_path / ".runs" / "taken" / "checkpoint.pt", weights_only=False)["epoch"] == 1


def test_cnn_on_vector_data_is_a_train_error_naming_the_encoder(tmp_path):
    with pytest.raises(TrainError, match=r"encoder 'cnn' needs image data.*shape \(48,\).*encoder 'mlp'"):
        train(quick_config(encoder="cnn"), out_dir=tmp_path, dataset=noisy_blobs())
    assert not (tmp_path / ".runs").exists(), "refused before the run directory is made"


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(TrainError, match="no checkpoint"):
        train(quick_config(name="nothing-here"), out_dir=tmp_path, dataset=noisy_blobs(), resume=True)


def test_early_stopping_stops_and_progress_is_reported(tmp_path):
    seen: list[Progress] = []
    result = train(
        quick_config(epochs=30, patience=1, lr=1e-6, warmup_epochs=0),
        out_dir=tmp_path,
        dataset=noisy_blobs(n_per_class=20, classes=3),
        progress=seen.append,
    )
    assert len(result.history) < 30
    phases = {p.phase for p in seen}
    assert phases == {"train", "epoch", "final"}
    epochs = [p.epoch for p in seen if p.phase == "epoch"]
    assert epochs == list(range(1, len(result.history) + 1))


def test_epoch_references_are_a_fixed_sample_capped_in_size():
    assert reference_sample(50, 100, seed=0).tolist() == list(range(50))
    picked = reference_sample(1000, 100, seed=3)
    assert len(set(picked.tolist())) == 100 and picked.tolist() == sorted(picked.tolist())
    assert picked.min() >= 0 and picked.max() < 1000
    assert np.array_equal(picked, reference_sample(1000, 100, seed=3))
    assert not np.array_equal(picked, reference_sample(1000, 100, seed=4))


def test_augmentation_is_auto_by_training_items_per_class_unless_set():
    auto = quick_config()
    assert auto.augment is None
    assert wants_augment(auto, n_train=9_999, n_classes=10) is True  # MNIST-5k: 300 per class
    assert wants_augment(auto, n_train=10_000, n_classes=10) is False  # Fashion-MNIST: 4,800 per class
    assert wants_augment(quick_config(augment=True), n_train=48_000, n_classes=10) is True
    assert wants_augment(quick_config(augment=False), n_train=100, n_classes=10) is False


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] < 0.01


def test_cuda_request_without_cuda_is_refused():
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(TrainError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


def test_tiny_data_sets_still_train_and_export(tmp_path):
    """A handful of labelled items (as a user's first upload) must not crash evaluation."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 4)
    x = (rng.normal(size=(len(y), 5)) + y[:, None] * 3).astype(np.float32)
    ds = dataset_from_arrays(x, y, name="tiny")
    config = quick_config(epochs=2, batch_size=12, samples_per_class=4, hidden=[8], embedding_dim=4)
    result = train(config, out_dir=tmp_path, dataset=ds)
    assert 0.0 <= result.card.metrics["knn_5_accuracy"] <= 1.0
    assert (result.model_dir / "encoder.pt").exists()


def test_a_given_test_set_is_the_test_split_and_the_rest_is_split_for_validation(tmp_path):
    whole = noisy_blobs(n_per_class=50)
    test_rows = np.arange(len(whole.y)) % 5 == 0
    np.savez(tmp_path / "test.npz", x=whole.x[test_rows], y=np.asarray(whole.label_names)[whole.y[test_rows]])
    train_part = whole.subset(np.flatnonzero(~test_rows))
    config = quick_config(test_dataset=str(tmp_path / "test.npz"), epochs=2)
    result = train(config, out_dir=tmp_path / "out", dataset=train_part)
    info = result.card.dataset
    assert info.n_test == int(test_rows.sum()) == result.card.metrics["eval_split_size"]
    # nothing was split off for test: train + validation + calibration are the 160 given samples
    assert info.n_train + info.n_val + info.n_calib == len(train_part)
    assert np.array_equal(result.splits.test.x, whole.x[test_rows])
