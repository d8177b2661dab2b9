"""Muon: momentum orthogonalized by a Newton-Schulz iteration, AdamW for the other leaves.

Blocks: ``scale_by_muon`` (momentum + orthogonalization), ``orthogonalize_by_newton_schulz``
(the stateless, batched iteration, shared with ``compat.torch.muon`` / ``compat.keras.muon``),
``scale_by_muon_shape`` (the learning-rate scalings by matrix shape). ``muon`` chains them.

``muon`` follows optax.contrib.muon. torch.optim.Muon differs in its momentum (no bias
correction), its eps (a floor on the norm), its bfloat16 iteration and its shape factor of
an ``(out, in)`` weight; Keras' Muon in its undamped momentum, its ``rms_rate`` and its Adam
for non-2-D and "embedding" variables: ``compat.torch.muon`` and ``compat.keras.muon``
reproduce each (the guide's docs/muon.md, "Muon: three references"; ``tests/test_muon.py``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    EmptyState,
    GradientTransformation,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    bias_correction,
    chain,
    check_decay,
    check_nonneg,
    check_same_structure,
    ema_update,
    increment,
    zero_count,
)
from jaxopt_zoo.optim.adam import adamw
from jaxopt_zoo.optim.newton_schulz import (
    DEFAULT_NS_COEFFS,
    DimsOrFn,
    HomeDevices,
    MuonDimensionNumbers,
    NsCoeffs,
    _axes,
    fan_in_out,
    leaf_dims,
    orthogonalize_by_newton_schulz,
)
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate
from jaxopt_zoo.transforms.masking import partition
from jaxopt_zoo.transforms.weight_decay import add_decayed_weights

__all__ = [
    "MuonDimensionNumbers",
    "ScaleByMuonState",
    "muon",
    "orthogonalize_by_newton_schulz",
    "scale_by_muon",
    "scale_by_muon_shape",
]


class ScaleByMuonState(NamedTuple):
    """Step count and the momentum ``mu`` (shaped like the matrices)."""

    count: StepCount
    mu: Any


def scale_by_muon(
    ns_coeffs: NsCoeffs = DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    beta: Scalar = 0.95,
    eps: Scalar = 1e-8,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    weight_dimension_numbers: DimsOrFn = None,
    ns_dtype: Optional[Any] = None,
    ns_method: str = "auto",
    home_devices: HomeDevices = None,
    home_axis: str = "data",
    home_zero1: bool = False,
) -> GradientTransformation:
    """Muon's direction: bias-corrected (Nesterov) momentum, orthogonalized (optax's form).

    ``m_t = beta m + (1 - beta) g``; the orthogonalized input is ``m_t / (1 - beta^t)`` or,
    with ``nesterov``, ``beta m_t / (1 - beta^(t+1)) + (1 - beta) g / (1 - beta^t)``.
    ``adaptive`` multiplies the result ``O`` by ``<input, O>`` (Bernstein et al. 2024).
    The equations and the references are in :func:`muon`.

    Args:
      ns_coeffs: the Newton-Schulz coefficients ``(a, b, c)``, a sequence of triples or a
        preset name (see :func:`muon`).
      ns_steps: Newton-Schulz iterations, a Python int.
      beta: momentum decay, in [0, 1).
      eps: added to the Frobenius norm before the iteration.
      mu_dtype: dtype of the momentum (default: the parameter's).
      nesterov: orthogonalize the Nesterov look-ahead momentum.
      adaptive: scale ``O`` by ``<input, O>``.
      weight_dimension_numbers: which axes form the matrix (``None``: every leaf is 2-D).
      ns_dtype: dtype of the iteration (``None``: float32, float64 for float64).
      ns_method: ``"auto"``, ``"standard"`` or ``"gram"``.
      home_devices: ``None``, a ``Mesh`` or ``True``: one home device per matrix (see
        :func:`muon`).
      home_axis: the mesh axis whose devices share the iterations.
      home_zero1: the state is split over ``home_axis`` (ZeRO-1; see :func:`muon`).

    Returns:
      An ``optax.GradientTransformation`` with state ``ScaleByMuonState``.

    Example:
      >>> tx = jz.scale_by_muon()
      >>> g = {"w": jnp.ones((4, 3))}
      >>> updates, state = tx.update(g, tx.init(g))
      >>> updates["w"].shape, state.mu["w"].shape
      ((4, 3), (4, 3))
    """
    check_decay("beta", beta, schedule_ok=False)
    ortho = orthogonalize_by_newton_schulz(
        ns_coeffs,
        ns_steps,
        eps,
        ns_dtype=ns_dtype,
        weight_dimension_numbers=weight_dimension_numbers,
        ns_method=ns_method,
        home_devices=home_devices,
        home_axis=home_axis,
        home_zero1=home_zero1,
    )

    def init_fn(params):
        for p, d in zip(jax.tree.leaves(params), leaf_dims(weight_dimension_numbers, params)):
            if d is not None:
                _axes(jnp.ndim(p), d)  # raises on invalid dimension numbers
        mu = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype), params)
        return ScaleByMuonState(count=zero_count(), mu=mu)

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_muon")
        mu = ema_update(updates, state.mu, beta)
        count = increment(state.count)
        if nesterov:
            mu_hat = jax.tree.map(
                lambda m, g: beta * m + (1 - beta) * g.astype(m.dtype),
                bias_correction(mu, beta, increment(count)),
                bias_correction(updates, beta, count),
            )
        else:
            mu_hat = bias_correction(mu, beta, count)
        out, _ = ortho.update(mu_hat, EmptyState())
        if adaptive:
            out = jax.tree.map(lambda m, o: jnp.sum(m.conj() * o) * o, mu_hat, out)
        out = jax.tree.map(lambda o, g: o.astype(g.dtype), out, updates)
        return out, ScaleByMuonState(count=count, mu=mu)

    return GradientTransformation(init_fn, update_fn)


def scale_by_muon_shape(
    weight_dimension_numbers: DimsOrFn = None,
    consistent_rms: Optional[Scalar] = None,
    *,
    width_scaling: bool = True,
) -> GradientTransformation:
    """Scale each matrix update by a factor of its shape ``(fan_in, fan_out)``.

    ``consistent_rms=r``: ``r * sqrt(max(fan_in, fan_out))`` (Liu et al. 2025; torch's
    ``"match_rms_adamw"`` with ``r = 0.2``, Keras' ``rms_rate``); otherwise, with
    ``width_scaling``, ``sqrt(max(1, fan_out / fan_in))`` (Jordan's original, torch's
    ``"original"``); otherwise 1.

    Args:
      weight_dimension_numbers: which axes form the matrix and give ``fan_in`` and
        ``fan_out`` (``None``: every leaf is a 2-D ``(in, out)`` matrix); leaves marked
        ``None`` pass through.
      consistent_rms: the target RMS ``r``, or ``None``.
      width_scaling: Jordan's ``sqrt(max(1, fan_out / fan_in))`` when ``consistent_rms`` is
        ``None``.

    Returns:
      A stateless ``optax.GradientTransformation``.

    Example:
      >>> u = {"w": jnp.ones((2, 8))}  # fan_in 2, fan_out 8
      >>> tx = jz.scale_by_muon_shape()
      >>> float(tx.update(u, tx.init(u))[0]["w"][0, 0])  # sqrt(8 / 2)
      2.0
      >>> tx = jz.scale_by_muon_shape(consistent_rms=0.2)
      >>> round(float(tx.update(u, tx.init(u))[0]["w"][0, 0]), 4)  # 0.2 * sqrt(8)
      0.5657
    """
    if consistent_rms is not None:
        check_nonneg("consistent_rms", consistent_rms, schedule_ok=False)

    def factor(shape, dims):
        if dims is None:
            return None
        f_in, f_out = fan_in_out(shape, dims)
        if consistent_rms is not None:
            return math.sqrt(max(f_in, f_out)) * consistent_rms
        return math.sqrt(max(1.0, f_out / max(f_in, 1))) if width_scaling else None

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        dims = leaf_dims(weight_dimension_numbers, updates)
        new = []
        for u, d in zip(leaves, dims):
            s = factor(u.shape, d)
            new.append(u if s is None else (u * jnp.asarray(s).astype(u.dtype)).astype(u.dtype))
        return jax.tree.unflatten(treedef, new), state

    return GradientTransformation(init_fn, update_fn)


def skip_if_empty(tx: GradientTransformation) -> GradientTransformation:
    """``tx``, except that an update tree without leaves passes through untouched (a branch of
    ``partition`` that selects nothing from a bare-array tree gets ``params=None``)."""

    def update_fn(updates, state, params=None):
        if not jax.tree.leaves(updates):
            return updates, state
        return tx.update(updates, state, params)

    return GradientTransformation(tx.init, update_fn)


def muon_labels(weight_dimension_numbers: DimsOrFn, params: Any) -> Any:
    """``"muon"`` / ``"adam"`` per leaf: 2-D leaves by default, else where dims are given."""
    if weight_dimension_numbers is None:
        return jax.tree.map(lambda x: "muon" if jnp.ndim(x) == 2 else "adam", params)
    dims = leaf_dims(weight_dimension_numbers, params)
    treedef = jax.tree.structure(params)
    return jax.tree.unflatten(treedef, ["muon" if d is not None else "adam" for d in dims])


def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: NsCoeffs = DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    beta: Scalar = 0.95,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    weight_decay_mask: MaskOrFn = None,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    adam_b1: Scalar = 0.9,
    adam_b2: Scalar = 0.999,
    adam_eps_root: Scalar = 0.0,
    adam_weight_decay: Scalar = 0.0,
    adam_learning_rate: Optional[ScalarOrSchedule] = None,
    muon_weight_dimension_numbers: DimsOrFn = None,
    consistent_rms: Optional[Scalar] = None,
    width_scaling: bool = True,
    ns_dtype: Optional[Any] = None,
    ns_method: str = "auto",
    home_devices: HomeDevices = None,
    home_axis: str = "data",
    home_zero1: bool = False,
) -> GradientTransformation:
    r"""Muon (Jordan et al. 2024; Liu et al. 2025, https://arxiv.org/abs/2502.16982).

    For each matrix ``W`` (2-D leaves, or as ``muon_weight_dimension_numbers`` says), with
    gradient ``g_t`` at step ``t = 1, 2, ...``::

        m_t = beta m_{t-1} + (1 - beta) g_t
        M_t = beta m_t / (1 - beta^(t+1)) + (1 - beta) g_t / (1 - beta^t)   (nesterov)
        M_t = m_t / (1 - beta^t)                                            (otherwise)
        X_0 = M_t / (||M_t||_F + eps),  transposed so that it is wide (n <= m)
        X_k = a_k X + (b_k A + c_k A^2) X,  A = X X^H,  k = 1..ns_steps      (ns_coeffs)
        O_t = X_K (* <M_t, X_K> if adaptive)
        s   = consistent_rms * sqrt(max(fan_in, fan_out))  if consistent_rms is not None
            = sqrt(max(1, fan_out / fan_in))               elif width_scaling, else 1
        W_t = W_{t-1} - lr * (s O_t + weight_decay * W_{t-1})

    Every other leaf (biases, norms, scalars; embeddings if routed there) takes NAdamW/AdamW
    (``adam_b1``, ``adam_b2``, ``eps``, ``adam_eps_root``, ``adam_weight_decay``, Nesterov as
    ``nesterov``) with ``adam_learning_rate`` (default ``learning_rate``). Matrices of one
    oriented shape are orthogonalized together in one batched computation.

    Args:
      learning_rate: a number or a schedule of the step count.
      ns_coeffs: ``(a, b, c)`` (default Jordan's quintic ``(3.4445, -4.7750, 2.0315)``), a
        sequence of triples, one per iteration (``ns_steps`` then ignored), or a preset
        ``"standard"`` / ``"dion"``.
      ns_steps: Newton-Schulz iterations, a Python int (``optax.inject_hyperparams(...,
        static_args=("ns_steps",))``). beta: momentum decay. eps: in the normalization
        and in Adam's denominator.
      weight_decay, weight_decay_mask: decoupled decay of the matrices (scaled by lr).
      mu_dtype: momentum dtype (default: the parameter's).
      muon_weight_dimension_numbers: ``None`` (2-D leaves are matrices), or a tree of
        ``MuonDimensionNumbers`` / ``None`` (``None``: Adam), or a function of the params
        returning one. A conv kernel ``(h, w, in, out)``: ``MuonDimensionNumbers((0, 1, 2), 3)``.
      consistent_rms, width_scaling: the shape scaling ``s`` above.
      ns_dtype: dtype of the iteration: ``None`` is float32 (float64 for float64 momentum);
        ``jnp.bfloat16`` multiplies bfloat16 with float32 accumulation, as torch does.
      ns_method: ``"auto"`` (default: the Gram form where it saves work, ``m > 1.5 n``, in
        float32 / float64), ``"standard"`` (optax's arithmetic) or ``"gram"``; see
        ``newton_schulz``. Both agree with optax to < 1e-6 over the parity tests' 100 float32
        steps; on a rank-deficient float32 input the Gram form's error is 2-6x the standard's
        (~2e-4 of the largest entry).
      home_devices: for data-parallel training on several devices. ``None`` (default):
        every device that runs the update iterates every matrix (with replicated state, the
        same Newton-Schulz work N times). A ``Mesh`` (``jaxopt_zoo.sharding.data_mesh(N)``)
        or ``True`` (the mesh set with ``jax.set_mesh``): each matrix's iteration runs once,
        on one home device along ``home_axis``, the matrices spread by their Newton-Schulz
        FLOPs, and one all-gather shares the results (Megatron's and torchtitan's
        distributed Muon; ``jaxopt_zoo.sharding.run_on_home_devices``). The same arithmetic
        per matrix: the same trajectory as without. Use it inside ``jax.jit``; with no mesh,
        or one device along ``home_axis``, it is the plain computation.
      home_axis: the mesh axis whose devices share the iterations (default ``"data"``).
      home_zero1: with ``home_devices``, say that the state is split over ``home_axis``
        (ZeRO-1: ``sharding.zero1_sharding``, ``init_sharded(..., shard_over=home_axis)``,
        ``TrainConfig(shard_optimizer_state=True)``; parameters replicated). Each matrix's
        momentum is then moved only to its home device: one all-to-all of ~1/N of the
        matrices' bytes per device, where without it XLA all-gathers every momentum to
        every device (N - 1 of those copies unused). The orthogonalized matrices are still
        all-gathered: replicated parameters need every update on every device. Same
        results either way; a ``home_zero1`` that does not match the state's layout only
        moves more bytes (``False`` with ZeRO-1: that all-gather; ``True`` with a replicated
        state: about as much again, as XLA splits the momentum to match and gathers it back
        for the state). Measured in BENCHMARKS.md ("Scale out").

    Returns:
      ``partition({"muon": scale_by_muon -> scale_by_muon_shape -> add_decayed_weights ->
      scale_by_learning_rate, "adam": adamw})``. Same defaults and trajectory as
      ``optax.contrib.muon``; ``compat.torch.muon`` and ``compat.keras.muon`` follow those
      frameworks (docs/muon.md, "Muon: three references").

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.muon(0.02)
      >>> params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
      >>> updates, state = tx.update(params, tx.init(params), params)
    """
    if adam_learning_rate is None:
        adam_learning_rate = learning_rate
    check_nonneg("learning_rate", learning_rate)
    check_nonneg("weight_decay", weight_decay)
    check_nonneg("adam_weight_decay", adam_weight_decay)
    dims = muon_weight_dimension_numbers
    muon_part = [
        scale_by_muon(
            ns_coeffs,
            ns_steps,
            beta,
            eps,
            mu_dtype,
            nesterov=nesterov,
            adaptive=adaptive,
            weight_dimension_numbers=dims,
            ns_dtype=ns_dtype,
            ns_method=ns_method,
            home_devices=home_devices,
            home_axis=home_axis,
            home_zero1=home_zero1,
        ),
        scale_by_muon_shape(dims, consistent_rms, width_scaling=width_scaling),
    ]
    if weight_decay_mask is not None or not (
        isinstance(weight_decay, (int, float)) and weight_decay == 0
    ):
        muon_part.append(skip_if_empty(add_decayed_weights(weight_decay, weight_decay_mask)))
    muon_part.append(scale_by_learning_rate(learning_rate))
    adam_part = adamw(
        adam_learning_rate,
        adam_b1,
        adam_b2,
        eps,
        adam_eps_root,
        mu_dtype,
        adam_weight_decay,
        nesterov=nesterov,
    )
    return partition(
        {"muon": chain(*muon_part), "adam": skip_if_empty(adam_part)},
        lambda params: muon_labels(dims, params),
    )
