"""L-BFGS to a gradient tolerance: jz.minimize against optax.lbfgs, jaxopt.LBFGS and scipy.

Two tables, printed as Markdown:

1. Iterations and function (+gradient) evaluations to ``||grad|| <= gtol`` (Euclidean
   norm; scipy is stopped by a callback on the same norm, its own ``gtol`` being on the
   largest element), float64: Rosenbrock 2-D from (-1.2, 1), Rosenbrock 100-D from
   (-1.2, 1, -1.2, ...), an L2-regularised logistic regression (1,000 x 100). Memory 10 for
   all. optax.lbfgs's counts are ours (the same iterates, tests/test_lbfgs.py).
2. Wall time to ``gtol`` on a 10,000-dimensional L2-regularised logistic regression
   (float32, 2,000 samples): ``jz.minimize(loss, w0, args=(x, y))``; optax.lbfgs in the
   loop its documentation writes (``lax.while_loop`` over ``value_and_grad_from_state``,
   jitted); ``jaxopt.LBFGS(...).run`` (jitted); scipy's L-BFGS-B with a jitted JAX value
   and gradient. Each is compiled (warm-up) first, then timed round-robin, repeat after
   repeat, so that a busy neighbour slows all alike; medians, and the ratio time(other) /
   time(ours) (> 1: ours faster). The load average and CPU are printed beside the table: a
   busy machine's ratio is not a result.

    python benchmarks/lbfgs_bench.py                    # both tables (a few minutes)
    python benchmarks/lbfgs_bench.py --small            # a quick check that it runs
    python benchmarks/lbfgs_bench.py --only counts      # or: --only speed
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jaxopt_zoo as jz  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402  (benchmarks/machine.py)
from machine import interleave  # noqa: E402


def _jaxopt():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "no longer maintained"
        import jaxopt
    return jaxopt


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def logreg(w, x, y, lam=1e-3):  # lam may be passed (traced) as an argument
    return jnp.mean(jnp.logaddexp(0.0, -y * (x @ w))) + 0.5 * lam * jnp.sum(w * w)


def logreg_data(n: int, d: int, dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) / np.sqrt(d)
    y = np.sign(x @ rng.normal(size=d) + 0.3 * rng.normal(size=n))
    return jnp.asarray(x, dtype), jnp.asarray(y, dtype)


# --------------------------------------------------------------------------- the four runs


OPTAX_TX = jz.lbfgs()  # optax.lbfgs's algorithm (unbounded zoom): the same iterates


def run_ours(f, w0, args, gtol, max_steps, tx=None):
    res = jz.minimize(f, w0, tx=tx, args=args, gtol=gtol, max_steps=max_steps)
    jax.block_until_ready(res.params)
    return int(res.num_steps), int(res.num_fun_evals), float(res.grad_norm)


def optax_loop(f, gtol, max_steps):
    """optax.lbfgs in the loop of its documentation, compiled once."""
    tx = optax.lbfgs()

    @jax.jit
    def run(w0, args):
        fn = lambda w: f(w, *args)  # noqa: E731
        vg = optax.value_and_grad_from_state(fn)

        def step(c):
            w, s, k, _ = c
            v, g = vg(w, state=s)
            u, s = tx.update(g, s, w, value=v, grad=g, value_fn=fn)
            w = optax.apply_updates(w, u)
            return w, s, k + 1, optax.tree.norm(optax.tree.get(s, "grad"))

        def cont(c):
            _, _, k, gnorm = c
            return (k == 0) | ((k < max_steps) & (gnorm > gtol))

        w, s, k, gnorm = jax.lax.while_loop(cont, step, (w0, tx.init(w0), 0, jnp.inf))
        return w, k, gnorm

    return run


def run_optax(run, w0, args):
    w, k, gnorm = run(w0, args)
    jax.block_until_ready(w)
    return int(k), None, float(gnorm)


def jaxopt_solver(f, gtol, max_steps):
    """jaxopt.LBFGS's run, built and jitted once (a new solver would compile again)."""
    solver = _jaxopt().LBFGS(fun=f, maxiter=max_steps, tol=gtol, history_size=10)
    return jax.jit(solver.run)


