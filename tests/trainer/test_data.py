"""Loaders, splits, the P×K sampler and augmentations on small generated data (plus the two built-ins)."""

from __future__ import annotations

import gzip
import os
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.card import ImageInput, VectorInput
from trainer.data import (
    BUILTIN_DATASETS,
    DataError,
    Dataset,
    PKSampler,
    Splits,
    align_test_set,
    augment,
    check_pairs_possible,
    dataset_from_arrays,
    load_dataset,
    load_test_dataset,
    resolve_dataset_path,
    split_dataset,
    two_views,
)

# --- factories ----------------------------------------------------------------------------


def make_vectors(counts: list[int], dim: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``counts[c]`` float vectors of class ``c``."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    return rng.normal(size=(len(y), dim)).astype(np.float32), y


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> None:
    """An IDX file as MNIST ships it: magic (0, 0, type 0x08, ndim), big-endian dims, bytes."""
    data = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def write_png(path: Path, size: tuple[int, int], mode: str = "L", value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 20, 200)
    Image.new(mode, size, colour).save(path)


# --- loaders ------------------------------------------------------------------------------


def test_npz_vectors(tmp_path: Path) -> None:
    x, y = make_vectors([4, 6])
    np.savez(tmp_path / "vec.npz", x=x.astype(np.float64), y=y * 4 + 3)  # labels 3 and 7
    ds = load_dataset("vec.npz", root=tmp_path)
    assert ds.x.dtype == np.float32 and ds.x.shape == (10, 5) and ds.kind == "vector"
    assert ds.y.dtype == np.int64 and ds.y.tolist() == y.tolist()
    assert ds.label_names == ["3", "7"] and ds.n_classes == 2 and ds.name == "vec.npz"
    assert ds.input_spec() == VectorInput(dim=5)
    np.testing.assert_allclose(ds.x, x)


def test_npz_uint8_images_keep_their_range(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(6, 4, 5), dtype=np.uint8)
    np.savez(tmp_path / "img.npz", x=x, y=np.array([0, 1, 0, 1, 0, 1]), label_names=np.array(["cat", "dog"]))
    ds = load_dataset(str(tmp_path / "img.npz"))
    assert ds.x.shape == (6, 1, 4, 5) and ds.x.dtype == np.float32 and ds.kind == "image"
    np.testing.assert_array_equal(ds.x[:, 0], x.astype(np.float32))
    assert ds.label_names == ["cat", "dog"] and ds.max_value == 255.0
    assert ds.input_spec() == ImageInput(channels=1, height=4, width=5, max_value=255.0)
    assert ds.input_spec(max_value=1.0).max_value == 1.0


def test_npz_string_labels_are_coded_in_sorted_order(tmp_path: Path) -> None:
    x, _ = make_vectors([5])
    np.savez(tmp_path / "s.npz", x=x, y=np.array(["pear", "apple", "fig", "apple", "pear"]))
    ds = load_dataset(str(tmp_path / "s.npz"))
    assert ds.label_names == ["apple", "fig", "pear"]
    assert ds.y.tolist() == [2, 0, 1, 0, 2]


def test_arrays_channels_last_and_max_value_rules() -> None:
    y = np.array([0, 1])
    rgb = dataset_from_arrays(np.zeros((2, 4, 5, 3), np.uint8), y, name="t")
    assert rgb.x.shape == (2, 3, 4, 5) and rgb.max_value == 255.0
    assert dataset_from_arrays(np.full((2, 3, 3), 0.5), y, name="t").max_value == 1.0
    assert dataset_from_arrays(np.full((2, 3, 3), 200.0), y, name="t").max_value == 255.0
    assert dataset_from_arrays(np.full((2, 3, 3), 1000.0), y, name="t").max_value == 1000.0
    assert dataset_from_arrays(np.ones((2, 3, 3)), y, name="t", max_value=16).max_value == 16.0
    # Integer labels with names: codes follow the values present, names follow the codes.
    named = dataset_from_arrays(np.zeros((3, 2)), np.array([2, 0, 2]), name="t", label_names=["a", "b", "c"])
    assert named.label_names == ["a", "c"] and named.y.tolist() == [1, 0, 1]


def test_csv_with_label_column(tmp_path: Path) -> None:
    rows = ["f1,kind,f2", "1.5,b,2", "0,a,-1", " 3 , b ,4e0"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(str(tmp_path / "t.csv"), label_column="kind")
    assert ds.x.tolist() == [[1.5, 2.0], [0.0, -1.0], [3.0, 4.0]]
    assert ds.label_names == ["a", "b"] and ds.y.tolist() == [1, 0, 1]
    (tmp_path / "n.csv").write_text("a,label\n1,10\n2,2\n3,10\n")
    numeric = load_dataset(str(tmp_path / "n.csv"))
    assert numeric.label_names == ["2", "10"] and numeric.y.tolist() == [1, 0, 1]


@pytest.mark.parametrize("gz", [True, False])
def test_idx_by_naming_and_by_spec(tmp_path: Path, gz: bool) -> None:
    suffix = ".gz" if gz else ""
    images = np.arange(4 * 3 * 2, dtype=np.uint8).reshape(4, 3, 2) * 10
    labels = np.array([1, 0, 1, 0], dtype=np.uint8)
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, gz=gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, gz=gz)
    by_name = load_dataset(f"train-images-idx3-ubyte{suffix}", root=tmp_path)
    by_spec = load_dataset(
        f"idx:{tmp_path / f'train-images-idx3-ubyte{suffix}'},{tmp_path / f'train-labels-idx1-ubyte{suffix}'}"
    )
    for ds in (by_name, by_spec):
        assert ds.x.shape == (4, 1, 3, 2) and ds.max_value == 255.0
        np.testing.assert_array_equal(ds.x[:, 0], images)
        assert ds.y.tolist() == [1, 0, 1, 0] and ds.label_names == ["0", "1"]


def test_image_folder_resizes_to_most_common_size_and_picks_mode(tmp_path: Path) -> None:
    for i in range(3):
        write_png(tmp_path / "gray" / "a" / f"{i}.png", (6, 4))
        write_png(tmp_path / "gray" / "b" / f"{i}.png", (6, 4), value=200)
    write_png(tmp_path / "gray" / "b" / "odd.png", (9, 9), value=200)
    (tmp_path / "gray" / "b" / "notes.txt").write_text("ignored")
    ds = load_dataset(str(tmp_path / "gray"))
    assert ds.x.shape == (7, 1, 4, 6) and ds.label_names == ["a", "b"] and ds.max_value == 255.0
    assert ds.y.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert set(np.unique(ds.x[ds.y == 1])) == {200.0}

    write_png(tmp_path / "mixed" / "a" / "0.png", (5, 5))
    write_png(tmp_path / "mixed" / "b" / "0.png", (5, 5), mode="RGB")
    rgb = load_dataset(str(tmp_path / "mixed"))
    assert rgb.x.shape == (2, 3, 5, 5)
    assert rgb.x[1, :, 0, 0].tolist() == [100.0, 20.0, 200.0]
    assert rgb.x[0, :, 0, 0].tolist() == [100.0, 100.0, 100.0]


def test_builtin_digits() -> None:
    ds = load_dataset("digits")
    assert ds.x.shape == (1797, 1, 8, 8) and ds.x.dtype == np.float32
    assert ds.n_classes == 10 and ds.label_names == [str(i) for i in range(10)]
    assert ds.x.min() == 0.0 and ds.x.max() == 16.0 and ds.max_value == 16.0
    assert ds.input_spec() == ImageInput(channels=1, height=8, width=8, max_value=16.0)


def test_builtin_mnist_5k() -> None:
    ds = load_dataset("mnist-5k")
    assert BUILTIN_DATASETS == ("digits", "mnist-5k", "fashion-mnist")
    assert ds.x.shape == (5000, 1, 28, 28) and ds.x.dtype == np.float32
    assert ds.n_classes == 10 and np.bincount(ds.y).tolist() == [500] * 10
    assert ds.x.min() == 0.0 and ds.x.max() == 255.0 and ds.max_value == 255.0


def write_fashion_mnist(folder: Path, n_train: int = 40, n_test: int = 20) -> None:
    """The four official file names, with tiny random content: class c is c's brightness band."""
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = (labels[:, None, None] * 25 + rng.integers(0, 5, (n, 28, 28))).astype(np.uint8)
        write_idx(folder / f"{part}-images-idx3-ubyte.gz", images, gz=True)
        write_idx(folder / f"{part}-labels-idx1-ubyte.gz", labels, gz=True)


def test_builtin_fashion_mnist_keeps_its_official_test_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fashion_mnist(tmp_path, n_train=40, n_test=20)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    train = load_dataset("fashion-mnist")
    assert train.x.shape == (40, 1, 28, 28) and train.max_value == 255.0 and train.name == "fashion-mnist"
    assert train.label_names[0] == "T-shirt/top" and train.label_names[9] == "Ankle boot"
    test = load_test_dataset("fashion-mnist", None)
    assert test is not None and len(test) == 20
    assert np.array_equal(test.y, np.arange(20) % 10)  # t10k, in its file order
    assert load_test_dataset("digits", None) is None  # no official split: the trainer splits one off


def test_fashion_mnist_missing_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist")
    message = str(info.value)
    assert "dataset-fashion-mnist" in message and "apt-get install" in message and "\n" not in message


def test_a_separate_test_set_is_recoded_by_label_name(tmp_path: Path) -> None:
    train = dataset_from_arrays(np.zeros((4, 2)), np.array(["b", "c", "b", "c"]), name="train")
    test = dataset_from_arrays(np.ones((2, 2)), np.array(["c", "b"]), name="test")
    aligned = align_test_set(test, train)
    assert [train.label_names[c] for c in aligned.y] == ["c", "b"]  # by name, not by code
    with pytest.raises(DataError, match="label\\(s\\) 'z' do not occur in train"):
        align_test_set(dataset_from_arrays(np.ones((2, 2)), np.array(["z", "b"]), name="t"), train)
    with pytest.raises(DataError, match="samples of shape \\(3,\\)"):
        align_test_set(dataset_from_arrays(np.ones((2, 3)), np.array(["c", "b"]), name="t"), train)


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((3, 2)), np.array([0, 1]), "x has 3 rows but y has 2 labels"),
        (np.zeros((3, 2)), np.array([4, 4, 4]), "need at least 2 classes, found 1"),
        (np.array([[0.0, np.nan], [1, 2]]), np.array([0, 1]), "NaN or Inf (first in row 0)"),
        (np.array([[0.0, 1], [np.inf, 2]]), np.array([0, 1]), "NaN or Inf (first in row 1)"),
        (np.zeros(4), np.array([0, 1, 0, 1]), "x must be N×D vectors or N×H×W / N×C×H×W images"),
        (np.zeros((2, 2, 2, 2, 2)), np.array([0, 1]), "got shape (2, 2, 2, 2, 2)"),
        (np.zeros((2, 5, 4, 4)), np.array([0, 1]), "images must have 1 or 3 channels"),
        (np.zeros((2, 2)), np.zeros((2, 2)), "y must be a 1-D array"),
        (np.zeros((2, 2)), np.array([0.5, 1.0]), "labels must be integers or strings"),
        (np.zeros((0, 2)), np.zeros(0), "the data set is empty"),
        (np.array([["a", "b"], ["c", "d"]]), np.array([0, 1]), "x must be numeric"),
    ],
)
def test_bad_arrays(x: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match="^toy: ") as info:
        dataset_from_arrays(x, y, name="toy")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_label_names_too_short() -> None:
    with pytest.raises(DataError, match="labels run from 0 to 2 but there are only 2 label_names"):
        dataset_from_arrays(np.zeros((2, 2)), np.array([0, 2]), name="toy", label_names=["a", "b"])


