"""One cell, in its own child process (``python -m trainer.compare CELL_DIR``): train, evaluate, record."""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.compare.grid import CELL_FILE, CHILD_RESULT, PCA_FILE, read_json, write_json
from trainer.compare.results import KNN, PROBE
from trainer.config import TrainConfig

if TYPE_CHECKING:
    import numpy as np

    from trainer.data import Dataset


def run_cell(cell_dir: Path) -> None:
    """Train one cell as ``cell.json`` describes; leave ``result.json`` and ``pca.npz`` beside it."""
    import numpy as np
    import torch

    from trainer.data import load_dataset
    from trainer.export import load_scripted
    from trainer.metrics import evaluate_embeddings, linear_probe_accuracy, pca_2d
    from trainer.train import CHECKPOINT_FILE, embed, train

    job = read_json(cell_dir / CELL_FILE)
    torch.set_num_threads(job["threads"])
    config = TrainConfig.model_validate(job["config"])
    dataset = load_dataset(str(config.dataset), root=Path(job["data_root"]))
    if job["limit"]:
        dataset = _stratified_subset(dataset, job["limit"])
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory(dir=cell_dir) as tmp:
        result = train(config, out_dir=tmp, dataset=dataset)
        assert result is not None  # None only on the non-zero ranks of a torchrun job
        splits = result.splits
        test = splits.test if splits.test is not None else splits.val
        # train() exports the best-validation epoch; the article evaluates the weights after the last
        # epoch, which train()'s checkpoint (<out>/.runs/<name>/) holds. Evaluate those as well.
        encoder = load_scripted(Path(result.model_dir) / "encoder.pt")
        best_mean_cosine = _mean_cosine(embed(encoder, test.x, cpu))
        checkpoint = torch.load(
            Path(tmp) / ".runs" / result.card.model_id / CHECKPOINT_FILE, map_location=cpu, weights_only=False
        )
        encoder.load_state_dict(
            {
                k.removeprefix("encoder."): v
                for k, v in checkpoint["model"].items()
                if k.startswith("encoder.")
            }
        )
    train_emb, test_emb = embed(encoder, splits.train.x, cpu), embed(encoder, test.x, cpu)
    last_epoch = {
        PROBE: linear_probe_accuracy(train_emb, splits.train.y, test_emb, test.y, seed=config.seed),
        KNN: evaluate_embeddings(train_emb, splits.train.y, test_emb, test.y, "cosine")[KNN],
        "mean_cosine": _mean_cosine(test_emb),
    }
    np.savez_compressed(  # the PCA figure shows the last-epoch embeddings, as the article's does
        cell_dir / PCA_FILE,
        points=pca_2d(test_emb).astype(np.float16),
        labels=test.y.astype(np.int16),
        label_names=np.array(dataset.label_names),
    )
    write_json(
        cell_dir / CHILD_RESULT,
        {
            "metrics": result.card.metrics,
            "best_epoch": {"mean_cosine": best_mean_cosine},
            "last_epoch": last_epoch,
            "history": result.history,
            "dataset": result.card.dataset.model_dump(mode="json"),
            "steps_per_epoch": result.history[-1]["steps"],
            "train_seconds": round(result.seconds, 2),
        },
    )


def _stratified_subset(dataset: Dataset, limit: int) -> Dataset:
    """``limit`` samples in the class proportions of the whole set (fixed, seed 0, for every cell)."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    if limit >= len(dataset):
        return dataset
    index = np.arange(len(dataset))
    try:
        keep, _ = train_test_split(index, train_size=limit, stratify=dataset.y, random_state=0)
    except ValueError:  # a class too small to stratify
        keep, _ = train_test_split(index, train_size=limit, random_state=0)
    return dataset.subset(np.sort(keep))


def _mean_cosine(emb: np.ndarray) -> float:
    """Mean cosine similarity over distinct pairs of unit embeddings: near 1 means collapse."""
    import numpy as np

    n = len(emb)
    if n < 2:
        return float("nan")
    total = np.asarray(emb, dtype=np.float64).sum(axis=0)
    return float((total @ total - n) / (n * (n - 1)))


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if len(argv) != 1:
        print(
            "usage: python -m trainer.compare CELL_DIR (run by `python -m trainer compare`)", file=sys.stderr
        )
        return 2
    run_cell(Path(argv[0]))
    return 0
