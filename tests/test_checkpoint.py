"""Checkpoints: exact round trips, resume after SIGKILL and Ctrl-C, damaged and foreign
directories."""

import collections
import contextlib
import glob
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_zoo as jz
from jaxopt_zoo import cli
from jaxopt_zoo.models import MLP
from jaxopt_zoo.train import (
    Checkpointer,
    CheckpointError,
    CheckpointMismatchError,
    LoopState,
    Metrics,
    TrainConfig,
    init_loop_state,
    train_and_evaluate,
)
from jaxopt_zoo.train.checkpoint import RUN_FILE, checkpoint_number
from jaxopt_zoo.train.checkpoint.directory import TMP_MARK

_rng = np.random.default_rng(0)
IMAGES = _rng.uniform(0.0, 1.0, (200, 28, 28, 1)).astype(np.float32)
LABELS = _rng.integers(0, 10, 200).astype(np.int32)
VAL = (IMAGES[:50], LABELS[:50])
MODEL, TX = MLP(hidden=(32,)), jz.adam(1e-3)
CFG = TrainConfig(batch_size=32, epochs=3, seed=1, progress=False)  # 7 steps per epoch
META = {"model": "mlp32", "optimizer": "adam"}


def template(model=MODEL, tx=TX, seed=1):
    return init_loop_state(model, tx, IMAGES[:1], seed)


def leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f")
        for x, y in zip(map(np.asarray, la), map(np.asarray, lb))
    )


def strip_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def train(ckpt=None, state=None, stop_at=None):
    callbacks = [] if ckpt is None else [ckpt.callback]
    if stop_at is not None:
        callbacks.append(lambda s: s.step == stop_at)
    return train_and_evaluate(
        MODEL, TX, (IMAGES, LABELS), VAL, CFG, callbacks=callbacks, state=state
    )


@pytest.fixture(scope="module")
def uninterrupted():
    return train()


def numbers(d):
    """The finished checkpoints in ``d`` (what orbax renames into place when complete)."""
    d = Path(d)
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


# --------------------------------------------------------------------------- #
# Round trips
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("typed_key", [False, True])
def test_round_trip_keeps_types_dtypes_values_and_zero_size_leaves(tmp_path, typed_key):
    params = {
        "w": jnp.linspace(-1, 1, 12).reshape(3, 4),
        "empty": jnp.zeros((0, 3)),
        "half": jnp.array([0.1, -2.5], jnp.bfloat16),
        "s": jnp.asarray(0.5),
    }
    tx = jz.chain(jz.skip_not_finite(jz.adam(1e-3), max_consecutive=3), jz.ema(0.9))
    opt_state = tx.init(params)
    _, opt_state = tx.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
    rng = jax.random.key(7) if typed_key else jax.random.PRNGKey(7)
    history = (
        {
            "epoch": 1,
            "train_loss": 0.1 + 0.2,
            "train_accuracy": 1 / 3,
            "val_loss": None,
            "val_accuracy": float("nan"),
            "seconds": 1e-9,
        },
    )
    state = LoopState(
        params, opt_state, 9, 1, 2, rng, Metrics(*map(jnp.float32, (3.5, 2, 64))), history
    )
    with Checkpointer(tmp_path / "ck", metadata=META) as ck:
        assert ck.save(state, force=True)
    restored, message = Checkpointer(tmp_path / "ck", metadata=META).restore_latest(state)
    assert message.startswith(
        f"Resumed from checkpoint 10 in {tmp_path / 'ck'}: step 9 (epoch 2, after batch 2)."
    )
    assert jax.tree.structure(restored.opt_state) == jax.tree.structure(opt_state)
    assert type(restored.opt_state[0]).__name__ == "SkipNotFiniteState"
    assert type(restored.opt_state[0].inner_state[0]).__name__ == "ScaleByAdamState"
    assert leaves_equal(restored.params, params) and leaves_equal(restored.opt_state, opt_state)
    assert restored.params["empty"].shape == (0, 3)
    assert leaves_equal(restored.totals, state.totals)
    assert (restored.step, restored.epoch, restored.batch) == (9, 1, 2)
    if typed_key:
        assert jax.dtypes.issubdtype(restored.rng.dtype, jax.dtypes.prng_key)
        assert np.array_equal(jax.random.key_data(restored.rng), jax.random.key_data(rng))
    else:
        assert restored.rng.dtype == jnp.uint32 and np.array_equal(restored.rng, rng)
    (r,) = restored.history
    assert r["train_loss"] == 0.1 + 0.2 and r["train_accuracy"] == 1 / 3
    assert r["val_loss"] is None and np.isnan(r["val_accuracy"]) and r["seconds"] == 1e-9


