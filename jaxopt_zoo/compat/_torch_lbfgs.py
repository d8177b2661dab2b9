"""``torch.optim.LBFGS`` as a GradientTransformation: ``compat.torch.lbfgs``.

One ``update`` is one ``LBFGS.step(closure)``: up to ``max_iter`` L-BFGS iterations with
their function evaluations (``value_fn`` plays the closure), under ``lax.while_loop``, so
the whole step jits. The parameters are flattened into one vector as torch does
(complex leaves as real pairs); the history is a ring buffer of ``history_size`` pairs.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_zoo.core import (
    GradientTransformationExtraArgs,
    check_int,
    check_nonneg,
    check_same_structure,
    require_params,
    scalar_dtype,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe

__all__ = ["TorchLBFGSState", "lbfgs"]

# torch's _strong_wolfe constants (LBFGS.step passes none of them but max_ls).
_C1 = 1e-4
_C2 = 0.9
_LS_TOLERANCE_CHANGE = 1e-9


class TorchLBFGSState(NamedTuple):
    """State of :func:`lbfgs` (torch's ``optimizer.state``), over the flattened parameters.

    Attributes:
      n_iter: iterations so far, over all steps (``state["n_iter"]``).
      func_evals: function evaluations so far (``state["func_evals"]``).
      d: the last search direction.
      t: the last step length.
      old_dirs: ring buffer of the gradient differences ``y`` (``history_size`` rows).
      old_stps: ring buffer of the steps ``s``.
      ro: ``1 / (y . s)`` of each stored pair.
      hist_start: the ring index of the oldest pair.
      hist_len: how many pairs are stored.
      h_diag: the initial inverse-Hessian scale ``y.s / y.y``.
      prev_flat_grad: the gradient at the start of the last iteration.
      prev_loss: the loss at the start of the last iteration.
    """

    n_iter: jax.Array
    func_evals: jax.Array
    d: jax.Array
    t: jax.Array
    old_dirs: jax.Array
    old_stps: jax.Array
    ro: jax.Array
    hist_start: jax.Array
    hist_len: jax.Array
    h_diag: jax.Array
    prev_flat_grad: jax.Array
    prev_loss: jax.Array


# --------------------------------------------------------------------------- #
# Flat view (torch's _gather_flat_grad / _add_grad)
# --------------------------------------------------------------------------- #


def _flatten(tree: Any, dt: Any) -> jax.Array:
    parts = []
    for x in jax.tree.leaves(tree):
        x = jnp.asarray(x)
        if jnp.iscomplexobj(x):
            x = jnp.stack([x.real, x.imag], axis=-1)
        parts.append(x.reshape(-1).astype(dt))
    if not parts:
        return jnp.zeros(0, dt)
    return jnp.concatenate(parts)


def _unflattener(like: Any) -> Callable[[jax.Array], Any]:
    leaves, treedef_ = jax.tree.flatten(like)
    treedef: Any = treedef_
    metas = []
    for x in leaves:
        x = jnp.asarray(x)
        cplx = bool(jnp.iscomplexobj(x))
        size = int(np.prod(x.shape, dtype=np.int64)) * (2 if cplx else 1)
        metas.append((x.shape, x.dtype, cplx, size))

    def unflatten(v):
        out, off = [], 0
        for shape, dtype, cplx, size in metas:
            piece = v[off : off + size]
            off += size
            if cplx:
                piece = piece.reshape(shape + (2,))
                real = jnp.finfo(dtype).dtype
                out.append(jax.lax.complex(piece[..., 0].astype(real), piece[..., 1].astype(real)))
            else:
                out.append(piece.reshape(shape).astype(dtype))
        return treedef.unflatten(out)

    return unflatten


def _py_max(a, b):
    """Python's ``max(a, b)``: ``a`` unless ``b > a`` (NaN keeps ``a``), as torch's code."""
    return jnp.where(b > a, b, a)


def _py_min(a, b):
    return jnp.where(b < a, b, a)


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimizer of the cubic through ``(x1, f1, g1)`` and ``(x2, f2, g2)``, clipped to
    ``bounds`` (default: between the points); the midpoint when the cubic has none."""
    if bounds is None:
        xmin = jnp.where(x1 <= x2, x1, x2)
        xmax = jnp.where(x1 <= x2, x2, x1)
    else:
        xmin, xmax = bounds
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    real = d2_square >= 0
    d2 = jnp.sqrt(jnp.where(real, d2_square, 0.0))
    min_pos = jnp.where(
        x1 <= x2,
        x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)),
        x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2)),
    )
    return jnp.where(real, _py_min(_py_max(min_pos, xmin), xmax), (xmin + xmax) / 2.0)