def test_bad_files(tmp_path: Path) -> None:
    def error(spec: str, **kwargs: str) -> str:
        with pytest.raises(DataError) as info:
            load_dataset(spec, **kwargs)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "unknown data set 'nope': not a built-in (digits, mnist-5k, fashion-mnist)" in error("nope")
    (tmp_path / "a.txt").write_text("x")
    assert "unsupported data set format '.txt'" in error(str(tmp_path / "a.txt"))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert f"cannot read {tmp_path / 'bad.npz'}" in error(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "nox.npz", data=np.zeros(3), y=np.zeros(3))
    assert "nox.npz: no array 'x' (found: data, y)" in error(str(tmp_path / "nox.npz"))
    np.savez(tmp_path / "mismatch.npz", x=np.zeros((3, 2)), y=np.array([0, 1]))
    assert "mismatch.npz: x has 3 rows but y has 2 labels" in error(str(tmp_path / "mismatch.npz"))

    (tmp_path / "t.csv").write_text("f1,f2,target\n1,2,a\n3,4,b\n")
    assert "t.csv: no label column 'label' (columns: f1, f2, target)" in error(str(tmp_path / "t.csv"))
    (tmp_path / "nohead.csv").write_text("1,2,0\n3,4,1\n")
    assert "a header row naming the columns is required" in error(str(tmp_path / "nohead.csv"))
    (tmp_path / "text.csv").write_text("f1,label\n1,a\nhello,b\n")
    assert "non-numeric value 'hello' in column 'f1' on line 3" in error(str(tmp_path / "text.csv"))
    (tmp_path / "ragged.csv").write_text("f1,label\n1,a\n2\n")
    assert "line 3 has 1 fields, the header has 2" in error(str(tmp_path / "ragged.csv"))
    (tmp_path / "nan.csv").write_text("f1,label\n1,a\nnan,b\n")
    assert "nan.csv: x contains NaN or Inf (first in row 1)" in error(str(tmp_path / "nan.csv"))

    images = tmp_path / "x-images-idx3-ubyte"
    write_idx(images, np.zeros((3, 2, 2)), gz=False)
    assert "labels file x-labels-idx1-ubyte not found" in error(str(images))
    write_idx(tmp_path / "x-labels-idx1-ubyte", np.zeros(2), gz=False)
    assert "has 3 items but" in error(str(images)) and "has 2 labels" in error(str(images))
    (tmp_path / "y-images-idx3-ubyte").write_bytes(images.read_bytes()[:-3])
    assert "corrupt IDX file: expected 28 bytes for shape (3, 2, 2), found 25" in error(
        f"idx:{tmp_path / 'y-images-idx3-ubyte'},{tmp_path / 'x-labels-idx1-ubyte'}"
    )
    (tmp_path / "z-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"hello world")[:-4])
    truncated = error(f"idx:{tmp_path / 'z-images-idx3-ubyte.gz'},{tmp_path / 'x-labels-idx1-ubyte'}")
    assert truncated.startswith(f"cannot read {tmp_path / 'z-images-idx3-ubyte.gz'}: "), truncated
    (tmp_path / "w-images-idx3-ubyte").write_bytes(b"\x08\x08\x08\x03" + bytes(20))
    assert "not an IDX file (bad magic number)" in error(f"idx:{tmp_path / 'w-images-idx3-ubyte'},x")
    assert "bad IDX spec" in error("idx:")

    write_png(tmp_path / "folder" / "a" / "0.png", (3, 3))
    (tmp_path / "folder" / "b").mkdir()
    (tmp_path / "folder" / "b" / "0.png").write_bytes(b"\x89PNG broken")
    assert f"cannot read image {tmp_path / 'folder' / 'b' / '0.png'}" in error(str(tmp_path / "folder"))
    (tmp_path / "flat").mkdir()
    write_png(tmp_path / "flat" / "0.png", (3, 3))
    assert "no class sub-folders" in error(str(tmp_path / "flat"))


def test_check_pairs_possible() -> None:
    check_pairs_possible(np.array([0, 0, 1, 1]))
    with pytest.raises(DataError, match=r"^1 class\(es\) have only 1 sample \('1'\); losses that compare"):
        check_pairs_possible(np.array([0, 0, 1]))
    ds = dataset_from_arrays(np.zeros((3, 2)), np.array(["a", "b", "b"]), name="toy")
    with pytest.raises(DataError, match=r"^toy: 1 class\(es\) have only 1 sample \('a'\)"):
        check_pairs_possible(ds)


def test_resolve_dataset_path(tmp_path: Path) -> None:
    base = tmp_path / "datasets"
    (base / "sub").mkdir(parents=True)
    (tmp_path / "secret.npz").write_bytes(b"")
    assert resolve_dataset_path("a.npz", base) == base.resolve() / "a.npz"
    assert resolve_dataset_path("sub/b.csv", base) == base.resolve() / "sub" / "b.csv"
    os.symlink(tmp_path / "secret.npz", base / "link.npz")
    os.symlink(tmp_path, base / "up")
    for name in ("../secret.npz", str(tmp_path / "secret.npz"), "sub/../../secret.npz", "link.npz", "up/x"):
        with pytest.raises(DataError, match="escapes the datasets folder"):
            resolve_dataset_path(name, base)
    with pytest.raises(DataError, match="names the datasets folder itself"):
        resolve_dataset_path(".", base)
    with pytest.raises(DataError, match="invalid data set name"):
        resolve_dataset_path("", base)


# --- splits -------------------------------------------------------------------------------


def split(ds: Dataset, seed: int = 0, test: float = 0.2) -> Splits:
    return split_dataset(ds, val_fraction=0.1, calib_fraction=0.1, test_fraction=test, seed=seed)


def split_indices(ds: Dataset, splits: Splits) -> list[np.ndarray]:
    """Each split's rows as indices into ``ds`` (rows of make_vectors are unique)."""
    where = {row.tobytes(): i for i, row in enumerate(ds.x)}
    parts = [splits.train, splits.val, splits.calib] + ([splits.test] if splits.test else [])
    return [np.array([where[row.tobytes()] for row in part.x], dtype=np.int64) for part in parts]


def test_split_is_stratified_disjoint_complete_and_seeded() -> None:
    x, y = make_vectors([100, 60, 40])
    ds = dataset_from_arrays(x, y, name="toy")
    splits = split(ds)
    parts = split_indices(ds, splits)
    everything = np.concatenate(parts)
    assert sorted(everything.tolist()) == list(range(200))  # disjoint and complete
    assert [len(p) for p in parts] == [120, 20, 20, 40]
    for part, fraction in ((splits.val, 0.1), (splits.test, 0.2)):
        assert part is not None
        expected = np.array([100, 60, 40]) * fraction
        assert np.abs(np.bincount(part.y, minlength=3) - expected).max() <= 1
    assert splits.val.label_names == ds.label_names
    again, other = split(ds), split(ds, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, split_indices(ds, again), strict=True))
    assert not np.array_equal(parts[1], split_indices(ds, other)[1])
    info = splits.card_info()
    assert (info.n_train, info.n_val, info.n_calib, info.n_test) == (120, 20, 20, 40)
    assert split(ds, test=0.0).test is None


