"""``python -m trainer train|...``: flags are generated from ``TrainConfig`` so the two never drift."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trainer.config import TrainConfig, format_validation_error


class UsageError(Exception):
    """A bad command line or config file: reported in one line, exit status 2."""


def _flag_type(annotation: Any) -> tuple[dict[str, Any], str]:
    """argparse keyword arguments for one pydantic field annotation, plus a metavar hint."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}, ""
    if origin is typing.Literal:
        return {"choices": list(typing.get_args(annotation))}, ""
    if origin is list:
        return {"type": lambda s: [int(v) for v in s.split(",") if v]}, "N,N,..."
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _flag_type(args[0])
        return {"type": str}, ""
    if annotation in (int, float, str):
        return {"type": annotation}, ""
    return {"type": str}, ""


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training config (each flag is a field of the JSON config)")
    for name, info in TrainConfig.model_fields.items():
        kwargs, metavar = _flag_type(info.annotation)
        default = info.get_default(call_default_factory=True)
        help_text = (info.description or "") + f" (default: {default})"
        if metavar:
            kwargs["metavar"] = metavar
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=help_text, **kwargs)


def load_config_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"config file {path} is not valid JSON/YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of config fields")
    return data


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config file (if any), overridden by the flags that were given."""
    data = load_config_file(args.config) if args.config else {}
    data.update(
        {name: getattr(args, name) for name in TrainConfig.model_fields if getattr(args, name) is not None}
    )
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise UsageError(format_validation_error(exc)) from exc


def _progress_printer(quiet: bool):  # type: ignore[no-untyped-def]
    """A tqdm bar per epoch on a TTY; one line per epoch otherwise."""
    from tqdm import tqdm

    from trainer.train import Progress

    interactive = sys.stderr.isatty() and not quiet
    state: dict[str, Any] = {"bar": None}

    def report(p: Progress) -> None:
        if p.phase == "train" and interactive:
            if state["bar"] is None:
                state["bar"] = tqdm(total=p.steps, desc=f"epoch {p.epoch}/{p.epochs}", leave=False)
            bar = state["bar"]
            bar.n = p.step
            bar.set_postfix(loss=f"{p.loss:.4f}")
            bar.refresh()
        elif p.phase == "epoch":
            if state["bar"] is not None:
                state["bar"].close()
                state["bar"] = None
            if not quiet:
                m = p.metrics
                print(
                    f"epoch {p.epoch}/{p.epochs}  loss {m['loss']:.4f}  "
                    f"val kNN-1 {m['val_knn_1_accuracy']:.4f}  kNN-5 {m['val_knn_5_accuracy']:.4f}  "
                    f"MAP@R {m.get('val_map_at_r', float('nan')):.4f}  ({m['seconds']:.1f}s)",
                    file=sys.stderr,
                    flush=True,
                )

    return report


def cmd_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.resume and not config.name:
        raise UsageError("--resume needs --name, the model id of the run to continue")
    from trainer.data import DataError
    from trainer.train import TrainError, train

    try:
        result = train(
            config,
            out_dir=Path(args.out),
            data_root=Path.cwd(),
            progress=_progress_printer(args.quiet),
            resume=args.resume,
        )
    except (DataError, TrainError) as exc:
        raise UsageError(str(exc)) from exc
    if result is None:  # a non-zero rank of a torchrun job: rank 0 reports
        return 0
    print(f"{'metric':<28} value")
    for key, value in result.card.metrics.items():
        print(f"{key:<28} {value:.4f}")
    if result.card.threshold:
        t = result.card.threshold
        print(f"{'threshold (cosine dist.)':<28} {t.distance:.4f}  (calib FAR {t.far:.4f}, TAR {t.tar:.4f})")
        if t.test is not None:
            print(f"{'  on the ' + t.test.split + ' pairs':<28} FAR {t.test.far:.4f}, TAR {t.test.tar:.4f}")
    print(f"model directory: {result.model_dir}")
    return 0


def _csv(cast: Any) -> Any:
    """argparse type for a comma-separated list: ``"32,256"`` → ``[32, 256]``."""

    def parse(text: str) -> list[Any]:
        try:
            return [cast(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"not a comma-separated list of {cast.__name__}: {text!r}"
            ) from exc

    return parse


def cmd_compare(args: argparse.Namespace) -> int:
    from trainer.compare import (
        QUICK_OUT,
        REPRODUCTION,
        CompareError,
        default_out,
        grid_spec,
        render_report,
        render_summary,
        run_grid,
    )

    if args.summary:
        print(f"summary: {render_summary(Path(args.out) if args.out else REPRODUCTION)}")
        return 0
    out = Path(args.out) if args.out else QUICK_OUT if args.quick else default_out(args.dataset or "mnist-5k")
    try:
        if args.report_only:
            print(f"report: {render_report(out)}")
            return 0
        spec = grid_spec(
            quick=args.quick,
            dataset=args.dataset,
            losses=args.losses,
            batch_sizes=args.batch_sizes,
            lrs=args.lrs,
            seeds=args.seeds,
            epochs=args.epochs,
            temperature=args.temperature,
            limit=args.limit,
        )
        summary = run_grid(
            spec, out, jobs=args.jobs, timeout=args.timeout, retry_failed=args.retry_failed, quiet=args.quiet
        )
    except CompareError as exc:
        raise UsageError(str(exc)) from exc
    except FileNotFoundError as exc:  # --report-only on a folder without a grid
        raise UsageError(f"no grid in {out}: {exc.filename} is missing") from exc
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(
        f"ran {summary.ran} run(s) ({summary.failed} did not finish), skipped {summary.skipped} done, "
        f"in {summary.seconds / 60:.1f} min; report: {summary.report}"
    )
    return 0


def quick_help() -> str:
    """``--quick``'s help, read from the preset itself so the two cannot drift."""
    from trainer.compare import QUICK_PRESET as preset  # light: compare's parent side imports no torch

    seeds = f"{preset['seeds']} seed" + ("" if preset["seeds"] == 1 else "s")
    limit = preset["limit"]
    return (
        f"tiny grid for a smoke test: {','.join(preset['losses'])} × "
        f"{','.join(map(str, preset['batch_sizes']))}, {seeds}, {preset['epochs']} epochs"
        + (f", on a stratified {limit}-sample subset (--limit {limit})" if limit else "")
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train, evaluate and export one model")
    p_train.add_argument("--config", help="JSON or YAML file with config fields; flags override it")
    p_train.add_argument(
        "--out", default="models", help="parent directory for the model directory (default: %(default)s)"
    )
    p_train.add_argument(
        "--resume", action="store_true", help="continue the run named --name from its checkpoint"
    )
    p_train.add_argument("--quiet", action="store_true", help="no progress output")
    add_config_flags(p_train)
    p_train.set_defaults(func=cmd_train)

    p_compare = sub.add_parser(
        "compare",
        help="reproduce the seed article: train every loss × batch size × seed, write a report",
        description="Runs the grid (each run in its own process; resumable: finished runs are skipped) "
        "and writes OUT/README.md with tables, the article's findings checked, and figures. "
        "Unset flags take the full preset (the article's grid) or, with --quick, a tiny one.",
    )
    p_compare.add_argument("--dataset", help="any --dataset of `train` (default: mnist-5k)")
    p_compare.add_argument(
        "--losses",
        type=_csv(str),
        metavar="L,L,...",
        help="ce, contrastive, triplet:all|hard|semihard, npair, supcon, ntxent "
        "(default: all but ntxent; ce is the MLP baseline)",
    )
    p_compare.add_argument("--batch-sizes", type=_csv(int), metavar="N,N,...", help="default: 32,256,2048")
    p_compare.add_argument(
        "--lrs",
        type=_csv(float),
        metavar="LR,LR,...",
        help="one per batch size, paired (default: 0.001,0.01,0.2)",
    )
    p_compare.add_argument("--seeds", type=int, help="seeds 0..N-1 per cell (default: 3)")
    p_compare.add_argument("--epochs", type=int, help="epochs of every run (default: 30)")
    p_compare.add_argument(
        "--temperature", type=float, help="supcon/ntxent temperature (default: 0.5, as the article)"
    )
    p_compare.add_argument(
        "--limit", type=int, help="train on a stratified subset of N samples (default: all)"
    )
    p_compare.add_argument("--quick", action="store_true", help=quick_help())
    p_compare.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at a time; torch threads per run = cores / jobs (default: 1)",
    )
    p_compare.add_argument(
        "--timeout", type=float, default=1800, help="seconds per run before it is killed (default: 1800)"
    )
    p_compare.add_argument(
        "--retry-failed", action="store_true", help="rerun cells recorded as failed/oom/timeout"
    )
    p_compare.add_argument(
        "--report-only", action="store_true", help="only regenerate the report from OUT's runs"
    )
    p_compare.add_argument(
        "--out",
        help="output folder (default: docs/reproduction/<data set>; runs/compare-quick with --quick; "
        "with --summary: the folder holding the data sets' folders, docs/reproduction)",
    )
    p_compare.add_argument(
        "--summary",
        action="store_true",
        help="only write docs/reproduction/README.md: every data set's findings side by side",
    )
    p_compare.add_argument("--quiet", action="store_true", help="no progress output")
    p_compare.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it narrates its CPU-feature probing
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
