"""Line searches as transformations: :func:`scale_by_zoom_linesearch` (strong Wolfe, the
zoom of Nocedal & Wright with Hager & Zhang's approximate decrease, as optax's) and
:func:`scale_by_backtracking_linesearch` (Armijo), and :func:`value_and_grad_from_state`,
which lets a loop reuse the value and gradient the line search computed last.

A line search scales the incoming direction ``u`` by a step size ``eta`` chosen from
evaluations of the loss along ``params + eta * u``. Its ``update`` therefore needs, besides
``(updates, state, params)``, the keywords ``value`` (the loss at ``params``), ``grad`` (its
gradient there) and ``value_fn`` (the loss as a function of the parameters); any further
keyword whose name is an argument of ``value_fn`` (a batch ``x=``, ``y=``) is passed to it.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_zoo.core import (
    GradientTransformationExtraArgs,
    Scalar,
    StepCount,
    check_int,
    check_scalar,
    compute_dtype,
)
from jaxopt_zoo.fast.spec import NeedsExtraArgsError

__all__ = [
    "BacktrackingLinesearchInfo",
    "ScaleByBacktrackingLinesearchState",
    "ScaleByZoomLinesearchState",
    "ZoomLinesearchInfo",
    "scale_by_backtracking_linesearch",
    "scale_by_zoom_linesearch",
    "tree_vdot",
    "value_and_grad_from_state",
]


# --------------------------------------------------------------------------- #
# Small tree helpers shared with L-BFGS
# --------------------------------------------------------------------------- #


def _real_dtype_of(tree: Any) -> Any:
    """float64 when the first leaf computes in float64, float32 otherwise: the dtype of a
    line search's scalars (step sizes, values, slopes)."""
    leaves = jax.tree.leaves(tree)
    return compute_dtype(jnp.asarray(leaves[0]).dtype) if leaves else jnp.float32


def tree_vdot(a: Any, b: Any, dtype: Any = None) -> jax.Array:
    """``sum_leaves <conj(a), b>``, real part, each leaf's product taken in ``dtype`` (its
    compute dtype by default: float32 for bfloat16 leaves)."""
    total = None
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        dt = dtype or compute_dtype(x.dtype)
        cd = jnp.result_type(dt, x.dtype) if jnp.iscomplexobj(x) else dt
        a, b = x.astype(cd), y.astype(cd)
        a = jnp.conj(a) if jnp.iscomplexobj(a) else a
        # a contraction over all axes (not a dot of raveled vectors): optax's summation order
        v = jnp.real(jnp.tensordot(a, b, a.ndim, precision=jax.lax.Precision.HIGHEST))
        total = v if total is None else total + v
    return jnp.zeros((), dtype or jnp.float32) if total is None else total


def _axpy(params: Any, step: jax.Array, direction: Any) -> Any:
    """``params + step * direction`` in each leaf's dtype."""
    return jax.tree.map(
        lambda p, u: (p + step.astype(p.dtype) * u).astype(p.dtype), params, direction
    )


def conj_grad(tree: Any) -> Any:
    """JAX's gradient of a real loss of complex parameters is the conjugate of the
    steepest-ascent direction; optax's optimizers take the direction itself. Conjugate the
    complex leaves (real ones pass unchanged)."""
    return jax.tree.map(lambda g: jnp.conj(g) if jnp.iscomplexobj(g) else g, tree)


def _cast_like(tree: Any, like: Any) -> Any:
    return jax.tree.map(lambda x, y: jnp.asarray(x).astype(jnp.asarray(y).dtype), tree, like)


def _where(cond: jax.Array, a: Any, b: Any) -> Any:
    return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


def _nan_to_inf(x: jax.Array) -> jax.Array:
    return jnp.where(jnp.isnan(x), jnp.inf, x)


