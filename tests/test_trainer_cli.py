"""``python -m trainer train`` as a real subprocess: success, config files, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer.card import read_card
from trainer.cli import build_parser, config_from_args

ROOT = Path(__file__).resolve().parents[1]


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
