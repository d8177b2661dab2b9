"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al. 2024)."""

from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    abs_sq_in,
    chain,
    check_decay,
    check_int,
    check_nonneg,
    check_same_structure,
    compute_dtype,
    increment,
    is_zero,
    resolve,
    stat_dtype,
    zero_count,
)
from jaxopt_zoo.optim.newton_schulz import HomeDevices, check_home_devices
from jaxopt_zoo.optim.soap_refresh import update_bases
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate


class ScaleBySoapState(NamedTuple):
    """``count``: calls so far (the first only sets the preconditioner up); ``mu``: first
    moment in the parameters' basis; ``nu``: second moment in the eigenbasis, in the
    leaf's shape; ``gg`` and ``q``: per leaf, a tuple with one ``(d, d)`` statistic
    ``E[G_(i) G_(i)^H]`` and its eigenbasis per (merged) dimension, ``None`` where a
    dimension is not preconditioned."""

    count: StepCount
    mu: Any
    nu: Any
    gg: Any
    q: Any


class DecayAfterStepState(NamedTuple):
    """``count``: calls so far (the learning-rate schedule's step)."""

    count: StepCount


def merge_small_dims(shape: Tuple[int, ...], max_dim: int) -> Tuple[int, ...]:
    """Merge neighbouring dimensions while their product stays <= ``max_dim``.

    ``(2, 3, 4, 5)`` with ``max_dim=12`` gives ``(6, 4, 5)``. pytorch_optimizer's helper
    returns ``[1]`` (and its reshape then fails) when every dimension merges into one; here
    that case gives the one merged dimension.
    """
    merged, prod = [], 1
    for d in shape:
        prod *= d
        if prod > max_dim:
            merged.append(prod // d)
            prod = d
    merged.append(prod)
    return tuple(merged)


def _plan(
    shape: Tuple[int, ...], max_dim: int, merge_dims: bool, precondition_1d: bool
) -> Tuple[Tuple[int, ...], Tuple[bool, ...]]:
    """The shape the leaf is preconditioned in, and which of its dimensions are."""
    if len(shape) == 0 or 0 in shape:
        return tuple(shape), (False,) * len(shape)
    if len(shape) == 1:
        return tuple(shape), (precondition_1d and shape[0] <= max_dim,)
    work = merge_small_dims(shape, max_dim) if merge_dims else tuple(shape)
    return work, tuple(d <= max_dim for d in work)


def _mat_dtype(dtype: Any) -> Any:
    """float32/float64 (complex64/complex128 for complex leaves) for the statistics."""
    real = compute_dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return jnp.complex128 if real == jnp.float64 else jnp.complex64
    return real


def _project(x: jax.Array, qs: Tuple[Any, ...], back: bool = False) -> jax.Array:
    """``x`` times ``Q_i^H`` (or ``Q_i`` with ``back``) along every dimension ``i``; a
    dimension without a basis is passed over (rotated to the end unchanged)."""
    for q in qs:
        if q is None:
            x = jnp.moveaxis(x, 0, -1)
        elif back:
            x = jnp.tensordot(x, q, axes=([0], [1]))
        else:
            x = jnp.tensordot(x, jnp.conj(q), axes=([0], [0]))
    return x


def scale_by_soap(
    b1: Scalar = 0.95,
    b2: Scalar = 0.95,
    shampoo_beta: Optional[Scalar] = None,
    eps: Scalar = 1e-8,
    precondition_frequency: int = 10,
    max_precondition_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    correct_bias: bool = True,
    normalize_grads: bool = False,
    qr_dtype: Optional[Any] = None,
    *,
    home_devices: HomeDevices = None,
    home_axis: str = "data",
    home_zero1: bool = False,
) -> GradientTransformation:
    """SOAP's direction ``D`` (equations in :func:`soap`); the first call only sets the
    preconditioner up and returns zeros.

    Args:
      b1: Adam's first-moment decay, in [0, 1).
      b2: Adam's second-moment decay (in the eigenbasis), in [0, 1).
      shampoo_beta: decay of the statistics ``L_i`` (``None``: ``b2``).
      eps: added to ``sqrt(v)``.
      precondition_frequency: refresh the eigenbases every this many steps.
      max_precondition_dim: dimensions larger than this are not preconditioned.
      merge_dims: merge small dimensions (``merge_small_dims``) before preconditioning.
      precondition_1d: precondition 1-D leaves too.
      correct_bias: multiply by ``sqrt(1 - b2^t) / (1 - b1^t)``.
      normalize_grads: divide the direction by its RMS.
      qr_dtype: dtype of the QR (default: the leaf's).
      home_devices: ``None``, a ``Mesh`` or ``True``: one home device per statistic for
        its eigh / power-iteration-and-QR (see :func:`soap`).
      home_axis: the mesh axis whose devices share them.
      home_zero1: the state is split over ``home_axis`` (ZeRO-1; see :func:`soap`).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.scale_by_soap()
      >>> g = {"w": jnp.arange(6.0).reshape(2, 3)}
      >>> state = tx.init(g)
      >>> u1, state = tx.update(g, state)  # sets the eigenbases up
      >>> u2, state = tx.update(g, state)
      >>> float(jnp.abs(u1["w"]).max()), u2["w"].shape
      (0.0, (2, 3))
    """
    check_decay("b1", b1, schedule_ok=False)
    check_decay("b2", b2, schedule_ok=False)
    if shampoo_beta is not None:
        check_decay("shampoo_beta", shampoo_beta, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)
    freq = check_int("precondition_frequency", precondition_frequency, low=1)
    max_dim = check_int("max_precondition_dim", max_precondition_dim, low=1)
    sb = b2 if shampoo_beta is None else shampoo_beta
    check_home_devices(home_devices, home_axis)

    def plan(p):
        return _plan(tuple(jnp.shape(p)), max_dim, merge_dims, precondition_1d)

    def init_fn(params):
        def mats(p, eye):
            work, pre = plan(p)
            dt = _mat_dtype(jnp.result_type(p))
            return tuple(
                (jnp.eye(d, dtype=dt) if eye else jnp.zeros((d, d), dt)) if on else None
                for d, on in zip(work, pre)
            )

        mu = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.result_type(p)), params)
        nu = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), stat_dtype(jnp.result_type(p))), params)
        gg = jax.tree.map(lambda p: mats(p, False), params)
        q = jax.tree.map(lambda p: mats(p, True), params)
        return ScaleBySoapState(count=zero_count(), mu=mu, nu=nu, gg=gg, q=q)

    def update_fn(updates, state, params=None):
        del params
        check_same_structure(updates, state.mu, "scale_by_soap")
        count = state.count
        first = count == 0
        t = count.astype(jnp.float32)
        # 0: keep the basis, 1: first call (eigh), 2: refresh by power iteration and QR
        branch = jnp.where(first, 1, jnp.where(count % freq == 0, 2, 0))

        def leaf(g, mu, nu, gg, qs):
            work, pre = plan(g)
            dt = _mat_dtype(g.dtype)
            rdt = compute_dtype(g.dtype)
            gw = g.astype(dt).reshape(work)
            # Adam in the current eigenbasis (skipped on the first call)
            g_rot = _project(gw, qs)
            mu_new = (b1 * mu + (1 - b1) * g.astype(mu.dtype)).astype(mu.dtype)
            nu_new = (b2 * nu.reshape(work).astype(rdt) + (1 - b2) * abs_sq_in(g_rot, rdt)).astype(
                nu.dtype
            )
            denom = jnp.sqrt(nu_new.astype(rdt)) + eps
            d = _project(_project(mu_new.astype(dt).reshape(work), qs) / denom, qs, back=True)
            if normalize_grads:
                d = d / (jnp.sqrt(jnp.mean(abs_sq_in(d, rdt))) + eps)
            if correct_bias:
                tt = t.astype(rdt)
                d = d * (
                    jnp.sqrt(1 - jnp.asarray(b2, rdt) ** tt) / (1 - jnp.asarray(b1, rdt) ** tt)
                )
            d = jnp.where(first, jnp.zeros_like(d), d)
            mu_new = jnp.where(first, mu, mu_new)
            nu_new = jnp.where(first, nu.reshape(work), nu_new)
            # the preconditioner's statistics, then its basis
            gg_new: List[Optional[jax.Array]] = []
            for i, (m, on) in enumerate(zip(gg, pre)):
                if not on:
                    gg_new.append(None)
                    continue
                others = [k for k in range(len(work)) if k != i]
                outer = jnp.tensordot(gw, jnp.conj(gw), axes=(others, others))
                gg_new.append((sb * m + (1 - sb) * outer).astype(m.dtype))
            return (d.reshape(g.shape).astype(g.dtype), mu_new, nu_new, tuple(gg_new))

        treedef: Any = jax.tree.structure(updates)  # its stub lacks flatten_up_to
        qs_old = treedef.flatten_up_to(state.q)
        out = [
            leaf(*a)
            for a in zip(
                jax.tree.leaves(updates),
                jax.tree.leaves(state.mu),
                jax.tree.leaves(state.nu),
                treedef.flatten_up_to(state.gg),
                qs_old,
            )
        ]
        # every leaf's bases at once (one home device per matrix with home_devices)
        where = [(j, i) for j, o in enumerate(out) for i, m in enumerate(o[3]) if m is not None]
        qs_flat, nus = update_bases(
            branch,
            [out[j][3][i] for j, i in where],
            [qs_old[j][i] for j, i in where],
            [o[2] for o in out],
            where,
            qr_dtype,
            home_devices,
            home_axis,
            home_zero1,
        )
        qs_new = [list(q) for q in qs_old]
        for (j, i), q in zip(where, qs_flat):
            qs_new[j][i] = q
        ups, mus, ggs = ([o[k] for o in out] for k in (0, 1, 3))
        nus = [n.reshape(u.shape) for n, u in zip(nus, ups)]
        parts = [treedef.unflatten(x) for x in (ups, mus, nus, ggs, [tuple(q) for q in qs_new])]
        return parts[0], ScaleBySoapState(
            count=increment(count), mu=parts[1], nu=parts[2], gg=parts[3], q=parts[4]
        )

    return GradientTransformation(init_fn, update_fn)