def _split_fn_kwargs(value_fn: Callable, extra: Dict[str, Any], where: str) -> Dict[str, Any]:
    """The keywords of ``extra`` that ``value_fn`` takes; any other is an error."""
    if not extra:
        return {}
    try:
        names = set(inspect.signature(value_fn).parameters)
    except (TypeError, ValueError):  # no signature: pass everything
        return dict(extra)
    unused = sorted(k for k in extra if k not in names)
    if unused:
        raise TypeError(
            f"{where}.update: keyword argument(s) {unused} are not arguments of value_fn "
            f"(it takes {sorted(names)}). Extra keywords are passed to value_fn only."
        )
    return dict(extra)


def _call(plain: Callable, jitted: Callable, value_fn: Callable, *args: Any) -> Any:
    """``jitted(*args, value_fn=value_fn)``: compiled once per transformation, loss function
    and shapes, so that calls outside ``jit`` do not trace and compile the search's loop
    afresh each time (inside ``jit`` it is inlined); ``plain`` when ``value_fn`` is not
    hashable or the arguments hold something other than arrays and numbers."""
    try:
        hash(value_fn)
    except TypeError:
        return plain(*args, value_fn=value_fn)
    if not all(
        isinstance(x, (jax.Array, np.ndarray, np.generic, int, float, complex))
        for x in jax.tree.leaves(args)
    ):
        return plain(*args, value_fn=value_fn)
    return jitted(*args, value_fn=value_fn)


def _needs(where: str, value_fn: Any) -> None:
    if value_fn is None:
        raise NeedsExtraArgsError(
            f"{where}.update needs value_fn=, the loss as a function of the parameters (and "
            "value= and grad=, the loss and its gradient at params): call "
            "`tx.update(grads, state, params, value=loss, grad=grads, value_fn=loss_fn)`. "
            "`jz.value_and_grad_from_state(loss_fn)(params, state=state)` gives value and "
            "grad, reusing the line search's last evaluation."
        )


def _value_and_grad_at(value_fn, fn_kwargs, params, value, grad, dtype):
    """``value``, ``grad`` as given, or computed from ``value_fn`` at ``params`` if absent."""
    if value is None or grad is None:
        v, g = jax.value_and_grad(lambda p: value_fn(p, **fn_kwargs))(params)
        g = conj_grad(g)
        value = v if value is None else value
        grad = g if grad is None else grad
    return jnp.asarray(value).astype(dtype), grad


# --------------------------------------------------------------------------- #
# Zoom line search (strong Wolfe)
# --------------------------------------------------------------------------- #


class ZoomLinesearchInfo(NamedTuple):
    """What the last zoom line search did: its number of evaluations and the errors of the
    decrease and curvature criteria at the step it took (0 where a criterion holds)."""

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array
    curvature_error: jax.Array


class ScaleByZoomLinesearchState(NamedTuple):
    """State of :func:`scale_by_zoom_linesearch`: the step size taken last, the ``value`` and
    ``grad`` of the loss at the parameters it led to (reused by
    :func:`value_and_grad_from_state`), and :class:`ZoomLinesearchInfo`."""

    learning_rate: jax.Array
    value: jax.Array
    grad: Any
    info: ZoomLinesearchInfo


class _Zoom(NamedTuple):
    """The zoom's loop carry: the current trial point, the bracket ``[low, high]`` (``low``
    the end with the smaller value, not the smaller step), a third point for the cubic, and
    the best step with sufficient decrease seen so far (``safe``)."""

    count: StepCount  # shadows tuple.count (see core.StepCount)
    stepsize: jax.Array
    value: jax.Array
    grad: Any
    slope: jax.Array
    decrease_error: jax.Array
    curvature_error: jax.Array
    interval_found: jax.Array
    done: jax.Array
    failed: jax.Array
    low: jax.Array
    value_low: jax.Array
    slope_low: jax.Array
    high: jax.Array
    value_high: jax.Array
    slope_high: jax.Array
    ref: jax.Array
    value_ref: jax.Array
    safe_stepsize: jax.Array
    safe_value: jax.Array
    safe_grad: Any


