"""Why is the Adadelta CNN train step slower than Adam's? Side by side in one process.

Issue 12 reported a Keras-default Adadelta epoch at 2.5x the time of Adam's (cause and fix:
BENCHMARKS.md, "Adadelta's slow step (issue 12)"). This probe builds the trainer's jitted step
(`make_train_step`, params and state donated) for several optimizers on the Keras-preset CNN
(batch 64), among them Adadelta's block as it was before the fix ("old sqrt/sqrt":
``sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g``), and Adadelta and Adam as two jits
(gradient, then update). It runs them in interleaved chunks of 10 steps (the order rotated each
round, so machine load hits all alike) and reports the median ms/step, its spread and the ratio
to Keras Adam's, then counts the subnormal float32 values in parameters, optimizer state,
gradients and activations. The machine block (``machine.py``) is printed first (and written
into ``--json``); ratios measured on a busy machine are marked "not a result", and
``--require-quiet`` refuses to run or write there.

    python benchmarks/adadelta_step_probe.py [--rounds 12] [--ftz]

`--ftz` sets the MXCSR flush-to-zero and denormals-are-zero bits (through a two-line C helper
built with the system compiler) before JAX starts its threads, which inherit them.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # jaxopt_zoo
import machine as bench_machine  # noqa: E402

_C = """#include <xmmintrin.h>
unsigned int get_csr(void) { return _mm_getcsr(); }
void set_ftz_daz(void) { _mm_setcsr(_mm_getcsr() | 0x8040); }
"""


def _csr_lib() -> ctypes.CDLL:
    d = Path(tempfile.mkdtemp())
    (d / "ftz.c").write_text(_C)
    subprocess.run(
        ["cc", "-O2", "-shared", "-fPIC", "-o", str(d / "ftz.so"), str(d / "ftz.c")], check=True
    )
    return ctypes.CDLL(str(d / "ftz.so"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12, help="chunks of 10 steps per optimizer")
    ap.add_argument("--ftz", action="store_true", help="set MXCSR FTZ+DAZ before JAX starts")
    ap.add_argument("--json", default=None, help="also write the timings here")
    bench_machine.add_arguments(ap)
    args = ap.parse_args(argv)
    m = bench_machine.start(args)
    lib = _csr_lib()
    if args.ftz:
        lib.set_ftz_daz()

    import jax  # after the MXCSR change, so that JAX's threads inherit it
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxopt_zoo import adadelta, chain, scale_by_adadelta, scale_by_learning_rate
    from jaxopt_zoo.compat import keras
    from jaxopt_zoo.data import load_mnist
    from jaxopt_zoo.models import get_model
    from jaxopt_zoo.train.steps import loss_and_grads, make_train_step

    batch, tiny = 64, np.finfo(np.float32).tiny
    data = load_mnist("train", normalize=True)
    images, labels = jnp.asarray(data.images), jnp.asarray(data.labels)
    model = get_model("cnn", "keras")
    weights = jnp.ones((batch,), jnp.float32)
    init = model.init(jax.random.key(0), images[:1])["params"]
    perm = np.random.default_rng(0).permutation(len(labels))
    grad = jax.jit(lambda p, x, y, k: loss_and_grads(model, p, x, y, weights, k))

    def two_jits(tx):
        update = jax.jit(lambda g, s, p: _apply(tx, g, s, p), donate_argnums=(1, 2))

        def step(p, s, x, y, w, k):
            (loss, _), g = grad(p, x, y, k)
            p, s = update(g, s, p)
            return p, s, loss, None

        return step

    def _apply(tx, g, s, p):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    def old_formula(rho=0.95, eps=1e-7):
        """The block as it was before the fix: sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g."""

        def update(g, s, p=None):
            e_g = jax.tree.map(lambda g, e: rho * e + (1 - rho) * g * g, g, s.e_g)
            out = jax.tree.map(
                lambda g, a, b: jnp.sqrt(b + eps) / jnp.sqrt(a + eps) * g, g, e_g, s.e_x
            )
            e_x = jax.tree.map(lambda u, e: rho * e + (1 - rho) * u * u, out, s.e_x)
            return out, type(s)(e_g=e_g, e_x=e_x)

        block = scale_by_adadelta(rho, eps)
        return chain(optax.GradientTransformation(block.init, update), scale_by_learning_rate(1e-3))

    configs = {
        "keras adadelta (lr 1e-3)": (keras.adadelta(), None),
        "adadelta, old sqrt/sqrt": (old_formula(), None),
        "keras adadelta, lr 1.0": (keras.adadelta(1.0), None),
        "native adadelta (lr 1.0)": (adadelta(), None),
        "keras adam": (keras.adam(), None),
        "keras adagrad": (keras.adagrad(), None),
        "keras rmsprop": (keras.rmsprop(), None),
        "keras sgd": (keras.sgd(), None),
        "keras adadelta, two jits": (keras.adadelta(), two_jits),
        "keras adam, two jits": (keras.adam(), two_jits),
    }
    live = {}
    for name, (tx, make) in configs.items():
        step = make(tx) if make else make_train_step(model, tx)
        p, s, _, _ = step(
            jax.tree.map(jnp.copy, init),
            tx.init(init),
            images[:batch],
            labels[:batch],
            weights,
            jax.random.key(0),
        )
        live[name] = [step, p, s]
    times: dict[str, list[float]] = {n: [] for n in live}
    i = 1
    for order in bench_machine.rotated_rounds(list(live), args.rounds):
        for name in order:
            entry = live[name]
            step, p, s = entry
            jax.block_until_ready(p)
            t = time.perf_counter()
            for j in range(i, i + 10):
                idx = perm[(j % 900) * batch : (j % 900 + 1) * batch]
                p, s, _, _ = step(p, s, images[idx], labels[idx], weights, jax.random.key(j))
            jax.block_until_ready(p)
            times[name].append((time.perf_counter() - t) / 10 * 1e3)
            entry[1], entry[2] = p, s
        i += 10
    print(f"MXCSR {lib.get_csr():#x}; {args.rounds * 10} steps each, median ms/step:")
    summary = {name: bench_machine.stats(v) for name, v in times.items()}
    adam = summary["keras adam"]["median"]
    for name, st in summary.items():
        print(
            f"  {name:28s} {st['median']:6.1f}  (min {st['min']:.1f}, spread "
            f"{st['spread']:.0%})  {st['median'] / adam:.2f}x Adam"
        )
    busy = m.busy_reason()
    if busy:
        print(f"  **{busy}**: the x Adam ratios above are not a result")

    def subnormals(tree) -> str:
        xs = [
            np.asarray(a)
            for a in jax.tree.leaves(tree)
            if np.issubdtype(np.asarray(a).dtype, np.floating)
        ]
        return (
            f"{sum(int(((a != 0) & (np.abs(a) < tiny)).sum()) for a in xs)}/"
            f"{sum(a.size for a in xs)}"
        )

    x, y, key = images[:batch], labels[:batch], jax.random.key(1)
    for name in ("keras adadelta (lr 1e-3)", "adadelta, old sqrt/sqrt", "keras adam"):
        _, p, s = live[name]
        _, inter = model.apply(
            {"params": p}, x, capture_intermediates=True, mutable=["intermediates"]
        )
        print(
            f"{name}: subnormal/total params {subnormals(p)} state {subnormals(s)} "
            f"grads {subnormals(grad(p, x, y, key)[1])} activations {subnormals(inter)}"
        )
    block = m.finish()  # --require-quiet: exits here on a busy machine
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": block, "ms_per_step": summary}, indent=1))


if __name__ == "__main__":
    main()
