"""Dataset files: where they are looked for, their checksums, and the verified download.

For MNIST and Fashion-MNIST (``jaxopt_zoo.data.datasets``; the Shakespeare corpus in
``jaxopt_zoo.data.text`` uses the same checksums table and search).

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
from typing import List, Optional, Union

import numpy as np

from jaxopt_zoo.data import idx
from jaxopt_zoo.data.idx import DataError

PathLike = Union[str, "os.PathLike[str]"]

ENV_VAR = "JAXOPT_ZOO_DATA"

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

DOWNLOAD_TIMEOUT_S = 60.0

# (absolute path, mtime_ns, size) -> sha256 of the decompressed content.
_DIGESTS: dict[tuple[str, int, int], str] = {}


def cache_dir(name: str) -> Path:
    """The per-user download directory for dataset `name`."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return root / "jaxopt_zoo" / name


def search_dirs(name: str, data_dir: PathLike | None) -> list[tuple[Path, str]]:
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


def checksum_error(path, name: str, filename: str, digest: str, size: int, hint: str) -> DataError:
    want_size, want = CHECKSUMS[name][filename]
    return DataError(
        f"{path}: checksum mismatch for {name} {filename}: expected sha256 {want} of the "
        f"decompressed content ({want_size} bytes), found sha256 {digest} ({size} bytes). {hint}"
    )


def download_file(
    name: str, filename: str, target_dir: Path, errors: list[str]
) -> np.ndarray | None:
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
                with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
            content = idx.read_bytes(tmp, gzipped=True)
            digest = hashlib.sha256(content).hexdigest()
            if digest != CHECKSUMS[name][filename][1]:
                raise checksum_error(url, name, filename, digest, len(content), "Corrupt download.")
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
            raise checksum_error(
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


def not_found_message(what: str, tried: List[str], errors: Optional[List[str]], fix: str) -> str:
    """The message of a :class:`DataNotFoundError`: what is missing, every place looked, the
    download attempts (``errors``; None when downloading was off) and how to fix it."""
    lines = [f"{what} Looked in:"] + [f"  - {t}" for t in tried]
    if errors is None:
        lines.append("Not downloaded (download=False).")
    else:
        lines += ["Download attempts:"] + [f"  - {e}" for e in errors]
    return "\n".join(lines + [fix])
