"""Distributed training on this CPU: 2 gloo processes under torchrun.

1. One training step per loss on two ranks equals one step of a single process on both ranks'
   batches concatenated (loss value and every parameter gradient, float64, within 1e-5).
2. A short 2-process torchrun training run on digits produces a loadable model directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.card import read_card
from trainer.export import load_scripted

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
pytestmark = pytest.mark.timeout(300)


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_ranks_match_one_process_on_the_concatenated_batch(tmp_path):
    script = str(ROOT / "tests" / "trainer" / "ddp_step.py")
    run([sys.executable, script, str(tmp_path / "single.pt")], ROOT)
    run([*TORCHRUN, script, str(tmp_path / "ddp.pt")], ROOT)
    single = torch.load(tmp_path / "single.pt")
    ddp = torch.load(tmp_path / "ddp.pt")
    assert set(single) == set(ddp) and len(single) == 9
    for case in single:
        assert ddp[case]["loss"] == pytest.approx(single[case]["loss"], abs=1e-5), case
        assert set(ddp[case]["grads"]) == set(single[case]["grads"]) and single[case]["grads"], case
        for name, grad in single[case]["grads"].items():
            assert torch.allclose(ddp[case]["grads"][name], grad, atol=1e-5, rtol=0), (case, name)
            assert grad.abs().sum() > 0, f"{case}: {name} got no gradient, the comparison would be empty"


def test_torchrun_trains_digits_into_a_loadable_model(tmp_path):
    proc = run(
        [*TORCHRUN, "-m", "trainer", "train", "--dataset", "digits", "--epochs", "2", "--name", "ddp-digits",
         "--out", str(tmp_path), "--quiet", "--loss", "supcon"],
        tmp_path,
    )  # fmt: skip
    assert proc.stdout.count("model directory:") == 1, "only rank 0 reports and exports"
    card = read_card(tmp_path / "ddp-digits")
    assert card.versions["world_size"] == "2"
    assert card.metrics["knn_5_accuracy"] > 0.8
    module = load_scripted(tmp_path / "ddp-digits" / "encoder.pt")
    with torch.no_grad():
        out = module(torch.rand(3, 1, 8, 8) * 16)
    assert out.shape == (3, card.embedding_dim)
    assert not (tmp_path / ".runs" / "ddp-digits" / "checkpoint.tmp").exists()
