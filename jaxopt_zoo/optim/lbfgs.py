"""L-BFGS: a limited-memory quasi-Newton direction, scaled by a line search."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
    StepCount,
    chain,
    check_int,
    check_same_structure,
    check_scalar,
    global_norm,
    identity,
    increment,
    tree_sum_squares,
    zero_count,
)
from jaxopt_zoo.transforms.learning_rate import scale, scale_by_learning_rate
from jaxopt_zoo.transforms.linesearch import (
    _real_dtype_of,
    scale_by_backtracking_linesearch,
    scale_by_zoom_linesearch,
    tree_vdot,
)


class ScaleByLBFGSState(NamedTuple):
    """State of :func:`scale_by_lbfgs`: step ``count``, the ``params`` and ``updates``
    (gradients) of the last step, and the ring buffers of the last ``memory_size``
    differences ``s = params_{k+1} - params_k`` (``diff_params_memory``), ``y = g_{k+1} -
    g_k`` (``diff_updates_memory``) and their weights ``rho = 1 / <s, y>``
    (``weights_memory``; 0 for an empty slot)."""

    count: StepCount
    params: Any
    updates: Any
    diff_params_memory: Any
    diff_updates_memory: Any
    weights_memory: jax.Array


def _two_loop(g, s_mem, y_mem, rho, gamma, newest_next):
    """``H g`` by the two-loop recursion (Nocedal & Wright, Alg. 7.4), newest pair first,
    from ``H_0 = gamma I``. ``newest_next`` is the slot after the newest pair (the oldest)."""
    m = rho.shape[0]
    order = (newest_next + jnp.arange(m)) % m  # oldest .. newest
    dt = rho.dtype

    def pick(tree, i):
        return jax.tree.map(lambda x: x[i], tree)

    def backward(q, i):
        alpha = rho[i] * tree_vdot(pick(s_mem, i), q, dt)
        q = jax.tree.map(
            lambda a, y: (a - alpha.astype(a.dtype) * y).astype(a.dtype), q, pick(y_mem, i)
        )
        return q, alpha

    q, alphas = jax.lax.scan(backward, g, order, reverse=True)
    r = jax.tree.map(lambda x: (gamma.astype(x.dtype) * x).astype(x.dtype), q)

    def forward(r, i_alpha):
        i, alpha = i_alpha
        beta = rho[i] * tree_vdot(pick(y_mem, i), r, dt)
        c = alpha - beta
        r = jax.tree.map(
            lambda a, s: (a + c.astype(a.dtype) * s).astype(a.dtype), r, pick(s_mem, i)
        )
        return r, None

    r, _ = jax.lax.scan(forward, r, (order, alphas))
    return r


def scale_by_lbfgs(
    memory_size: int = 10, scale_init_precond: bool = True
) -> GradientTransformation:
    """Precondition the gradient by the L-BFGS inverse-Hessian estimate: ``u = H_k g_k``.

    The pair ``(s, y)`` of the step just made is stored first (a slot of a ring buffer of
    ``memory_size``), then ``H_k g_k`` is computed by the two-loop recursion from ``H_0 =
    gamma_k I``. Needs ``params``. The direction is not negated: :func:`lbfgs` chains it
    with ``scale(-1)`` and a line search.

    Args:
      memory_size: the number of ``(s, y)`` pairs kept, an integer >= 1.
      scale_init_precond: ``gamma_k = <s, y> / <y, y>`` of the newest pair (and
        ``min(1, 1 / ||g_0||)`` at the first step); False: ``gamma_k = 1``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.scale_by_lbfgs(memory_size=5)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    m = check_int("memory_size", memory_size, low=1)
    if not isinstance(scale_init_precond, bool):
        raise TypeError(f"Invalid scale_init_precond: {scale_init_precond!r}. Expected a bool.")

    def init_fn(params):
        stacked = jax.tree.map(
            lambda p: jnp.zeros((m,) + jnp.shape(p), jnp.asarray(p).dtype), params
        )
        return ScaleByLBFGSState(
            count=zero_count(),
            params=jax.tree.map(jnp.zeros_like, params),
            updates=jax.tree.map(jnp.zeros_like, params),
            diff_params_memory=stacked,
            diff_updates_memory=jax.tree.map(jnp.copy, stacked),
            weights_memory=jnp.zeros((m,), _real_dtype_of(params)),
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "scale_by_lbfgs needs the current parameters: call `update(grads, state, params)`."
            )
        check_same_structure(updates, state.updates, "scale_by_lbfgs")
        return run_jit(updates, state, params)

    def run(updates, state, params):
        dt = state.weights_memory.dtype
        first = state.count == 0
        slot = (state.count - 1) % m  # where the pair of the step just made goes
        s = jax.tree.map(
            lambda p, q: jnp.where(first, 0, p - q).astype(q.dtype), params, state.params
        )
        y = jax.tree.map(
            lambda g, h: jnp.where(first, 0, g - h).astype(h.dtype), updates, state.updates
        )
        sy = tree_vdot(y, s, dt)
        # A pair without positive curvature (<s, y> <= 0: possible when the step was not
        # chosen by the strong Wolfe conditions, e.g. under a capped or backtracking search
        # on a non-convex loss) would make H indefinite: it is kept out of H (rho = 0, and
        # gamma stays 1), as torch.optim.LBFGS skips it. Under the zoom search <s, y> > 0,
        # so optax's iterates are unchanged.
        curved = ~first & (sy > 0.0)
        rho = jnp.where(curved, 1.0 / jnp.where(curved, sy, 1.0), 0.0).astype(dt)
        s_mem = jax.tree.map(lambda buf, x: buf.at[slot].set(x), state.diff_params_memory, s)
        y_mem = jax.tree.map(lambda buf, x: buf.at[slot].set(x), state.diff_updates_memory, y)
        rho_mem = state.weights_memory.at[slot].set(rho)
        if scale_init_precond:
            # <y, y> summed as optax's squared norm (the same rounding)
            yy = tree_sum_squares(jax.tree.map(lambda x: x.astype(jnp.result_type(dt, x)), y))
            gamma = jnp.where(curved & (yy > 0.0), sy / jnp.where(yy > 0.0, yy, 1.0), 1.0)
            g_norm = global_norm(jax.lax.stop_gradient(updates)).astype(dt)
            gamma = jnp.where(first, jnp.minimum(1.0, 1.0 / g_norm), gamma).astype(dt)
        else:
            gamma = jnp.ones((), dt)
        direction = _two_loop(updates, s_mem, y_mem, rho_mem, gamma, state.count % m)
        return direction, ScaleByLBFGSState(
            count=increment(state.count),
            params=jax.tree.map(
                lambda x, o: jnp.array(x, o.dtype, copy=True), params, state.params
            ),
            updates=jax.tree.map(
                lambda x, o: jnp.array(x, o.dtype, copy=True), updates, state.updates
            ),
            diff_params_memory=s_mem,
            diff_updates_memory=y_mem,
            weights_memory=rho_mem,
        )

    # compiled once per shapes: outside jit, the two loops are not traced afresh each call
    run_jit = jax.jit(run)
    return GradientTransformation(init_fn, update_fn)


