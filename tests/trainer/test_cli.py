"""``python -m trainer train`` as a real subprocess: success, config files, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from trainer.card import read_card
from trainer.cli import build_parser, config_from_args, main
from trainer.config import LOSS_FIELDS, LOSS_NAMES, TrainConfig, check_encoder_fits

ROOT = Path(__file__).resolve().parents[2]


def run_trainer(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # CUDA hidden so that "--device cuda" is refused the same way on every machine.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def write_blobs_npz(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(["cat", "dog", "owl"]), 30)
    centers = {"cat": 0.0, "dog": 3.0, "owl": -3.0}
    x = np.stack([rng.normal(centers[label], 1.0, size=8) for label in y]).astype(np.float32)
    np.savez(path, x=x, y=y)


FAST = [
    "--epochs",
    "2",
    "--batch-size",
    "24",
    "--samples-per-class",
    "4",
    "--hidden",
    "32",
    "--embedding-dim",
    "8",
]


def test_cli_trains_from_npz_and_prints_table(tmp_path):
    write_blobs_npz(tmp_path / "pets.npz")
    proc = run_trainer(
        "train", "--dataset", "pets.npz", "--name", "pets-1", "--out", "out", *FAST, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "knn_5_accuracy" in proc.stdout
    assert "model directory:" in proc.stdout
    card = read_card(tmp_path / "out" / "pets-1")
    assert card.label_names == ["cat", "dog", "owl"]
    assert card.config["epochs"] == 2 and card.config["dataset"] == "pets.npz"
    assert card.metrics["knn_5_accuracy"] > 0.9


def test_cli_config_file_with_flag_override(tmp_path):
    write_blobs_npz(tmp_path / "pets.npz")
    (tmp_path / "cfg.yaml").write_text(
        "dataset: pets.npz\nloss: triplet\nmining: hard\nepochs: 5\nname: cfg-run\n"
    )
    proc = run_trainer("train", "--config", "cfg.yaml", "--out", "out", *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    card = read_card(tmp_path / "out" / "cfg-run")
    assert card.loss["name"] == "triplet" and card.loss["mining"] == "hard"
    assert card.config["epochs"] == 2, "the flag must override the file"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--loss", "magic"], "invalid choice"),
        (["--batch-size", "1"], "batch_size"),
        (["--dataset", "missing.npz"], "missing.npz"),
        (["--dataset", "pets.npz", "--device", "cuda"], "CUDA"),
        (["--config", "nope.json"], "cannot read config file"),
        (["--resume"], "--resume needs --name"),
        (["--loss", "npair", "--margin", "0.3"], "error: invalid config: margin is a parameter of the"),
        (["--loss", "triplet", "--temperature", "0.3"], "not of the chosen loss 'triplet'"),
        (["--dataset", "pets.npz", "--encoder", "cnn"], "error: encoder 'cnn' needs image data"),
    ],
)
def test_cli_bad_input_exits_nonzero_with_reason(tmp_path, args, message):
    write_blobs_npz(tmp_path / "pets.npz")
    proc = run_trainer("train", *args, "--out", "out", cwd=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_flags_cover_every_config_field():
    parser = build_parser()
    args = parser.parse_args(["train", "--hidden", "128,64", "--no-amp", "--lr", "0.5", "--dataset", "x.csv"])
    config = config_from_args(args)
    assert config.hidden == [128, 64] and config.amp is False and config.lr == 0.5
    json.dumps(config.model_dump(mode="json"))


def test_a_finished_run_is_refused_before_training_resumed_or_not(tmp_path):
    """The README's walk: train r1, then continue it with more epochs (or train it again)."""
    write_blobs_npz(tmp_path / "pets.npz")
    args = ["train", "--dataset", "pets.npz", "--name", "r1", "--out", "out", *FAST]
    assert run_trainer(*args, cwd=tmp_path).returncode == 0
    card = (tmp_path / "out" / "r1" / "model.json").read_bytes()
    checkpoint = tmp_path / "out" / ".runs" / "r1" / "checkpoint.pt"
    for extra in (["--epochs", "4", "--resume"], ["--epochs", "4"]):
        proc = run_trainer(*args, *extra, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and "epoch " not in proc.stderr, "refused before training"
        error = proc.stderr.strip().splitlines()[-1]
        assert error.startswith("error: model directory out/r1 already exists")
        assert "another --name" in error and "delete that directory" in error
        assert (tmp_path / "out" / "r1" / "model.json").read_bytes() == card
        assert torch.load(checkpoint, weights_only=False)["epoch"] == 2, "compare reads it; left as it was"


@pytest.mark.parametrize(
    "loss,field,value",
    [
        ("npair", "margin", 0.3),
        ("supcon", "distance", "cosine"),
        ("triplet", "temperature", 0.3),
        ("ntxent", "l2_reg", 0.1),
        ("contrastive", "mining", "hard"),
        ("ce", "soft", True),
        ("triplet", "form", "squared"),
    ],
)
def test_a_parameter_of_another_loss_is_refused(loss, field, value):
    with pytest.raises(ValidationError) as err:
        TrainConfig(loss=loss, **{field: value})
    owners = "/".join(LOSS_FIELDS[field])
    assert f"{field} is a parameter of the {owners} loss, not of the chosen loss {loss!r}" in str(err.value)


def test_loss_fields_at_their_defaults_pass_and_a_dumped_config_revalidates():
    """The worker re-validates a dumped config, which carries every loss field at its default."""
    for loss in LOSS_NAMES:
        config = TrainConfig(loss=loss)
        assert TrainConfig.model_validate(config.model_dump(mode="json")) == config
    # Explicitly given, but equal to the default: nothing would be ignored.
    assert TrainConfig(loss="supcon", margin=None, l2_reg=0.0, mining="semihard").loss_params() == {}
    want = {"margin": 0.3, "mining": "semihard", "soft": False}
    assert TrainConfig(loss="triplet", margin=0.3).loss_params() == want


def test_check_encoder_fits_names_the_encoder_field():
    with pytest.raises(ValueError, match=r"^encoder 'cnn' needs image data.*\(64,\).*encoder 'mlp'") as err:
        check_encoder_fits(TrainConfig(encoder="cnn"), (64,))
    assert "--" not in str(err.value), "the service shows it too: name the field, not a CLI flag"
    check_encoder_fits(TrainConfig(encoder="cnn"), (1, 8, 8))
    check_encoder_fits(TrainConfig(encoder="mlp"), (64,))
    check_encoder_fits(TrainConfig(encoder="mlp"), (3, 28, 28))


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_help_shows_the_out_default_and_the_quick_grid_limit(capsys):
    assert "parent directory for the model directory (default: models)" in help_text(capsys, "train")
    assert "2 epochs, on a stratified 1000-sample subset (--limit 1000)" in help_text(capsys, "compare")