def test_checkpoint_callback_then_resume_is_bit_identical(tmp_path, uninterrupted):
    full, full_history = uninterrupted
    with Checkpointer(tmp_path, every_steps=3, metadata=META) as ck:
        train(ck, stop_at=11)  # epoch 2; the last checkpoint is at step 9
    ck = Checkpointer(tmp_path, every_steps=3, metadata=META)
    state, message = ck.restore_latest(template())
    assert (state.step, state.epoch, state.batch) == (9, 1, 2) and "step 9" in message
    with ck:
        resumed, history = train(ck, state=state)
        ck.save(resumed, force=True)
    assert leaves_equal(resumed.params, full.params)
    assert leaves_equal(resumed.opt_state, full.opt_state)
    assert strip_seconds(history) == strip_seconds(full_history)
    # keep=3: the newest three; the final state (step 21 after epoch 3's evaluation) last.
    assert ck.all_numbers() == [20, 23, 24] and checkpoint_number(resumed) == 24
    final, _ = Checkpointer(tmp_path, metadata=META).restore_latest(template())
    assert leaves_equal(final.params, full.params)
    assert strip_seconds(final.history) == strip_seconds(full_history)


def test_every_steps_and_saving_out_of_order(tmp_path):
    state = template()
    ck = Checkpointer(tmp_path, every_steps=4, async_save=False)
    assert not ck.save(state._replace(step=3))
    assert ck.save(state._replace(step=4))
    assert not ck.save(state._replace(step=4), force=True)  # already saved: a no-op
    with pytest.raises(
        CheckpointError,
        match=r"Cannot save step 2 \(checkpoint 2\) into .* "
        r"already holds the newer checkpoint 4",
    ):
        ck.save(state._replace(step=2), force=True)
    ck.close()
    with pytest.raises(ValueError, match="Invalid keep: 0"):
        Checkpointer(tmp_path, keep=0)
    with pytest.raises(TypeError, match="Invalid metadata: it must be JSON-serializable"):
        Checkpointer(tmp_path / "new", metadata={"tx": TX})


# --------------------------------------------------------------------------- #
# Damaged, partial and foreign checkpoints
# --------------------------------------------------------------------------- #


def three_checkpoints(d):
    """Checkpoints of steps 3, 6 and 9 of a real run; returns the three states."""
    saved = {}

    def keep_copy(s):
        if s.step % 3 == 0:
            saved[s.step] = jax.device_get(s)

    with Checkpointer(d, every_steps=3, metadata=META) as ck:
        train_and_evaluate(
            MODEL,
            TX,
            (IMAGES, LABELS),
            VAL,
            CFG,
            callbacks=[ck.callback, keep_copy, lambda s: s.step == 9],
        )
    assert Checkpointer(d).all_numbers() == [3, 6, 10]
    return saved


