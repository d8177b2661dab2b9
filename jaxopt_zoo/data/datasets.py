"""MNIST and Fashion-MNIST, found locally or downloaded, verified by checksum.

Where the four files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
`t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each either `<file>.gz` or the raw
`<file>`) are looked for, in order:

1. `data_dir`, when given. It is the only place looked at: an explicit directory never falls
   back silently to another one. With `download=True` missing files are downloaded into it.
2. `$JAXOPT_ZOO_DATA/<name>`, then `$JAXOPT_ZOO_DATA` itself.
3. The user cache, `$XDG_CACHE_HOME/jaxopt_zoo/<name>` or `~/.cache/jaxopt_zoo/<name>`.
4. For Fashion-MNIST, `/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist`).
5. With `download=True`, the public mirrors, into the user cache: each file goes to a temporary
   file in the same directory, is verified, then renamed into place, so a failed or corrupt
   download never leaves a file under the final name.

Every file is verified before use: the sha256 of its decompressed content must match
`CHECKSUMS`, so a `.gz` written by any gzip is accepted. A directory holding the other
dataset's file of the same name (MNIST's files under `$JAXOPT_ZOO_DATA` when loading
Fashion-MNIST) is skipped; any other mismatch raises `DataError`. A file is hashed once per
process for a given path, modification time and size.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import List, NamedTuple, Optional, Union

import numpy as np

from jaxopt_zoo.data import idx
from jaxopt_zoo.data.idx import DataError, DataNotFoundError

PathLike = Union[str, "os.PathLike[str]"]

ENV_VAR = "JAXOPT_ZOO_DATA"
DATASET_NAMES = ("mnist", "fashion_mnist")

_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# name -> file -> (size in bytes, sha256) of the DECOMPRESSED content. Tests may patch entries.
CHECKSUMS: dict[str, dict[str, tuple[int, str]]] = {
    "mnist": {
        "train-images-idx3-ubyte": (
            47040016,
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        "train-labels-idx1-ubyte": (
            60008,
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        "t10k-images-idx3-ubyte": (
            7840016,
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        "t10k-labels-idx1-ubyte": (
            10008,
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    },
    # Decompressed md5s (f4a8712d..., 9018921c..., 8181f547..., 15d48437...) match the ones
    # published for the upstream files; Debian recompressed the .gz, so compare contents only.
    "fashion_mnist": {
        "train-images-idx3-ubyte": (
            47040016,
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        "train-labels-idx1-ubyte": (
            60008,
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        "t10k-images-idx3-ubyte": (
            7840016,
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        "t10k-labels-idx1-ubyte": (
            10008,
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    },
    # The char-LM corpus (jaxopt_zoo/data/text.py; source and licence in its docstring).
    "shakespeare": {
        "shakespeare.txt": (
            5057321,
            "04decea0dd965df5e6cfc4a538b0c62623aaa3bfd848ac7fad6734e59c96624d",
        ),
    },
}

# name -> base URLs, tried in order; a file's URL is base + file + ".gz".
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

# name -> system-wide directories looked at after the user cache.
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "mnist": (),
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}

_DOWNLOAD_TIMEOUT_S = 60.0

# (absolute path, mtime_ns, size) -> sha256 of the decompressed content.
_DIGESTS: dict[tuple[str, int, int], str] = {}


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


def cache_dir(name: str) -> Path:
    """The per-user download directory for dataset `name`."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return root / "jaxopt_zoo" / name


def _search_dirs(name: str, data_dir: PathLike | None) -> list[tuple[Path, str]]:
    if data_dir is not None:
        return [(Path(data_dir), "data_dir")]
    dirs = []
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        dirs += [(Path(env) / name, f"${ENV_VAR}/{name}"), (Path(env), f"${ENV_VAR}")]
    dirs.append((cache_dir(name), "user cache"))
    dirs += [(Path(d), "system") for d in SYSTEM_DIRS.get(name, ())]
    return dirs


def _sha256(path: Path, content: bytes) -> str:
    """sha256 of `content`, the decompressed content of `path`, hashed once per file version."""
    st = path.stat()
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    digest = _DIGESTS.get(key)
    if digest is None:
        digest = _DIGESTS[key] = hashlib.sha256(content).hexdigest()
    return digest


def _owner(filename: str, digest: str) -> str | None:
    """The dataset whose `filename` has sha256 `digest`, if any."""
    for other, table in CHECKSUMS.items():
        if filename in table and table[filename][1] == digest:
            return other
    return None