def _cubic_min(a, fa, da, b, fb, c, fc):
    """The stationary point of the cubic through ``(a, fa)``, ``(b, fb)``, ``(c, fc)`` with
    slope ``da`` at ``a`` (NaN when it has none; the caller then falls back)."""
    db, dc = b - a, c - a
    rb, rc = fb - fa - da * db, fc - fa - da * dc
    denom = (db * dc) ** 2 * (db - dc)
    # [a3, b2] = [[dc^2, -db^2], [-dc^3, db^3]] @ [rb, rc] / denom, as one matrix product
    coef = jnp.stack([jnp.stack([dc**2, -(db**2)]), jnp.stack([-(dc**3), db**3])])
    a3, b2 = jnp.dot(coef, jnp.stack([rb, rc]), precision=jax.lax.Precision.HIGHEST) / denom
    return a + (-b2 + jnp.sqrt(b2 * b2 - 3.0 * a3 * da)) / (3.0 * a3)


def _quad_min(a, fa, da, b, fb):
    """The stationary point of the parabola through ``(a, fa)``, ``(b, fb)`` with slope
    ``da`` at ``a``."""
    db = b - a
    curv = (fb - fa - da * db) / (db * db)
    return a - da / (2.0 * curv)


def scale_by_zoom_linesearch(
    max_linesearch_steps: int,
    max_learning_rate: Optional[Scalar] = None,
    tol: Scalar = 0.0,
    increase_factor: Scalar = 2.0,
    slope_rtol: Scalar = 1e-4,
    curv_rtol: Scalar = 0.9,
    approx_dec_rtol: Optional[Scalar] = 1e-6,
    stepsize_precision: Scalar = 1e-5,
    initial_guess_strategy: str = "keep",
) -> GradientTransformationExtraArgs:
    """Scale the direction ``u`` by a step ``eta`` meeting the strong Wolfe conditions.

    With ``phi(eta) = f(params + eta u)``, ``c1 = slope_rtol``, ``c2 = curv_rtol``::

        decrease:   phi(eta) <= phi(0) + c1 eta phi'(0) + tol
                    (or, once phi(eta) <= phi(0) + approx_dec_rtol |phi(0)|, Hager &
                    Zhang's approximate form phi'(eta) <= (2 c1 - 1) phi'(0) + tol)
        curvature:  |phi'(eta)| <= c2 |phi'(0)| + tol

    Phase 1 grows the trial step from the guess by ``increase_factor`` until it brackets an
    acceptable step (Nocedal & Wright, Alg. 3.5); phase 2 shrinks the bracket with a cubic
    interpolation, else a quadratic, else bisection (Alg. 3.6). If the budget runs out, or
    the bracket is narrower than ``stepsize_precision``, it takes the best step with
    sufficient decrease seen (none: the last trial). Each trial evaluates the loss and its
    gradient once; the last ones are kept in the state for :func:`value_and_grad_from_state`.
    Same decisions as ``optax.scale_by_zoom_linesearch``.

    Args:
      max_linesearch_steps: the most evaluations per call, an integer >= 1.
      max_learning_rate: the largest step tried, > 0 (None: no bound).
      tol: slack on both criteria, >= 0.
      increase_factor: growth of the trial step in phase 1, > 1.
      slope_rtol: ``c1``, in (0, 1).
      curv_rtol: ``c2``, in (c1, inf]; ``inf`` drops the curvature criterion.
      approx_dec_rtol: when the approximate decrease criterion may be used, >= 0 (None:
        never).
      stepsize_precision: bracket width below which a step with sufficient decrease is
        taken, >= 0.
      initial_guess_strategy: ``"keep"`` (start from the last step; for SGD-like
        directions) or ``"one"`` (start from 1; for quasi-Newton directions).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update`` takes ``value=``,
      ``grad=`` and ``value_fn=`` (and ``value_fn``'s own keywords).

    Example:
      >>> f = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
      >>> tx = jz.chain(jz.sgd(1.0), jz.scale_by_zoom_linesearch(max_linesearch_steps=15))
      >>> params = {"w": jnp.zeros(3)}
      >>> v, g = jax.value_and_grad(f)(params)
      >>> u, s = tx.update(g, tx.init(params), params, value=v, grad=g, value_fn=f)
      >>> float(f(optax.apply_updates(params, u))) < 1e-6
      True
    """
    check_int("max_linesearch_steps", max_linesearch_steps, low=1)
    if max_learning_rate is not None:
        check_scalar(
            "max_learning_rate", max_learning_rate, low=0.0, low_open=True, schedule_ok=False
        )
    check_scalar("tol", tol, low=0.0, schedule_ok=False)
    check_scalar("increase_factor", increase_factor, low=1.0, low_open=True, schedule_ok=False)
    check_scalar(
        "slope_rtol",
        slope_rtol,
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
        schedule_ok=False,
    )
    check_scalar("curv_rtol", curv_rtol, low=0.0, low_open=True, schedule_ok=False)
    if isinstance(curv_rtol, (int, float)) and isinstance(slope_rtol, (int, float)):
        if not curv_rtol > slope_rtol:
            raise ValueError(
                f"Invalid curv_rtol: {curv_rtol!r}. Expected curv_rtol > slope_rtol "
                f"(= {slope_rtol!r}); the Wolfe conditions need 0 < slope_rtol < curv_rtol."
            )
    if approx_dec_rtol is not None:
        check_scalar("approx_dec_rtol", approx_dec_rtol, low=0.0, schedule_ok=False)
    check_scalar("stepsize_precision", stepsize_precision, low=0.0, schedule_ok=False)
    if initial_guess_strategy not in ("one", "keep"):
        raise ValueError(
            f"Invalid initial_guess_strategy: {initial_guess_strategy!r}. Expected 'one' or 'keep'."
        )

    def init_fn(params):
        dt = _real_dtype_of(params)
        return ScaleByZoomLinesearchState(
            learning_rate=jnp.ones((), dt),
            value=jnp.full((), jnp.inf, dt),
            grad=jax.tree.map(jnp.zeros_like, params),
            info=ZoomLinesearchInfo(
                jnp.zeros((), jnp.int32), jnp.full((), jnp.inf, dt), jnp.full((), jnp.inf, dt)
            ),
        )

    def update_fn(updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra):
        _needs("scale_by_zoom_linesearch", value_fn)
        if params is None:
            raise ValueError("scale_by_zoom_linesearch.update needs params.")
        fn_kwargs = _split_fn_kwargs(value_fn, extra, "scale_by_zoom_linesearch")
        return _call(run, run_jit, value_fn, updates, state, params, value, grad, fn_kwargs)

    def run(updates, state, params, value, grad, fn_kwargs, value_fn):
        dt = _real_dtype_of(params)
        value0, grad0 = _value_and_grad_at(value_fn, fn_kwargs, params, value, grad, dt)
        grad0 = _cast_like(grad0, params)
        slope0 = tree_vdot(updates, grad0, dt)
        guess = jnp.ones((), dt) if initial_guess_strategy == "one" else state.learning_rate
        # the hyperparameters as given: Python numbers stay weakly typed (optax's rounding)
        c1, c2, tol_ = slope_rtol, curv_rtol, tol
        vg = jax.value_and_grad(lambda p: value_fn(p, **fn_kwargs))

        def on_line(eta):
            v, g = vg(_axpy(params, eta, updates))
            g = _cast_like(conj_grad(g), params)
            return jnp.asarray(v).astype(dt), g, tree_vdot(g, updates, dt)

        def decrease_error(eta, v, d):
            err = v - value0 - c1 * eta * slope0
            if approx_dec_rtol is not None:
                approx = d - (2 * c1 - 1.0) * slope0
                approx = jnp.maximum(approx, v - value0 - approx_dec_rtol * jnp.abs(value0))
                err = jnp.minimum(approx, err)
            return _nan_to_inf(jnp.maximum(err, 0.0))

        def curvature_error(d):
            return _nan_to_inf(jnp.maximum(jnp.abs(d) - c2 * jnp.abs(slope0), 0.0))

        def body(z: _Zoom) -> _Zoom:
            # One evaluation per iteration: the trial step of the phase we are in (phase 1
            # grows the step until it brackets an acceptable one, phase 2 shrinks the
            # bracket), then both phases' bookkeeping, selected by the phase (no cond: one
            # traced gradient instead of two, half the compile time).
            zooming = z.interval_found
            # phase 1's trial
            grow = jnp.where(z.count == 0, guess, increase_factor * z.stepsize).astype(dt)
            at_max = jnp.asarray(False)
            if max_learning_rate is not None:
                at_max = grow >= max_learning_rate
                grow = jnp.minimum(grow, max_learning_rate).astype(dt)
            # phase 2's trial: cubic, else quadratic, else bisection, kept off the ends
            width = jnp.abs(z.high - z.low)
            left, right = jnp.minimum(z.low, z.high), jnp.maximum(z.low, z.high)
            cubic = _cubic_min(
                z.low, z.value_low, z.slope_low, z.high, z.value_high, z.ref, z.value_ref
            )
            use_cubic = (cubic > left + 0.2 * width) & (cubic < right - 0.2 * width)
            quad = _quad_min(z.low, z.value_low, z.slope_low, z.high, z.value_high)
            use_quad = ~use_cubic & (quad > left + 0.1 * width) & (quad < right - 0.1 * width)
            mid = jnp.where(use_cubic, cubic, jnp.where(use_quad, quad, (z.low + z.high) / 2.0))
            eta = jnp.where(zooming, mid.astype(dt), grow)

            v, g, d = on_line(eta)
            dec, curv = decrease_error(eta, v, d), curvature_error(d)
            ok = jnp.maximum(dec, curv) <= tol_
            new = (eta, v, d)
            lo, hi = (z.low, z.value_low, z.slope_low), (z.high, z.value_high, z.slope_high)

            # phase 1: a bracket [low, high] (low: the end with the smaller value)
            high_new = (dec > 0.0) | ((v >= z.value) & (z.count > 0))
            low_new = (d >= 0.0) & ~high_new
            prev = (z.stepsize, z.value, z.slope)
            lo1, hi1 = _where(low_new, (new, prev), (prev, new))
            found = high_new | low_new | ok
            done1 = ok | (at_max & ~found)
            safe1 = dec <= tol_
            # phase 2: the trial replaces one end
            high_mid = (dec > 0.0) | (v >= z.value_low)
            high_low = (d * (z.high - z.low) >= 0.0) & ~high_mid
            hi2 = _where(high_mid, new, _where(high_low, lo, hi))
            lo2 = _where(high_mid, lo, new)
            ref2 = _where(high_mid | high_low, hi[:2], lo[:2])
            safe2 = (dec <= tol_) & (v < z.safe_value)

            take_safe = jnp.where(zooming, safe2, safe1)
            safe_stepsize = jnp.where(take_safe, eta, z.safe_stepsize)
            narrow = (width <= stepsize_precision) & (safe_stepsize > 0.0)
            done = jnp.where(zooming, ok, done1)
            out_of_budget = (z.count + 1 >= max_linesearch_steps) | (zooming & narrow)
            lo_, hi_ = _where(zooming, (lo2, hi2), (lo1, hi1))
            ref_ = _where(zooming, ref2, lo1[:2])
            z = _Zoom(
                count=z.count + 1,
                stepsize=eta,
                value=v,
                grad=g,
                slope=d,
                decrease_error=dec,
                curvature_error=curv,
                interval_found=zooming | found,
                done=done,
                failed=out_of_budget & ~done,
                low=lo_[0],
                value_low=lo_[1],
                slope_low=lo_[2],
                high=hi_[0],
                value_high=hi_[1],
                slope_high=hi_[2],
                ref=ref_[0],
                value_ref=ref_[1],
                safe_stepsize=safe_stepsize,
                safe_value=jnp.where(take_safe, v, z.safe_value),
                safe_grad=_where(take_safe, g, z.safe_grad),
            )
            # out of budget (or the bracket too narrow): the best safe step, if any; with
            # none, the last trial (or no step, if the last trial was not finite)
            use_safe = z.failed & ((z.safe_stepsize > 0.0) | jnp.isinf(z.decrease_error))
            last = _where(
                use_safe,
                (z.safe_stepsize, z.safe_value, z.safe_grad),
                (z.stepsize, z.value, z.grad),
            )
            return z._replace(stepsize=last[0], value=last[1], grad=last[2])

        zero, inf = jnp.zeros((), dt), jnp.full((), jnp.inf, dt)
        false = jnp.asarray(False)
        z0 = _Zoom(
            count=jnp.zeros((), jnp.int32),
            stepsize=zero,
            value=value0,
            grad=grad0,
            slope=slope0,
            decrease_error=inf,
            curvature_error=inf,
            interval_found=false,
            done=false,
            failed=false,
            low=zero,
            value_low=value0,
            slope_low=slope0,
            high=zero,
            value_high=value0,
            slope_high=slope0,
            ref=zero,
            value_ref=value0,
            safe_stepsize=zero,
            safe_value=value0,
            safe_grad=grad0,
        )
        z = jax.lax.while_loop(lambda z: ~(z.done | z.failed), body, z0)
        out = jax.tree.map(lambda u: (z.stepsize.astype(u.dtype) * u).astype(u.dtype), updates)
        new_state = ScaleByZoomLinesearchState(
            learning_rate=z.stepsize,
            value=z.value,
            grad=_cast_like(z.grad, state.grad),
            info=ZoomLinesearchInfo(z.count, z.decrease_error, z.curvature_error),
        )
        return out, _cast_like(new_state, state)

    run_jit = jax.jit(run, static_argnames=("value_fn",))
    return GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------- #