def damage(d, how):
    if how == "bit flip":  # silent: orbax would load it; the recorded sha256 catches it
        f = max(glob.glob(f"{d}/state/**/d/*", recursive=True), key=os.path.getsize)
        with open(f, "r+b") as fh:
            fh.seek(os.path.getsize(f) // 2)
            b = fh.read(1)
            fh.seek(-1, 1)
            fh.write(bytes([b[0] ^ 0x10]))
    elif how == "truncated file":
        f = max(glob.glob(f"{d}/state/**/d/*", recursive=True), key=os.path.getsize)
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 3)
    elif how == "missing item":
        for p in Path(d, "state").iterdir():
            if p.is_dir():
                for q in p.rglob("*"):
                    if q.is_file():
                        q.unlink()
    elif how == "garbage metadata":
        Path(d, "meta", "metadata").write_text("{not json")
    elif how == "edited history":  # valid JSON, one metric changed: the sha256 catches it
        f = Path(d, "meta", "metadata")
        meta = json.loads(f.read_text())
        entry = meta["history"][-1]
        key = next(k for k, v in entry.items() if isinstance(v, float) and k != "seconds")
        entry[key] = entry[key] + 0.01
        f.write_text(json.dumps(meta))
    elif how == "empty folder":
        for p in sorted(Path(d).rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()


@pytest.mark.parametrize(
    "how",
    [
        "bit flip",
        "truncated file",
        "missing item",
        "garbage metadata",
        "edited history",
        "empty folder",
    ],
)
def test_damaged_latest_falls_back_to_the_newest_good_one(tmp_path, how):
    saved = three_checkpoints(tmp_path)
    damage(tmp_path / "10", how)
    ck = Checkpointer(tmp_path, every_steps=3, metadata=META)
    state, message = ck.restore_latest(template())
    assert state.step == 6 and leaves_equal(state.params, saved[6].params)
    assert leaves_equal(state.opt_state, saved[6].opt_state)
    assert message.startswith(f"Resumed from checkpoint 6 in {tmp_path}: step 6")
    assert "Skipped damaged newer checkpoint(s): checkpoint 10 (" in message
    moved = list((tmp_path / "damaged").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("10-") and str(moved[0]) in message
    # The run goes on from there and checkpoints in order again.
    with ck:
        train(ck, state=state, stop_at=9)
    assert ck.all_numbers() == [3, 6, 10]
    again, _ = Checkpointer(tmp_path, metadata=META).restore_latest(template())
    assert leaves_equal(again.params, saved[9].params)


def test_no_good_checkpoint_is_a_clear_error_and_nothing_is_touched(tmp_path):
    three_checkpoints(tmp_path)
    for n, how in (("3", "garbage metadata"), ("6", "bit flip"), ("10", "missing item")):
        damage(tmp_path / n, how)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(
        CheckpointError,
        match=r"(?s)No usable checkpoint in .*; every one is "
        r"damaged:\n  - .*10: .*\n  - .*6: .*sha256.*"
        r"\n  - .*3: .*Nothing was moved or deleted",
    ):
        Checkpointer(tmp_path, metadata=META).restore_latest(template())
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_unfinished_writes_are_never_taken_for_checkpoints(tmp_path):
    saved = three_checkpoints(tmp_path)
    # What a run killed while writing checkpoint 13 leaves: orbax's temporary folder.
    os.rename(tmp_path / "10", tmp_path / "13.orbax-checkpoint-tmp-1732000000")
    ck = Checkpointer(tmp_path, metadata=META)
    assert ck.all_numbers() == [3, 6] and len(ck.unfinished()) == 1
    state, message = ck.restore_latest(template())
    assert state.step == 6 and leaves_equal(state.params, saved[6].params)
    assert ck.unfinished() == []  # cleaned up once a good checkpoint is found
    # A directory with nothing but an unfinished write starts from scratch, and says why.
    only = tmp_path / "only"
    only.mkdir()
    ck = Checkpointer(only)
    (only / "5.orbax-checkpoint-tmp-1").mkdir()
    assert ck.restore_latest(template()) == (
        None,
        f"No checkpoint in {only} (only 1 unfinished write(s) of a run killed while "
        "saving, which are not checkpoints): starting from scratch.",
    )
    # A run killed while writing the run file leaves its temporary file; the next run
    # accepts the folder and removes it when it writes the run file.
    first = tmp_path / "first"
    first.mkdir()
    (first / f".{RUN_FILE}.x1y2z3.tmp").write_text('{"format": ')
    ck = Checkpointer(first, metadata=META, async_save=False)
    assert ck.save(template(), force=True)
    assert sorted(os.listdir(first)) == ["0", RUN_FILE]


# --------------------------------------------------------------------------- #
# Writers killed with SIGKILL (tests/checkpoint_writer.py)
# --------------------------------------------------------------------------- #

WRITER = Path(__file__).with_name("checkpoint_writer.py")


class _WriterServer:
    """tests/checkpoint_writer.py's fork server: sends it writers to start, reads what it
    prints (each line with the time it arrived) and kills its writers."""

    def __init__(self):
        root = str(Path(__file__).resolve().parents[1])
        env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            OPENBLAS_NUM_THREADS="1",
            PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: "queue.Queue" = queue.Queue()
        self.err: list = []
        self.pid = None
        self.readers = [
            threading.Thread(target=self._read, args=(stream, put), daemon=True)
            for stream, put in (
                (self.proc.stdout, self.lines.put),
                (self.proc.stderr, self.err.append),
            )
        ]
        for reader in self.readers:
            reader.start()
        assert self.next()[1] == "ready"

    @staticmethod
    def _read(stream, put):
        for line in stream:
            put((time.monotonic(), line.rstrip("\n")))
        put((time.monotonic(), None))

    def next(self, timeout=60.0):
        try:
            t, line = self.lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        if line is None:
            raise AssertionError(
                "the checkpoint writer stopped answering; its stderr:\n"
                + "".join(x for _, x in self.err)[-4000:]
            )
        return t, line

    def start(self, directory, saves, phase=None):
        self.proc.stdin.write(json.dumps({"dir": str(directory), "saves": saves, "phase": phase}))
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def until(self, word, seen):
        """Read lines (with the time each arrived) into ``seen`` up to the first that starts
        with ``word``; returns that time and the line's other fields."""
        while True:
            t, line = self.next()
            seen.append((t, line))
            fields = line.split()
            if fields[0] == "pid":
                self.pid = int(fields[1])
            if fields[0] == word:
                return t, fields[1:]
            if fields[0] == "exit" and word != "exit":
                raise AssertionError(f"the writer ended ({line}) before {word!r}: {_tail(seen)}")

    def kill(self, seen):
        os.kill(self.pid, signal.SIGKILL)
        _, (code,) = self.until("exit", seen)
        self.pid = None
        assert code == str(-signal.SIGKILL), (_tail(seen), "".join(x for _, x in self.err)[-4000:])

    def close(self):
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for reader in self.readers:
            reader.join(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()


def _tail(seen):
    return [line for _, line in seen[-12:]]


RESUMING = "resuming (restoring, removing unfinished writes)"
BEFORE_RUN_FILE = "before the run file was in place"
IN_TMP = "in orbax's temporary folder"
COMMITTED = "in orbax's temporary folder, committed, before the rename"
RENAMED = "after the rename, before or while deleting the oldest checkpoint"
# Where each of checkpoint_writer.PHASES must have left the directory.
PHASE_LEFT = {
    "run-file": BEFORE_RUN_FILE,
    "tmp-dir": IN_TMP,
    "data-written": IN_TMP,
    "before-rename": COMMITTED,
    "after-rename": RENAMED,
    "deleting": RENAMED,
    "resume-cleanup": RESUMING,
}


def _where_killed(directory, began, ended):
    """Which part of a write the kill hit, from what the writer printed and left on disk."""
    from checkpoint_writer import KEEP

    if began is None:
        return RESUMING
    if ended == began:
        return "between writes"
    tmp = directory / f"{began}{TMP_MARK}"
    if (directory / str(began)).is_dir():
        if len(numbers(directory)) > KEEP:
            return RENAMED
        return "after the rename and the deletion, before the writer heard of it"
    if tmp.is_dir():
        return COMMITTED if (tmp / "commit_success.txt").exists() else IN_TMP
    if not (directory / RUN_FILE).exists():
        return BEFORE_RUN_FILE
    return "before orbax's temporary folder (copy to host, sha256)"


def _same_state(a, b):
    return (
        (a.step, a.epoch, a.batch) == (b.step, b.epoch, b.batch)
        and leaves_equal(
            (a.params, a.opt_state, tuple(a.totals), a.rng),
            (b.params, b.opt_state, tuple(b.totals), b.rng),
        )
        and list(a.history) == list(b.history)
    )


def test_sigkill_at_random_points_of_checkpoint_writes(tmp_path):
    """Real writer processes (tests/checkpoint_writer.py: each resumes from the newest
    checkpoint in one directory, as ``--resume`` does, and saves the next ones, 4.8 MB each)
    killed with SIGKILL 27 times in a row:

    - 16 times at a random moment of a save: the first or the second of the writer's, at a
      seeded draw from 0 to 1.25 times the measured length of a save after the writer says
      it starts it;
    - 4 times at a random moment of resuming (restoring, removing unfinished writes);
    - 7 times at the points of a write that a random moment rarely hits
      (checkpoint_writer.PHASES: the run file's rename, orbax's fresh temporary folder, the
      data written, half-way through removing an unfinished write on resume, the commit,
      just after the rename, half-way through deleting an old checkpoint); that the kill
      left the directory in that state is checked.

    After every kill a new Checkpointer on a copy of the directory must resume from a
    checkpoint that is complete: not older than the last one the writer had finished, not
    newer than the one it had begun, with exactly the content the writer saved under that
    number (recomputed here), and nothing reported damaged. The next writer resumes in the
    directory itself, among the leftovers of every kill so far, and must take the same one.
    Each writer computes its states from the one it restored, so the last writer, which runs
    to the end, saves the checkpoints of an uninterrupted run only if every resume restored
    every bit; after it, the directory holds nothing but the run file and those checkpoints.

    The writers are forked from one process that imported JAX, orbax and jaxopt_zoo once:
    a fresh Python + JAX process costs 3-6 s to start, 27 would take minutes; a forked
    writer is resumed ~0.5 s after the fork (2 cores). The whole test takes ~30 s there.
    """
    from checkpoint_writer import KEEP, META, PHASES, expected, initial_state, on_device

    rng = np.random.default_rng(2121)
    plan = ["save"] * 27
    for r in (5, 12, 19, 26):
        plan[r] = "resume"
    for r, phase in zip((0, 3, 6, 7, 10, 13, 16), PHASES):
        plan[r] = phase
    assert plan.count("save") == 16 and plan.count("resume") == 4 and len(set(plan)) == 9
    directory = tmp_path / "ck"
    template = on_device(initial_state())
    newest = 0  # the newest complete checkpoint
    wait_until = lambda t: time.sleep(max(0.0, t - time.monotonic()))
    save_s, startup_s, hits = [0.25], [0.6], collections.Counter()
    server = _WriterServer()
    try:
        for r, what in enumerate(plan):
            phase = what if what in PHASES else None
            seen: list = []
            server.start(directory, 6, phase)  # killed long before the sixth save ends
            t0, _ = server.until("pid", seen)
            if phase:
                server.until("phase", seen)
            elif what == "resume":
                wait_until(t0 + rng.uniform(0, 1) * np.median(startup_s))
            else:
                for _ in range(1 + rng.integers(0, 2)):  # in the first or the second save
                    t, _ = server.until("begin", seen)
                wait_until(t + rng.uniform(0, 1.25) * np.median(save_s))
            server.kill(seen)

            fields = [line.split() for _, line in seen]
            startup_s += [t - t0 for t, line in seen if line.startswith("begin")][:1]
            save_s += [float(f[2]) for f in fields if f[0] == "end"]
            resumed = [int(f[1]) for f in fields if f[0] == "resumed"]
            began = max((int(f[1]) for f in fields if f[0] == "begin"), default=None)
            ended = max((int(f[1]) for f in fields if f[0] == "end"), default=None)
            names = sorted(p.name for p in directory.iterdir())
            where = _where_killed(directory, began, ended)
            hits[f"at {phase}" if phase else where] += 1
            assert phase is None or where == PHASE_LEFT[phase], (phase, where, names)
            if phase == "run-file":
                assert any(x.startswith(f".{RUN_FILE}.") for x in names), names
            if phase == "resume-cleanup":
                assert any(TMP_MARK in x for x in names), names
            assert resumed in ([], [newest]), (_tail(seen), newest)  # the writer found it too

            copy = tmp_path / f"copy{r}"
            shutil.copytree(directory, copy, symlinks=True)
            ck = Checkpointer(copy, keep=KEEP, metadata=META)
            state, message = ck.restore_latest(template)
            got = 0 if state is None else checkpoint_number(state)
            low = newest if ended is None else ended
            high = newest if began is None else began
            assert low <= got <= high, (_tail(seen), message, names)
            assert "damaged" not in message and not (copy / "damaged").exists(), message
            assert state is None or _same_state(state, expected(got)), (got, _tail(seen))
            assert state is None or ck.unfinished() == []  # removed once resumed
            shutil.rmtree(copy)
            newest = got

        seen = []
        server.start(directory, 3)  # the last writer runs to the end
        server.until("exit", seen)
        assert seen[-1][1] == "exit 0", (_tail(seen), "".join(x for _, x in server.err)[-4000:])
    finally:
        server.close()
    print(f"\n{len(plan)} SIGKILLs, checkpoints 1 to {newest + 3}:", dict(hits))
    last = newest + 3
    assert sorted(os.listdir(directory)) == sorted([str(last - 1), str(last), RUN_FILE])
    state, _ = Checkpointer(directory, keep=KEEP, metadata=META).restore_latest(template)
    assert checkpoint_number(state) == last and _same_state(state, expected(last))


def test_directories_of_another_run_are_refused(tmp_path):
    three_checkpoints(tmp_path)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"holds checkpoints of another run \(model: 'mlp32' there, 'cnn' "
        r"here\)",
    ):
        Checkpointer(tmp_path, metadata={**META, "model": "cnn"})
    wider = MLP(hidden=(64,))
    with pytest.raises(
        CheckpointMismatchError,
        match=r"different model or optimizer: params\['Dense_0'\]\['bias'\] is "
        r"\(32,\) float32 in the checkpoints but \(64,\) float32 here",
    ):
        Checkpointer(tmp_path).restore_latest(template(model=wider))
    with pytest.raises(
        CheckpointMismatchError,
        match=r"opt_state\[0\]\.\S+ is .* in the "
        r"checkpoints but absent here \(optimizer "
        r"state: ScaleByAdamState, EmptyState in "
        r"the checkpoints, TraceState",
    ):
        Checkpointer(tmp_path).restore_latest(template(tx=jz.sgd(0.1, momentum=0.9)))
    with pytest.raises(CheckpointMismatchError, match="Cannot save into .* different model"):
        Checkpointer(tmp_path).save(template(model=wider)._replace(step=99), force=True)
    # Not a checkpoint directory at all: refused before anything is written.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    with pytest.raises(
        CheckpointMismatchError, match="is not empty and is not a jaxopt_zoo checkpoint directory"
    ):
        Checkpointer(tmp_path / "notes")
    with pytest.raises(CheckpointError, match="exists and is not a directory"):
        Checkpointer(tmp_path / "notes" / "thesis.tex")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / RUN_FILE).write_text("[1, 2")
    with pytest.raises(CheckpointError, match=r"Cannot read .*jaxopt_zoo_run.json"):
        Checkpointer(tmp_path / "bad")
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "precious"