def test_split_keeps_tiny_classes_in_train_and_two_per_class() -> None:
    x, y = make_vectors([50, 50, 1, 2, 3, 4])
    ds = dataset_from_arrays(x, y, name="toy")
    splits = split(ds)
    train_counts = np.bincount(splits.train.y, minlength=6)
    assert train_counts[2] == 1 and train_counts[3] == 2  # too small to split: all in train
    assert (train_counts[4:] >= 2).all()
    assert sum(len(p) for p in split_indices(ds, splits)) == len(ds)


def test_split_many_classes_few_samples_falls_back_and_keeps_pairs() -> None:
    x, y = make_vectors([3] * 20)  # 60 samples, held-out parts smaller than the 20 classes
    ds = dataset_from_arrays(x, y, name="toy")
    splits = split(ds)
    assert len(splits.val) > 0 and len(splits.calib) > 0 and splits.test is not None and len(splits.test) > 0
    assert np.bincount(splits.train.y, minlength=20).min() >= 2
    check_pairs_possible(splits.train)
    assert sorted(np.concatenate(split_indices(ds, splits)).tolist()) == list(range(60))


def test_split_rejects_bad_fractions() -> None:
    ds = dataset_from_arrays(*make_vectors([5, 5]), name="toy")
    with pytest.raises(DataError, match="must stay below 1"):
        split_dataset(ds, val_fraction=0.5, calib_fraction=0.3, test_fraction=0.2, seed=0)
    with pytest.raises(DataError, match=r"val_fraction must be in \[0, 1\)"):
        split_dataset(ds, val_fraction=-0.1, calib_fraction=0.1, test_fraction=0.1, seed=0)


