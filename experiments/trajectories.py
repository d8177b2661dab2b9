"""Optimizer paths on 2-D test functions: every native jaxopt_zoo optimizer, one plot each.

    rosenbrock  (1 - x)^2 + 100 (y - x^2)^2        from (-1.5, 2.0), minimum 0 at (1, 1)
    beale       (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2
                                                   from (1.0, 1.5),  minimum 0 at (3, 0.5)
    saddle      x^2 - y^2                          from (1.0, 1e-3), unbounded below: a
                                                   saddle at (0, 0) that the path must leave

Every optimizer in ``jz.available()`` (the native ones, with their registry defaults apart
from the learning rate) runs a fixed number of steps with ``jit`` + ``lax.scan``.

Learning rates (``LEARNING_RATES``) were picked once with ``--sweep``, by one rule for all:
on the grid 1e-4, 3e-4, ..., 1, 3, keep the learning rates whose whole path stays finite and
inside the plotted window; take the smallest of them that reaches the function's target (final
loss < 1e-3 on Rosenbrock and Beale; < -0.25 on the saddle, i.e. |y| > 0.5: escaped), or, if
none does, the one with the lowest final loss. So each path is the gentlest one that gets
there, and a path that falls short had no better lr on the grid: these pictures compare
behaviour, not tuned speed. Optimizers keep their registry defaults otherwise (``lion``,
``adamw``, ``nadamw`` carry their default weight decay; ``adadelta`` and ``lars`` use lr as a
multiplier of an already scaled step, hence values near 1).

    python experiments/trajectories.py [--output DIR] [--steps N] [--no-media] [--sweep]
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxopt_zoo as jz

NAME = "trajectories"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / NAME


class Problem(NamedTuple):
    fn: Callable[[jax.Array], jax.Array]
    start: tuple
    minimum: Optional[tuple]
    steps: int
    window: tuple  # (xmin, xmax, ymin, ymax) of the plot
    target: float  # a final loss below this counts as converged (saddle: escaped)


def rosenbrock(p):
    x, y = p[0], p[1]
    return (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2


def beale(p):
    x, y = p[0], p[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def saddle(p):
    return p[0] ** 2 - p[1] ** 2


PROBLEMS: Dict[str, Problem] = {
    "rosenbrock": Problem(rosenbrock, (-1.5, 2.0), (1.0, 1.0), 1000, (-2.0, 2.0, -1.0, 3.0), 1e-3),
    "beale": Problem(beale, (1.0, 1.5), (3.0, 0.5), 1000, (-0.5, 4.0, -1.0, 2.0), 1e-3),
    "saddle": Problem(saddle, (1.0, 1e-3), None, 100, (-1.5, 1.5, -1.5, 1.5), -0.25),
}

# Per-function learning rates, from `--sweep` (rule in the module docstring).
LEARNING_RATES: Dict[str, Dict[str, float]] = {
    "rosenbrock": {
        "adabelief": 0.1,
        "adadelta": 1,
        "adafactor": 0.1,
        "adagrad": 1,
        "adam": 0.1,
        "adamax": 1,
        "adamw": 0.1,
        "amsgrad": 1,
        "lamb": 0.03,
        "lars": 3,
        "lion": 0.01,
        # 8-bit / 4-bit / FP8 state: two elements stay float32 (min_size), as adamw
        "adam_8bit": 0.1,
        "adamw_8bit": 0.1,
        "adamw_4bit": 0.1,
        "adamw_fp8": 0.1,
        "lion_8bit": 0.01,
        "momentum": 0.001,
        "nadam": 0.03,
        "nadamw": 0.03,
        "nesterov": 0.001,
        "radam": 0.01,
        "rmsprop": 0.01,
        "rmsprop_centered": 0.003,
        "rmsprop_nesterov": 0.001,
        "sgd": 0.001,
        "yogi": 0.1,
        "soap": 0.01,
        "shampoo": 0.01,
        "schedule_free_sgd": 0.01,
        "schedule_free_adamw": 0.03,
        "prodigy": 0.03,
        "adopt": 1,
        "mars": 0.01,
        "ademamix": 0.03,
        "adam_mini": 0.1,  # issue 19
        "muon": 0.03,  # a vector: Muon's NAdamW part, so NAdam's choice
        "acprop": 0.01,
        "cocob": 0.0003,
        "dadapt_adamw": 0.3,
        "dog": 3,
        "dowg": 0.3,
        "dpsgd": 0.01,
        "simplified_ademamix": 0.0003,
        "lbfgs": 0.0001,  # a scale of the direction; its line search sets the step
        "galore": 0.1,  # 2-vectors: Adam
        "madgrad": 0.01,
        "momo": 0.1,
        "momo_adam": 0.1,
        "sophia": 0.01,
        "adamaxw": 1,
        "adan": 0.03,
        "fromage": 0.1,
        "noisy_sgd": 0.001,
        "novograd": 0.001,
        "optimistic_gradient_descent": 0.001,
        "optimistic_adam": 0.03,
        "optimistic_adam_v2": 0.03,
        "polyak_sgd": 0.1,
        "rprop": 0.3,
        "sign_sgd": 0.001,
        "signum": 0.03,
        "sm3": 3,
        "psgd_kron": 0.01,
    },
    "beale": {
        "adabelief": 0.03,
        "adadelta": 1,
        "adafactor": 0.01,
        "adagrad": 0.3,
        "adam": 0.03,
        "adamax": 0.3,
        "adamw": 0.03,
        "amsgrad": 0.3,
        "lamb": 0.003,
        "lars": 0.3,
        "lion": 0.003,
        # 8-bit / 4-bit / FP8 state: two elements stay float32 (min_size), as adamw
        "adam_8bit": 0.03,
        "adamw_8bit": 0.03,
        "adamw_4bit": 0.03,
        "adamw_fp8": 0.03,
        "lion_8bit": 0.003,
        "momentum": 0.001,
        "nadam": 0.03,
        "nadamw": 0.03,
        "nesterov": 0.001,
        "radam": 0.01,
        "rmsprop": 0.01,
        "rmsprop_centered": 0.0003,
        "rmsprop_nesterov": 0.001,
        "sgd": 0.01,
        "yogi": 0.03,
        "soap": 0.01,
        "shampoo": 0.01,
        "schedule_free_sgd": 0.003,
        "schedule_free_adamw": 0.03,
        "prodigy": 0.03,
        "adopt": 0.3,
        "mars": 0.01,
        "ademamix": 0.3,
        "adam_mini": 0.1,  # issue 19
        "muon": 0.03,
        "acprop": 0.01,
        "cocob": 0.0001,
        "dadapt_adamw": 0.3,
        "dog": 3,
        "dowg": 0.3,
        "dpsgd": 0.01,
        "simplified_ademamix": 0.0001,  # no lr on the grid stays in the window
        "lbfgs": 0.0001,
        "galore": 0.03,  # 2-vectors: Adam
        "madgrad": 0.01,
        "momo": 0.1,
        "momo_adam": 0.03,
        "sophia": 0.01,
        "adamaxw": 0.3,
        "adan": 0.01,
        "fromage": 0.003,
        "noisy_sgd": 0.01,
        "novograd": 0.001,
        "optimistic_gradient_descent": 0.01,
        "optimistic_adam": 0.03,
        "optimistic_adam_v2": 0.03,
        "polyak_sgd": 0.01,
        "rprop": 0.0001,
        "sign_sgd": 0.003,
        "signum": 0.003,
        "sm3": 1,
        "psgd_kron": 0.01,
    },
    "saddle": {
        "adabelief": 0.003,
        "adadelta": 0.1,
        "adafactor": 0.01,
        "adagrad": 0.03,
        "adam": 0.01,
        "adamax": 0.01,
        "adamw": 0.01,
        "amsgrad": 0.01,
        "lamb": 0.01,
        "lars": 3,
        "lion": 0.01,
        # 8-bit / 4-bit / FP8 state: two elements stay float32 (min_size), as adamw
        "adam_8bit": 0.01,
        "adamw_8bit": 0.01,
        "adamw_4bit": 0.01,
        "adamw_fp8": 0.01,
        "lion_8bit": 0.01,
        "momentum": 0.003,
        "nadam": 0.01,
        "nadamw": 0.01,
        "nesterov": 0.003,
        "radam": 0.03,
        "rmsprop": 0.01,
        "rmsprop_centered": 0.003,
        "rmsprop_nesterov": 0.001,
        "sgd": 0.03,
        "yogi": 0.01,
        "soap": 0.01,
        "shampoo": 0.01,
        "schedule_free_sgd": 0.1,
        "schedule_free_adamw": 0.01,
        "prodigy": 0.03,
        "adopt": 0.003,
        "mars": 0.01,
        "ademamix": 0.01,
        "adam_mini": 0.03,  # issue 19
        "muon": 0.01,
        "acprop": 0.001,
        "cocob": 0.0001,  # no lr on the grid stays in the window
        "dadapt_adamw": 0.1,
        "dog": 1,
        "dowg": 0.1,
        "dpsgd": 0.03,
        "simplified_ademamix": 0.0003,
        # no lr keeps the path in the window: the line search follows x^2 - y^2 down its
        # unbounded direction at once (the rule's fallback has nothing to pick from)
        "lbfgs": 1.0,
        "galore": 0.01,  # 2-vectors: Adam
        "madgrad": 0.01,
        "momo": 0.1,
        "momo_adam": 0.01,
        "sophia": 0.01,
        "adamaxw": 0.01,
        "adan": 0.01,
        "fromage": 0.03,
        "noisy_sgd": 0.01,
        "novograd": 0.003,
        "optimistic_gradient_descent": 0.03,
        "optimistic_adam": 0.01,
        "optimistic_adam_v2": 0.01,
        "polyak_sgd": 0.03,
        "rprop": 0.0001,  # no rate of the grid stays in the window: the smallest
        "sign_sgd": 0.01,
        "signum": 0.01,
        "sm3": 0.03,
        "psgd_kron": 0.03,
    },
}
LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)


def _extra_args(name: str, fn: Callable, p: jax.Array, g: jax.Array) -> Dict[str, Any]:
    """The update keywords the registry entry needs (L-BFGS's line search, MoMo, Sophia:
    the loss)."""
    have = {"value": lambda: fn(p), "grad": lambda: g, "value_fn": lambda: fn, "obj_fn": lambda: fn}
    return {a: have[a]() for a in jz.entry(name).extra_args if a in have}


def _path_fn(name: str, problem: Problem, steps: int):
    """lr -> (points p_0..p_steps, losses f(p_t)): one ``lax.scan``, lr may be traced."""

    entry = jz.entry(name)
    # The step size is the factory's first argument (learning_rate; polyak_sgd's
    # max_learning_rate); an optimizer that needs the loss gets it (_extra_args).
    step_arg = next(iter(inspect.signature(entry.factory).parameters))

    def go(lr):
        tx = jz.get(name, **{step_arg: lr})
        p0 = jnp.asarray(problem.start, jnp.float32)

        def body(carry, _):
            p, state = carry
            g = jax.grad(problem.fn)(p)
            updates, state = tx.update(g, state, p, **_extra_args(name, problem.fn, p, g))
            p = optax.apply_updates(p, updates)
            return (p, state), p

        _, path = jax.lax.scan(body, (p0, tx.init(p0)), None, length=steps)
        path = jnp.concatenate([p0[None], path])
        return path, jax.vmap(problem.fn)(path)

    return go


def simulate(name: str, lr: float, problem: Problem, steps: int):
    """The path of optimizer ``name`` at learning rate ``lr`` (jit + lax.scan)."""
    path, losses = jax.jit(_path_fn(name, problem, steps))(jnp.float32(lr))
    return np.asarray(path, np.float64), np.asarray(losses, np.float64)


def simulate_lrs(name: str, lrs: Sequence[float], problem: Problem, steps: int):
    """Paths for several learning rates in one compile (``vmap`` over lr)."""
    paths, losses = jax.jit(jax.vmap(_path_fn(name, problem, steps)))(jnp.asarray(lrs, jnp.float32))
    return np.asarray(paths, np.float64), np.asarray(losses, np.float64)


def lr_sweep(
    names: Optional[Sequence[str]] = None,
    functions: Optional[Sequence[str]] = None,
    grid: Sequence[float] = LR_GRID,
) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Apply the selection rule of the module docstring; {function: {optimizer: info}}."""
    names = list(names or jz.available())
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for fname in functions or PROBLEMS:
        prob = PROBLEMS[fname]
        out[fname] = {}
        for name in names:
            finals, reached = {}, {}
            paths, all_losses = simulate_lrs(name, grid, prob, prob.steps)
            x0, x1, y0, y1 = prob.window
            for lr, path, losses in zip(grid, paths, all_losses):
                visible = bool(
                    np.all(np.isfinite(path))
                    and np.all(
                        (path[:, 0] >= x0)
                        & (path[:, 0] <= x1)
                        & (path[:, 1] >= y0)
                        & (path[:, 1] <= y1)
                    )
                )
                finals[lr] = float(losses[-1]) if visible else None
                reached[lr] = visible and float(losses[-1]) < prob.target
            if any(reached.values()):
                best = min(lr for lr, ok in reached.items() if ok)
            else:
                good = {lr: v for lr, v in finals.items() if v is not None}
                best = min(good, key=lambda lr: (good[lr], lr)) if good else None
            out[fname][name] = {
                "best_lr": best,
                "reached_target": bool(reached.get(best)),
                "final_loss_by_lr": finals,
            }
    return out