# Backtracking line search (Armijo)
# --------------------------------------------------------------------------- #


class BacktrackingLinesearchInfo(NamedTuple):
    """What the last backtracking search did: its number of evaluations and the error of
    the decrease criterion at the step it took (0 when it holds)."""

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array


class ScaleByBacktrackingLinesearchState(NamedTuple):
    """State of :func:`scale_by_backtracking_linesearch`: the step taken last, the ``value``
    at the parameters it led to, their ``grad`` (``None`` unless ``store_grad``) and
    :class:`BacktrackingLinesearchInfo`."""

    learning_rate: jax.Array
    value: jax.Array
    grad: Any
    info: BacktrackingLinesearchInfo


def scale_by_backtracking_linesearch(
    max_backtracking_steps: int,
    slope_rtol: Scalar = 1e-4,
    decrease_factor: Scalar = 0.8,
    increase_factor: Scalar = 1.5,
    max_learning_rate: Scalar = 1.0,
    atol: Scalar = 0.0,
    rtol: Scalar = 0.0,
    store_grad: bool = False,
) -> GradientTransformationExtraArgs:
    """Scale the direction ``u`` by the first step ``eta`` with sufficient decrease (Armijo)::

        f(params + eta u) <= (1 + rtol) f(params) + c eta <u, grad> + atol

    with ``c = slope_rtol``, trying ``eta = min(increase_factor * eta_prev,
    max_learning_rate)`` first and then multiplying by ``decrease_factor``, at most
    ``max_backtracking_steps`` times (``max_backtracking_steps + 1`` evaluations). A step
    whose loss is NaN or infinite at the end is replaced by 0 (no move). Same decisions as
    ``optax.scale_by_backtracking_linesearch`` (Vaswani et al. 2019).

    ``store_grad=True`` keeps the gradient at the new parameters in the state, for
    :func:`value_and_grad_from_state`: each trial is linearised (``jax.linearize``) and
    the last one transposed, so one call costs one reverse pass.

    Args:
      max_backtracking_steps: the most reductions per call, an integer >= 0.
      slope_rtol: ``c``, in [0, 1).
      decrease_factor: reduction of the step per trial, in (0, 1).
      increase_factor: growth of the first guess over the last step, >= 1 (``inf``:
        always start from ``max_learning_rate``).
      max_learning_rate: the largest step, > 0.
      atol: absolute slack of the criterion, >= 0.
      rtol: relative slack of the criterion, >= 0.
      store_grad: keep the gradient at the new parameters in the state.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update`` takes ``value=``,
      ``grad=`` and ``value_fn=`` (and ``value_fn``'s own keywords).

    Example:
      >>> f = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
      >>> tx = jz.chain(jz.sgd(1.0), jz.scale_by_backtracking_linesearch(15))
      >>> params = {"w": jnp.zeros(3)}
      >>> v, g = jax.value_and_grad(f)(params)
      >>> u, s = tx.update(g, tx.init(params), params, value=v, grad=g, value_fn=f)
      >>> bool(f(optax.apply_updates(params, u)) < v)
      True
    """
    check_int("max_backtracking_steps", max_backtracking_steps, low=0)
    check_scalar("slope_rtol", slope_rtol, low=0.0, high=1.0, high_open=True, schedule_ok=False)
    check_scalar(
        "decrease_factor",
        decrease_factor,
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
        schedule_ok=False,
    )
    check_scalar("increase_factor", increase_factor, low=1.0, schedule_ok=False)
    check_scalar("max_learning_rate", max_learning_rate, low=0.0, low_open=True, schedule_ok=False)
    check_scalar("atol", atol, low=0.0, schedule_ok=False)
    check_scalar("rtol", rtol, low=0.0, schedule_ok=False)

    def init_fn(params):
        dt = _real_dtype_of(params)
        return ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.ones((), dt),
            value=jnp.full((), jnp.inf, dt),
            grad=jax.tree.map(jnp.zeros_like, params) if store_grad else None,
            info=BacktrackingLinesearchInfo(jnp.zeros((), jnp.int32), jnp.full((), jnp.inf, dt)),
        )

    def update_fn(updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra):
        _needs("scale_by_backtracking_linesearch", value_fn)
        if params is None:
            raise ValueError("scale_by_backtracking_linesearch.update needs params.")
        fn_kwargs = _split_fn_kwargs(value_fn, extra, "scale_by_backtracking_linesearch")
        return _call(run, run_jit, value_fn, updates, state, params, value, grad, fn_kwargs)

    def run(updates, state, params, value, grad, fn_kwargs, value_fn):
        dt = _real_dtype_of(params)
        value0, grad0 = _value_and_grad_at(value_fn, fn_kwargs, params, value, grad, dt)
        slope = tree_vdot(updates, grad0, dt)
        f = lambda p: jnp.asarray(value_fn(p, **fn_kwargs)).astype(dt)  # noqa: E731

        def error(eta, v):
            err = v - (1.0 + rtol) * value0 - eta * slope_rtol * slope
            return jnp.maximum(_nan_to_inf(err), 0.0)

        zeros = jax.tree.map(jnp.zeros_like, params) if store_grad else None

        def body(carry):
            eta, _, _, i, g = carry
            eta = jnp.where(i > 0, decrease_factor * eta, eta).astype(dt)
            trial = _axpy(params, eta, updates)
            if not store_grad:
                v = f(trial)
                return eta, v, error(eta, v), i + 1, g
            # the value and a linearisation; transposed into the gradient only at the last
            # trial (one reverse pass per call, not one per trial)
            v, f_jvp = jax.linearize(f, trial)
            err = error(eta, v)
            last = (err <= atol) | (i == max_backtracking_steps)
            g = jax.lax.cond(
                last,
                lambda: _cast_like(
                    conj_grad(jax.linear_transpose(f_jvp, trial)(jnp.ones((), dt))[0]), g
                ),
                lambda: g,
            )
            return eta, v, err, i + 1, g

        eta0 = jnp.minimum(increase_factor * state.learning_rate, max_learning_rate).astype(dt)
        start = (eta0, value0, jnp.full((), jnp.inf, dt), jnp.zeros((), jnp.int32), zeros)
        eta, v, err, n, new_grad = jax.lax.while_loop(
            lambda c: ~(c[2] <= atol) & (c[3] <= max_backtracking_steps), body, start
        )
        # a NaN or infinite loss at the last trial: no step (the value and gradient kept are
        # the trial's, non-finite, so value_and_grad_from_state evaluates them afresh)
        eta = jnp.where(jnp.isinf(err), 0.0, eta).astype(dt)
        out = jax.tree.map(lambda u: (eta.astype(u.dtype) * u).astype(u.dtype), updates)
        new_state = ScaleByBacktrackingLinesearchState(
            learning_rate=eta,
            value=v.astype(dt),
            grad=new_grad,
            info=BacktrackingLinesearchInfo(n, err.astype(dt)),
        )
        return out, new_state

    run_jit = jax.jit(run, static_argnames=("value_fn",))
    return GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------- #
