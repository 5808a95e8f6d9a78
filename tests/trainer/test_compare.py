"""``python -m trainer compare``: the loss-comparison grid on small generated IDX files.

The grid runs for real (subprocesses and all) once per module; the report must be built from the
runs' metrics files, a rerun must skip finished cells, and a crashing cell must be recorded, not fatal.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from trainer.cli import main as cli_main
from trainer.compare import (
    LOSS_ORDER,
    CompareError,
    cell_config,
    check_findings,
    grid_spec,
    group_runs,
    load_runs,
    run_grid,
)

ROOT = Path(__file__).resolve().parents[2]
QUICK_CELLS = 6  # --quick: ce, contrastive, supcon × batch sizes 32, 256 × 1 seed


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> None:
    """An IDX file (the MNIST format): magic 0, 0, type 0x08 (uint8), ndim; big-endian dims; data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def bar_images(n_per_class: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """8×8 images of three bar patterns (horizontal, vertical, diagonal) with noise, 0..255."""
    rng = np.random.default_rng(seed)
    patterns = np.zeros((3, 8, 8), dtype=np.float32)
    patterns[0, 3:5, :] = 1
    patterns[1, :, 3:5] = 1
    patterns[2][np.eye(8, dtype=bool)] = 1
    y = np.repeat(np.arange(3), n_per_class)
    x = patterns[y] * 180 + rng.uniform(0, 75, size=(len(y), 8, 8))
    return x.astype(np.uint8), y.astype(np.uint8)


def write_bars(folder: Path, x: np.ndarray, y: np.ndarray) -> str:
    """Images gzipped, labels plain (the loader takes either); returns the ``idx:`` spec."""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "bars-images-idx3-ubyte.gz", x, gz=True)
    write_idx(folder / "bars-labels-idx1-ubyte", y, gz=False)
    return f"idx:{folder.name}/bars-images-idx3-ubyte.gz,{folder.name}/bars-labels-idx1-ubyte"


