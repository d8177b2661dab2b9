"""MNIST and Fashion-MNIST, found locally or downloaded, verified by checksum.

Where the files are looked for, in which order, and how they are verified and downloaded:
``jaxopt_zoo.data.files`` (its names are also importable from here, as before).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxopt_zoo.data import idx
from jaxopt_zoo.data.files import (
    CHECKSUMS,
    ENV_VAR,
    MIRRORS,
    SYSTEM_DIRS,
    PathLike,
    cache_dir,
    download_file,
    find_verified,
    not_found_message,
    search_dirs,
)
from jaxopt_zoo.data.idx import DataError, DataNotFoundError

# Re-exported: importable from here as before the split (``datasets.CHECKSUMS``, ...).
__all__ = [
    "CHECKSUMS",
    "DATASET_NAMES",
    "ENV_VAR",
    "MIRRORS",
    "SYSTEM_DIRS",
    "Dataset",
    "PathLike",
    "cache_dir",
    "find_verified",
    "load",
    "load_fashion_mnist",
    "load_mnist",
    "not_found_message",
]

DATASET_NAMES = ("mnist", "fashion_mnist")

_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class Dataset(NamedTuple):
    """Images and labels of one split.

    `images` is uint8 of shape (N, 28, 28), or float32 in [0, 1] of shape (N, 28, 28, 1) when
    loaded with `normalize=True`; `labels` is int32 of shape (N,).
    """

    images: np.ndarray
    labels: np.ndarray

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])


def _load_file(name: str, filename: str, data_dir: PathLike | None, download: bool) -> np.ndarray:
    """Finds, verifies and parses one file of dataset `name`; see ``jaxopt_zoo.data.files``."""
    dirs = search_dirs(name, data_dir)
    path, content, tried = find_verified(name, filename, dirs, explicit=data_dir is not None)
    if path is not None:
        return idx.parse_idx(content, os.fspath(path))

    errors: list[str] = []
    if download:
        target = Path(data_dir) if data_dir is not None else cache_dir(name)
        array = download_file(name, filename, target, errors)
        if array is not None:
            return array
    raise DataNotFoundError(
        not_found_message(
            f"Could not find {name} file {filename} (.gz or raw).",
            tried,
            errors if download else None,
            f"To fix: put the four {name} files in a directory and pass data_dir=<dir> or set "
            f"{ENV_VAR}=<dir>, or load with download=True on a machine with internet access.",
        )
    )


def _check_name(name: str) -> str:
    key = name.lower().replace("-", "_")
    if key not in DATASET_NAMES:
        raise ValueError(f"Unknown dataset {name!r}: expected one of {DATASET_NAMES}")
    return key


def load(
    name: str,
    split: str = "train",
    data_dir: PathLike | None = None,
    *,
    normalize: bool = False,
    download: bool = True,
    validation_size: int = 0,
    seed: int = 0,
) -> Dataset | tuple[Dataset, Dataset]:
    """Loads one split of MNIST or Fashion-MNIST, verified against known sha256 checksums.

    Args:
        name: "mnist" or "fashion_mnist".
        split: "train" (60,000 examples) or "test" (10,000).
        data_dir: the directory holding the files; see ``jaxopt_zoo.data.files`` for the lookup
            order without it. An explicit `data_dir` is the only place looked at.
        normalize: return float32 images in [0, 1] of shape (N, 28, 28, 1) instead of uint8
            images of shape (N, 28, 28).
        download: download missing files from the public mirrors.
        validation_size: with split="train", hold out this many examples: the held-out indices
            are the first `validation_size` of `np.random.default_rng(seed).permutation(N)`.
            Both parts keep the file's order, and the same seed gives the same split.
        seed: the seed of that permutation.

    Returns:
        A `Dataset(images, labels)`, or `(train, validation)` when `validation_size > 0`.

    Raises:
        DataNotFoundError: the files are nowhere to be found or downloaded; lists where it looked.
        DataError: a file is corrupt (checksum mismatch, bad gzip, malformed IDX).

    Example:
        >>> train, val = load("mnist", "train", validation_size=5000)
        >>> train.images.shape, val.labels.shape
        ((55000, 28, 28), (5000,))
    """
    name = _check_name(name)
    if split not in _SPLIT_FILES:
        raise ValueError(f"Invalid split {split!r}: expected 'train' or 'test'")
    if isinstance(validation_size, bool) or not isinstance(validation_size, (int, np.integer)):
        raise TypeError(f"validation_size must be an int, got {validation_size!r}")
    if validation_size < 0:
        raise ValueError(f"Invalid validation_size: {validation_size} (expected >= 0)")
    if validation_size and split != "train":
        raise ValueError(f"validation_size={validation_size} needs split='train', got {split!r}")

    images_file, labels_file = _SPLIT_FILES[split]
    images = _load_file(name, images_file, data_dir, download)
    labels = _load_file(name, labels_file, data_dir, download)
    if (
        images.dtype != np.uint8
        or images.ndim != 3
        or labels.dtype != np.uint8
        or labels.ndim != 1
        or images.shape[0] != labels.shape[0]
    ):
        raise DataError(
            f"{name} {split}: expected uint8 images (N, H, W) and uint8 labels (N,), found "
            f"images {images.dtype}{images.shape} and labels {labels.dtype}{labels.shape}"
        )
    n = labels.shape[0]
    if validation_size >= n:
        raise ValueError(
            f"Invalid validation_size: {validation_size} (expected < {n}, the size of {split})"
        )

    labels = labels.astype(np.int32)
    if not validation_size:
        return Dataset(_images(images, normalize), labels)
    perm = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = np.sort(perm[:validation_size]), np.sort(perm[validation_size:])
    return (
        Dataset(_images(images[train_idx], normalize), labels[train_idx]),
        Dataset(_images(images[val_idx], normalize), labels[val_idx]),
    )


def _images(images: np.ndarray, normalize: bool) -> np.ndarray:
    """uint8 (N, H, W) as is, or float32 (N, H, W, 1) in [0, 1] computed in one pass."""
    if not normalize:
        return images
    out = np.empty(images.shape + (1,), np.float32)
    np.divide(images[..., None], np.float32(255), out=out)
    return out


def load_mnist(
    split: str = "train",
    data_dir: PathLike | None = None,
    *,
    normalize: bool = False,
    download: bool = True,
    validation_size: int = 0,
    seed: int = 0,
) -> Dataset | tuple[Dataset, Dataset]:
    """Loads MNIST; `load("mnist", ...)` describes the arguments.

    Args:
      split: ``"train"`` or ``"test"``.
      data_dir: the folder holding the files (default: ``$JAXOPT_ZOO_DATA``, then the cache).
      normalize: float32 images in [0, 1] of shape ``(N, 28, 28, 1)``.
      download: download missing files.
      validation_size: hold out this many training examples (then a pair is returned).
      seed: the seed of the hold-out permutation.

    Example:
      >>> test = load_mnist("test", normalize=True)
      >>> test.images.shape, test.labels.shape
      ((10000, 28, 28, 1), (10000,))
    """
    return load(
        "mnist",
        split,
        data_dir,
        normalize=normalize,
        download=download,
        validation_size=validation_size,
        seed=seed,
    )


def load_fashion_mnist(
    split: str = "train",
    data_dir: PathLike | None = None,
    *,
    normalize: bool = False,
    download: bool = True,
    validation_size: int = 0,
    seed: int = 0,
) -> Dataset | tuple[Dataset, Dataset]:
    """Loads Fashion-MNIST; `load("fashion_mnist", ...)` describes the arguments.

    Args:
      split: ``"train"`` or ``"test"``.
      data_dir: the folder holding the files.
      normalize: float32 images in [0, 1] of shape ``(N, 28, 28, 1)``.
      download: download missing files.
      validation_size: hold out this many training examples (then a pair is returned).
      seed: the seed of the hold-out permutation.

    Example:
      >>> train = load_fashion_mnist("train")  # doctest: +SKIP
    """
    return load(
        "fashion_mnist",
        split,
        data_dir,
        normalize=normalize,
        download=download,
        validation_size=validation_size,
        seed=seed,
    )
