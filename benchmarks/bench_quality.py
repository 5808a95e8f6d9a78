"""Quality of the default training recipes against the field's numbers (issue #14): a benchmark, not a test.

    .venv/bin/python benchmarks/bench_quality.py [--only mnist|fashion|NAME,...] [--threads N] [--out DIR]
        [--json OUT]

Each recipe is one ``python -m trainer train`` command with the CLI defaults (only the data set and the
encoder are named), run as a child process, timed from start to exit (data loading, training, evaluation,
report and export). The numbers come from the model card it writes: test-split kNN-5 accuracy, MAP@R,
TAR at FAR 1 %, and the FAR/TAR that the calibrated threshold (chosen on the calibration split) achieves
on the test pairs. A recipe passes when every target holds, the wall time is within its budget, and the
achieved test FAR lies within [0.5x, 2x] of the target FAR.

``fashion-mnist`` needs Debian's ``dataset-fashion-mnist`` package (``make data``). Runs go one at a time;
the CPU time of the child (user + system) and the load average are printed beside the wall time, so a run
on a shared machine can be told apart from a slow one. ``--threads N`` sets ``OMP_NUM_THREADS`` for the
child (torch's and FAISS's threads): on a 2-core machine that other jobs keep busy, one thread is several
times faster than two, which spin waiting for each other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FAR_BAND = (0.5, 2.0)  # the achieved test FAR must lie within these multiples of the target


@dataclass(frozen=True)
class Recipe:
    name: str
    args: tuple[str, ...]
    targets: dict[str, float]  # card metric -> minimum
    budget_s: float | None = None  # wall-time limit, when the issue sets one
    group: str = field(default="")


RECIPES = (
    Recipe("mnist-5k-mlp", ("--dataset", "mnist-5k"), {"tar_at_far_0.01": 0.80}, group="mnist"),
    Recipe(
        "mnist-5k-cnn",
        ("--dataset", "mnist-5k", "--encoder", "cnn"),
        {"knn_5_accuracy": 0.98, "map_at_r": 0.90, "tar_at_far_0.01": 0.93},
        group="mnist",
    ),
    Recipe(
        "fashion-mlp", ("--dataset", "fashion-mnist"), {"knn_5_accuracy": 0.88}, budget_s=600, group="fashion"
    ),
    Recipe(
        "fashion-cnn",
        ("--dataset", "fashion-mnist", "--encoder", "cnn"),
        {"knn_5_accuracy": 0.91, "tar_at_far_0.01": 0.70},
        budget_s=1800,
        group="fashion",
    ),
)
SHOWN = ("knn_5_accuracy", "map_at_r", "tar_at_far_0.01", "eer", "linear_probe_accuracy")


def run_recipe(recipe: Recipe, out: Path, threads: int | None) -> dict[str, Any]:
    """Train one recipe in a child process and read its card; the child's wall and CPU seconds with it."""
    name = f"bench-{recipe.name}"
    cmd = [sys.executable, "-m", "trainer", "train", *recipe.args]
    cmd += ["--name", name, "--out", str(out), "--quiet"]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        return {"recipe": recipe.name, "error": proc.stderr.strip().splitlines()[-1:], "wall_s": wall}
    prefix = [f"OMP_NUM_THREADS={threads}"] if threads else []
    return {
        "recipe": recipe.name,
        "command": " ".join([*prefix, "python -m trainer train", *recipe.args]),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "card": json.loads((out / name / "model.json").read_text()),
    }


def verdict(recipe: Recipe, result: dict[str, Any]) -> list[str]:
    """What missed: each target below its minimum, the budget, and the achieved FAR outside the band."""
    if "error" in result:
        return [f"failed: {result['error']}"]
    metrics, threshold = result["card"]["metrics"], result["card"].get("threshold") or {}
    missed = [
        f"{k} {metrics.get(k, float('nan')):.4f} < {v}"
        for k, v in recipe.targets.items()
        if not metrics.get(k, 0.0) >= v
    ]
    if recipe.budget_s is not None and result["wall_s"] > recipe.budget_s:
        missed.append(f"wall {result['wall_s']:.0f}s > {recipe.budget_s:.0f}s")
    test = threshold.get("test")
    low, high = (f * threshold.get("target_far", 0.0) for f in FAR_BAND)
    if test is None:
        missed.append("no test operating point in the card")
    elif not low <= test["far"] <= high:
        missed.append(f"test FAR {test['far']:.4f} outside [{low:g}, {high:g}]")
    return missed


HEAD = (
    "recipe",
    *SHOWN,
    "test FAR / TAR at the threshold (same + different pairs)",
    "epochs (best)",
    "wall s",
    "CPU s",
    "load",
    "verdict",
)


def table_row(recipe: Recipe, result: dict[str, Any]) -> str:
    missed = verdict(recipe, result)
    if "error" in result:
        return f"| {recipe.name} |" + " |" * (len(HEAD) - 2) + f" {missed[0]} |"
    m, t = result["card"]["metrics"], result["card"].get("threshold") or {}
    test = t.get("test")
    point = (
        f"{test['far']:.4f} / {test['tar']:.4f} ({test['n_same']:,} + {test['n_different']:,})"
        if test
        else "-"
    )
    cells = [
        recipe.name,
        *(f"{m.get(k, float('nan')):.4f}" for k in SHOWN),
        point,
        f"{m.get('epochs_run', 0):.0f} ({m.get('best_epoch', 0):.0f})",
        f"{result['wall_s']:.0f}",
        f"{result['cpu_s']:.0f}",
        "{:.1f} → {:.1f}".format(*result["load"]),
        "pass" if not missed else "; ".join(missed),
    ]
    return "| " + " | ".join(cells) + " |"


def table(rows: list[tuple[Recipe, dict[str, Any]]]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    return "\n".join(lines + [table_row(recipe, result) for recipe, result in rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="mnist, fashion, or recipe names, comma-separated")
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs (default: unset)"
    )
    parser.add_argument("--out", type=Path, default=None, help="keep the model directories here")
    parser.add_argument("--json", type=Path, default=None, help="write every result as JSON")
    args = parser.parse_args()
    wanted = {w for w in args.only.split(",") if w}
    recipes = [r for r in RECIPES if not wanted or r.name in wanted or r.group in wanted]
    if not recipes:
        parser.error(f"--only {args.only!r} names no recipe; recipes: {', '.join(r.name for r in RECIPES)}")
    threads = args.threads or os.environ.get("OMP_NUM_THREADS", "unset")
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={threads}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        out = args.out or Path(tmp)
        for recipe in recipes:
            print(f"running {recipe.name}: python -m trainer train {' '.join(recipe.args)}", flush=True)
            rows.append((recipe, run_recipe(recipe, out, args.threads)))
            print(table_row(*rows[-1]), flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([r for _, r in rows], indent=1))
    return 0 if all(not verdict(recipe, result) for recipe, result in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
