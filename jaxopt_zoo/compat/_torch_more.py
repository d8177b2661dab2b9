"""The blocks behind ``compat.torch.rprop``, ``asgd``, ``adafactor`` and ``sparse_adam``.

Each block returns the whole parameter change of its ``torch.optim`` class (learning rate
and, where torch couples it to the step, weight decay included), because torch's step
sizes depend on the parameters or on per-element state in ways that a trailing
``scale_by_learning_rate`` cannot express. The aliases in :mod:`jaxopt_zoo.compat.torch`
add ``maximize`` and the complex-as-real-pairs view around them.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    check_same_structure,
    compute_dtype,
    increment,
    is_zero,
    require_params,
    resolve,
    scalar_dtype,
    stat_dtype,
    zero_count,
)
from jaxopt_zoo.fast.layout import FlatParams
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.optim._common import init_moments

__all__ = [
    "TorchASGDState",
    "TorchAdafactorState",
    "TorchRpropState",
    "TorchSparseAdamState",
    "asgd_averaged_params",
    "scale_by_torch_adafactor",
    "scale_by_torch_asgd",
    "scale_by_torch_rprop",
    "scale_by_torch_sparse_adam",
]


def _unzip(updates: Any, out: Any, k: int):
    """Split a tree of k-tuples (``out``, shaped like ``updates``) into k trees."""
    treedef: Any = jax.tree.structure(updates)  # its stub lacks flatten_up_to
    cols = list(zip(*treedef.flatten_up_to(out))) or [()] * k
    return tuple(treedef.unflatten(c) for c in cols)


# --------------------------------------------------------------------------- #
# Rprop
# --------------------------------------------------------------------------- #


class TorchRpropState(NamedTuple):
    """State of :func:`scale_by_torch_rprop`: step ``count``, the previous (masked) gradient
    ``prev`` and the per-element ``step_size``."""

    count: StepCount
    prev: Any
    step_size: Any


def scale_by_torch_rprop(
    lr: Scalar = 1e-2,
    etaminus: Scalar = 0.5,
    etaplus: Scalar = 1.2,
    step_size_min: Scalar = 1e-6,
    step_size_max: Scalar = 50.0,
) -> GradientTransformation:
    """``torch.optim.Rprop``'s parameter change (Riedmiller & Braun 1993, Rprop without
    weight-backtracking, "Rprop-"), learning rate included.

    ::

        f_t = etaplus if g_t g'_{t-1} > 0,  etaminus if < 0,  1 if == 0
        s_t = clip(s_{t-1} f_t, step_size_min, step_size_max)          (s_0 = lr)
        g'_t = 0 where f_t == etaminus, else g_t                       (g'_0 = 0)
        u_t = -sign(g'_t) s_t

    Args:
      lr: the initial step size of every element.
      etaminus: the step-size factor after a sign change, in (0, 1).
      etaplus: the step-size factor while the sign holds, > 1.
      step_size_min: lower bound of the step sizes.
      step_size_max: upper bound of the step sizes.

    Returns:
      An ``optax.GradientTransformation`` whose updates are the parameter change.

    Example:
      >>> tx = jz.compat.torch.scale_by_torch_rprop(lr=0.01)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
      >>> round(float(updates["w"][0]), 6)
      -0.01
    """

    def init_fn(params):
        return TorchRpropState(
            zero_count(),
            jax.tree.map(jnp.zeros_like, params),
            jax.tree.map(lambda p: jnp.full_like(p, lr), params),
        )

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.prev, "scale_by_torch_rprop")

        def leaf(g, prev, s):
            # sign(g prev) as the product of signs: g * prev underflows in float16.
            prod = jnp.sign(g) * jnp.sign(prev.astype(g.dtype))
            factor = jnp.where(
                prod > 0,
                jnp.asarray(etaplus, s.dtype),
                jnp.where(prod < 0, jnp.asarray(etaminus, s.dtype), jnp.ones([], s.dtype)),
            )
            s = jnp.clip(s * factor, step_size_min, step_size_max).astype(s.dtype)
            g = jnp.where(prod < 0, jnp.zeros_like(g), g)
            return -jnp.sign(g) * s.astype(g.dtype), g.astype(prev.dtype), s

        out = jax.tree.map(leaf, updates, state.prev, state.step_size)
        u, prev, s = _unzip(updates, out, 3)
        return u, TorchRpropState(increment(state.count), prev, s)

    return describe(
        GradientTransformation(init_fn, update_fn),
        BlockSpec("scale_by_torch_rprop", elementwise=True),
    )


# --------------------------------------------------------------------------- #
# ASGD
# --------------------------------------------------------------------------- #


class TorchASGDState(NamedTuple):
    """State of :func:`scale_by_torch_asgd`: step ``count`` and ``ax``, the running average
    of the parameters (read it with :func:`asgd_averaged_params`)."""

    count: StepCount
    ax: Any


def scale_by_torch_asgd(
    lr: ScalarOrSchedule = 1e-2,
    lambd: Scalar = 1e-4,
    alpha: Scalar = 0.75,
    t0: Scalar = 1e6,
    weight_decay: Scalar = 0.0,
) -> GradientTransformation:
    """``torch.optim.ASGD``'s parameter change (Polyak & Juditsky 1992; Bottou 2012's
    step sizes), with the average ``ax`` of the iterates in the state.

    ::

        eta_t = lr_{t-2} / (1 + lambd lr_{t-2} (t - 1))^alpha   (eta_1 = lr_0)
        mu_t = 1 / max(1, t - 1 - t0)                             (mu_1 = 1)
        g_t = grad_t + weight_decay p_{t-1}
        p_t = p_{t-1} (1 - lambd eta_t) - eta_t g_t
        ax_t = p_t if mu_t == 1 else ax_{t-1} + mu_t (p_t - ax_{t-1})

    ``eta_t`` and ``mu_t`` are those torch computes at the end of step ``t - 1``, so a
    schedule enters one step late, exactly as an ``LRScheduler`` does with torch.

    Args:
      lr: learning rate, a number or a schedule of the step count.
      lambd: decay term.
      alpha: power of the step-size decay.
      t0: the step after which averaging starts.
      weight_decay: L2 penalty ``weight_decay * p`` added to the gradient.

    Returns:
      An ``optax.GradientTransformation`` whose updates are the parameter change; it
      needs ``params``.

    Example:
      >>> tx = jz.compat.torch.scale_by_torch_asgd(lr=0.1)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """

    def init_fn(params):
        return TorchASGDState(zero_count(), jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        require_params(params, "scale_by_torch_asgd")
        check_same_structure(updates, state.ax, "scale_by_torch_asgd")
        dt = scalar_dtype(params)
        c = state.count
        lr_prev = jnp.asarray(resolve(lr, jnp.maximum(c - 1, 0)), dt)
        cf = c.astype(dt)
        eta = lr_prev / (1 + lambd * lr_prev * cf) ** alpha
        mu = jnp.where(c == 0, 1.0, 1.0 / jnp.maximum(1.0, cf - t0)).astype(dt)

        def leaf(g, p, ax):
            ct = compute_dtype(p.dtype)  # float32 for half precision: p_t - p_{t-1} is small
            out_dtype = g.dtype
            g, pc, axc = g.astype(ct), p.astype(ct), ax.astype(ct)
            if not is_zero(weight_decay):
                g = g + weight_decay * pc
            new_p = pc * (1 - lambd * eta).astype(ct) - eta.astype(ct) * g
            new_ax = jnp.where(mu == 1, new_p, axc + (new_p - axc) * mu.astype(ct))
            return (new_p - pc).astype(out_dtype), new_ax.astype(ax.dtype)

        out = jax.tree.map(leaf, updates, params, state.ax)
        u, ax = _unzip(updates, out, 2)
        return u, TorchASGDState(increment(c), ax)

    return describe(
        GradientTransformation(init_fn, update_fn),
        BlockSpec("scale_by_torch_asgd", elementwise=True),
    )


def asgd_averaged_params(state: Any, params: Any) -> Any:
    """The averaged parameters ``ax`` of ``compat.torch.asgd`` (torch's
    ``optimizer.state[p]["ax"]``), in the structure and dtypes of ``params``.

    ``state`` is the optimizer state of any chain or wrapper holding one
    :class:`TorchASGDState`; ``params`` give the structure (complex leaves, which the state
    keeps as real pairs, are put back together).

    Args:
      state: the optimizer state, holding exactly one ``TorchASGDState``.
      params: the current parameters (for structure and dtypes).

    Returns:
      The averaged parameters, a tree like ``params``.

    Example:
      >>> tx = jz.compat.torch.asgd(lr=0.1, t0=0)
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.ones(2)}, state, params)
      >>> ax = jz.compat.torch.asgd_averaged_params(state, params)
    """
    found = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, TorchASGDState))
        if isinstance(s, TorchASGDState)
    ]
    if len(found) != 1:
        raise ValueError(
            "asgd_averaged_params: expected one TorchASGDState in the optimizer state, found "
            f"{len(found)}. Pass the state of jaxopt_zoo.compat.torch.asgd."
        )

    def leaf(p, ax):
        if jnp.iscomplexobj(p):
            return jax.lax.complex(ax[..., 0], ax[..., 1]).astype(p.dtype)
        return ax.astype(p.dtype)

    return jax.tree.map(leaf, params, found[0].ax)


# --------------------------------------------------------------------------- #
# Adafactor
# --------------------------------------------------------------------------- #


class TorchAdafactorState(NamedTuple):
    """State of :func:`scale_by_torch_adafactor`: step ``count``; per leaf of two or more
    dimensions the row and column statistics ``row_var`` (``shape[:-1] + (1,)``) and
    ``col_var`` (``shape[:-2] + (1, shape[-1])``), per other leaf ``variance``; the unused
    fields hold ``(0,)`` placeholders."""

    count: StepCount
    row_var: Any
    col_var: Any
    variance: Any


def _lerp(a, b, w):
    """torch's ``lerp``: ``a + w (b - a)`` for ``w < 0.5``, ``b - (1 - w)(b - a)`` else."""
    diff = b - a
    return jnp.where(w < 0.5, a + w * diff, b - diff * (1 - w))


