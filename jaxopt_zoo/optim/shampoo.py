"""Shampoo: Kronecker-factored preconditioning (Gupta et al. 2018; Anil et al. 2020)."""

from __future__ import annotations

import itertools
from typing import Any, List, NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    abs_sq_in,
    check_int,
    check_nonneg,
    check_scalar,
    compute_dtype,
    increment,
    zero_count,
)
from jaxopt_zoo.optim._common import scaled_with_decay
from jaxopt_zoo.optim.newton_schulz import HomeDevices, check_home_devices
from jaxopt_zoo.optim.shampoo_roots import EPSILON_MODES, ROOT_METHODS, inverse_roots
from jaxopt_zoo.optim.soap import _mat_dtype, merge_small_dims

GRAFTS = ("adagrad", "rmsprop", "adam", "sgd", None)

# a leaf's plan: the shape it is preconditioned in, and its blocks (per block, per axis,
# (start, size)); no blocks where the leaf is not preconditioned
Plan = Tuple[Tuple[int, ...], Tuple[Tuple[Tuple[int, int], ...], ...]]


class ScaleByShampooState(NamedTuple):
    """``count``: steps so far; ``mu``: momentum of the grafted Shampoo direction (the last
    update with ``momentum_on="gradient"``; ``None`` when ``b1 == 0``); ``graft_mu``:
    momentum of the grafting direction, used before ``start_preconditioning_step`` (``None``
    when that is 1 or ``b1 == 0``); ``graft_nu``: the grafting optimizer's second moment
    (``None`` for ``"sgd"`` and no graft); ``stats`` and ``roots``: per leaf, per block, per
    dimension, the ``(d, d)`` statistic and its inverse root (empty tuples where a leaf is
    not preconditioned)."""

    count: StepCount
    mu: Any
    graft_mu: Any
    graft_nu: Any
    stats: Any
    roots: Any


def plan_leaf(
    shape: Tuple[int, ...], block_size: int, merge_dims: Union[bool, str], precondition_1d: bool
) -> Plan:
    """The shape a leaf is preconditioned in and its blocks.

    With ``merge_dims`` neighbouring dimensions are merged while their product stays
    ``<= block_size`` (``merge_small_dims``, as pytorch_optimizer's and Anil et al.'s
    ``shape_interpretation``), so a conv kernel ``(3, 3, 16, 32)`` at 128 becomes
    ``(9, 16, 32)``, a tensor of three factors; a leaf whose dimensions all merge into one
    is a vector. That merge puts a size-1 dimension in front of a first dimension larger
    than ``block_size`` (``(1024, 64)`` at 512 gives ``(1, 1024, 64)``): ``True`` drops it,
    ``"keep_ones"`` keeps it as the references do (a ``1 x 1`` factor per block, counted in
    the exponent: 6 instead of 4 for such a matrix). Vectors are preconditioned only with
    ``precondition_1d``, scalars and empty leaves never. Each dimension larger than
    ``block_size`` is split into blocks of ``block_size`` (the last one smaller), each block
    preconditioned on its own.
    """
    if len(shape) == 0 or 0 in shape:
        return tuple(shape), ()
    work = tuple(shape)
    if merge_dims:
        work = merge_small_dims(shape, block_size)
        if merge_dims != "keep_ones":
            work = tuple(d for d in work if d != 1) or (1,)
    if len(work) == 1 and not precondition_1d:
        return work, ()
    per_axis = [[(s, min(block_size, d - s)) for s in range(0, d, block_size)] for d in work]
    return work, tuple(itertools.product(*per_axis))


def _slices(block: Tuple[Tuple[int, int], ...]) -> Tuple[slice, ...]:
    return tuple(slice(s, s + n) for s, n in block)


def _precondition(x: jax.Array, roots: Tuple[jax.Array, ...]) -> jax.Array:
    """``x`` times ``roots[i]`` along every dimension ``i`` (the roots are Hermitian)."""
    for r in roots:
        x = jnp.tensordot(x, jnp.conj(r), axes=([0], [0]))
    return x


def _statistic(x: jax.Array, axis: int) -> jax.Array:
    others = [k for k in range(x.ndim) if k != axis]
    return jnp.tensordot(x, jnp.conj(x), axes=(others, others))