def run_jaxopt(f, w0, args, gtol, max_steps, run=None):
    run = run or jaxopt_solver(f, gtol, max_steps)
    res = run(w0, *args)
    jax.block_until_ready(res.params)
    gnorm = float(jnp.linalg.norm(jax.grad(f)(res.params, *args)))
    return int(res.state.iter_num), int(res.state.num_fun_eval), gnorm


def run_scipy(vg, w0, args, gtol, max_steps):
    seen = {"nfev": 0}
    dtype = np.asarray(w0).dtype

    def fun(w):
        seen["nfev"] += 1
        v, g = vg(jnp.asarray(w, dtype), *args)
        seen["last"] = (w.copy(), float(jnp.linalg.norm(g)))
        return float(v), np.asarray(g, np.float64)

    def stop(intermediate_result):
        w = intermediate_result.x
        last_w, gnorm = seen["last"]
        if not np.array_equal(w, last_w):
            gnorm = float(jnp.linalg.norm(vg(jnp.asarray(w, dtype), *args)[1]))
        if gnorm <= gtol:
            raise StopIteration

    opts = dict(maxiter=max_steps, gtol=0.0, ftol=0.0, maxcor=10, maxfun=10 * max_steps)
    res = scipy.optimize.minimize(
        fun, np.asarray(w0, np.float64), jac=True, method="L-BFGS-B", callback=stop, options=opts
    )
    gnorm = float(jnp.linalg.norm(vg(jnp.asarray(res.x, dtype), *args)[1]))
    return int(res.nit), seen["nfev"], gnorm


# --------------------------------------------------------------------------- tables