def scale_by_torch_adafactor(
    lr: ScalarOrSchedule = 1e-2,
    beta2_decay: Scalar = -0.8,
    eps1: Optional[Scalar] = None,
    eps2: Scalar = 1e-3,
    d: Scalar = 1.0,
    weight_decay: Scalar = 0.0,
) -> GradientTransformation:
    """``torch.optim.Adafactor``'s parameter change, learning rate and decay included.

    ::

        rho_t = min(lr, 1 / sqrt(t)),  a_t = max(eps2, RMS(p_{t-1})) rho_t,  w_t = t^beta2_decay
        ndim >= 2:  R_t = lerp(R_{t-1}, mean_{-1}(g^2), w_t)
                    C_t = lerp(C_{t-1}, mean_{-2}(g^2), w_t)
                    V_t = R_t C_t / max(mean_{-2}(R_t), eps1)
        otherwise:  V_t = lerp(V_{t-1}, g^2, w_t)
        U_t = g / sqrt(max(V_t, eps1^2)),   u_t = -lr wd p_{t-1} - a_t U_t / max(1, RMS(U_t) / d)

    Unlike ``jaxopt_zoo.adafactor`` (optax, the paper) the last two axes are factored
    whatever their sizes, eps1 bounds ``V`` and the row mean instead of being added to
    ``g^2``, the relative step is capped by ``lr`` and there is no momentum.
    ``eps1=None`` is the machine epsilon of the dtype each leaf computes in: its own for
    float32 and float64 (torch takes the first parameter's), float32's for half precision
    (torch would take float16's 1e-3 or bfloat16's 8e-3, which swamp small gradients).

    Args:
      lr: learning rate: the cap of the relative step and the decay's factor.
      beta2_decay: the exponent of ``w_t = t^beta2_decay``, <= 0.
      eps1: the floor of ``V`` (squared) and of the row mean; None: machine epsilon.
      eps2: the floor of the parameter RMS.
      d: the clipping threshold of the update RMS, >= 1.
      weight_decay: decoupled decay ``p (1 - lr wd)``.

    Returns:
      An ``optax.GradientTransformation`` whose updates are the parameter change; it
      needs ``params``.

    Example:
      >>> tx = jz.compat.torch.scale_by_torch_adafactor()
      >>> params = {"w": jnp.ones((2, 3))}
      >>> updates, state = tx.update({"w": jnp.ones((2, 3))}, tx.init(params), params)
    """

    def init_fn(params):
        def row(p):
            dt = stat_dtype(p.dtype)
            return jnp.zeros(p.shape[:-1] + (1,), dt) if p.ndim > 1 else jnp.zeros(0, dt)

        def col(p):
            dt = stat_dtype(p.dtype)
            if p.ndim > 1:
                return jnp.zeros(p.shape[:-2] + (1, p.shape[-1]), dt)
            return jnp.zeros(0, dt)

        def var(p):
            dt = stat_dtype(p.dtype)
            return jnp.zeros(p.shape, dt) if p.ndim <= 1 else jnp.zeros(0, dt)

        return TorchAdafactorState(
            zero_count(),
            jax.tree.map(row, params),
            jax.tree.map(col, params),
            jax.tree.map(var, params),
        )

    def update_fn(updates, state, params=None):
        require_params(params, "scale_by_torch_adafactor")
        check_same_structure(updates, params, "scale_by_torch_adafactor")
        count = increment(state.count)
        dt = scalar_dtype(params)
        t = count.astype(dt)
        lr_t = jnp.asarray(resolve(lr, state.count), dt)
        w = t**beta2_decay
        rho = jnp.minimum(lr_t, 1 / jnp.sqrt(t))

        def leaf(g, p, r, c, v):
            ct = compute_dtype(p.dtype)
            out_dtype = g.dtype
            if p.size == 0:  # no elements: means over empty axes would be nan
                return jnp.zeros(g.shape, out_dtype), r, c, v
            g = g.astype(ct)
            pc = p.astype(ct)
            e1 = jnp.finfo(ct).eps if eps1 is None else eps1
            e1 = jnp.asarray(e1, ct)
            wt = w.astype(ct)
            n = max(p.size, 1)
            rms_p = jnp.sqrt(jnp.sum(pc * pc)) / jnp.sqrt(jnp.asarray(n, ct))
            a = jnp.maximum(jnp.asarray(eps2, ct), rms_p) * rho.astype(ct)
            g2 = g * g
            if p.ndim > 1:
                r = _lerp(r.astype(ct), jnp.mean(g2, axis=-1, keepdims=True), wt)
                c = _lerp(c.astype(ct), jnp.mean(g2, axis=-2, keepdims=True), wt)
                var_est = (r @ c) / jnp.maximum(jnp.mean(r, axis=-2, keepdims=True), e1)
            else:
                v = _lerp(v.astype(ct), g2, wt)
                var_est = v
            u = g / jnp.sqrt(jnp.maximum(var_est, e1 * e1))
            rms_u = jnp.sqrt(jnp.sum(u * u)) / (jnp.sqrt(jnp.asarray(n, ct)) * d)
            out = -(a / jnp.maximum(1.0, rms_u)) * u
            if not is_zero(weight_decay):
                out = out - (lr_t.astype(ct) * weight_decay) * pc
            sd = stat_dtype(p.dtype)
            return out.astype(out_dtype), r.astype(sd), c.astype(sd), v.astype(sd)

        out = jax.tree.map(leaf, updates, params, state.row_var, state.col_var, state.variance)
        u, r, c, v = _unzip(updates, out, 4)
        return u, TorchAdafactorState(count, r, c, v)

    return describe(
        GradientTransformation(init_fn, update_fn),
        BlockSpec("scale_by_torch_adafactor", elementwise=False),
    )


