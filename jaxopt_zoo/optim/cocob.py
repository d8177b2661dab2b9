"""COCOB-Backprop: learning-rate-free descent by coin betting (Orabona & Tommasi 2017)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    chain,
    check_nonneg,
    check_same_structure,
    check_scalar,
    compute_dtype,
    fresh_copy,
    is_zero,
    require_params,
)
from jaxopt_zoo.fast.spec import BlockSpec, describe
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate
from jaxopt_zoo.transforms.weight_decay import add_decayed_weights


class COCOBState(NamedTuple):
    """The initial parameters ``init_particles`` (``x_0``), the negated gradient sum
    ``cumulative_gradients`` (``C``), the largest gradient seen ``scale`` (``L``), the sum of
    the gradients' magnitudes ``subgradients`` (``G``) and the ``reward`` (``R``), per
    element. Field names as in optax.contrib."""

    init_particles: Any
    cumulative_gradients: Any
    scale: Any
    subgradients: Any
    reward: Any


def _wide(dtype: Any) -> Any:
    """The real dtype COCOB computes in: float32 for float16 and bfloat16 parameters
    (``eps = 1e-8`` is 0 in float16, and ``x_0 + C frac - p`` cancels to a few bits in
    either), float64 for float64 ones."""
    return compute_dtype(dtype)


def scale_by_cocob(alpha: Scalar = 100.0, eps: Scalar = 1e-8) -> GradientTransformation:
    """The COCOB-Backprop step, per element (the equations are in :func:`cocob`).

    Args:
      alpha: bounds the fraction of the wealth bet, ``1 / alpha`` at most early on; > 0.
      eps: the initial ``L`` (keeps the first division finite); > 0.

    Returns:
      An ``optax.GradientTransformation`` with state ``COCOBState``; its ``update`` needs the
      parameters.

    Example:
      >>> tx = jz.scale_by_cocob()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
      >>> round(float(updates["w"][0]), 6)  # C (L + R) / (L max(G + L, alpha L)) = -1 / 100
      -0.01
    """
    check_scalar("alpha", alpha, low=0.0, low_open=True, schedule_ok=False)
    check_scalar("eps", eps, low=0.0, low_open=True, schedule_ok=False)

    def init_fn(params):
        def zeros(p):
            return jnp.zeros(p.shape, _wide(p.dtype))

        def zeros_like_param(p):
            return jnp.zeros(p.shape, jnp.promote_types(_wide(p.dtype), p.dtype))

        return COCOBState(
            init_particles=jax.tree.map(fresh_copy, params),
            cumulative_gradients=jax.tree.map(zeros_like_param, params),
            scale=jax.tree.map(lambda p: jnp.full(p.shape, eps, _wide(p.dtype)), params),
            subgradients=jax.tree.map(zeros, params),
            reward=jax.tree.map(zeros, params),
        )

    def update_fn(updates, state, params=None):
        require_params(params, "scale_by_cocob")
        check_same_structure(updates, state.scale, "scale_by_cocob")

        def leaf(g, p, p0, c, big_l, big_g, r):
            gw = g.astype(c.dtype)
            big_l = jnp.maximum(big_l, jnp.abs(gw).astype(big_l.dtype))
            big_g = big_g + jnp.abs(gw).astype(big_g.dtype)
            moved = (p - p0).astype(c.dtype)
            r = jnp.maximum(r - jnp.real(jnp.conj(gw) * moved).astype(r.dtype), 0)
            c = c - gw
            frac = (big_l + r) / (big_l * jnp.maximum(big_g + big_l, alpha * big_l))
            u = p0.astype(c.dtype) + c * frac.astype(c.real.dtype) - p.astype(c.dtype)
            return u.astype(g.dtype), c, big_l, big_g, r

        treedef = jax.tree.structure(updates)
        columns = [
            jax.tree.leaves(t)
            for t in (
                updates,
                params,
                state.init_particles,
                state.cumulative_gradients,
                state.scale,
                state.subgradients,
                state.reward,
            )
        ]
        rows = [leaf(*xs) for xs in zip(*columns)]
        parts = [jax.tree.unflatten(treedef, [r[i] for r in rows]) for i in range(5)]
        new = COCOBState(state.init_particles, *parts[1:])
        return parts[0], new

    # init_particles is a buffer the stage reads and leaves as it is (its kernel output is
    # its input, aliased: nothing is written).
    spec = BlockSpec(
        "scale_by_cocob",
        elementwise=True,
        stage="cocob",
        scalars={"alpha": alpha},
        buffers=("init_particles", "cumulative_gradients", "scale", "subgradients", "reward"),
    )
    return describe(GradientTransformation(init_fn, update_fn), spec)


def cocob(
    learning_rate: ScalarOrSchedule = 1.0,
    alpha: Scalar = 100.0,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""COCOB-Backprop (Orabona & Tommasi 2017, "Training Deep Networks without Learning
    Rates Through Coin Betting", https://arxiv.org/abs/1705.07795, Algorithm 2).

    Each coordinate bets a fraction of its "wealth" on the sign of the negative gradient; no
    learning rate to tune. With ``c_t = lr_t (g_t + wd p_{t-1})`` (the learning rate and
    the weight decay act on the gradient, before the bet) and ``x_0`` the initial
    parameters, at step ``t``, per element::

        L_t = max(L_{t-1}, |c_t|)                    (L_0 = eps)
        G_t = G_{t-1} + |c_t|
        R_t = max(R_{t-1} - Re(conj(c_t) (p_{t-1} - x_0)), 0)
        C_t = C_{t-1} - c_t
        p_t = x_0 + C_t (L_t + R_t) / (L_t max(G_t + L_t, alpha L_t))

    Args:
      learning_rate: multiplies the gradients before the bet (keep 1; a schedule is allowed).
      alpha: bounds the fraction bet early on, > 0.
      eps: the initial ``L``, > 0.
      weight_decay, mask: L2 penalty added to the gradient (coupled), masked where asked.

    Returns:
      ``chain(add_decayed_weights, scale_by_learning_rate(flip_sign=False), scale_by_cocob)``.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.cocob()
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

    Equals ``optax.contrib.cocob`` (0.2.8). For complex parameters ``|c|`` and the real
    part of the product are this module's extension. The state (but ``x_0``) is float32 for
    float16 and bfloat16 parameters (optax keeps it in their dtype, where ``eps`` is 0).
    """
    check_nonneg("weight_decay", weight_decay)
    parts = []
    if not is_zero(weight_decay):
        parts.append(add_decayed_weights(weight_decay, mask))
    if not (isinstance(learning_rate, (int, float)) and learning_rate == 1):
        parts.append(scale_by_learning_rate(learning_rate, flip_sign=False))
    parts.append(scale_by_cocob(alpha, eps))
    return chain(*parts)
