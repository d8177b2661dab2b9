"""``minimize``: the full-batch loop (L-BFGS by default) under one ``lax.while_loop``.

For the users who came from ``scipy.optimize.minimize`` or ``jaxopt``: a deterministic
loss of the parameters (logistic regression, a PINN, a small scientific model), run to a
gradient-norm tolerance inside one compiled program.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_zoo.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    check_int,
    check_scalar,
    global_norm,
)
from jaxopt_zoo.optim.lbfgs import lbfgs
from jaxopt_zoo.transforms.linesearch import (
    ScaleByBacktrackingLinesearchState,
    ScaleByZoomLinesearchState,
    conj_grad,
    stored_value_and_grad,
)

__all__ = ["MinimizeResult", "STATUS", "minimize"]

#: ``MinimizeResult.status`` codes and their ``reason``.
STATUS = {
    0: "converged",  # ||grad|| <= gtol
    1: "max_steps",  # max_steps steps taken
    2: "nonfinite",  # a step gave a NaN/inf loss or gradient: the last finite point is kept
    3: "nonfinite_start",  # NaN/inf loss or gradient at the start: nothing done
    4: "stalled",  # a step left the parameters unchanged (the line search found no step)
}
_RUNNING = -1
_CONVERGED, _MAX_STEPS, _NONFINITE, _NONFINITE_START, _STALLED = range(5)


class MinimizeResult(NamedTuple):
    """What :func:`minimize` returns.

    Attributes:
      params: the parameters reached (the start, if it was not finite).
      state: the optimizer's state there.
      value: the loss at ``params``.
      grad_norm: the Euclidean norm of the gradient at ``params``.
      num_steps: the optimizer steps taken.
      num_fun_evals: the evaluations of the loss and its gradient (the line search's
        included).
      status: why it stopped, a code of ``jaxopt_zoo.solve.STATUS`` (``reason`` gives its name).
    """

    params: Any
    state: Any
    value: jax.Array
    grad_norm: jax.Array
    num_steps: jax.Array
    num_fun_evals: jax.Array
    status: jax.Array

    @property
    def reason(self) -> str:
        """The name of ``status``, why it stopped -- ``"converged"``, ``"max_steps"``,
        ``"nonfinite"``, ``"nonfinite_start"`` or ``"stalled"`` (needs a concrete
        ``status``)."""
        return STATUS[int(self.status)]


def _all_finite(tree: Any) -> jax.Array:
    ok = jnp.asarray(True)
    for x in jax.tree.leaves(tree):
        ok = ok & jnp.all(jnp.isfinite(x))
    return ok


def _cast(tree: Any, like: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.asarray(a).astype(jnp.asarray(b).dtype), tree, like)


def _linesearch_evals(state: Any) -> jax.Array:
    """Evaluations the line search(es) in ``state`` made in their last call."""
    n = jnp.zeros((), jnp.int32)
    for s in jax.tree.leaves(
        state,
        is_leaf=lambda x: isinstance(
            x, (ScaleByZoomLinesearchState, ScaleByBacktrackingLinesearchState)
        ),
    ):
        if isinstance(s, ScaleByZoomLinesearchState):
            n = n + s.info.num_linesearch_steps
        elif isinstance(s, ScaleByBacktrackingLinesearchState):
            n = n + s.info.num_linesearch_steps
    return n


def _run(fun, tx, params, max_steps, gtol, args):
    def f(p):
        return fun(p, *args)

    def vg(p):
        v, g = jax.value_and_grad(f)(p)
        return v, conj_grad(g)

    takes_extra = isinstance(tx, GradientTransformationExtraArgs)
    value, grad = vg(params)
    state = tx.init(params)
    gnorm = global_norm(grad)
    ok = jnp.isfinite(value) & _all_finite(grad)
    status = jnp.where(
        ~ok,
        _NONFINITE_START,
        jnp.where(gnorm <= gtol, _CONVERGED, jnp.where(max_steps <= 0, _MAX_STEPS, _RUNNING)),
    )
    zero = jnp.zeros((), jnp.int32)
    start = (
        params,
        state,
        value,
        grad,
        gnorm,
        zero,
        jnp.ones((), jnp.int32),
        status.astype(jnp.int32),
    )

    def body(c):
        params, state, value, grad, gnorm, k, nfev, _ = c
        kw = dict(value=value, grad=grad, value_fn=f) if takes_extra else {}
        updates, new_state = tx.update(grad, state, params, **kw)
        new_params = optax.apply_updates(params, updates)
        stored_v, stored_g = stored_value_and_grad(new_state)
        nfev = nfev + _linesearch_evals(new_state)
        if stored_v is not None and stored_g is not None:
            # the line search's last evaluation, at new_params; evaluated afresh only when
            # it is not finite (a line search that gave up and took no step)
            stored = (
                jnp.asarray(stored_v).astype(jnp.asarray(value).dtype),
                jax.tree.map(lambda a, b: a.astype(b.dtype), stored_g, grad),
            )
            fresh = jnp.isfinite(stored[0])
            new_value, new_grad = jax.lax.cond(
                fresh, lambda p: stored, lambda p: _cast(vg(p), stored), new_params
            )
            nfev = nfev + jnp.where(fresh, 0, 1)
        else:
            new_value, new_grad = vg(new_params)
            nfev = nfev + 1
        new_gnorm = global_norm(new_grad)
        k = k + 1
        finite = jnp.isfinite(new_value) & _all_finite(new_grad) & _all_finite(new_params)
        moved = jnp.asarray(False)
        for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(params)):
            moved = moved | jnp.any(a != b)
        status = jnp.where(
            ~finite,
            _NONFINITE,
            jnp.where(
                new_gnorm <= gtol,
                _CONVERGED,
                jnp.where(k >= max_steps, _MAX_STEPS, jnp.where(moved, _RUNNING, _STALLED)),
            ),
        ).astype(jnp.int32)
        keep = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old),
            (new_params, new_state, new_value, new_grad, new_gnorm),
            (params, state, value, grad, gnorm),
        )
        return (*keep, k, nfev, status)

    params, state, value, _, gnorm, k, nfev, status = jax.lax.while_loop(
        lambda c: c[-1] == _RUNNING, body, start
    )
    return MinimizeResult(params, state, value, gnorm, k, nfev, status)


_run_jit = jax.jit(_run, static_argnums=(0, 1))


@functools.lru_cache(maxsize=1)
def _default_tx() -> GradientTransformation:
    """One ``lbfgs(max_learning_rate=1.0)`` for every call that names no ``tx`` (the
    compiled loop is cached per ``fun`` and ``tx``: a new transformation each call would
    compile again)."""
    return lbfgs(max_learning_rate=1.0)


def minimize(
    fun: Callable[..., Any],
    params: Any,
    *,
    tx: Optional[GradientTransformation] = None,
    max_steps: int = 500,
    gtol: float = 1e-6,
    args: Tuple[Any, ...] = (),
) -> MinimizeResult:
    """Minimize ``fun(params, *args)`` with ``tx`` until ``||grad|| <= gtol``, in one
    ``lax.while_loop``.

    Each step calls ``tx.update(grad, state, params, value=, grad=, value_fn=)`` (the
    keywords only for a ``GradientTransformationExtraArgs``, such as :func:`lbfgs` and the
    line searches) and reuses the value and gradient the line search computed at the new
    parameters (:func:`value_and_grad_from_state`); without a line search it evaluates
    them once per step. A step that gives a NaN or infinite loss or gradient is not taken
    and the loop stops (``reason == "nonfinite"``); a non-finite start returns the start
    unchanged (``"nonfinite_start"``, with a ``RuntimeWarning`` when called outside
    ``jit``). The tolerance is on the Euclidean norm of the gradient, as jaxopt's (scipy's
    ``gtol`` is on its largest element).

    Jittable; ``fun`` and ``tx`` are static: the same objects reuse the compiled loop,
    whatever the start, ``max_steps``, ``gtol`` or ``args`` (so build ``tx`` once, not in
    the call, and pass data through ``args`` rather than a new closure). Not
    differentiable (a ``while_loop``).

    Args:
      fun: the loss, a scalar function of ``params`` (and of ``args``).
      params: the starting point, a pytree of arrays.
      tx: the optimizer; any ``GradientTransformation``. Default
        ``jz.lbfgs(max_learning_rate=1.0)``: L-BFGS whose zoom line search takes the unit
        step once it decreases the loss enough, as ``jaxopt.LBFGS`` does; on the problems
        of ``benchmarks/lbfgs_bench.py`` it needs about as many evaluations as ``jz.lbfgs()``
        (optax's algorithm, unbounded: 47 against 46 on Rosenbrock 2-D) or fewer (3
        instead of 10 on a 10,000-dimensional logistic regression), see
        ``docs/full-batch.md``.
      max_steps: the most steps, an integer >= 0.
      gtol: stop when the gradient norm is at most this, >= 0.
      args: extra positional arguments of ``fun`` (data), traced rather than baked in.

    Returns:
      A :class:`MinimizeResult` ``(params, state, value, grad_norm, num_steps,
      num_fun_evals, status)``; ``.reason`` names the status.

    Example:
      >>> def loss(w, x, y):
      ...     return jnp.mean(jnp.logaddexp(0.0, -y * (x @ w))) + 0.5e-2 * jnp.sum(w**2)
      >>> x = jax.random.normal(jax.random.key(0), (100, 5))
      >>> y = jnp.sign(x @ jnp.arange(5.0))
      >>> res = jz.minimize(loss, jnp.zeros(5), args=(x, y), gtol=1e-5)
      >>> res.reason, bool(res.grad_norm <= 1e-5)
      ('converged', True)
    """
    if not callable(fun):
        raise TypeError(f"minimize: fun must be callable, got {type(fun).__name__}.")
    max_steps = check_int("max_steps", max_steps, low=0)
    check_scalar("gtol", gtol, low=0.0, schedule_ok=False)
    if tx is None:
        tx = _default_tx()
    elif not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise TypeError(f"minimize: tx must be a GradientTransformation, got {type(tx).__name__}.")
    if not isinstance(args, tuple):
        raise TypeError(
            f"minimize: args must be a tuple of fun's extra arguments, got {type(args).__name__}."
        )
    res = _run_jit(fun, tx, params, max_steps, gtol, args)
    if not isinstance(res.status, jax.core.Tracer) and int(res.status) == _NONFINITE_START:
        warnings.warn(
            "minimize: the loss or its gradient is NaN or infinite at the starting point; "
            "returning the start unchanged (status 'nonfinite_start').",
            RuntimeWarning,
            stacklevel=2,
        )
    return res
