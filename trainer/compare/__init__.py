"""Reproduce the seed article's loss comparison: a grid of training runs and a report generated from them.

The grid is losses × (batch size, learning rate) pairs × seeds, every run the same encoder and
epochs, evaluated the article's two-stage way (frozen encoder + linear classifier) and by kNN-5.

Each cell is one ``trainer.train.train`` call in its own subprocess (``python -m trainer.compare
CELL_DIR``): a cell that crashes, runs out of memory or times out is recorded as such instead of
ending the grid, and its peak memory is the child's own ``ru_maxrss``. A finished cell leaves
``<out>/runs/<cell>/metrics.json`` (written only by the parent, atomically), so a rerun skips it:
that is the whole resume mechanism. ``README.md`` and the figures are rendered from those files
alone, never from in-memory results, so ``--report-only`` regenerates them from disk.

One module per concern, in the order data flows: ``grid`` (what to run), ``runner`` (the parent
that runs cells as child processes), ``cell`` (one run, in the child), ``results`` (runs grouped
per loss and batch size), ``findings`` (the article's claims judged from them), ``report``
(README.md and figures). The parent side imports no torch.
"""

from trainer.compare.findings import FINDINGS, Finding, check_findings
from trainer.compare.grid import (
    FULL_PRESET,
    LOSS_ORDER,
    QUICK_OUT,
    QUICK_PRESET,
    REPRODUCTION,
    Cell,
    CompareError,
    GridSpec,
    cell_config,
    default_out,
    grid_spec,
)
from trainer.compare.report import render_report, render_summary
from trainer.compare.results import group_runs, load_runs
from trainer.compare.runner import RunSummary, machine_info, run_grid

__all__ = [
    "REPRODUCTION",
    "default_out",
    "FINDINGS",
    "FULL_PRESET",
    "LOSS_ORDER",
    "QUICK_OUT",
    "QUICK_PRESET",
    "Cell",
    "CompareError",
    "Finding",
    "GridSpec",
    "RunSummary",
    "cell_config",
    "check_findings",
    "grid_spec",
    "group_runs",
    "load_runs",
    "machine_info",
    "render_report",
    "render_summary",
    "run_grid",
]