def scale_by_shampoo(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    epsilon: Scalar = 1e-6,
    block_size: int = 512,
    precondition_frequency: int = 10,
    start_preconditioning_step: int = 10,
    exponent_override: Optional[int] = None,
    graft: Optional[str] = "adam",
    graft_eps: Scalar = 1e-8,
    graft_b2: Optional[Scalar] = None,
    nesterov: bool = True,
    momentum_ema: bool = False,
    momentum_on: str = "update",
    merge_dims: Union[bool, str] = True,
    precondition_1d: bool = False,
    root_method: str = "eigh",
    epsilon_mode: str = "relative",
    *,
    home_devices: HomeDevices = None,
    home_axis: str = "data",
) -> GradientTransformation:
    """Shampoo's grafted, momentum-averaged direction (equations in :func:`shampoo`).

    Args:
      b1: momentum, in [0, 1); nesterov: Nesterov's form; momentum_ema: ``m = b1 m + (1 -
        b1) u`` instead of ``m = b1 m + u``.
      momentum_on: ``"update"`` (a momentum of the grafted direction, as Anil et al. and
        ``ScalableShampoo``) or ``"gradient"`` (as pytorch_optimizer's plain ``Shampoo``: the
        gradient is first moved toward the previous update, ``g <- g + b1 (D_prev - g)``
        (``g`` itself at the first step), and that is what the statistics, the graft and the
        preconditioner see; the direction is then used as it is: ``nesterov`` and
        ``momentum_ema`` do not apply).
      b2: decay of the statistics in [0, 1]; 1.0 sums them (Gupta et al.).
      epsilon: the statistics start at ``epsilon * I``; with ``epsilon_mode="relative"``
        ``epsilon * lambda_max`` is also added before each root.
      block_size: dimensions larger than this are split into blocks (and smaller ones
        merged up to it with ``merge_dims``).
      precondition_frequency: refresh the roots at steps ``t`` (1, 2, ...) divisible by it.
      start_preconditioning_step: before this step the grafting optimizer's own update.
      exponent_override: ``p`` of the root ``L^(-1/p)`` (an integer >= 1); default twice the
        number of preconditioned dimensions (4 for a matrix).
      graft: ``"adagrad"``, ``"rmsprop"``, ``"adam"`` (RMSprop with the second moment
        bias-corrected), ``"sgd"`` or ``None``: whose per-leaf norm the direction takes.
      graft_eps: added to the grafting optimizer's ``sqrt(v)``; graft_b2: its decay
        (``None``: ``b2``).
      merge_dims, precondition_1d: see ``plan_leaf``.
      root_method: ``"eigh"`` or ``"newton"`` (coupled Newton iteration).
      epsilon_mode: ``"relative"`` or ``"init"`` (see ``epsilon``).
      home_devices, home_axis: one home device per statistic's root (see :func:`shampoo`).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = jz.scale_by_shampoo(precondition_frequency=1, start_preconditioning_step=1)
      >>> g = {"w": jnp.arange(6.0).reshape(2, 3)}
      >>> u, state = tx.update(g, tx.init(g))
      >>> u["w"].shape
      (2, 3)
    """
    check_scalar("b1", b1, low=0.0, high=1.0, high_open=True, schedule_ok=False)
    check_scalar("b2", b2, low=0.0, high=1.0, schedule_ok=False)
    if graft_b2 is not None:
        check_scalar("graft_b2", graft_b2, low=0.0, high=1.0, schedule_ok=False)
    check_nonneg("epsilon", epsilon, schedule_ok=False)
    check_nonneg("graft_eps", graft_eps, schedule_ok=False)
    block = check_int("block_size", block_size, low=1)
    freq = check_int("precondition_frequency", precondition_frequency, low=1)
    start = check_int("start_preconditioning_step", start_preconditioning_step, low=1)
    if exponent_override is not None:
        check_int("exponent_override (the p of L^(-1/p))", exponent_override, low=1)
    if merge_dims not in (True, False, "keep_ones"):
        raise ValueError(
            f"Invalid merge_dims: {merge_dims!r}. Expected True, False or 'keep_ones'."
        )
    if momentum_on not in ("update", "gradient"):
        raise ValueError(f"Invalid momentum_on: {momentum_on!r}. Expected 'update' or 'gradient'.")
    if graft not in GRAFTS:
        raise ValueError(f"Invalid graft: {graft!r}. Expected one of {GRAFTS}.")
    if root_method not in ROOT_METHODS:
        raise ValueError(f"Invalid root_method: {root_method!r}. Expected one of {ROOT_METHODS}.")
    if epsilon_mode not in EPSILON_MODES:
        raise ValueError(
            f"Invalid epsilon_mode: {epsilon_mode!r}. Expected one of {EPSILON_MODES}."
        )
    check_home_devices(home_devices, home_axis)
    gb2 = b2 if graft_b2 is None else graft_b2
    no_momentum = isinstance(b1, (int, float)) and b1 == 0
    on_grad = momentum_on == "gradient"
    keep_graft_mu = start > 1 and not no_momentum and not on_grad
    w_mom = (1 - b1) if momentum_ema else 1.0
    w_stat = 1.0 if (isinstance(b2, (int, float)) and b2 == 1.0) else 1 - b2

    def plan(p):
        return plan_leaf(tuple(jnp.shape(p)), block, merge_dims, precondition_1d)

    def exponent(work):
        return exponent_override if exponent_override is not None else 2 * len(work)

    def init_fn(params):
        def mats(p, scale):
            work, blocks = plan(p)
            dt = _mat_dtype(jnp.result_type(p))
            return tuple(tuple(scale * jnp.eye(n, dtype=dt) for _, n in blk) for blk in blocks)

        def like(p, dt=None):
            return jnp.zeros(jnp.shape(p), dt or jnp.result_type(p))

        mu = None if no_momentum else jax.tree.map(like, params)
        graft_mu = jax.tree.map(like, params) if keep_graft_mu else None
        graft_nu = None
        if graft in ("adagrad", "rmsprop", "adam"):
            graft_nu = jax.tree.map(lambda p: like(p, compute_dtype(jnp.result_type(p))), params)
        stats = jax.tree.map(lambda p: mats(p, epsilon), params)
        roots = jax.tree.map(lambda p: mats(p, 1.0), params)
        return ScaleByShampooState(zero_count(), mu, graft_mu, graft_nu, stats, roots)

    def update_fn(updates, state, params=None):
        del params
        treedef: Any = jax.tree.structure(updates)
        count = state.count
        t = increment(count)
        gs = jax.tree.leaves(updates)
        n = len(gs)
        none = [None] * n
        mus = treedef.flatten_up_to(state.mu) if state.mu is not None else none
        if on_grad and not no_momentum:  # the gradient moved toward the previous update
            gs = [
                jnp.where(t == 1, g, g + b1 * (m.astype(g.dtype) - g)).astype(g.dtype)
                for g, m in zip(gs, mus)
            ]
        gmus = treedef.flatten_up_to(state.graft_mu) if state.graft_mu is not None else none
        gnus = treedef.flatten_up_to(state.graft_nu) if state.graft_nu is not None else none
        stats = treedef.flatten_up_to(state.stats)
        roots = treedef.flatten_up_to(state.roots)

        # the statistics (every step), then the roots (every ``freq`` steps)
        new_stats = []
        for g, st in zip(gs, stats):
            work, blocks = plan(g)
            if not blocks:
                new_stats.append(st)
                continue
            gw = g.astype(st[0][0].dtype).reshape(work)
            new_stats.append(
                tuple(
                    tuple(
                        b2 * s + w_stat * _statistic(gw[_slices(blk)], i) for i, s in enumerate(sb)
                    )
                    for blk, sb in zip(blocks, st)
                )
            )
        flat = [
            (j, b, i)
            for j, st in enumerate(new_stats)
            for b, sb in enumerate(st)
            for i in range(len(sb))
        ]
        exps = [exponent(plan(gs[j])[0]) for j, _, _ in flat]

        def refresh(sts):
            return inverse_roots(
                sts,
                exps,
                root_method,
                float(epsilon),
                epsilon_mode == "relative",
                home_devices,
                home_axis,
            )

        old_flat = [roots[j][b][i] for j, b, i in flat]
        sts_flat = [new_stats[j][b][i] for j, b, i in flat]
        if flat:
            new_flat = jax.lax.cond(t % freq == 0, refresh, lambda s: old_flat, sts_flat)
        else:
            new_flat = []
        nested: List[List[List[Any]]] = [[list(sb) for sb in r] for r in roots]
        for (j, b, i), r in zip(flat, new_flat):
            nested[j][b][i] = r
        new_roots = [tuple(tuple(sb) for sb in r) for r in nested]

        on = t >= start
        tf = t.astype(jnp.float32)
        outs, new_mus, new_gmus, new_gnus = [], [], [], []
        for g, mu, gmu, gnu, rt in zip(gs, mus, gmus, gnus, new_roots):
            work, blocks = plan(g)
            rdt = compute_dtype(g.dtype)
            mu_dt = None if mu is None else mu.dtype
            nu_dt = None if gnu is None else gnu.dtype
            cdt = _mat_dtype(g.dtype)
            gc = g.astype(cdt)
            # the grafting optimizer's direction
            if graft == "adagrad":
                gnu = gnu + abs_sq_in(gc, rdt)
                gd = gc / (jnp.sqrt(gnu) + graft_eps)
            elif graft in ("rmsprop", "adam"):
                gnu = gb2 * gnu + (1 - gb2) * abs_sq_in(gc, rdt)
                v = gnu
                if graft == "adam":
                    v = gnu / (1 - jnp.asarray(gb2, rdt) ** tf.astype(rdt))
                gd = gc / (jnp.sqrt(v) + graft_eps)
            else:
                gd = gc
            # Shampoo's direction, block by block
            if blocks:
                mdt = rt[0][0].dtype
                gw = g.astype(mdt).reshape(work)
                sd = jnp.zeros(work, mdt)
                for blk, rb in zip(blocks, rt):
                    sd = sd.at[_slices(blk)].set(_precondition(gw[_slices(blk)], rb))
                sd = sd.reshape(g.shape).astype(cdt)
            else:
                sd = gd
            if graft is not None:
                sd = sd * (jnp.linalg.norm(gd) / (jnp.linalg.norm(sd) + 1e-16))
            if no_momentum or on_grad:
                out = jnp.where(on, sd, gd)
                mu = None if mu is None else out.astype(mu_dt)
            else:
                mu = b1 * mu.astype(cdt) + w_mom * sd
                if keep_graft_mu:
                    gmu = b1 * gmu.astype(cdt) + w_mom * gd
                    m = jnp.where(on, mu, gmu)
                    d = jnp.where(on, sd, gd)
                else:
                    m, d = mu, sd
                out = b1 * m + w_mom * d if nesterov else m
                mu = mu.astype(mu_dt)
                gmu = None if gmu is None else gmu.astype(mu_dt)
            outs.append(out.astype(g.dtype))
            new_mus.append(mu)
            new_gmus.append(gmu)
            new_gnus.append(None if gnu is None else gnu.astype(nu_dt))

        def tree(xs, old):
            return None if old is None else treedef.unflatten(xs)

        return treedef.unflatten(outs), ScaleByShampooState(
            count=t,
            mu=tree(new_mus, state.mu),
            graft_mu=tree(new_gmus, state.graft_mu),
            graft_nu=tree(new_gnus, state.graft_nu),
            stats=treedef.unflatten(new_stats),
            roots=treedef.unflatten(new_roots),
        )

    return GradientTransformation(init_fn, update_fn)