def lbfgs(
    learning_rate: Optional[ScalarOrSchedule] = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: Union[GradientTransformation, str, None] = "zoom",
    max_learning_rate: Optional[float] = None,
) -> GradientTransformationExtraArgs:
    """L-BFGS (Liu & Nocedal 1989; Nocedal & Wright 2006, Alg. 7.4-7.5) with a line search.

    ::

        s_i = w_{i+1} - w_i,   y_i = g_{i+1} - g_i,   rho_i = 1 / <s_i, y_i>
        H_k = V_{k-1}^T H_{k-1} V_{k-1} + rho_{k-1} s_{k-1} s_{k-1}^T,  V_i = I - rho_i y_i s_i^T
              over the last ``memory_size`` pairs, from H = gamma_k I,
              gamma_k = <s_{k-1}, y_{k-1}> / <y_{k-1}, y_{k-1}>  (min(1, 1/||g_0||) at k = 0)
        w_{k+1} = w_k - eta_k H_k g_k,   eta_k from the line search

    The same iterates as ``optax.lbfgs`` (float64, to 1e-10). ``update`` needs the loss:
    ``tx.update(g, state, params, value=f(params), grad=g, value_fn=f)``;
    :func:`value_and_grad_from_state` reuses the line search's last evaluation, and
    :func:`minimize` runs the whole loop under ``lax.while_loop``.

    Args:
      learning_rate: a fixed scale of the direction or a schedule (default None: -1, the
        line search alone sets the step).
      memory_size: the number of ``(s, y)`` pairs kept, an integer >= 1.
      scale_init_precond: use ``gamma_k`` above (False: ``H_0 = I``).
      linesearch: ``"zoom"`` (``scale_by_zoom_linesearch(max_linesearch_steps=20,
        initial_guess_strategy="one")``, optax's default), ``"backtracking"``
        (``scale_by_backtracking_linesearch(max_backtracking_steps=20, store_grad=True)``),
        a line-search transformation of your own, or None (no line search: the
        learning rate alone).
      max_learning_rate: the largest step the ``"zoom"`` or ``"backtracking"`` search
        tries, > 0 (None: no bound for zoom, as ``optax.lbfgs``; 1 for backtracking).
        ``1.0`` is ``jaxopt.LBFGS``'s bound and :func:`minimize`'s default: the unit
        quasi-Newton step is taken once it decreases the loss enough, even where a longer
        one would meet the curvature condition (on the first step, whose direction is the
        raw gradient when its norm is below 1, the unbounded zoom spends up to 8 more
        evaluations growing the step; the next step's ``gamma`` rescales it anyway).
        A pair with ``<s, y> <= 0`` that such a step may leave is kept out of ``H``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> f = lambda p: jnp.sum((p - 1.0) ** 2)
      >>> res = jz.minimize(f, jnp.zeros(3), tx=jz.lbfgs(), gtol=1e-8)
      >>> res.reason, int(res.num_steps) <= 3
      ('converged', True)
    """
    check_int("memory_size", memory_size, low=1)
    if learning_rate is not None:
        check_scalar("learning_rate", learning_rate, low=0.0)
    if max_learning_rate is not None:
        check_scalar(
            "max_learning_rate", max_learning_rate, low=0.0, low_open=True, schedule_ok=False
        )
        if not isinstance(linesearch, str):
            raise ValueError(
                "lbfgs: max_learning_rate bounds the 'zoom' or 'backtracking' line search "
                "built here; with your own line search (or none), set the bound there."
            )
    if isinstance(linesearch, str):
        if linesearch == "zoom":
            ls: GradientTransformation = scale_by_zoom_linesearch(
                max_linesearch_steps=20,
                initial_guess_strategy="one",
                max_learning_rate=max_learning_rate,
            )
        elif linesearch == "backtracking":
            ls = scale_by_backtracking_linesearch(
                max_backtracking_steps=20,
                store_grad=True,
                max_learning_rate=1.0 if max_learning_rate is None else max_learning_rate,
            )
        else:
            raise ValueError(
                f"Invalid linesearch: {linesearch!r}. Expected 'zoom', 'backtracking', a "
                "line-search transformation or None."
            )
    elif linesearch is None:
        ls = identity()
    elif hasattr(linesearch, "init") and hasattr(linesearch, "update"):
        ls = linesearch
    else:
        raise TypeError(
            f"Invalid linesearch: {linesearch!r}. Expected 'zoom', 'backtracking', a "
            "GradientTransformation (e.g. jz.scale_by_zoom_linesearch(...)) or None."
        )
    base = scale(-1.0) if learning_rate is None else scale_by_learning_rate(learning_rate)
    return chain(scale_by_lbfgs(memory_size, scale_init_precond), base, ls)