def run_compare(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", "trainer", "compare", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def parse_tables(readme: str) -> dict[tuple[str, int], list[float]]:
    """``(loss, batch size)`` → the four means of its table row (probe, kNN-5, last-epoch probe, kNN-5)."""
    rows: dict[tuple[str, int], list[float]] = {}
    for section in re.split(r"^### ", readme, flags=re.M)[1:]:
        batch = int(re.match(r"B = (\d+)", section).group(1))
        for line in section.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 8 and "±" in cells[1]:
                loss = cells[0].removesuffix(" (MLP baseline)")
                rows[(loss, batch)] = [float(c.split("±")[0]) for c in cells[1:5]]
    return rows


@pytest.fixture(scope="module")
def quick_grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, float]:
    """One real ``--quick`` grid on generated IDX files: (working dir, its stderr, seconds it took)."""
    cwd = tmp_path_factory.mktemp("compare")
    spec = write_bars(cwd / "bars", *bar_images())
    start = time.perf_counter()
    proc = run_compare("--quick", "--dataset", spec, "--out", "report", "--jobs", "2", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert f"ran {QUICK_CELLS} run(s) (0 did not finish)" in proc.stdout
    return cwd, proc.stderr, time.perf_counter() - start


def test_quick_grid_writes_report_figures_and_one_metrics_file_per_run(quick_grid):
    cwd, _, _ = quick_grid
    out = cwd / "report"
    for png in ("accuracy_vs_batch_size.png", "pca.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cells = sorted(p.name for p in (out / "runs").iterdir())
    assert len(cells) == QUICK_CELLS
    for cell in cells:
        files = sorted(p.name for p in (out / "runs" / cell).iterdir())
        assert files == ["metrics.json", "pca.npz"], files  # no model, log or temporary left behind
        record = json.loads((out / "runs" / cell / "metrics.json").read_text())
        assert record["status"] == "ok"
        assert record["config"]["augment"] is False and record["config"]["patience"] == 0
        assert record["peak_rss_mb"] > 50 and record["wall_seconds"] > 0
        assert len(record["history"]) == 2  # the quick preset's epochs
        assert record["dataset"]["name"] == "bars-images-idx3-ubyte.gz"
    supcon = json.loads((out / "runs" / "supcon_b32_lr0.001_s0" / "metrics.json").read_text())
    assert supcon["config"]["temperature"] == 0.5  # the article's temperature
    readme = (out / "README.md").read_text()
    assert "--dataset idx:bars/bars-images-idx3-ubyte.gz,bars/bars-labels-idx1-ubyte" in readme
    assert readme.count("> ") >= 6  # every finding of the article is quoted with a verdict
    for verdict_line in re.findall(r"^- \*(?:best-validation|last) epoch\*: \*\*(.+?)\*\*", readme, re.M):
        assert verdict_line in {"confirmed", "partly confirmed", "contradicted", "cannot say"}


def test_tables_are_computed_from_the_metrics_files(quick_grid):
    cwd, _, _ = quick_grid
    out = cwd / "report"
    table = parse_tables((out / "README.md").read_text())
    runs = load_runs(out)
    assert len(table) == QUICK_CELLS == len(runs)
    for run in runs:
        key = (run["cell"]["loss"], run["cell"]["batch_size"])
        expected = [
            run["metrics"]["linear_probe_accuracy"],
            run["metrics"]["knn_5_accuracy"],
            run["last_epoch"]["linear_probe_accuracy"],
            run["last_epoch"]["knn_5_accuracy"],
        ]
        assert table[key] == pytest.approx(expected, abs=5e-5)  # one seed: the mean is the run's value


def test_report_only_regenerates_from_edited_metrics_files(quick_grid, tmp_path):
    out = tmp_path / "report"
    shutil.copytree(quick_grid[0] / "report", out)
    path = out / "runs" / "contrastive_b256_lr0.01_s0" / "metrics.json"
    record = json.loads(path.read_text())
    record["metrics"]["linear_probe_accuracy"] = 0.123456  # a sentinel no run would produce
    path.write_text(json.dumps(record))
    assert cli_main(["compare", "--report-only", "--out", str(out)]) == 0
    assert parse_tables((out / "README.md").read_text())[("contrastive", 256)][0] == 0.1235


def test_rerun_skips_finished_cells(quick_grid):
    cwd, _, first_seconds = quick_grid
    out = cwd / "report"
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*")}
    spec = "idx:bars/bars-images-idx3-ubyte.gz,bars/bars-labels-idx1-ubyte"
    start = time.perf_counter()
    proc = run_compare("--quick", "--dataset", spec, "--out", "report", cwd=cwd)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert f"ran 0 run(s) (0 did not finish), skipped {QUICK_CELLS} done" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*")} == before
    assert seconds < first_seconds
    grid = json.loads((out / "grid.json").read_text())
    assert [s["cells_run"] for s in grid["sessions"]] == [QUICK_CELLS, 0]


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(tmp_path):
    # A class with a single sample: ce trains, but contrastive needs a positive pair in every class.
    x, y = bar_images(n_per_class=20)
    spec = write_bars(tmp_path / "bars", np.concatenate([x, x[:1]]), np.concatenate([y, [7]]))
    args = ["--quick", "--dataset", spec, "--losses", "ce,contrastive", "--batch-sizes", "32"]
    proc = run_compare(*args, "--lrs", "0.001", "--out", "report", "--jobs", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ran 2 run(s) (1 did not finish)" in proc.stdout
    runs = {r["cell"]["loss"]: r for r in load_runs(tmp_path / "report")}
    assert runs["ce"]["status"] == "ok"
    assert runs["contrastive"]["status"] == "failed"
    assert "only 1 sample" in runs["contrastive"]["error"]
    assert (tmp_path / "report" / "runs" / "contrastive_b32_lr0.001_s0" / "run.log").exists()
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "| contrastive | n/a | n/a | n/a | n/a |" in readme and "0/1 ok, 1 FAILED" in readme
    assert "Runs that did not finish" in readme


def test_grid_spec_validates_and_pairs_batch_sizes_with_lrs():
    spec = grid_spec(losses=["ce", "triplet", "triplet:hard"], batch_sizes=[32, 256], lrs=[1e-3, 1e-2])
    assert spec.losses == ("ce", "triplet:semihard", "triplet:hard")
    assert spec.schedule == ((32, 1e-3), (256, 1e-2))
    assert len(spec.cells()) == 3 * 2 * 3  # the full preset's 3 seeds
    full = grid_spec()
    assert full.schedule == ((32, 0.001), (256, 0.01), (2048, 0.2)) and full.temperature == 0.5
    assert len(full.cells()) == 7 * 3 * 3
    with pytest.raises(CompareError, match="unknown loss"):
        grid_spec(losses=["arcface"])
    with pytest.raises(CompareError, match="mining"):
        grid_spec(losses=["triplet:hardest"])
    with pytest.raises(CompareError, match="paired"):
        grid_spec(batch_sizes=[32, 256], lrs=[0.1])
    assert cli_main(["compare", "--losses", "ce,bogus", "--out", "unused"]) == 2


def test_every_loss_gets_a_valid_cell_config_with_only_its_own_parameters():
    """TrainConfig refuses another loss's parameters: the grid's temperature goes to supcon/ntxent only."""
    spec = grid_spec(losses=list(LOSS_ORDER), temperature=0.3)
    for cell in spec.cells():
        config = cell_config(spec, cell)
        assert config.temperature == (0.3 if config.loss in ("supcon", "ntxent") else None), cell.name


def test_an_out_dir_with_other_shared_settings_is_refused(quick_grid, tmp_path):
    out = tmp_path / "report"
    shutil.copytree(quick_grid[0] / "report", out)
    spec = grid_spec(quick=True, dataset="idx:bars/bars-images-idx3-ubyte.gz", epochs=5)
    with pytest.raises(CompareError, match="epochs 2 there vs 5 now"):
        run_grid(spec, out, quiet=True)


def fake_run(loss: str, batch_size: int, seed: int, probe: float, status: str = "ok") -> dict:
    lr = {32: 0.001, 256: 0.01, 2048: 0.2}[batch_size]
    accs = {"linear_probe_accuracy": probe, "knn_5_accuracy": probe}
    return {
        "cell": {"loss": loss, "batch_size": batch_size, "lr": lr, "seed": seed},
        "status": status,
        "wall_seconds": 1.0,
        "peak_rss_mb": 500.0 + batch_size / 10,
        "metrics": accs,
        "last_epoch": {**accs, "mean_cosine": 0.1},
        "dataset": {"label_names": [str(i) for i in range(10)]},
    }


ARTICLE_LIKE = {  # per batch size 32 / 256 / 2048: the pattern the article reports
    "ce": (0.90, 0.88, 0.80),
    "contrastive": (0.93, 0.90, 0.80),
    "triplet:all": (0.92, 0.90, 0.79),
    "triplet:hard": (0.15, 0.14, 0.12),
    "triplet:semihard": (0.95, 0.92, 0.81),
    "npair": (0.94, 0.91, 0.80),
    "supcon": (0.94, 0.93, 0.90),
}


def verdicts(table: dict[str, tuple[float, ...]]) -> list[str]:
    runs = [
        fake_run(loss, b, seed, acc + 0.001 * seed)
        for loss, accs in table.items()
        for b, acc in zip((32, 256, 2048), accs, strict=True)
        for seed in range(3)
    ]
    return [f.verdict for f in check_findings(group_runs(runs), [32, 256, 2048], "best")]


def test_verdicts_follow_the_numbers():
    assert verdicts(ARTICLE_LIKE) == ["confirmed"] * 5 + ["cannot say"]
    reversed_batch = {loss: accs[::-1] for loss, accs in ARTICLE_LIKE.items()}
    assert verdicts(reversed_batch)[2] == "contradicted"  # accuracy rises with batch size
    healthy_hard = {**ARTICLE_LIKE, "triplet:hard": (0.96, 0.93, 0.82)}
    got = verdicts(healthy_hard)
    assert got[0] == "partly confirmed"  # hard mining beat the baseline too
    assert got[1] == "contradicted"  # and it, not semi-hard, is the best triplet variant
    assert got[4] == "contradicted"  # and it did not collapse
    alone = verdicts({"supcon": (0.9, 0.9, 0.9)})  # no baseline, no other loss to compare with
    assert alone == ["cannot say", "cannot say", "contradicted", "cannot say", "cannot say", "cannot say"]


def test_the_summary_sets_every_data_sets_verdicts_side_by_side(quick_grid, tmp_path):
    root = tmp_path / "reproduction"
    for name in ("bars", "bars-b"):
        shutil.copytree(quick_grid[0] / "report", root / name)
        grid = json.loads((root / name / "grid.json").read_text())
        grid["spec"]["dataset"] = name
        (root / name / "grid.json").write_text(json.dumps(grid))
    for record_path in (root / "bars-b" / "runs").glob("*/metrics.json"):
        loss = record_path.parent.name.split("_")[0]  # bars-b now shows the article's first finding exactly
        record = json.loads(record_path.read_text())
        record["last_epoch"]["linear_probe_accuracy"] = {"ce": 0.5, "triplet-hard": 0.0}.get(loss, 1.0)
        record_path.write_text(json.dumps(record))
    (root / "comparison.md").write_text("## Why\n\nHand-written discussion.\n")
    assert cli_main(["compare", "--summary", "--out", str(root)]) == 0
    for name in ("bars", "bars-b"):
        assert cli_main(["compare", "--report-only", "--out", str(root / name)]) == 0
    summary = (root / "README.md").read_text()
    header = next(line for line in summary.splitlines() if line.startswith("| finding |"))
    assert header == "| finding | `bars` | `bars-b` |"
    row = next(line for line in summary.splitlines() if line.startswith("| every contrastive loss"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    for name, cell in zip(("bars", "bars-b"), cells, strict=True):  # each as its own report says
        report = (root / name / "README.md").read_text()
        verdict = re.search(
            r"beats the MLP baseline\n\n- \*best-validation epoch\*: .*\n- \*last epoch\*: \*\*(.+?)\*\*",
            report,
        )
        assert verdict is not None and cell.split(" (")[0] == verdict.group(1), (name, cell)
    assert cells[0] != cells[1], "the edited runs changed bars-b's verdict only"
    assert summary.rstrip().endswith("Hand-written discussion.")