# --------------------------------------------------------------------------- #
# Strong Wolfe line search (More & Thuente's bracketing + cubic zoom, as minFunc)
# --------------------------------------------------------------------------- #


def _strong_wolfe(fg, x, t, d, f, g, gtd, max_ls):
    """torch's ``_strong_wolfe``: returns ``(f_new, g_new, t, evaluations)``."""
    dt = x.dtype
    d_norm = jnp.max(jnp.abs(d)) if d.size else jnp.zeros([], dt)

    def evaluate(t):
        f_new, g_new = fg(x + t * d)
        return f_new, g_new, jnp.dot(g_new, d)

    f_new, g_new, gtd_new = evaluate(t)
    zero = jnp.zeros([], dt)
    # Bracketing: outcome 0 = go on, 1 = bracket [t_prev, t] found, 2 = t satisfies Wolfe.
    init = (zero, f, g, gtd, t, f_new, g_new, gtd_new, jnp.int32(0), jnp.int32(1), jnp.int32(0))

    def b_cond(c):
        ls_iter, outcome = c[8], c[10]
        return (ls_iter < max_ls) & (outcome == 0)

    def b_body(c):
        t_prev, f_prev, g_prev, gtd_prev, t, f_new, g_new, gtd_new, ls_iter, evals, _ = c
        armijo_fails = (f_new > f + _C1 * t * gtd) | ((ls_iter > 1) & (f_new >= f_prev))
        wolfe = jnp.abs(gtd_new) <= -_C2 * gtd
        outcome = jnp.where(
            armijo_fails, 1, jnp.where(wolfe, 2, jnp.where(gtd_new >= 0, 1, 0))
        ).astype(jnp.int32)

        def step(_):
            min_step = t + 0.01 * (t - t_prev)
            max_step = t * 10
            t_next = _cubic_interpolate(
                t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step)
            )
            fn, gn, gtdn = evaluate(t_next)
            return (t, f_new, g_new, gtd_new, t_next, fn, gn, gtdn, ls_iter + 1, evals + 1)

        def stay(_):
            return (t_prev, f_prev, g_prev, gtd_prev, t, f_new, g_new, gtd_new, ls_iter, evals)

        return jax.lax.cond(outcome == 0, step, stay, None) + (outcome,)

    t_prev, f_prev, g_prev, gtd_prev, t, f_new, g_new, gtd_new, ls_iter, evals, outcome = (
        jax.lax.while_loop(b_cond, b_body, init)
    )
    exhausted = ls_iter == max_ls
    # The bracket [lo, hi] (both entries the Wolfe point when outcome == 2).
    bt0 = jnp.where(exhausted, zero, jnp.where(outcome == 2, t, t_prev))
    bf0 = jnp.where(exhausted, f, jnp.where(outcome == 2, f_new, f_prev))
    bg0 = jnp.where(exhausted, g, jnp.where(outcome == 2, g_new, g_prev))
    bgtd0 = jnp.where(exhausted, gtd, jnp.where(outcome == 2, gtd_new, gtd_prev))
    bt = jnp.stack([bt0, t])
    bf = jnp.stack([bf0, f_new])
    bg = jnp.stack([bg0, g_new])
    bgtd = jnp.stack([bgtd0, gtd_new])
    done = (outcome == 2) & ~exhausted
    low = jnp.where(bf[0] <= bf[1], 0, 1).astype(jnp.int32)

    def z_cond(c):
        bt, _, _, _, _, done, _, ls_iter, _ = c
        return (
            (~done) & (ls_iter < max_ls) & ~(jnp.abs(bt[1] - bt[0]) * d_norm < _LS_TOLERANCE_CHANGE)
        )

    def z_body(c):
        bt, bf, bg, bgtd, low, done, insuf, ls_iter, evals = c
        high = 1 - low
        t = _cubic_interpolate(bt[0], bf[0], bgtd[0], bt[1], bf[1], bgtd[1])
        bmax = _py_max(bt[0], bt[1])
        bmin = _py_min(bt[0], bt[1])
        eps = 0.1 * (bmax - bmin)
        near = _py_min(bmax - t, t - bmin) < eps
        move = near & (insuf | (t >= bmax) | (t <= bmin))
        moved_t = jnp.where(jnp.abs(t - bmax) < jnp.abs(t - bmin), bmax - eps, bmin + eps)
        t = jnp.where(move, moved_t, t)
        insuf = near & ~move
        f_new, g_new, gtd_new = evaluate(t)
        ls_iter, evals = ls_iter + 1, evals + 1

        def put(arrays, pos, values):
            return tuple(a.at[pos].set(v) for a, v in zip(arrays, values))

        new = (t, f_new, g_new, gtd_new)
        worse = (f_new > f + _C1 * t * gtd) | (f_new >= bf[low])
        wolfe = jnp.abs(gtd_new) <= -_C2 * gtd

        def replace_high(_):
            out = put((bt, bf, bg, bgtd), high, new)
            new_low = jnp.where(out[1][0] <= out[1][1], 0, 1).astype(jnp.int32)
            return out + (new_low, done)

        def replace_low(_):
            arrays: Any = (bt, bf, bg, bgtd)
            flip = (~wolfe) & (gtd_new * (bt[high] - bt[low]) >= 0)
            old_low = tuple(a[low] for a in arrays)
            flipped = put(arrays, high, old_low)
            arrays = tuple(jnp.where(flip, b, a) for a, b in zip(arrays, flipped))
            return put(arrays, low, new) + (low, done | wolfe)

        bt, bf, bg, bgtd, low, done = jax.lax.cond(worse, replace_high, replace_low, None)
        return (bt, bf, bg, bgtd, low, done, insuf, ls_iter, evals)

    init_z = (bt, bf, bg, bgtd, low, done, jnp.bool_(False), ls_iter, evals)
    bt, bf, bg, _, low, _, _, _, evals = jax.lax.while_loop(z_cond, z_body, init_z)
    return bf[low], bg[low], bt[low], evals


