"""Tests of jaxopt_zoo.data: the IDX reader/writer, lookup, checksums, download, real MNIST."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tempfile
import urllib.error
import urllib.request

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxopt_zoo.data import (
    DataError,
    DataNotFoundError,
    Dataset,
    datasets,
    load,
    load_fashion_mnist,
    load_mnist,
    read_idx,
    write_idx,
)

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SIZES = {"train": 50, "test": 20}

# ---------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("shape", [(0,), (7,), (3, 4, 5), (2, 1, 3, 2)])
def test_idx_round_trip(tmp_path, dtype, suffix, shape):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        array = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        array = (rng.standard_normal(shape) * 1e3).astype(dtype)
    path = tmp_path / f"x{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    raw = gzip.decompress(path.read_bytes()) if suffix else path.read_bytes()
    code = {"uint8": 8, "int8": 9, "int16": 11, "int32": 12, "float32": 13, "float64": 14}[dtype]
    assert raw[:4] == bytes([0, 0, code, len(shape)])


@settings(max_examples=40, deadline=None)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int8, ">i2", "<i4", np.float32, ">f8"]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    ),
    gz=st.booleans(),
)
def test_idx_round_trip_property(array, gz):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "a.idx.gz" if gz else "a.idx")
        write_idx(path, array)
        back = read_idx(path)
    assert back.shape == array.shape and back.dtype == array.dtype.newbyteorder("=")
    np.testing.assert_array_equal(back, array)  # NaNs compare equal here


def _header(code, *dims):
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"\x00\x00\x01\x01" + b"\0" * 7,
            r"wrong IDX magic number 0x00000101: expected 0x0000TTNN",
        ),
        (b"\x00\x01\x08\x01" + b"\0" * 7, r"wrong IDX magic number 0x00010801"),
        (_header(0x0A, 3) + b"\0" * 3, r"wrong IDX magic number 0x00000A01.*0x08 \(uint8\)"),
        (gzip.compress(_header(8, 3) + b"abc"), r"looks like gzip data"),
        (b"\x00\x00", r"truncated IDX file: expected a 4-byte magic number, found 2 bytes"),
        (
            _header(8, 28, 28)[:9],
            r"truncated IDX header: expected 12 bytes for 2 dimensions, found 9",
        ),
        (
            _header(8, 10) + b"x" * 5,
            r"truncated IDX file: shape \(10,\) of uint8 needs 10 bytes of data, found 5",
        ),
        (_header(0x0C, 2, 3) + b"x" * 23, r"needs 24 bytes of data, found 23"),
        (_header(8, 4) + b"x" * 7, r"3 bytes of trailing garbage.*needs 4 bytes of data, found 7"),
    ],
)
def test_idx_malformed(tmp_path, content, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + message):
        read_idx(path)
    gz = tmp_path / "bad-idx1-ubyte.gz"
    gz.write_bytes(gzip.compress(content))
    with pytest.raises(DataError, match=message):
        read_idx(gz)


@pytest.mark.parametrize(
    "content",
    [b"this is not gzip", gzip.compress(_header(8, 100) + bytes(100))[:-12], b""],
    ids=["garbage", "cut", "empty"],
)
def test_idx_bad_gzip(tmp_path, content):
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(str(path)) + ": not a valid gzip stream"):
        read_idx(path)


def test_idx_missing_file(tmp_path):
    path = tmp_path / "nope.gz"
    with pytest.raises(DataNotFoundError, match=re.escape(str(path)) + ": file not found") as e:
        read_idx(path)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ValueError)


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(DataError, match=r"cannot write dtype int64 as IDX"):
        write_idx(tmp_path / "x", np.arange(3, dtype=np.int64))


# ---------------------------------------------------------------------------------------------
# Loaders on small fake datasets


def _fake_arrays(seed):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in SIZES.items():
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n)  # identifies each example
        arrays[split] = (images, rng.integers(0, 10, size=n).astype(np.uint8))
    return arrays


def _write_fake(directory, arrays, gz=True):
    """Writes a fake dataset into `directory`; returns its checksum table."""
    directory.mkdir(parents=True, exist_ok=True)
    table = {}
    for split, (images, labels) in arrays.items():
        for name, array in zip(FILES[split], (images, labels)):
            path = directory / (name + (".gz" if gz else ""))
            write_idx(path, array)
            content = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
            table[name] = (len(content), hashlib.sha256(content).hexdigest())
    return table


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An isolated environment: no JAXOPT_ZOO_DATA, a fresh cache, no system dirs, no network,
    and a fake MNIST whose checksums replace the real ones. Returns (arrays, files dir)."""
    monkeypatch.delenv("JAXOPT_ZOO_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(datasets.SYSTEM_DIRS, "fashion_mnist", ())

    def no_network(request, timeout=None):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    arrays = _fake_arrays(0)
    source = tmp_path / "fake"
    monkeypatch.setitem(datasets.CHECKSUMS, "mnist", _write_fake(source, arrays))
    return arrays, source


def _assert_equal(data, arrays, split):
    images, labels = arrays[split]
    assert isinstance(data, Dataset)
    assert data.images.dtype == np.uint8 and data.images.shape == (SIZES[split], 28, 28)
    assert data.labels.dtype == np.int32 and data.labels.shape == (SIZES[split],)
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_from_data_dir(env, split):
    arrays, source = env
    _assert_equal(load_mnist(split, source, download=False), arrays, split)
    _assert_equal(load("mnist", split, source, download=False), arrays, split)


def test_load_raw_files(env, tmp_path):
    arrays, _ = env
    raw = tmp_path / "raw"
    assert _write_fake(raw, arrays, gz=False) == datasets.CHECKSUMS["mnist"]
    _assert_equal(load_mnist("test", raw, download=False), arrays, "test")


def test_normalize(env):
    arrays, source = env
    data = load_mnist("train", source, normalize=True, download=False)
    assert data.images.dtype == np.float32 and data.images.shape == (50, 28, 28, 1)
    np.testing.assert_array_equal(data.images[..., 0] * np.float32(255), arrays["train"][0])
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0
    assert data.labels.dtype == np.int32


def test_checksum_mismatch(env, monkeypatch):
    _, source = env
    size, good = datasets.CHECKSUMS["mnist"]["t10k-labels-idx1-ubyte"]
    monkeypatch.setitem(datasets.CHECKSUMS["mnist"], "t10k-labels-idx1-ubyte", (size, "0" * 64))
    path = source / "t10k-labels-idx1-ubyte.gz"
    message = (
        rf"{re.escape(str(path))}: checksum mismatch for mnist t10k-labels-idx1-ubyte: "
        rf"expected sha256 0{{64}} .*found sha256 {good} .*Delete it and load again"
    )
    with pytest.raises(DataError, match=message):
        load_mnist("test", source, download=False)


def test_checksum_hashed_once_per_file_version(env, monkeypatch):
    _, source = env
    calls = []
    real = hashlib.sha256

    def counting(content=b""):
        calls.append(len(content))
        return real(content)

    monkeypatch.setattr(hashlib, "sha256", counting)
    load_mnist("test", source, download=False)
    load_mnist("test", source, download=False, normalize=True)
    assert len(calls) == 2  # images and labels, once each
    path = source / "t10k-images-idx3-ubyte.gz"
    st_ = path.stat()
    os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    load_mnist("test", source, download=False)
    assert len(calls) == 3  # the touched file only


def test_data_dir_beats_env_var(env, tmp_path, monkeypatch):
    arrays, source = env
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in FILES["test"]:
        (bad / (name + ".gz")).write_bytes(b"corrupt")
    monkeypatch.setenv("JAXOPT_ZOO_DATA", str(bad))
    _assert_equal(load_mnist("test", source, download=False), arrays, "test")
    with pytest.raises(DataError, match=r"bad/t10k-images-idx3-ubyte.gz: not a valid gzip"):
        load_mnist("test", download=False)


def test_explicit_data_dir_does_not_fall_back(env, tmp_path, monkeypatch):
    _, source = env
    monkeypatch.setenv("JAXOPT_ZOO_DATA", str(source))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as e:
        load_mnist("test", empty, download=False)
    message = str(e.value)
    assert f"{empty} (data_dir): no t10k-images-idx3-ubyte.gz or t10k-images-idx3-ubyte" in message
    assert str(source) not in message and "cache" not in message


@pytest.mark.parametrize("subdir", [True, False])
def test_env_var(env, tmp_path, monkeypatch, subdir):
    arrays, _ = env
    root = tmp_path / "root"
    _write_fake(root / "mnist" if subdir else root, arrays)
    monkeypatch.setenv("JAXOPT_ZOO_DATA", str(root))
    _assert_equal(load_mnist("train", download=False), arrays, "train")


def test_env_var_beats_cache(env, tmp_path, monkeypatch):
    arrays, source = env
    cache = tmp_path / "cache" / "jaxopt_zoo" / "mnist"
    cache.mkdir(parents=True)
    for name in FILES["test"]:
        (cache / name).write_bytes(b"corrupt")
    monkeypatch.setenv("JAXOPT_ZOO_DATA", str(source))
    _assert_equal(load_mnist("test", download=False), arrays, "test")
    monkeypatch.delenv("JAXOPT_ZOO_DATA")
    with pytest.raises(
        DataError,
        match=r"cache/jaxopt_zoo/mnist/t10k-images-idx3-ubyte: checksum "
        r"mismatch .*The file is corrupt or incomplete",
    ):
        load_mnist("test", download=False)


def test_missing_everywhere_lists_places(env, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXOPT_ZOO_DATA", str(tmp_path / "nothing"))
    with pytest.raises(DataNotFoundError) as e:
        load_mnist("train", download=False)
    assert isinstance(e.value, FileNotFoundError)
    lines = str(e.value).splitlines()
    assert lines[0] == "Could not find mnist file train-images-idx3-ubyte (.gz or raw). Looked in:"
    assert lines[1:4] == [
        f"  - {tmp_path}/nothing/mnist ($JAXOPT_ZOO_DATA/mnist): no train-images-idx3-ubyte.gz "
        "or train-images-idx3-ubyte",
        f"  - {tmp_path}/nothing ($JAXOPT_ZOO_DATA): no train-images-idx3-ubyte.gz or "
        "train-images-idx3-ubyte",
        f"  - {tmp_path}/cache/jaxopt_zoo/mnist (user cache): no train-images-idx3-ubyte.gz or "
        "train-images-idx3-ubyte",
    ]
    assert lines[4] == "Not downloaded (download=False)."
    assert "pass data_dir=<dir> or set JAXOPT_ZOO_DATA=<dir>" in lines[5]


def test_skips_the_other_datasets_file(env, tmp_path, monkeypatch):
    """JAXOPT_ZOO_DATA pointing at MNIST does not shadow Fashion-MNIST found further on."""
    arrays, source = env
    fashion = _fake_arrays(1)
    system = tmp_path / "system"
    monkeypatch.setitem(datasets.CHECKSUMS, "fashion_mnist", _write_fake(system, fashion))
    monkeypatch.setitem(datasets.SYSTEM_DIRS, "fashion_mnist", (str(system),))
    monkeypatch.setenv("JAXOPT_ZOO_DATA", str(source))
    _assert_equal(load_fashion_mnist("test", download=False), fashion, "test")
    _assert_equal(load("fashion-mnist", "test", download=False), fashion, "test")
    # Given explicitly, the wrong dataset's file is an error that says whose file it is.
    with pytest.raises(DataError, match=r"mismatch for fashion_mnist .*It is the mnist file"):
        load_fashion_mnist("test", source, download=False)


def _serve(monkeypatch, responses):
    """Replaces urlopen: `responses` maps URL -> bytes or an exception. Returns the URLs asked."""
    asked = []

    def fake_urlopen(request, timeout=None):
        url = request.full_url
        asked.append(url)
        response = responses.get(url, urllib.error.HTTPError(url, 404, "Not Found", None, None))
        if isinstance(response, Exception):
            raise response
        return io.BytesIO(response)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return asked


def test_download(env, tmp_path, monkeypatch):
    arrays, source = env
    first, second = datasets.MIRRORS["mnist"]
    responses = {first + n + ".gz": urllib.error.URLError("timed out") for n in FILES["test"]}
    for name in FILES["test"]:
        # Any gzip wrapper of the right content is accepted.
        responses[second + name + ".gz"] = gzip.compress(
            gzip.decompress((source / (name + ".gz")).read_bytes()), compresslevel=1
        )
    asked = _serve(monkeypatch, responses)
    _assert_equal(load_mnist("test"), arrays, "test")
    assert asked == [
        first + "t10k-images-idx3-ubyte.gz",
        second + "t10k-images-idx3-ubyte.gz",
        first + "t10k-labels-idx1-ubyte.gz",
        second + "t10k-labels-idx1-ubyte.gz",
    ]
    cache = tmp_path / "cache" / "jaxopt_zoo" / "mnist"
    assert sorted(os.listdir(cache)) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert (cache / "t10k-labels-idx1-ubyte.gz").read_bytes() == responses[
        second + "t10k-labels-idx1-ubyte.gz"
    ]
    # The second load reads the cache and does not download.
    _assert_equal(load_mnist("test"), arrays, "test")
    assert len(asked) == 4


def test_download_into_explicit_data_dir(env, tmp_path, monkeypatch):
    arrays, source = env
    base = datasets.MIRRORS["mnist"][0]
    served = {base + f"{n}.gz": (source / f"{n}.gz").read_bytes() for n in FILES["test"]}
    _serve(monkeypatch, served)
    target = tmp_path / "mine"
    _assert_equal(load_mnist("test", target), arrays, "test")
    assert sorted(os.listdir(target)) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert not (tmp_path / "cache").exists()


def test_download_target_not_writable(env, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    with pytest.raises(
        DataNotFoundError,
        match=rf"Download attempts:\n  - cannot write to "
        rf"{re.escape(str(not_a_dir))}: ",
    ):
        load_mnist("test", not_a_dir)


@pytest.mark.parametrize("corruption", ["other content", "not gzip", "cut"])
def test_corrupt_download_leaves_nothing(env, tmp_path, monkeypatch, corruption):
    _, source = env
    good = (source / "t10k-images-idx3-ubyte.gz").read_bytes()
    body = {
        "other content": gzip.compress(b"\0\0\x08\x01\0\0\0\x01x"),
        "not gzip": b"<html>Access denied</html>",
        "cut": good[: len(good) // 2],
    }[corruption]
    first, second = datasets.MIRRORS["mnist"]
    urls = [m + "t10k-images-idx3-ubyte.gz" for m in (first, second)]
    asked = _serve(monkeypatch, dict.fromkeys(urls, body))
    with pytest.raises(DataNotFoundError) as e:
        load_mnist("test")
    assert asked == urls
    message = str(e.value)
    expected = {
        "other content": "checksum mismatch for mnist t10k-images-idx3-ubyte",
        "not gzip": "not a valid gzip stream",
        "cut": "not a valid gzip stream",
    }[corruption]
    for url in urls:
        assert f"  - {url}: DataError: " in message
    assert message.count(expected) == 2
    assert "Download attempts:" in message and "JAXOPT_ZOO_DATA=<dir>" in message
    cache = tmp_path / "cache" / "jaxopt_zoo" / "mnist"
    assert os.listdir(cache) == []  # no partial file, no temporary file


def test_validation_split(env):
    _, source = env
    full = load_mnist("train", source, download=False)
    train, val = load_mnist("train", source, download=False, validation_size=10, seed=3)
    again_train, again_val = load_mnist("train", source, download=False, validation_size=10, seed=3)
    _, other_val = load_mnist("train", source, download=False, validation_size=10, seed=4)
    assert train.images.shape == (40, 28, 28) and val.images.shape == (10, 28, 28)
    np.testing.assert_array_equal(train.images, again_train.images)
    np.testing.assert_array_equal(val.labels, again_val.labels)
    ids_train, ids_val = train.images[:, 0, 0], val.images[:, 0, 0]
    assert set(ids_train).isdisjoint(ids_val)
    assert sorted([*ids_train, *ids_val]) == list(range(50))
    assert list(ids_val) == sorted(ids_val)  # file order is kept
    expected_val = np.sort(np.random.default_rng(3).permutation(50)[:10])
    np.testing.assert_array_equal(ids_val, expected_val)
    np.testing.assert_array_equal(val.labels, full.labels[expected_val])
    assert not np.array_equal(other_val.images[:, 0, 0], ids_val)
    norm_train, norm_val = load_mnist(
        "train", source, download=False, normalize=True, validation_size=10, seed=3
    )
    assert norm_val.images.shape == (10, 28, 28, 1) and norm_val.images.dtype == np.float32
    np.testing.assert_array_equal(norm_train.images[..., 0] * np.float32(255), train.images)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(split="test", validation_size=5),
            ValueError,
            r"validation_size=5 needs split='train'",
        ),
        (dict(validation_size=-1), ValueError, r"Invalid validation_size: -1"),
        (dict(validation_size=50), ValueError, r"Invalid validation_size: 50 \(expected < 50"),
        (dict(validation_size=2.5), TypeError, r"validation_size must be an int"),
        (dict(split="valid"), ValueError, r"Invalid split 'valid': expected 'train' or 'test'"),
    ],
)
def test_bad_arguments(env, kwargs, error, message):
    _, source = env
    with pytest.raises(error, match=message):
        load_mnist(data_dir=source, download=False, **kwargs)


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"Unknown dataset 'cifar10': expected one of"):
        load("cifar10")