# --- P×K sampler --------------------------------------------------------------------------


def test_sampler_batches_are_p_by_k_and_cover_every_sample() -> None:
    labels = np.repeat(np.arange(6), [40, 13, 8, 5, 2, 1])  # imbalanced, some classes smaller than K
    sampler = PKSampler(labels, batch_size=16, samples_per_class=4, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) and sampler.batch_size == 16
    for batch in batches:
        counts = Counter(labels[batch].tolist())
        assert len(counts) == 4 and set(counts.values()) == {4}
        for c in counts:  # no repeats within a class's K unless the class has fewer than K samples
            members = [i for i in batch if labels[i] == c]
            assert len(set(members)) == min(4, int((labels == c).sum()))
    assert set(np.concatenate(batches).tolist()) == set(range(len(labels)))
    # The fewest batches that fit every chunk: max(ceil(chunks / P), most chunks of one class).
    assert len(sampler) == max(-(-(10 + 4 + 2 + 2 + 1 + 1) // 4), 10)


def test_sampler_is_deterministic_per_seed_and_epoch() -> None:
    labels = np.repeat(np.arange(5), 12)
    a, b = PKSampler(labels, 12, 3, seed=0), PKSampler(labels, 12, 3, seed=0)
    assert list(a) == list(b) and list(a) == list(a)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(PKSampler(labels, 12, 3, seed=1)) != list(PKSampler(labels, 12, 3, seed=0))


def test_sampler_with_few_classes_raises_k_to_fill_the_batch() -> None:
    labels = np.repeat([0, 1, 2], 10)
    sampler = PKSampler(labels, batch_size=64, samples_per_class=4)
    assert (sampler.p, sampler.k) == (3, 21)
    for batch in sampler:
        assert len(batch) == 63
        assert sorted(np.bincount(labels[batch]).tolist()) == [21, 21, 21]


@pytest.mark.parametrize("world_size", [2, 3])
def test_sampler_rank_shards(world_size: int) -> None:
    labels = np.repeat(np.arange(4), 10)  # 12 chunks of 4 in batches of 2 classes: 6 batches
    single = PKSampler(labels, 8, 4, seed=5)
    single.set_epoch(2)
    everything = list(single)
    shards = []
    for rank in range(world_size):
        sampler = PKSampler(labels, 8, 4, seed=5, rank=rank, world_size=world_size)
        sampler.set_epoch(2)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler) == -(-len(everything) // world_size)
        assert all(set(Counter(labels[b].tolist()).values()) == {4} for b in shards[-1])
    # Batch b went to rank b % world_size: interleaving the shards gives the single-process epoch.
    interleaved = [shards[b % world_size][b // world_size] for b in range(len(everything))]
    assert interleaved == everything
    assert len({tuple(b) for b in everything}) == len(everything)  # so shards are disjoint


def test_sampler_pads_ranks_to_equal_length() -> None:
    labels = np.repeat(np.arange(2), 4)  # 2 batches for 4 ranks: ranks 2 and 3 repeat them
    shards = [list(PKSampler(labels, 8, 4, rank=r, world_size=4)) for r in range(4)]
    assert [len(s) for s in shards] == [1, 1, 1, 1]
    assert shards[2] == shards[0] and shards[3] == shards[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": [0, 0, 1, 1], "batch_size": 4, "samples_per_class": 4}, "fewer than 2 classes of 4"),
        ({"labels": [0, 0, 0], "batch_size": 4, "samples_per_class": 2}, "at least 2 classes, got 1"),
        ({"labels": [0, 1], "batch_size": 4, "samples_per_class": 0}, "at least 1"),
        ({"labels": [0, 1], "batch_size": 4, "samples_per_class": 2, "rank": 2, "world_size": 2}, "rank"),
    ],
)
def test_sampler_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PKSampler(**kwargs)


# --- augmentation -------------------------------------------------------------------------


def test_augment_images() -> None:
    x = torch.zeros(5, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 255.0
    out = augment(x, "image", torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert not torch.equal(out, x) and out.min() >= 0 and out.max() <= 255
    # A small affine moves the bar a little, not away.
    assert (out[:, :, 8:20, 12:16].mean() > 100).item()
    same = augment(x, "image", torch.Generator().manual_seed(0))
    assert torch.equal(out, same)
    assert not torch.equal(out, augment(x, "image", torch.Generator().manual_seed(1)))
    assert torch.equal(x[:, :, 8:20, 12:16], torch.full((5, 1, 12, 4), 255.0))  # input untouched
    rgb = augment(torch.rand(2, 3, 8, 12, dtype=torch.float64) * 16, "image")
    assert rgb.shape == (2, 3, 8, 12) and rgb.dtype == torch.float64


def test_augment_vectors() -> None:
    x = torch.randn(64, 10, generator=torch.Generator().manual_seed(0)) * 5 + 3
    out = augment(x, "vector", torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.isfinite(out).all() and not torch.equal(out, x)
    dropped = out == 0
    assert 0.03 < dropped.float().mean().item() < 0.2
    kept_change = (out - x)[~dropped].abs() / x.std(dim=0).expand_as(x)[~dropped]
    assert kept_change.mean().item() < 0.2  # noise is small relative to the feature spread
    assert torch.equal(out, augment(x, "vector", torch.Generator().manual_seed(0)))
    assert augment(x[:1], "vector").shape == (1, 10)


def test_two_views_and_bad_input() -> None:
    x = torch.rand(4, 1, 8, 8) * 16
    views = two_views(x, "image", torch.Generator().manual_seed(0))
    assert views.shape == (4, 2, 1, 8, 8) and not torch.equal(views[:, 0], views[:, 1])
    assert two_views(torch.randn(3, 6), "vector").shape == (3, 2, 6)
    with pytest.raises(ValueError, match="image augmentation expects a 4-D batch"):
        augment(torch.zeros(2, 8, 8), "image")
    with pytest.raises(ValueError, match="kind must be 'image' or 'vector'"):
        augment(torch.zeros(2, 8), "text")  # type: ignore[arg-type]
