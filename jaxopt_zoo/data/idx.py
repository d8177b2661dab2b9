"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the data in
C order, big-endian:

    magic = 0x00 0x00 <type code> <number of dimensions>

| code | type    |     | code | type    |
|------|---------|-----|------|---------|
| 0x08 | uint8   |     | 0x0C | int32   |
| 0x09 | int8    |     | 0x0D | float32 |
| 0x0B | int16   |     | 0x0E | float64 |

A path ending in `.gz` is gzip-compressed; any other path is read as is.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from typing import Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

# IDX type code -> big-endian NumPy dtype.
_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_DTYPE_TO_CODE = {dt.newbyteorder("="): code for code, dt in _CODE_TO_DTYPE.items()}
_KNOWN_CODES = ", ".join(f"0x{c:02X} ({d.name})" for c, d in _CODE_TO_DTYPE.items())


class DataError(ValueError):
    """A data file is missing, malformed or does not match its known checksum."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data file could not be found (or downloaded). Also a `FileNotFoundError`."""


def is_gzip_path(path: PathLike) -> bool:
    return os.fspath(path).endswith(".gz")


def read_bytes(path: PathLike, *, gzipped: bool | None = None) -> bytes:
    """Returns the (decompressed) content of `path`.

    `gzipped=None` decides from the name: a path ending in `.gz` is decompressed.
    Raises `DataNotFoundError` if the file is missing, `DataError` for a bad gzip stream.
    """
    path = os.fspath(path)
    if gzipped is None:
        gzipped = is_gzip_path(path)
    try:
        with open(path, "rb") as f:
            content = f.read()
    except FileNotFoundError:
        raise DataNotFoundError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an IDX file") from None
    if not gzipped:
        return content
    try:
        if not content:
            raise EOFError("empty file")
        return gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{path}: not a valid gzip stream ({type(e).__name__}: {e}); the file is corrupt "
            "or incomplete: delete it and download it again"
        ) from None


def parse_idx(content: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parses the bytes of an (uncompressed) IDX file into a new, writable, native-endian array.

    `source` names the file in error messages.
    """
    n = len(content)
    if n < 4:
        raise DataError(
            f"{source}: truncated IDX file: expected a 4-byte magic number, found {n} bytes"
        )
    zero0, zero1, code, ndim = content[:4]
    magic = int.from_bytes(content[:4], "big")
    if zero0 != 0 or zero1 != 0 or code not in _CODE_TO_DTYPE:
        hint = ""
        if content[:2] == b"\x1f\x8b":
            hint = " (this looks like gzip data: name the file with a .gz suffix)"
        raise DataError(
            f"{source}: wrong IDX magic number 0x{magic:08X}: expected 0x0000TTNN, two zero "
            f"bytes, a type code TT in {{{_KNOWN_CODES}}} and the number of dimensions "
            f"NN{hint}"
        )
    header = 4 + 4 * ndim
    if n < header:
        raise DataError(
            f"{source}: truncated IDX header: expected {header} bytes for {ndim} dimensions, "
            f"found {n}"
        )
    shape = struct.unpack(f">{ndim}I", content[4:header])
    dtype = _CODE_TO_DTYPE[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = n - header
    if found < expected:
        raise DataError(
            f"{source}: truncated IDX file: shape {shape} of {dtype.name} needs {expected} "
            f"bytes of data, found {found}"
        )
    if found > expected:
        raise DataError(
            f"{source}: {found - expected} bytes of trailing garbage after the IDX data: "
            f"shape {shape} of {dtype.name} needs {expected} bytes of data, found {found}"
        )
    flat = np.frombuffer(content, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    # One copy: makes the array writable, native-endian and independent of `content`.
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def read_idx(path: PathLike) -> np.ndarray:
    """Reads an IDX file (gzip-compressed if the name ends in `.gz`) into a NumPy array.

    Returns a new, writable, native-endian array of the file's type and shape. Raises
    `DataNotFoundError` for a missing file and `DataError` (a `ValueError`) naming the file for
    a wrong magic number, a truncated file, trailing bytes or a bad gzip stream.

    Example:
        >>> labels = read_idx("train-labels-idx1-ubyte.gz")  # doctest: +SKIP

    Args:
        path: the file (``.gz``: gzip-compressed).
    """
    return parse_idx(read_bytes(path), os.fspath(path))


def write_idx(path: PathLike, array) -> None:
    """Writes `array` as an IDX file, gzip-compressed if `path` ends in `.gz`.

    Supported dtypes: uint8, int8, int16, int32, float32, float64 (anything else raises
    `DataError`). The gzip header has no timestamp, so equal arrays give equal files.

    Args:
        path: the file to write (``.gz``: gzip-compressed).
        array: a NumPy array of a supported dtype.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte.gz")
        >>> write_idx(path, np.arange(3, dtype=np.uint8))
        >>> read_idx(path)
        array([0, 1, 2], dtype=uint8)
    """
    array = np.asarray(array)
    code = _DTYPE_TO_CODE.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(
            f"{os.fspath(path)}: cannot write dtype {array.dtype} as IDX; expected one of "
            f"{_KNOWN_CODES}"
        )
    if array.ndim > 255 or any(d >= 2**32 for d in array.shape):
        raise DataError(f"{os.fspath(path)}: shape {array.shape} does not fit in an IDX header")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    content = header + np.ascontiguousarray(array, dtype=_CODE_TO_DTYPE[code]).tobytes()
    if is_gzip_path(path):
        content = gzip.compress(content, mtime=0)
    with open(path, "wb") as f:
        f.write(content)