def decay_after_step(
    learning_rate: ScalarOrSchedule, weight_decay: Any, skip_first: bool = True
) -> GradientTransformation:
    """Decoupled weight decay applied to the parameters after the step:
    ``p_new = (p + u) * (1 - lr * weight_decay)``, i.e. ``u <- u - lr * wd * (p + u)``.

    This is the order of the SOAP authors' code and pytorch_optimizer (AdamW decays ``p``
    before the step). ``skip_first`` leaves the first call alone, as SOAP's first call
    makes no step at all.
    """
    check_nonneg("weight_decay", weight_decay, schedule_ok=False)

    def init_fn(params):
        del params
        return DecayAfterStepState(count=zero_count())

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "decay_after_step needs the current parameters: call "
                "`update(grads, state, params)`."
            )
        check_same_structure(updates, params, "decay_after_step")
        lr = resolve(learning_rate, state.count)
        on = (state.count > 0) if skip_first else True

        def f(u, p):
            dec = (lr * weight_decay) * (p.astype(u.dtype) + u)
            return jnp.where(on, u - dec.astype(u.dtype), u)

        return jax.tree.map(f, updates, params), DecayAfterStepState(increment(state.count))

    return GradientTransformation(init_fn, update_fn)


def soap(
    learning_rate: ScalarOrSchedule = 3e-3,
    b1: Scalar = 0.95,
    b2: Scalar = 0.95,
    shampoo_beta: Optional[Scalar] = None,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 1e-2,
    precondition_frequency: int = 10,
    max_precondition_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    correct_bias: bool = True,
    normalize_grads: bool = False,
    qr_dtype: Optional[Any] = None,
    *,
    home_devices: HomeDevices = None,
    home_axis: str = "data",
    home_zero1: bool = False,
) -> GradientTransformation:
    r"""SOAP (Vyas et al. 2024, https://arxiv.org/abs/2409.11321): Adam run in the
    eigenbasis of Shampoo's preconditioner.

    For a leaf ``G`` (dims merged by ``merge_small_dims`` if ``merge_dims``), per dimension
    ``i`` with size ``<= max_precondition_dim`` (1-D leaves only with ``precondition_1d``;
    scalars never), ``L_i = sb * L_i + (1 - sb) * G_(i) G_(i)^H`` (``sb = shampoo_beta``,
    default ``b2``) and ``Q_i`` its eigenbasis. With ``rot(X) = X x_i Q_i^H`` on every
    dimension and ``back(X) = X x_i Q_i``, at step ``t = 1, 2, ...`` (call ``t + 1``)::

        m_t = b1 m + (1 - b1) G                    (in the parameters' basis)
        v_t = b2 v + (1 - b2) |rot(G)|^2            (in the eigenbasis)
        D   = back(rot(m_t) / (sqrt(v_t) + eps))    (/ (rms(D) + eps) if normalize_grads)
        p   = (p - lr * sqrt(1 - b2^t) / (1 - b1^t) * D) * (1 - lr * weight_decay)

    then ``L_i`` is updated with ``G``, and every ``precondition_frequency`` steps ``Q_i``
    is refreshed by one power iteration ``qr(L_i Q_i)``, columns sorted by
    ``diag(Q_i^H L_i Q_i)``, ``v`` permuted to match. The first call only accumulates
    ``L_i`` and takes ``Q_i = eigh(L_i)`` (eigenvalues descending): no step, no decay.

    Args:
      learning_rate: a number or a schedule.
      b1, b2: Adam's decay rates; shampoo_beta: that of ``L_i`` (``None``: ``b2``).
      eps: added to ``sqrt(v)`` (not bias-corrected, as the authors' code).
      weight_decay: decoupled, applied after the step (see ``decay_after_step``).
      precondition_frequency, max_precondition_dim, merge_dims, precondition_1d: as above.
      correct_bias: the ``sqrt(1 - b2^t) / (1 - b1^t)`` factor.
      normalize_grads: divide the direction by its RMS.
      qr_dtype: dtype of the QR (default the leaf's: float64 for float64).
        pytorch_optimizer and the authors run it in float32 whatever the parameters: pass
        ``jnp.float32`` for that.
      home_devices: for data-parallel training. ``None`` (default): every device runs
        every statistic's eigh / power iteration and QR. A ``Mesh`` or ``True`` (the mesh set
        with ``jax.set_mesh``): each runs once, on one home device along ``home_axis``,
        spread by ``d^3``, and one all-gather shares the bases (as ``muon``'s; use it inside
        ``jax.jit``). The same arithmetic per matrix.
      home_axis: the mesh axis whose devices share that work (default ``"data"``).
      home_zero1: with ``home_devices``, say that the state is split over ``home_axis``
        (ZeRO-1, ``shard_over=home_axis``): each statistic and basis (split by rows where
        the axis divides ``d``) is moved only to its home device, and the new basis goes
        back split by rows, as the state keeps it: an all-to-all each way of ~1/N of the
        bytes, where without it XLA all-gathers the statistics and the bases to every device
        and the new bases are all-gathered too. Same results either way; a mismatch with
        the state's layout only moves more bytes.

    Returns:
      ``chain(scale_by_soap, scale_by_learning_rate, decay_after_step)``.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.soap(3e-3)
      >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
      >>> updates, state = tx.update(params, tx.init(params), params)

    Verified against ``pytorch_optimizer.SOAP`` (tests/test_parity_soap.py): to 1e-15 in
    float64 given the same first eigenbasis and QR. The first ``eigh`` is of a statistic of
    rank ``min(m, n)``: for non-square matrices (and preconditioned vectors) its null space
    has no unique basis and LAPACK builds differ in the one they return, which changes the
    path (by ~1e-2 over 120 steps) though both are SOAP. With eps near 0, Adam in that basis
    also amplifies rounding along null directions; a larger ``eps`` damps it.
    """
    parts = [
        scale_by_soap(
            b1,
            b2,
            shampoo_beta,
            eps,
            precondition_frequency,
            max_precondition_dim,
            merge_dims,
            precondition_1d,
            correct_bias,
            normalize_grads,
            qr_dtype,
            home_devices=home_devices,
            home_axis=home_axis,
            home_zero1=home_zero1,
        ),
        scale_by_learning_rate(learning_rate),
    ]
    if not is_zero(weight_decay):
        parts.append(decay_after_step(learning_rate, weight_decay))
    return chain(*parts)
