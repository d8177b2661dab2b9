"""Stress the multi-device trainer at real sizes: repeated `jaxopt-zoo train` runs on N
virtual CPU devices (with and without ZeRO-1) and over 2 processes x 2 devices, counting
hangs, aborts and mismatches against the one-device run (RELIABILITY.md, "Collectives on a
few cores"; issue #21).

    python benchmarks/stress_devices.py --runs 20                      # the full stress
    python benchmarks/stress_devices.py --runs 1 --models mlp --json out.json   # a smoke

A hang is a run still going after --timeout seconds (XLA's own abort comes at 40-60 s); an
abort is any other non-zero exit (134: XLA's SIGABRT); a mismatch is a final train or
validation loss more than --rtol (relative) from the one-device run's, or a repeat of a
configuration that is not bit-identical to its first run. Prints a table and the machine block
(``machine.py``: CPU model and ISA flags from /proc/cpuinfo, load average at the start and the
end; also in ``--json``); exits 1 when anything hung, aborted or mismatched.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine as bench_machine  # noqa: E402

# The sizes users run (the README's "Scale out" commands): the MLP at 784-128-10 on 6400
# images (100 steps of 64), the reference CNN on 1280 images (20 steps), the default
# char-LM (4 layers of 384) for 20 steps.
MODELS = {
    "mlp": "--model mlp --epochs 1 --train-limit 6400 --val-limit 1000",
    "cnn": "--model cnn --epochs 1 --train-limit 1280 --val-limit 500",
    "charlm": "--model charlm --steps 20 --eval-every 20 --eval-windows 16",
}
LAYOUTS = [  # (label, per-process devices, ZeRO-1, processes)
    ("2 devices", 2, False, 1),
    ("2 devices, ZeRO-1", 2, True, 1),
    ("4 devices", 4, False, 1),
    ("4 devices, ZeRO-1", 4, True, 1),
    ("8 devices", 8, False, 1),
    ("8 devices, ZeRO-1", 8, True, 1),
    ("2 processes x 2 devices", 2, False, 2),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(model: str, devices, zero1: bool, processes: int, timeout: float) -> dict:
    """One `jaxopt-zoo train` (or one per process); returns status, seconds and losses."""
    out = Path(tempfile.mkdtemp(prefix="stress-"))
    base = [sys.executable, "-m", "jaxopt_zoo.cli", "train", "--optimizer", "adam"]
    base += MODELS[model].split() + ["--batch-size", "64", "--no-progress"]
    base += ["--output", str(out)]
    if devices:
        base += ["--devices", str(devices)]
    if zero1:
        base.append("--shard-optimizer-state")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    for name in ("PJRT_NPROC", "NPROC", "XLA_FLAGS"):  # what a user's shell would not set
        env.pop(name, None)
    commands = [base]
    if processes > 1:
        port = _free_port()
        commands = [
            base
            + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes)]
            + ["--process-id", str(i), "--distributed-timeout", "30"]
            for i in range(processes)
        ]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        for c in commands
    ]
    status, err = "ok", ""
    try:
        for p in procs:
            _, e = p.communicate(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
            if p.returncode != 0:
                status, err = "abort", f"exit {p.returncode}: {e.decode()[-300:]}"
    except subprocess.TimeoutExpired:
        status = "hang"
        for p in procs:
            p.kill()
            p.communicate()
    seconds = time.perf_counter() - t0
    losses = None
    if status == "ok":
        history = json.loads((out / "metrics.json").read_text())["history"]
        last = history[-1]
        losses = [last["train_loss"], last["val_loss"]]
    return {"status": status, "seconds": seconds, "losses": losses, "error": err}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="runs of each layout and model")
    ap.add_argument("--models", default="mlp", help="comma-separated: mlp, cnn, charlm")
    ap.add_argument("--layouts", default=None, help="comma-separated indices into the list")
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--json", default=None, help="write every run's record here")
    args = ap.parse_args(argv)
    layouts = LAYOUTS
    if args.layouts:
        layouts = [LAYOUTS[int(i)] for i in args.layouts.split(",")]
    m = bench_machine.start()  # a reliability run: the load is recorded, not judged
    records, failed = [], 0
    for model in args.models.split(","):
        reference = run_once(model, None, False, 1, args.timeout)
        if reference["status"] != "ok":
            print(f"{model}: the one-device run failed: {reference}")
            return 1
        ref = reference["losses"]
        print(f"\n{model}: one device {reference['seconds']:.1f} s, losses {ref}")
        print("| layout | runs | hangs | aborts | mismatches | max rel. diff | mean s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, devices, zero1, processes in layouts:
            counts = {"hang": 0, "abort": 0, "mismatch": 0}
            first, worst, seconds = None, 0.0, []
            for i in range(args.runs):
                r = run_once(model, devices, zero1, processes, args.timeout)
                r.update(model=model, layout=label, run=i)
                if r["status"] == "ok":
                    diff = max(abs(a - b) / abs(b) for a, b in zip(r["losses"], ref))
                    worst = max(worst, diff)
                    if first is None:
                        first = r["losses"]
                    if diff > args.rtol or r["losses"] != first:
                        r["status"] = "mismatch"
                counts[r["status"]] = counts.get(r["status"], 0) + (r["status"] != "ok")
                seconds.append(r["seconds"])
                records.append(r)
                if r["status"] != "ok":
                    print(f"  run {i}: {r['status']} {r['error']}", file=sys.stderr)
            failed += sum(counts.values())
            print(
                f"| {label} | {args.runs} | {counts['hang']} | {counts['abort']} | "
                f"{counts['mismatch']} | {worst:.1e} | {sum(seconds) / len(seconds):.1f} |"
            )
    block = m.block()
    print(f"\n# load average at the start {block['load_before']}, at the end {block['load_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": block, "runs": records}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