# --------------------------------------------------------------------------- #
# Signals
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_saves_the_current_step_and_stops(tmp_path, capsys, sig):
    def signal_at_step_4(s):
        if s.step == 4:
            os.kill(os.getpid(), sig)

    ck = Checkpointer(tmp_path, every_steps=100, metadata=META)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with ck, ck.stop_on_interrupt():
        state, _ = train_and_evaluate(
            MODEL, TX, (IMAGES, LABELS), VAL, CFG, callbacks=[signal_at_step_4, ck.callback]
        )
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored
    assert ck.interrupted == sig and state.step == 4
    name = signal.Signals(sig).name
    assert f"{name}: saving a checkpoint after the current step" in capsys.readouterr().err
    restored, _ = Checkpointer(tmp_path, metadata=META).restore_latest(template())
    assert restored.step == 4 and leaves_equal(restored.params, state.params)


def test_a_second_ctrl_c_quits_at_once_without_saving(tmp_path):
    def ctrl_c_twice_at_step_2(s):
        if s.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    ck = Checkpointer(tmp_path, every_steps=100, metadata=META)
    with pytest.raises(KeyboardInterrupt):
        with ck, ck.stop_on_interrupt():
            train_and_evaluate(
                MODEL,
                TX,
                (IMAGES, LABELS),
                VAL,
                CFG,
                callbacks=[ctrl_c_twice_at_step_2, ck.callback],
            )
    assert ck.interrupted == signal.SIGINT and ck.all_numbers() == []