def run(
    steps: Optional[int] = None,
    output: Optional[Path] = None,
    write_media: bool = True,
    functions: Optional[Sequence[str]] = None,
    optimizers: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """Run every optimizer on every function; write files under ``output`` if given.

    ``steps`` overrides every function's default number of steps. Returns
    {function: {"start", "steps", "start_loss", "optimizers": {name: {"lr", "final_point",
    "final_loss", "path" (steps + 1 points), "losses"}}}}.
    """
    names = list(optimizers or jz.available())
    results: Dict[str, Any] = {}
    for fname in functions or PROBLEMS:
        prob = PROBLEMS[fname]
        n = steps if steps is not None else prob.steps
        res = {
            "start": list(prob.start),
            "minimum": prob.minimum,
            "steps": n,
            "start_loss": float(prob.fn(jnp.asarray(prob.start, jnp.float32))),
            "optimizers": {},
        }
        for name in names:
            lr = LEARNING_RATES[fname].get(name, jz.entry(name).default_lr)
            path, losses = simulate(name, lr, prob, n)
            res["optimizers"][name] = {
                "lr": lr,
                "final_point": path[-1].tolist(),
                "final_loss": float(losses[-1]),
                "min_loss": float(np.min(losses)),
                "path": path,
                "losses": losses,
            }
        results[fname] = res
        if output is not None:
            out = Path(output)
            out.mkdir(parents=True, exist_ok=True)
            _write_numbers(out, fname, res)
            if write_media:
                _plot(out / f"{fname}.png", fname, prob, res)  # and {fname}_panels.png
                _animate(out / f"{fname}.gif", fname, prob, res)
    return results


def _write_numbers(out: Path, fname: str, res: Dict[str, Any], max_points: int = 101) -> None:
    n = res["steps"]
    idx = np.unique(np.linspace(0, n, min(n + 1, max_points)).round().astype(int))
    doc = {
        "function": fname,
        "start": res["start"],
        "minimum": res["minimum"],
        "steps": n,
        "start_loss": res["start_loss"],
        "path_steps": idx.tolist(),
        "optimizers": {},
    }
    for name, r in res["optimizers"].items():
        doc["optimizers"][name] = {
            "lr": r["lr"],
            "final_point": r["final_point"],
            "final_loss": r["final_loss"],
            "path": np.round(r["path"][idx], 5).tolist(),
        }
    (out / f"{fname}_paths.json").write_text(json.dumps(doc) + "\n")
    with (out / f"{fname}_final.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["optimizer", "lr", "steps", "x", "y", "loss", "min_loss"])
        for name, r in res["optimizers"].items():
            x, y = r["final_point"]
            w.writerow(
                [
                    name,
                    f"{r['lr']:g}",
                    n,
                    f"{x:.6g}",
                    f"{y:.6g}",
                    f"{r['final_loss']:.6g}",
                    f"{r['min_loss']:.6g}",
                ]
            )


def _styles(names: Sequence[str]):
    """Ten colours x three line styles, so that no two of 21+ paths look alike."""
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10").colors
    return {
        n: {"color": colors[i % 10], "ls": ("-", "--", ":")[(i // 10) % 3]}
        for i, n in enumerate(names)
    }


def _grid(prob: Problem, n: int = 250):
    x0, x1, y0, y1 = prob.window
    X, Y = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    Z = np.asarray(jax.vmap(jax.vmap(prob.fn))(jnp.stack([X, Y], -1).astype(jnp.float32)))
    if prob.minimum is None:  # sign changes: log-spaced levels on both sides of 0
        pos = np.logspace(-2, np.log10(np.abs(Z).max()), 7)
        levels = np.concatenate([-pos[::-1], pos])
    else:
        levels = np.logspace(np.log10(max(Z.min(), 1e-3)), np.log10(Z.max()), 16)
    return X, Y, Z, levels


def _background(ax, prob: Problem, grid, labels: bool = True):
    X, Y, Z, levels = grid
    ax.contour(X, Y, Z, levels=levels, colors="0.78", linewidths=0.6, linestyles="solid")
    ax.plot(*prob.start, "ko", ms=4)
    if prob.minimum is not None:
        ax.plot(*prob.minimum, "k*", ms=9)
    x0, x1, y0, y1 = prob.window
    ax.set(xlim=(x0, x1), ylim=(y0, y1))
    if labels:
        ax.set(xlabel="x", ylabel="y")


def _plot(path: Path, fname: str, prob: Problem, res: Dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["optimizers"])
    st = _styles(names)
    grid = _grid(prob)
    fig, ax = plt.subplots(figsize=(10, 6.2), dpi=100)
    _background(ax, prob, grid)
    for n in names:
        r = res["optimizers"][n]
        p = r["path"]
        ax.plot(
            p[:, 0], p[:, 1], lw=1.4, **st[n], label=f"{n} (lr {r['lr']:g}) → {r['final_loss']:.2g}"
        )
        ax.plot(p[-1, 0], p[-1, 1], "o", color=st[n]["color"], ms=4)
    ax.set_title(
        f"{fname}: {res['steps']} steps from {tuple(res['start'])}, loss "
        f"{res['start_loss']:.3g} (legend: lr → final loss)"
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

    # The same paths one per panel: the overlay shows who goes where, the panels how.
    cols = 7
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(2.1 * cols, 1.9 * rows),
        dpi=80,
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, n in zip(axes.flat, names):
        r = res["optimizers"][n]
        p = r["path"]
        _background(ax, prob, grid, labels=False)
        ax.plot(p[:, 0], p[:, 1], lw=1.2, color=st[n]["color"])
        ax.plot(p[-1, 0], p[-1, 1], "o", color=st[n]["color"], ms=4, mec="k", mew=0.5)
        ax.set_title(f"{n}  lr {r['lr']:g}\nfinal loss {r['final_loss']:.2g}", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{fname}: {res['steps']} steps from {tuple(res['start'])}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path.with_name(f"{fname}_panels.png"))
    plt.close(fig)


def _animate(path: Path, fname: str, prob: Problem, res: Dict[str, Any], frames: int = 40) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    names = list(res["optimizers"])
    st = _styles(names)
    n = res["steps"]
    # Geometric frame spacing: the early steps, where paths differ most, get more frames.
    ts = np.unique(np.geomspace(1, n + 1, frames).round().astype(int) - 1)
    fig, ax = plt.subplots(figsize=(8.4, 5.0), dpi=72)
    _background(ax, prob, _grid(prob))
    lines = {nm: ax.plot([], [], lw=1.2, **st[nm], label=nm)[0] for nm in names}
    heads = {nm: ax.plot([], [], "o", color=st[nm]["color"], ms=3)[0] for nm in names}
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    title = ax.set_title(f"{fname}: step 0 / {n}")
    fig.tight_layout()

    def draw(t):
        for nm in names:
            p = res["optimizers"][nm]["path"][: t + 1]
            lines[nm].set_data(p[:, 0], p[:, 1])
            heads[nm].set_data([p[-1, 0]], [p[-1, 1]])
        title.set_text(f"{fname}: step {t} / {n}")
        return []

    seq = list(ts) + [ts[-1]] * 6
    FuncAnimation(fig, draw, frames=seq).save(path, writer=PillowWriter(fps=8))
    plt.close(fig)


def print_table(results: Dict[str, Any]) -> None:
    for fname, res in results.items():
        print(
            f"{fname}: {res['steps']} steps from {tuple(res['start'])}, "
            f"start loss {res['start_loss']:.4g}"
        )
        for name, r in res["optimizers"].items():
            x, y = r["final_point"]
            print(
                f"  {name:18s} lr {r['lr']:<7g} final ({x:9.4f}, {y:9.4f})  "
                f"loss {r['final_loss']:.4g}"
            )


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="steps for every function (default: "
        + ", ".join(f"{k} {v.steps}" for k, v in PROBLEMS.items())
        + ")",
    )
    p.add_argument("--no-media", action="store_true", help="skip the PNGs and GIFs")
    p.add_argument(
        "--sweep",
        action="store_true",
        help="print the learning-rate sweep behind LEARNING_RATES and exit",
    )
    args = p.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    if args.sweep:
        sweep = lr_sweep()
        for fname, rows in sweep.items():
            print(f"{fname}:")
            for name, info in rows.items():
                print(
                    f"  {name:18s} {info['best_lr']!s:6s} {'*' if info['reached_target'] else ' '} "
                    + " ".join(
                        f"{lr:g}:{'x' if v is None else f'{v:.2g}'}"
                        for lr, v in info["final_loss_by_lr"].items()
                    )
                )
        print({f: {n: i["best_lr"] for n, i in rows.items()} for f, rows in sweep.items()})
        return
    results = run(args.steps, args.output, write_media=not args.no_media)
    print_table(results)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