# --------------------------------------------------------------------------- #
# The two-loop recursion over the ring buffer
# --------------------------------------------------------------------------- #


def _direction(g, old_dirs, old_stps, ro, start, hlen, h_diag):
    """``-H g`` by the two-loop recursion, newest pair first (torch's order)."""
    m = old_dirs.shape[0]
    al0 = jnp.zeros((m,), g.dtype)

    def back(k, carry):
        q, al = carry
        i = hlen - 1 - k
        j = (start + i) % m
        a = jnp.dot(old_stps[j], q) * ro[j]
        return q - a * old_dirs[j], al.at[i].set(a)

    q, al = jax.lax.fori_loop(0, hlen, back, (-g, al0))
    r = q * h_diag

    def fwd(i, r):
        j = (start + i) % m
        be = jnp.dot(old_dirs[j], r) * ro[j]
        return r + (al[i] - be) * old_stps[j]

    return jax.lax.fori_loop(0, hlen, fwd, r)


# --------------------------------------------------------------------------- #
# The optimizer
# --------------------------------------------------------------------------- #


def lbfgs(
    lr: Any = 1,
    max_iter: int = 20,
    max_eval: Optional[int] = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: Optional[str] = None,
) -> GradientTransformationExtraArgs:
    """``torch.optim.LBFGS`` (Nocedal 1980; Liu & Nocedal 1989; minFunc's line search).

    One ``update(grads, state, params, value=f(params), value_fn=f)`` is one
    ``LBFGS.step(closure)``: from the loss and gradient at ``params`` it runs up to
    ``max_iter`` iterations, each::

        d = -g                                     (the very first iteration; H = 1)
        else:  y = g - g_prev,  s = t_prev d_prev;  if y.s > 1e-10: push (y, s), H = y.s / y.y
               d = -H_k g  by the two-loop recursion over the last history_size pairs
        t = min(1, 1 / |g|_1) lr  (first iteration ever),  else lr
        stop if g.d > -tolerance_change
        line_search_fn="strong_wolfe": t, f, g from the strong-Wolfe search (c1 = 1e-4,
            c2 = 0.9, at most max_eval - evaluations so far), x += t d
        None: x += t d, then f, g = value_fn(x) (not after the last iteration)
        stop after max_iter iterations, max_eval evaluations, max|g| <= tolerance_grad,
            max|t d| <= tolerance_change or |f - f_prev| < tolerance_change

    and returns the parameter change. It returns zeros (no iteration) when
    ``max|grads| <= tolerance_grad``. ``value_fn`` is differentiated with ``jax.grad``
    for the inner iterations; ``value`` (optional: computed from ``value_fn``) and
    ``grads`` are the loss and gradient at ``params``. The loops are
    ``lax.while_loop``s: the step jits, with ``value_fn`` fixed at trace time. Complex
    leaves are real pairs, as in torch: their ``grads`` must be in torch's convention
    (``conj`` of ``jax.grad``'s). The state holds ``2 history_size + 3`` flat vectors
    (torch's ``param_bytes * (history_size + 1)`` and more). Float64 parameters compute in
    float64, others in float32.

    Raises:
      ValueError: negative ``lr`` or tolerances; ``max_iter``, ``max_eval`` or
        ``history_size`` not a positive integer; ``line_search_fn`` not None or
        ``"strong_wolfe"`` (torch raises at the first step).

    Args:
      lr: the step length (line search: its first trial).
      max_iter: iterations per ``update``.
      max_eval: function evaluations per ``update`` (default ``max_iter * 5 // 4``).
      tolerance_grad: stop when ``max|g| <= tolerance_grad``.
      tolerance_change: stop on smaller changes of the loss or the parameters.
      history_size: how many ``(y, s)`` pairs the inverse-Hessian estimate uses.
      line_search_fn: None (fixed step ``lr``) or ``"strong_wolfe"``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``value_fn``.

    Example:
      >>> def f(p):
      ...     return jnp.sum((p["w"] - 3.0) ** 2)
      >>> tx = jz.compat.torch.lbfgs(line_search_fn="strong_wolfe")
      >>> params = {"w": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update(jax.grad(f)(params), state, params, value_fn=f)
      >>> params = optax.apply_updates(params, updates)
      >>> [round(float(v), 4) for v in params["w"]]
      [3.0, 3.0]
    """
    check_nonneg("learning rate", lr, schedule_ok=False)
    max_iter = check_int("max_iter", max_iter, low=1)
    max_eval = max_iter * 5 // 4 if max_eval is None else check_int("max_eval", max_eval, low=1)
    check_nonneg("tolerance_grad", tolerance_grad, schedule_ok=False)
    check_nonneg("tolerance_change", tolerance_change, schedule_ok=False)
    history_size = check_int("history_size", history_size, low=1)
    if line_search_fn not in (None, "strong_wolfe"):
        raise ValueError(
            f"Invalid line_search_fn: {line_search_fn!r}. Expected None or 'strong_wolfe' "
            "(torch: \"only 'strong_wolfe' is supported\")."
        )
    strong_wolfe = line_search_fn == "strong_wolfe"

    def init_fn(params):
        dt = scalar_dtype(params)
        n = _flatten(params, dt).shape[0]
        return TorchLBFGSState(
            n_iter=jnp.zeros([], jnp.int32),
            func_evals=jnp.zeros([], jnp.int32),
            d=jnp.zeros((n,), dt),
            t=jnp.zeros([], dt),
            old_dirs=jnp.zeros((history_size, n), dt),
            old_stps=jnp.zeros((history_size, n), dt),
            ro=jnp.zeros((history_size,), dt),
            hist_start=jnp.zeros([], jnp.int32),
            hist_len=jnp.zeros([], jnp.int32),
            h_diag=jnp.ones([], dt),
            prev_flat_grad=jnp.zeros((n,), dt),
            prev_loss=jnp.zeros([], dt),  # every state array its own (safe to donate)
        )

    def update_fn(updates, state, params=None, *, value=None, value_fn=None, **extra):
        del extra
        require_params(params, "compat.torch.lbfgs")
        check_same_structure(updates, params, "compat.torch.lbfgs")
        if value_fn is None:
            raise ValueError(
                "compat.torch.lbfgs: update needs value_fn=, the loss as a function of the "
                "parameters (torch's closure): tx.update(grads, state, params, value=loss, "
                "value_fn=loss_fn)."
            )
        dt = state.d.dtype
        unflatten = _unflattener(params)

        def fun(v):
            return jnp.asarray(value_fn(unflatten(v))).astype(dt)

        value_and_grad = jax.value_and_grad(fun)

        def fg(v):
            f, g = value_and_grad(v)
            return f, g.astype(dt)

        x0 = _flatten(params, dt)
        g0 = _flatten(updates, dt)
        f0 = fun(x0) if value is None else jnp.asarray(value).astype(dt)
        lr_ = jnp.asarray(lr, dt)
        m = history_size

        def max_abs(v):
            return jnp.max(jnp.abs(v)) if v.size else jnp.zeros([], dt)

        carry0 = dict(
            x=x0,
            f=f0,
            g=g0,
            d=state.d,
            t=state.t,
            Y=state.old_dirs,
            S=state.old_stps,
            ro=state.ro,
            start=state.hist_start,
            hlen=state.hist_len,
            h=state.h_diag,
            prev_g=state.prev_flat_grad,
            prev_f=state.prev_loss,
            n_local=jnp.int32(0),
            n_total=state.n_iter,
            evals=jnp.int32(1),
            stop=max_abs(g0) <= tolerance_grad,
        )

        def cond(c):
            return ~c["stop"]

        def body(c):
            c = dict(c)
            n_local = c["n_local"] + 1
            n_total = c["n_total"] + 1
            first = n_total == 1
            g = c["g"]
            # Memory update from the last iteration's step (skipped on the first ever).
            y = g - c["prev_g"]
            s = c["d"] * c["t"]
            ys = jnp.dot(y, s)
            push = (~first) & (ys > 1e-10)
            full = c["hlen"] == m
            j = jnp.where(full, c["start"], (c["start"] + c["hlen"]) % m)
            Y = c["Y"].at[j].set(jnp.where(push, y, c["Y"][j]))
            S = c["S"].at[j].set(jnp.where(push, s, c["S"][j]))
            ro = c["ro"].at[j].set(jnp.where(push, 1.0 / ys, c["ro"][j]))
            start = jnp.where(push & full, (c["start"] + 1) % m, c["start"])
            hlen = jnp.where(push & ~full, c["hlen"] + 1, c["hlen"])
            h = jnp.where(push, ys / jnp.dot(y, y), c["h"])
            hlen = jnp.where(first, 0, hlen).astype(jnp.int32)
            start = jnp.where(first, 0, start).astype(jnp.int32)
            h = jnp.where(first, jnp.ones([], dt), h)
            d = _direction(g, Y, S, ro, start, hlen, h)
            prev_g, prev_f = g, c["f"]
            inv_l1 = 1.0 / jnp.sum(jnp.abs(g))
            t = jnp.where(first, _py_min(jnp.ones([], dt), inv_l1) * lr_, lr_)
            gtd = jnp.dot(g, d)
            c.update(
                Y=Y, S=S, ro=ro, start=start, hlen=hlen, h=h, d=d, t=t,
                prev_g=prev_g, prev_f=prev_f, n_local=n_local, n_total=n_total,
            )  # fmt: skip

            def no_descent(c):
                return dict(c, stop=jnp.bool_(True))

            def advance(c):
                x, f, g, d, t, evals = c["x"], c["f"], c["g"], c["d"], c["t"], c["evals"]
                if strong_wolfe:
                    f, g, t, ls_evals = _strong_wolfe(fg, x, t, d, f, g, gtd, max_eval - evals)
                    x = x + t * d
                    opt_cond = max_abs(g) <= tolerance_grad
                else:
                    x = x + t * d
                    last = n_local == max_iter

                    def reevaluate(_):
                        fn, gn = fg(x)
                        return fn, gn, max_abs(gn) <= tolerance_grad, jnp.int32(1)

                    def keep(_):
                        return f, g, jnp.bool_(False), jnp.int32(0)

                    f, g, opt_cond, ls_evals = jax.lax.cond(last, keep, reevaluate, None)
                evals = evals + ls_evals
                stop = (
                    (n_local == max_iter)
                    | (evals >= max_eval)
                    | opt_cond
                    | (max_abs(d * t) <= tolerance_change)
                    | (jnp.abs(f - c["prev_f"]) < tolerance_change)
                )
                return dict(c, x=x, f=f, g=g, t=t, evals=evals, stop=stop)

            return jax.lax.cond(gtd > -tolerance_change, no_descent, advance, c)

        c = jax.lax.while_loop(cond, body, carry0)
        new_params = unflatten(c["x"])
        out = jax.tree.map(  # in the gradients' dtypes, as every update
            lambda new, p, g: (new - p).astype(jnp.asarray(g).dtype), new_params, params, updates
        )
        new_state = TorchLBFGSState(
            n_iter=c["n_total"],
            func_evals=state.func_evals + c["evals"],
            d=c["d"],
            t=c["t"],
            old_dirs=c["Y"],
            old_stps=c["S"],
            ro=c["ro"],
            hist_start=c["start"],
            hist_len=c["hlen"],
            h_diag=c["h"],
            prev_flat_grad=c["prev_g"],
            prev_loss=c["prev_f"],
        )
        return out, new_state

    return describe(
        GradientTransformationExtraArgs(init_fn, update_fn),
        BlockSpec("compat.torch.lbfgs", elementwise=False),
    )