def shampoo(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    epsilon: Scalar = 1e-6,
    weight_decay: Scalar = 0.0,
    block_size: int = 512,
    precondition_frequency: int = 10,
    start_preconditioning_step: int = 10,
    exponent_override: Optional[int] = None,
    graft: Optional[str] = "adam",
    graft_eps: Scalar = 1e-8,
    graft_b2: Optional[Scalar] = None,
    nesterov: bool = True,
    momentum_ema: bool = False,
    momentum_on: str = "update",
    merge_dims: Union[bool, str] = True,
    precondition_1d: bool = False,
    root_method: str = "eigh",
    epsilon_mode: str = "relative",
    *,
    home_devices: HomeDevices = None,
    home_axis: str = "data",
) -> GradientTransformation:
    r"""Shampoo (Gupta et al. 2018, https://arxiv.org/abs/1802.09568), in the scalable form of
    Anil et al. 2020 (https://arxiv.org/abs/2002.09018): blocks, grafting, momentum.

    Each leaf is reshaped (``merge_dims``) and split into blocks of at most ``block_size``
    per dimension (``plan_leaf``). For a block ``G`` with ``k`` dimensions, per
    dimension ``i`` a statistic ``L_i`` (starting at ``epsilon I``) and, at step ``t = 1,
    2, ...``::

        L_i = b2 L_i + (1 - b2) G_(i) G_(i)^T       (b2 = 1: L_i + G_(i) G_(i)^T)
        R_i = (L_i + r_i I)^(-1/p)   when t % precondition_frequency == 0 (else kept; I at first)
        S   = G x_1 R_1 ... x_k R_k                  (p = 2k, or exponent_override)
        A   = graft(g)                               (adagrad, rmsprop, adam, sgd: g, None)
        S   = S * ||A|| / (||S|| + 1e-16)            (per leaf; not with graft=None)
        m   = b1 m + S,  m_A = b1 m_A + A            (times (1 - b1) with momentum_ema)
        D   = (b1 m + S if nesterov else m)   if t >= start_preconditioning_step
              (b1 m_A + A if nesterov else m_A)    before
        p   = p - lr * (D + weight_decay * p)

    ``r_i = epsilon * lambda_max(L_i)`` with ``epsilon_mode="relative"`` (Anil et al.;
    pytorch_optimizer's default Newton path), 0 with ``"init"`` (pytorch_optimizer's SVD path
    and its plain ``Shampoo``). Leaves not preconditioned (vectors, scalars) take ``S = A``.
    Statistics and roots are float32 for float32 / bfloat16 / float16 leaves (float64 for
    float64). Grafting: adagrad ``A = g / (sqrt(sum g^2) + graft_eps)``; rmsprop ``A = g /
    (sqrt(v) + graft_eps)``, ``v = graft_b2 v + (1 - graft_b2) g^2``; adam the same with ``v /
    (1 - graft_b2^t)`` (Meta's AdamGrafting; pytorch_optimizer's RMSProp graft has none).

    Args:
      learning_rate: a number or a schedule.
      weight_decay: decoupled (as AdamW).
      b1, b2, epsilon, block_size, precondition_frequency, start_preconditioning_step:
        see :func:`scale_by_shampoo`, as for exponent_override, graft, graft_eps, graft_b2,
        nesterov, momentum_ema, momentum_on, merge_dims, precondition_1d, root_method and
        epsilon_mode.
      home_devices: ``None`` (every device computes every root) or a ``Mesh`` / ``True``:
        each statistic's root runs once, on one home device along ``home_axis``, spread by
        ``d^3``, and one all-gather shares them (as ``soap``'s; inside ``jax.jit``).
      home_axis: the mesh axis whose devices share the roots.

    Returns:
      ``chain(scale_by_shampoo, add_decayed_weights, scale_by_learning_rate)``.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.shampoo(1e-3)
      >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
      >>> updates, state = tx.update(params, tx.init(params), params)

    Verified against pytorch_optimizer's ``ScalableShampoo`` (``use_svd=True`` is
    ``epsilon_mode="init"``; its default coupled Newton path is ``root_method="newton"``,
    whose stopping tolerance 1e-3 bounds the agreement) and ``Shampoo`` (``graft=None,
    b2=1.0, epsilon_mode="init", merge_dims=False, precondition_1d=True``, refresh and start
    1; its momentum is ``momentum_on="gradient"``), tests/test_parity_shampoo.py, where the
    conventions that differ are listed.
    """
    return scaled_with_decay(
        scale_by_shampoo(
            b1,
            b2,
            epsilon,
            block_size,
            precondition_frequency,
            start_preconditioning_step,
            exponent_override,
            graft,
            graft_eps,
            graft_b2,
            nesterov,
            momentum_ema,
            momentum_on,
            merge_dims,
            precondition_1d,
            root_method,
            epsilon_mode,
            home_devices=home_devices,
            home_axis=home_axis,
        ),
        learning_rate,
        weight_decay,
    )


__all__ = ["ScaleByShampooState", "plan_leaf", "scale_by_shampoo", "shampoo"]