# ---------------------------------------------------------------------------------------------
# The real data


@pytest.mark.needs_data("mnist")
def test_real_mnist():
    # CI sets JAXOPT_ZOO_DATA (to /work/shared/data/mnist); without it the normal lookup finds
    # the user cache or downloads. Either way, the files are verified by sha256.
    where = os.environ.get("JAXOPT_ZOO_DATA") or "the normal lookup"
    counts = {
        "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    }
    for split, n in [("train", 60000), ("test", 10000)]:
        data = load_mnist(split)
        assert data.images.shape == (n, 28, 28) and data.images.dtype == np.uint8, where
        assert data.labels.shape == (n,) and data.labels.dtype == np.int32, where
        assert np.bincount(data.labels).tolist() == counts[split], where
    images = load_mnist("train", normalize=True).images
    assert images.shape == (60000, 28, 28, 1) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert round(float(images.mean(dtype=np.float64)), 4) == 0.1307
    assert round(float(images.std(dtype=np.float64)), 4) == 0.3081


@pytest.mark.needs_data("fashion_mnist")
def test_real_fashion_mnist():
    # .ci/run installs Debian's dataset-fashion-mnist (/usr/share/datasets); elsewhere the normal
    # lookup finds the cache or downloads. With JAXOPT_ZOO_DATA pointing at MNIST, this also
    # checks that MNIST's same-named files are passed over.
    loaded = {}
    for split, n in [("train", 60000), ("test", 10000)]:
        data = loaded[split] = load_fashion_mnist(split, normalize=(split == "train"))
        assert data.labels.shape == (n,) and data.labels.dtype == np.int32
        assert np.bincount(data.labels).tolist() == [n // 10] * 10
    assert loaded["test"].images.shape == (10000, 28, 28)
    assert loaded["test"].images.dtype == np.uint8
    train = loaded["train"].images
    assert train.shape == (60000, 28, 28, 1) and train.dtype == np.float32
    assert round(float(train.mean(dtype=np.float64)), 4) == 0.2860
    assert round(float(train.std(dtype=np.float64)), 4) == 0.3530