def _mismatch(path, name: str, filename: str, digest: str, size: int, hint: str) -> DataError:
    want_size, want = CHECKSUMS[name][filename]
    return DataError(
        f"{path}: checksum mismatch for {name} {filename}: expected sha256 {want} of the "
        f"decompressed content ({want_size} bytes), found sha256 {digest} ({size} bytes). {hint}"
    )


def _download(name: str, filename: str, target_dir: Path, errors: list[str]) -> np.ndarray | None:
    """Downloads `filename` into `target_dir`, verified; appends failures to `errors`."""
    final = target_dir / f"{filename}.gz"
    for base in MIRRORS[name]:
        url = f"{base}{filename}.gz"
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=f".{filename}.gz.", suffix=".part")
        except OSError as e:
            errors.append(f"cannot write to {target_dir}: {e}")
            return None
        try:
            with os.fdopen(fd, "wb") as f:
                request = urllib.request.Request(url, headers={"User-Agent": "jaxopt_zoo"})
                with urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
            content = idx.read_bytes(tmp, gzipped=True)
            digest = hashlib.sha256(content).hexdigest()
            if digest != CHECKSUMS[name][filename][1]:
                raise _mismatch(url, name, filename, digest, len(content), "Corrupt download.")
            array = idx.parse_idx(content, url)
            os.replace(tmp, final)
        except Exception as e:  # noqa: BLE001 -- any failure moves on to the next mirror
            errors.append(f"{url}: {type(e).__name__}: {e}")
            continue
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        st = final.stat()
        _DIGESTS[(os.path.abspath(final), st.st_mtime_ns, st.st_size)] = digest
        return array
    return None


def find_verified(
    name: str, filename: str, dirs: list[tuple[Path, str]], *, explicit: bool
) -> tuple[Path | None, bytes, list[str]]:
    """Looks for `filename` (raw or `.gz`) of dataset `name` in `dirs`, verified by checksum.

    `dirs` holds `(directory, label)` pairs, tried in order; `explicit` is True when they come
    from a `data_dir` the caller gave, in which case another dataset's file of the same name is
    an error instead of being skipped. Returns `(path, decompressed content, tried)`, or
    `(None, b"", tried)` when no directory holds the file; `tried` says what each directory
    held, for the not-found message. Raises `DataError` on a checksum mismatch.
    """
    tried = []
    for directory, label in dirs:
        candidates = [directory / filename, directory / f"{filename}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            tried.append(f"{directory} ({label}): no {filename}.gz or {filename}")
            continue
        content = idx.read_bytes(path)
        digest = _sha256(path, content)
        if digest != CHECKSUMS[name][filename][1]:
            other = _owner(filename, digest)
            if other is not None and other != name and not explicit:
                tried.append(f"{path} ({label}): holds the {other} file, skipped")
                continue
            what = f"It is the {other} file." if other else "The file is corrupt or incomplete."
            raise _mismatch(
                path,
                name,
                filename,
                digest,
                len(content),
                f"{what} Delete it and load again to re-download it, or replace it with a good "
                "copy.",
            )
        return path, content, tried
    return None, b"", tried


def _load_file(name: str, filename: str, data_dir: PathLike | None, download: bool) -> np.ndarray:
    """Finds, verifies and parses one file of dataset `name`; see the module docstring."""
    dirs = _search_dirs(name, data_dir)
    path, content, tried = find_verified(name, filename, dirs, explicit=data_dir is not None)
    if path is not None:
        return idx.parse_idx(content, os.fspath(path))

    errors: list[str] = []
    if download:
        target = Path(data_dir) if data_dir is not None else cache_dir(name)
        array = _download(name, filename, target, errors)
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


def not_found_message(what: str, tried: List[str], errors: Optional[List[str]], fix: str) -> str:
    """The message of a :class:`DataNotFoundError`: what is missing, every place looked, the
    download attempts (``errors``; None when downloading was off) and how to fix it."""
    lines = [f"{what} Looked in:"] + [f"  - {t}" for t in tried]
    if errors is None:
        lines.append("Not downloaded (download=False).")
    else:
        lines += ["Download attempts:"] + [f"  - {e}" for e in errors]
    return "\n".join(lines + [fix])


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
        data_dir: the directory holding the files; see the module docstring for the lookup
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