# --------------------------------------------------------------------------- #
# The command line
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--checkpoint-every", "5"], 2, r"--checkpoint-every needs --checkpoint-dir"),
        (["--resume"], 2, r"--resume needs --checkpoint-dir"),
        (["--keep-checkpoints", "0", "--checkpoint-dir", "x"], 2, r"expected a positive integer"),
        (["--checkpoint-dir", "{ck}"], 2, r"already holds checkpoints of this run; add --resume"),
        (
            ["--checkpoint-dir", "{ck}", "--seed", "3", "--resume"],
            1,
            r"CheckpointMismatchError: .* holds checkpoints of another run "
            r"\(seed: 0 there, 3 here\)",
        ),
        (["--on-nonfinite", "nan"], 2, r"invalid choice: 'nan'"),
    ],
)
def test_cli_checkpoint_flags(tmp_path, capsys, args, code, message):
    import re

    ck = tmp_path / "ck"
    common = ["train", "--optimizer", "adam", "--model", "mlp", "--output", str(tmp_path / "o")]
    identity = {
        "optimizer": "adam",
        "lr": None,
        "opt_arg": {},
        "model": "mlp",
        "init": "flax",
        "dataset": "mnist",
        "seed": 0,
        "batch_size": 64,
        "train_limit": None,
        "val_limit": None,
        "val_size": 0,
    }
    c = Checkpointer(ck, metadata=identity)
    c.save(init_loop_state(MLP(), jz.adam(1e-3), IMAGES[:1], 0)._replace(step=5), force=True)
    c.close()
    assert cli.main(common + [a.format(ck=ck) for a in args]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err


CLI_RUN = [
    "train",
    "--optimizer",
    "adam",
    "--model",
    "mlp",
    "--epochs",
    "3",
    "--batch-size",
    "64",
    "--train-limit",
    "2048",
    "--val-limit",
    "500",
    "--checkpoint-every",
    "5",
    "--no-progress",
]  # 32 steps per epoch, 96 in all; the last checkpoint is 99


def _start(ck, out, *extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jaxopt_zoo.cli",
            *CLI_RUN,
            "--checkpoint-dir",
            str(ck),
            "--output",
            str(out),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(predicate, proc, what, timeout=120.0):
    t0 = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(
                f"the run ended ({proc.returncode}) before {what}: {proc.stderr.read()}"
            )
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def assert_same_final_state(dir_a, dir_b, step, tx=None):
    """The newest checkpoints of two MLP runs hold the same step, parameters, optimizer state
    and history (wall-clock seconds aside)."""
    mlp_template = template(MLP(), tx or jz.adam(1e-3), seed=0)
    a, _ = Checkpointer(dir_a).restore_latest(mlp_template)
    b, _ = Checkpointer(dir_b).restore_latest(mlp_template)
    assert a.step == b.step == step
    assert leaves_equal(a.params, b.params)
    assert leaves_equal(a.opt_state, b.opt_state)
    assert strip_seconds(a.history) == strip_seconds(b.history)


def _stopped(pid, timeout=10.0):
    """Wait until the process ``pid`` is stopped (SIGSTOP delivered: state T in /proc)."""
    t0 = time.monotonic()
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() - t0 < timeout, f"process {pid} did not stop"
        time.sleep(0.001)


def _stop_while_writing(proc, ck, above, timeout=120.0):
    """Freeze ``proc`` (SIGSTOP) while orbax writes a checkpoint numbered above ``above`` into
    ``ck``: its temporary folder is there and not yet renamed. Polled every millisecond; a
    write that was already renamed once the process stood still is let go (SIGCONT), and
    the next one is caught. Returns the number of the checkpoint being written."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended ({proc.returncode}) before a write above {above}")
        names = [e.name for e in os.scandir(ck)] if ck.is_dir() else []
        writing = [int(x.split(".")[0]) for x in names if TMP_MARK in x]
        writing = [n for n in writing if n > above]
        if writing:
            n = writing[0]
            proc.send_signal(signal.SIGSTOP)
            _stopped(proc.pid)
            if (ck / f"{n}{TMP_MARK}").is_dir() and not (ck / str(n)).exists():
                return n
            proc.send_signal(signal.SIGCONT)  # it was quicker: catch the next one
            above = n
        time.sleep(0.001)
    proc.kill()
    raise AssertionError(f"timed out waiting for a checkpoint write above {above}")


# SAM (two gradients a step) and SWA with SWALR from epoch 2: the averages and the schedule's
# position live in the optimizer state, so a killed run resumes them exactly too.
SAM_SWA = ("--sam-rho", "0.05", "--swa-start", "2", "--swa-lr", "5e-4")


@pytest.mark.needs_data("mnist")
@pytest.mark.parametrize(
    "techniques,moment",
    [((), "while writing"), (SAM_SWA, "after a write")],
    ids=["plain-killed-while-writing", "sam+swa-killed-after-a-write"],
)
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, techniques, moment):
    """``jaxopt-zoo train`` killed with SIGKILL in epoch 2 (of 3), then ``--resume``: the
    run ends bit-identical to an uninterrupted one.

    "while writing": the run is frozen (SIGSTOP) the moment orbax's temporary folder of a
    checkpoint above 38 appears, polled every millisecond (see _stop_while_writing), then
    SIGKILLed: the write never finishes, and ``--resume`` meets its leftover. The random
    points inside a write are tested in test_sigkill_at_random_points_of_checkpoint_writes.
    "after a write": SIGKILLed as soon as a checkpoint of epoch 2 is renamed into place
    (orbax may be deleting the oldest one)."""
    from jaxopt_zoo.train.runner import RunSpec
    from jaxopt_zoo.train.techniques import Techniques

    tx = (
        RunSpec("adam", techniques=Techniques(sam_rho=0.05, swa_start=2, swa_lr=5e-4)).build(32)
        if techniques
        else jz.adam(1e-3)
    )
    a_ck, b_ck = tmp_path / "a_ck", tmp_path / "b_ck"
    a = _start(a_ck, tmp_path / "a_out", *techniques)  # uninterrupted, alongside the others
    b = _start(b_ck, tmp_path / "b_out", *techniques)
    if moment == "while writing":  # the checkpoint before it is then of epoch 2 (step > 32)
        writing = _stop_while_writing(b, b_ck, above=38)
    else:  # as soon as a checkpoint of epoch 2 is written (step > 32: number > 33)
        _wait_for(lambda: any(n > 33 for n in numbers(b_ck)), b, "epoch 2")
    b.kill()
    b.communicate()
    assert b.returncode == -signal.SIGKILL
    if moment == "while writing":
        assert (b_ck / f"{writing}{TMP_MARK}").is_dir() and max(numbers(b_ck)) < writing
    mlp_template = template(MLP(), tx, seed=0)
    shutil.copytree(b_ck, tmp_path / "b_copy")  # resume in b_ck among the leftovers
    killed, _ = Checkpointer(tmp_path / "b_copy").restore_latest(mlp_template)
    assert 32 < killed.step < 96 and killed.batch > 0, "the kill came too late to test anything"

    d = _start(b_ck, tmp_path / "b_out", *techniques, "--resume")
    out, err = d.communicate(timeout=120)
    assert d.returncode == 0, err
    assert not [p for p in b_ck.iterdir() if TMP_MARK in p.name]  # removed on resume
    assert (
        f"Resumed from checkpoint {checkpoint_number(killed)} in {b_ck}: step {killed.step} " in out
    )
    _, err = a.communicate(timeout=120)
    assert a.returncode == 0, err

    assert_same_final_state(a_ck, b_ck, 96, tx)
    metrics = [
        json.loads((tmp_path / f"{x}_out" / "metrics.json").read_text())["history"] for x in "ab"
    ]
    assert len(metrics[0]) == 3 and strip_seconds(metrics[0]) == strip_seconds(metrics[1])
    if techniques:  # SWA from epoch 2: the averaged weights are evaluated from then on
        assert [h["val_accuracy_avg"] is None for h in metrics[0]] == [True, False, False]
        assert metrics[0][-1]["val_accuracy_avg"] > 0.5


@pytest.mark.needs_data("mnist")
def test_cli_stop_on_nonfinite_saves_the_state_before_the_step(tmp_path, capsys):
    # Adam at lr 1e30: the first step blows the parameters up, the second has a nan loss.
    ck = tmp_path / "ck"
    code = cli.main(
        [
            "train",
            "--optimizer",
            "adam",
            "--lr",
            "1e30",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--train-limit",
            "256",
            "--val-limit",
            "100",
            "--no-progress",
            "--on-nonfinite",
            "stop",
            "--checkpoint-dir",
            str(ck),
            "--output",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Non-finite values at step 2 (epoch 1, batch 2)" in err
    assert f"Its state before that step is saved in {ck}" in err
    assert numbers(ck) == [1]


@pytest.mark.needs_data("mnist")
def test_cli_ctrl_c_saves_the_current_step_and_resumes(tmp_path, capsys, monkeypatch):
    # Ctrl-C arrives during step 3 (sent from inside the run, so the timing is exact).
    callback = Checkpointer.callback

    def ctrl_c_during_step_3(self, state):
        if state.step == 3 and self.interrupted is None:
            os.kill(os.getpid(), signal.SIGINT)
        return callback(self, state)

    monkeypatch.setattr(Checkpointer, "callback", ctrl_c_during_step_3)
    ck, out = tmp_path / "ck", tmp_path / "o"
    args = [
        "train",
        "--optimizer",
        "adam",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--train-limit",
        "256",
        "--val-limit",
        "100",
        "--no-progress",
        "--checkpoint-dir",
        str(ck),
        "--output",
        str(out),
    ]
    assert cli.main(args) == 130
    err = capsys.readouterr().err
    assert "SIGINT: saving a checkpoint after the current step" in err
    assert (
        f"stopped at step 3 (epoch 1); the checkpoint is in {ck}. Run the same command "
        "with --resume" in err
    )
    assert numbers(ck) == [3] and not (out / "metrics.json").exists()
    monkeypatch.undo()
    assert cli.main(args + ["--resume"]) == 0
    assert (
        f"Resumed from checkpoint 3 in {ck}: step 3 (epoch 1, after batch 3)."
        in capsys.readouterr().out
    )
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history[0]["epoch"] == 1

    # The interrupted and resumed run ends bit-identical to an uninterrupted one.
    ck2, out2 = tmp_path / "ck2", tmp_path / "o2"
    assert (
        cli.main([str(ck2) if a == str(ck) else str(out2) if a == str(out) else a for a in args])
        == 0
    )
    assert_same_final_state(ck, ck2, 4)
    assert strip_seconds(history) == strip_seconds(
        json.loads((out2 / "metrics.json").read_text())["history"]
    )
