"""An 8-configuration sweep in one program vs 8 sequential training runs, same process.

    JAXOPT_ZOO_DATA=/work/shared/data/mnist python benchmarks/sweep_bench.py
    python benchmarks/sweep_bench.py --workloads mlp --steps 100

Each workload trains 8 configurations (Adam at 4 learning rates x 2 seeds) for the same number
of steps, with the same evaluations, twice:

- ``sequential``: 8 runs one after the other, each with its own optimizer object (so each
  compiles its step, as 8 ``jaxopt-zoo train`` commands would). Classifiers go through
  ``train_and_evaluate``; the char-LM through the contract's loop (``sample_windows`` keys per
  step, ``train_step`` jitted with donation, evaluation on fixed windows) until ``train
  --model charlm`` exists on this branch.
- ``sweep``: :func:`jaxopt_zoo.train.sweep.sweep`, all 8 in one vmapped program.

Reported per workload: wall seconds (compilation included), compile seconds (JAX's own
trace + lowering + backend-compile events, summed), steady-state seconds (wall - compile),
and throughput in configuration-steps per second; ratios are sweep / sequential.

With ``--rounds N`` the two modes alternate N times (sequential, sweep / sweep, sequential /
...) and the ratios use the medians, so that a change of load hits both alike; every round
compiles afresh (new optimizer objects, new jitted functions). The machine block
(``machine.py``) is printed and written into ``--json``; ratios measured on a busy machine are
marked "not a result", and ``--require-quiet`` refuses to run or write there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxopt_zoo as jz  # noqa: E402
from jaxopt_zoo.train.sweep import SweepConfig, sweep  # noqa: E402

sys.path.insert(0, HERE)
import machine as bench_machine  # noqa: E402

LRS = [3e-4, 1e-3, 3e-3, 1e-2]
SEEDS = [0, 1]
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_compile_seconds = [0.0]


def _listener(event: str, duration: float, **_) -> None:
    if event in COMPILE_EVENTS:
        _compile_seconds[0] += duration


jax.monitoring.register_event_duration_secs_listener(_listener)


def timed(fn):
    jax.effects_barrier()
    c0, t0 = _compile_seconds[0], time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return out, time.perf_counter() - t0, _compile_seconds[0] - c0


def classifier(name: str, steps: int, batch: int):
    from jaxopt_zoo.models import get_model
    from jaxopt_zoo.train import TrainConfig, train_and_evaluate
    from jaxopt_zoo.train.runner import load_data

    train, val = load_data("mnist", train_limit=steps * batch, val_limit=1000)
    model = get_model(name)

    def sequential():
        for lr in LRS:
            for seed in SEEDS:
                config = TrainConfig(batch_size=batch, epochs=1, seed=seed, progress=False)
                state, _ = train_and_evaluate(model, jz.adam(lr), train, val, config)
        return state.params

    def swept():
        config = SweepConfig(batch_size=batch, epochs=1)
        return sweep(model, jz.adam, {"learning_rate": LRS}, SEEDS, train, val, config).params

    return sequential, swept


def charlm(steps: int, batch: int):
    from jaxopt_zoo.data.text import eval_windows, load_shakespeare, sample_windows
    from jaxopt_zoo.models import CharTransformer
    from jaxopt_zoo.train import make_eval_fn, step_dropout_key, train_step

    data = load_shakespeare()
    ctx, evals = 64, 2
    model = CharTransformer(vocab_size=data.vocab.size, context=ctx, width=64, depth=2, heads=4)
    tokens = jnp.asarray(data.train)
    vx, vy = (jnp.asarray(a) for a in eval_windows(data.val, ctx, 64))
    eval_fn = make_eval_fn(model, 64)
    init = jax.jit(lambda key: model.init({"params": key}, jnp.zeros((1, ctx), jnp.int32)))

    def one_run(lr, seed):
        tx = jz.adam(lr)
        rng = jax.random.PRNGKey(seed)
        params = init(jax.random.fold_in(rng, 0))["params"]
        opt_state = tx.init(params)
        step = jax.jit(
            lambda p, o, x, y, k: train_step(model, tx, p, o, x, y, None, k)[:2],
            donate_argnums=(0, 1),
        )
        batch_key = jax.random.fold_in(rng, 1)
        for s in range(steps):
            x, y = sample_windows(tokens, jax.random.fold_in(batch_key, s), batch, ctx)
            params, opt_state = step(params, opt_state, x, y, step_dropout_key(rng, s))
            if (s + 1) % (steps // evals) == 0:
                eval_fn(params, vx, vy).means()
        return params

    def sequential():
        return [one_run(lr, seed) for lr in LRS for seed in SEEDS][-1]

    def swept():
        config = SweepConfig(
            batch_size=batch,
            steps=steps,
            eval_every=steps // evals,
            eval_windows=64,
            eval_batch_size=64,
        )
        return sweep(
            model, jz.adam, {"learning_rate": LRS}, SEEDS, data.train, data.val, config
        ).params

    return sequential, swept


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="mlp,charlm,cnn")
    ap.add_argument("--steps", type=int, default=None, help="steps per configuration")
    ap.add_argument("--rounds", type=int, default=1, help="alternate the two modes this often")
    ap.add_argument("--json", default=None, help="also write the results here")
    bench_machine.add_arguments(ap)
    args = ap.parse_args(argv)
    m = bench_machine.start(args)
    steps_default = {"mlp": 300, "charlm": 200, "cnn": 60}
    batch = {"mlp": 64, "charlm": 32, "cnn": 64}
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs; "
        f"8 configs = Adam lr {LRS} x seeds {SEEDS}"
    )
    header = (
        f"{'workload':9} {'steps':>5} {'mode':10} {'wall s':>7} {'compile s':>9} "
        f"{'steady s':>8} {'cfg-steps/s':>11} {'steady cfg-steps/s':>18}"
    )
    print(header)
    rows = []
    for name in args.workloads.split(","):
        steps = args.steps or steps_default[name]
        if name == "charlm":
            seq, swp = charlm(steps, batch[name])
        else:
            seq, swp = classifier(name, steps, batch[name])
        runs: dict = {"sequential": [], "sweep": []}
        for order in bench_machine.rotated_rounds(["sequential", "sweep"], args.rounds):
            for mode in order:
                _, wall, comp = timed(seq if mode == "sequential" else swp)
                work = 8 * steps
                runs[mode].append((wall, comp))
                print(
                    f"{name:9} {steps:5d} {mode:10} {wall:7.2f} {comp:9.2f} {wall - comp:8.2f} "
                    f"{work / wall:11.1f} {work / max(wall - comp, 1e-9):18.1f}",
                    flush=True,
                )
        med = {
            mode: tuple(statistics.median(r[i] for r in rs) for i in (0, 1))
            for mode, rs in runs.items()
        }
        (sw, sc), (vw, vc) = med["sequential"], med["sweep"]
        rows.append(
            {
                "workload": name,
                "steps": steps,
                "runs": runs,
                "with_compilation": sw / vw,
                "steady": (sw - sc) / max(vw - vc, 1e-9),
            }
        )
    print(f"\nthroughput ratio sweep / sequential (higher is better; medians of {args.rounds}):")
    for r in rows:
        line = (
            f"  {r['workload']:7} {r['with_compilation']:5.2f}x with compilation, "
            f"{r['steady']:5.2f}x steady state"
        )
        print(m.headline(line))
    block = m.finish()  # --require-quiet: exits here on a busy machine
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": block, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