def counts_table(small: bool) -> str:
    gtol = 1e-6
    rows = []
    with jax.enable_x64(True):
        d_rosen, (n, d) = (20, (200, 20)) if small else (100, (1000, 100))
        x, y = logreg_data(n, d, jnp.float64)
        problems = [
            ("Rosenbrock 2-D", lambda w: rosenbrock(w), jnp.asarray([-1.2, 1.0]), ()),
            (
                f"Rosenbrock {d_rosen}-D",
                lambda w: rosenbrock(w),
                jnp.asarray(np.tile([-1.2, 1.0], d_rosen // 2)),
                (),
            ),
            (f"logistic regression {n} x {d}", logreg, jnp.zeros(d), (x, y)),
        ]
        for name, f, w0, args in problems:
            vg = jax.jit(jax.value_and_grad(f))
            out = {
                "jz.minimize": run_ours(f, w0, args, gtol, 2000),
                "jz.minimize(tx=jz.lbfgs())": run_ours(f, w0, args, gtol, 2000, OPTAX_TX),
                "jaxopt.LBFGS": run_jaxopt(f, w0, args, gtol, 2000),
                "scipy L-BFGS-B": run_scipy(vg, w0, args, gtol, 2000),
            }
            rows.append((name, out))
    lines = [
        f"Iterations / evaluations (value and gradient) to ||grad|| <= {gtol:g}, float64, "
        "memory 10. jz.minimize's default is jz.lbfgs(max_learning_rate=1.0); "
        "jz.lbfgs() is optax.lbfgs's algorithm (the same iterates, so optax's counts).",
        "",
        "| problem | jz.minimize | jz.minimize(tx=jz.lbfgs()) | jaxopt.LBFGS | scipy L-BFGS-B |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, out in rows:
        cells = []
        for it, ev, gnorm in out.values():
            mark = "" if gnorm <= gtol else f" (stopped at {gnorm:.1e})"
            cells.append(f"{it} / {ev}{mark}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The speed problems: (name, samples, features, feature scale, L2 weight, gtol). "easy":
# features of norm ~1, strong regularisation: 2 iterations (it measures the first step's
# line search). "harder": unit-variance features, weak regularisation: 15 iterations.
SPEED_PROBLEMS = [
    ("easy", 2000, 10_000, "unit rows", 1e-3, 1e-4),
    ("harder", 2000, 10_000, "unit entries", 1e-5, 1e-5),
]
SMALL_SPEED_PROBLEMS = [("easy", 200, 1000, "unit rows", 1e-3, 1e-4)]


def speed_problem(n, d, scale, lam, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    if scale == "unit rows":
        x /= np.sqrt(d)
    y = np.sign(x @ rng.normal(size=d) + 0.3 * rng.normal(size=n))
    args = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), jnp.float32(lam))
    return jnp.zeros(d, jnp.float32), args


def speed_runs(w0, args, gtol, max_steps, vg) -> Dict[str, Callable[[], Tuple[int, object, float]]]:
    """The five runs of one problem, each a call that returns (iterations, evaluations or
    None, final gradient norm)."""
    optax_run = optax_loop(logreg, gtol, max_steps)
    jaxopt_run = jaxopt_solver(logreg, gtol, max_steps)
    return {
        "jz.minimize": lambda: run_ours(logreg, w0, args, gtol, max_steps),
        "jz.minimize(tx=jz.lbfgs())": lambda: run_ours(logreg, w0, args, gtol, max_steps, OPTAX_TX),
        "optax.lbfgs, while_loop": lambda: run_optax(optax_run, w0, args),
        "jaxopt.LBFGS": lambda: run_jaxopt(logreg, w0, args, gtol, max_steps, jaxopt_run),
        "scipy L-BFGS-B (jax grads)": lambda: run_scipy(vg, w0, args, gtol, max_steps),
    }


def speed_table(small: bool, repeats: int) -> str:
    max_steps = 1000
    vg = jax.jit(jax.value_and_grad(logreg))
    lines = []
    worst = np.inf
    for name, n, d, scale, lam, gtol in SMALL_SPEED_PROBLEMS if small else SPEED_PROBLEMS:
        w0, args = speed_problem(n, d, scale, lam)
        runs = speed_runs(w0, args, gtol, max_steps, vg)
        info = {k: r() for k, r in runs.items()}  # warm-up: compiles
        timed = interleave(runs, rounds=repeats)  # ms; orders of a balanced Latin square
        med = {k: v["median"] / 1e3 for k, v in timed.items()}
        ours = med["jz.minimize"]
        others = ("optax.lbfgs, while_loop", "jaxopt.LBFGS", "scipy L-BFGS-B (jax grads)")
        fastest_other = min(med[k] for k in others)
        worst = min(worst, fastest_other / ours)
        lines += [
            f"**{name}**: wall time to ||grad|| <= {gtol:g}, L2-regularised ({lam:g}) logistic "
            f"regression, {d} features ({scale}), {n} samples, float32 (median of {repeats}, "
            "round-robin; compile excluded). Evaluations: of the loss and its gradient "
            "(optax's loop does not count them: ours with jz.lbfgs() are the same).",
            "",
            "| method | iterations | evaluations | s (median) | spread | time / ours |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for k in runs:
            it, ev, gnorm = info[k]
            mark = "" if gnorm <= gtol else f" (stopped at {gnorm:.1e})"
            ev_cell = "" if ev is None else str(ev)
            spread = timed[k]["spread"]
            lines.append(
                f"| {k} | {it}{mark} | {ev_cell} | {med[k]:.3f} | {spread:.0%} | "
                f"{med[k] / ours:.2f}x |"
            )
        lines.append("")
        lines.append(
            f"{name}: jz.minimize vs the fastest of optax, jaxopt and scipy: "
            f"{fastest_other / ours:.2f}x (> 1: ours faster)"
        )
        lines.append("")
    lines.append(MACHINE.headline(f"the worst of these ratios: {worst:.2f}x (> 1: ours faster)"))
    return "\n".join(lines)


def versions() -> str:
    return f"jax {jax.__version__}, optax {optax.__version__}, scipy {scipy.__version__}"


MACHINE = None  # the run's benchmarks.machine.Machine (set by main)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="small problems: a check that it runs")
    p.add_argument("--only", choices=("counts", "speed"), default=None)
    p.add_argument("--repeats", type=int, default=5)
    machine.add_arguments(p)
    a = p.parse_args(argv)
    global MACHINE
    MACHINE = machine.start(a)
    print(versions())
    if a.only in (None, "counts"):
        print()
        print(counts_table(a.small))
    if a.only in (None, "speed"):
        print()
        print(speed_table(a.small, 2 if a.small else a.repeats))
    block = MACHINE.finish()
    print(f"# load average {block['load_before']} before, {block['load_after']} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
