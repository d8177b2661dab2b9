"""Is the Keras-default Adadelta CNN step slower than Adam's, and is it subnormal floats?

Trains the Keras-preset CNN (batch 64) for N steps with `compat.keras.adadelta()` and with
`compat.keras.adam()` from the same init, counts subnormal float32 values in the parameters,
optimizer state, gradients and activations, then times side by side in one process
(interleaved rounds, median ms): the jitted train step, the gradient alone at each run's
parameters, and the optimizer update alone.

    python benchmarks/subnormal_probe.py --steps 1500          # as is
    python benchmarks/subnormal_probe.py --steps 1500 --ftz    # MXCSR FTZ+DAZ set first

`--ftz` builds a two-line C helper with the system compiler and sets the flush-to-zero and
denormals-are-zero bits before JAX starts its threads (which inherit them).
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import tempfile
import time
from pathlib import Path

_C = """#include <xmmintrin.h>
unsigned int get_csr(void) { return _mm_getcsr(); }
void set_ftz_daz(void) { _mm_setcsr(_mm_getcsr() | 0x8040); }
"""


def _csr_lib() -> ctypes.CDLL:
    d = Path(tempfile.mkdtemp())
    (d / "ftz.c").write_text(_C)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(d / "ftz.so"), str(d / "ftz.c")],
                   check=True)
    return ctypes.CDLL(str(d / "ftz.so"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--ftz", action="store_true")
    args = ap.parse_args()
    lib = _csr_lib()
    if args.ftz:
        lib.set_ftz_daz()

    import jax  # after the MXCSR change, so that JAX's threads inherit it
    import jax.numpy as jnp
    import numpy as np

    from jaxopt_zoo.compat import keras
    from jaxopt_zoo.data import load_mnist
    from jaxopt_zoo.models import get_model
    from jaxopt_zoo.train.steps import loss_and_grads, make_train_step, train_step

    batch, tiny = 64, np.finfo(np.float32).tiny
    data = load_mnist("train", normalize=True)
    images, labels = jnp.asarray(data.images), jnp.asarray(data.labels)
    model = get_model("cnn", "keras")
    weights = jnp.ones((batch,), jnp.float32)
    init = model.init(jax.random.key(0), images[:1])["params"]
    perm = np.random.default_rng(0).permutation(len(labels))

    def subnormals(tree) -> str:
        xs = [np.asarray(x) for x in jax.tree.leaves(tree)
              if np.issubdtype(np.asarray(x).dtype, np.floating)]
        n = sum(int(((x != 0) & (np.abs(x) < tiny)).sum()) for x in xs)
        return f"{n}/{sum(x.size for x in xs)}"

    runs = {}
    for name in ("adadelta", "adam"):
        tx = getattr(keras, name)()
        step = make_train_step(model, tx)
        params, state = jax.tree.map(jnp.copy, init), tx.init(init)
        for i in range(args.steps):
            j = i % (len(labels) // batch)
            idx = perm[j * batch:(j + 1) * batch]
            params, state, loss, _ = step(params, state, images[idx], labels[idx], weights,
                                          jax.random.key(i))
        print(f"{name}: {args.steps} steps, last batch loss {float(loss):.3f}")
        runs[name] = (tx, params, state)

    x, y, key = images[:batch], labels[:batch], jax.random.key(1)
    grad = jax.jit(lambda p: loss_and_grads(model, p, x, y, weights, key)[1])
    for name, (_, params, state) in runs.items():
        _, inter = model.apply({"params": params}, x, capture_intermediates=True,
                               mutable=["intermediates"])
        print(f"{name}: subnormal/total params {subnormals(params)} state {subnormals(state)} "
              f"grads {subnormals(grad(params))} activations {subnormals(inter)}")

    calls = {}
    for name, (tx, params, state) in runs.items():
        full = jax.jit(lambda p, s, tx=tx: train_step(model, tx, p, s, x, y, weights, key)[:2])
        update = jax.jit(lambda g, s, p, tx=tx: tx.update(g, s, p))
        g = grad(params)
        calls[f"step {name}"] = lambda f=full, p=params, s=state: f(p, s)
        calls[f"grad at {name} params"] = lambda p=params: grad(p)
        calls[f"update {name}"] = lambda f=update, g=g, s=state, p=params: f(g, s, p)
    times: dict[str, list[float]] = {n: [] for n in calls}
    for f in calls.values():
        jax.block_until_ready(f())
    for _ in range(7):
        for n, f in calls.items():
            t = time.perf_counter()
            for _ in range(20):
                out = f()
            jax.block_until_ready(out)
            times[n].append((time.perf_counter() - t) / 20 * 1e3)
    ms = {n: float(np.median(v)) for n, v in times.items()}
    print(f"MXCSR {lib.get_csr():#x}; median ms: " + ", ".join(f"{n} {v:.2f}" for n, v in ms.items()))
    for what in ("step", "update"):
        print(f"adadelta/adam {what}: {ms[f'{what} adadelta'] / ms[f'{what} adam']:.2f}")
    print(f"grad at adadelta/adam params: {ms['grad at adadelta params'] / ms['grad at adam params']:.2f}")


if __name__ == "__main__":
    main()