# --------------------------------------------------------------------------- #
# SparseAdam (lazy Adam)
# --------------------------------------------------------------------------- #


class TorchSparseAdamState(NamedTuple):
    """State of :func:`scale_by_torch_sparse_adam`: step ``count`` (every step counts) and
    the moments ``mu`` and ``nu``, whose rows move only on steps where they are active."""

    count: StepCount
    mu: Any
    nu: Any


def _active_rows(g):
    """Rows (slices along axis 0; a scalar is one row) with a non-zero gradient element,
    broadcastable against ``g``."""
    if g.ndim == 0:
        return g != 0
    return jnp.any(g != 0, axis=tuple(range(1, g.ndim)), keepdims=True)


def scale_by_torch_sparse_adam(
    b1: Scalar = 0.9, b2: Scalar = 0.999, eps: Scalar = 1e-8
) -> GradientTransformation:
    """``torch.optim.SparseAdam``'s direction as lazy Adam on dense gradients.

    A row (slice along axis 0, as an embedding table's row) is active at step ``t`` when
    any element of its gradient is non-zero -- the rows that the sparse gradient of
    ``nn.Embedding(sparse=True)`` holds. Only active rows move::

        m_t = m_{t-1} + (1 - b1)(g_t - m_{t-1}),  v_t = v_{t-1} + (1 - b2)(g_t^2 - v_{t-1})
        d_t = sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t) + eps)       (active rows)
        m_t = m_{t-1},  v_t = v_{t-1},  d_t = 0                          (other rows)

    ``t`` counts every step, active or not (torch's ``state["step"]``).

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added to the uncorrected ``sqrt(v_t)``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.chain(jz.compat.torch.scale_by_torch_sparse_adam(),
      ...               jz.scale_by_learning_rate(1e-3))
      >>> params = {"emb": jnp.ones((4, 3))}
      >>> g = {"emb": jnp.zeros((4, 3)).at[1].set(1.0)}
      >>> updates, state = tx.update(g, tx.init(params), params)
      >>> bool(jnp.all(updates["emb"][0] == 0))
      True
    """

    def refuse_flat(tree):
        if isinstance(tree, FlatParams):
            raise ValueError(
                "scale_by_torch_sparse_adam: rows (axis 0 of each leaf) are lost in flat "
                "buffers, so jaxopt_zoo.fuse cannot run it; use it unfused."
            )

    def init_fn(params):
        refuse_flat(params)
        return TorchSparseAdamState(zero_count(), *init_moments(params))

    def update_fn(updates, state, params=None):
        del params
        refuse_flat(updates)
        check_same_structure(updates, state.mu, "scale_by_torch_sparse_adam")
        count = increment(state.count)

        def leaf(g, m, v):
            ct = compute_dtype(m.dtype)
            active = _active_rows(g)
            gc, mc, vc = g.astype(ct), m.astype(ct), v.astype(ct)
            m_new = mc + (gc - mc) * (1 - jnp.asarray(b1, ct))
            v_new = vc + (gc * gc - vc) * (1 - jnp.asarray(b2, ct))
            t = count.astype(ct)
            c = jnp.sqrt(1 - jnp.asarray(b2, ct) ** t) / (1 - jnp.asarray(b1, ct) ** t)
            dirn = c * (m_new / (jnp.sqrt(v_new) + eps))
            return (
                jnp.where(active, dirn, 0).astype(g.dtype),
                jnp.where(active, m_new, mc).astype(m.dtype),
                jnp.where(active, v_new, vc).astype(v.dtype),
            )

        out = jax.tree.map(leaf, updates, state.mu, state.nu)
        u, m, v = _unzip(updates, out, 3)
        return u, TorchSparseAdamState(count, m, v)

    return describe(
        GradientTransformation(init_fn, update_fn),
        BlockSpec("scale_by_torch_sparse_adam", elementwise=False),
    )