# Reusing the line search's last evaluation
# --------------------------------------------------------------------------- #


def _find_states(tree: Any, found: list) -> None:
    if isinstance(tree, (ScaleByZoomLinesearchState, ScaleByBacktrackingLinesearchState)):
        found.append(tree)
    elif isinstance(tree, (tuple, list)):
        for x in tree:
            _find_states(x, found)
    elif isinstance(tree, dict):
        for x in tree.values():
            _find_states(x, found)
    elif hasattr(tree, "inner_state"):  # optax wrappers
        _find_states(tree.inner_state, found)


def stored_value_and_grad(state: Any) -> Tuple[Optional[jax.Array], Any]:
    """The ``(value, grad)`` that the one line search in ``state`` evaluated last; ``(None,
    None)`` if ``state`` holds no line search, ``grad`` None if it keeps none."""
    found: list = []
    _find_states(state, found)
    if len(found) > 1:
        raise ValueError(
            f"The optimizer state holds {len(found)} line searches; "
            "value_and_grad_from_state needs exactly one."
        )
    if not found:
        return None, None
    return found[0].value, found[0].grad


def _vg_conj(value_fn, p, a, kw):
    v, g = jax.value_and_grad(value_fn)(p, *a, **kw)
    return v, conj_grad(g)


def value_and_grad_from_state(value_fn: Callable[..., Any]) -> Callable[..., Tuple[Any, Any]]:
    """Like ``jax.value_and_grad(value_fn)``, but returns the value and gradient that the
    line search in ``state`` computed at the end of its last call (they are those at the
    current parameters), and computes them only when the stored value is NaN or infinite
    (the first step).

    Args:
      value_fn: the loss, a scalar function of the parameters (and of keywords).

    Returns:
      ``fn(params, *args, state, **kwargs) -> (value, grad)``.

    Raises:
      ValueError: (when called) if ``state`` holds no line search, or one that keeps no
        gradient (``scale_by_backtracking_linesearch(store_grad=False)``).

    Example:
      >>> f = lambda p: jnp.sum((p - 1.0) ** 2)
      >>> tx = jz.lbfgs()
      >>> params = jnp.zeros(3)
      >>> state = tx.init(params)
      >>> vg = jz.value_and_grad_from_state(f)
      >>> for _ in range(3):
      ...     v, g = vg(params, state=state)
      ...     u, state = tx.update(g, state, params, value=v, grad=g, value_fn=f)
      ...     params = optax.apply_updates(params, u)
      >>> float(f(params)) < 1e-12
      True
    """

    def fn(params, *args, state, **kwargs):
        value, grad = stored_value_and_grad(state)
        if value is None:
            raise ValueError(
                "value_and_grad_from_state: the optimizer state holds no line search "
                "(scale_by_zoom_linesearch or scale_by_backtracking_linesearch) to read the "
                "value and gradient from; use jax.value_and_grad(value_fn) instead."
            )
        if grad is None:
            raise ValueError(
                "value_and_grad_from_state: the line search keeps no gradient; build it with "
                "scale_by_backtracking_linesearch(..., store_grad=True)."
            )
        return jax.lax.cond(
            jnp.isfinite(value),
            lambda *_: (value, grad),
            lambda p, a, kw: _cast_like(_vg_conj(value_fn, p, a, kw), (value, grad)),
            params,
            args,
            kwargs,
        )

    return fn
