"""Schedule-free SGD and AdamW (Defazio et al. 2024): interpolation and averaging instead of
momentum and a decaying schedule."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxopt_zoo.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    MaskOrFn,
    Scalar,
    ScalarOrSchedule,
    StepCount,
    chain,
    check_int,
    check_nonneg,
    check_scalar,
    fresh_copy,
    increment,
    is_zero,
    require_params,
    resolve,
    scalar_dtype,
    zero_count,
)
from jaxopt_zoo.optim.rmsprop import scale_by_rms
from jaxopt_zoo.transforms.learning_rate import scale_by_learning_rate
from jaxopt_zoo.transforms.weight_decay import add_decayed_weights


class ScheduleFreeState(NamedTuple):
    """State of :func:`schedule_free`: ``z`` (the base optimizer's iterate), the averaging
    weights so far and the base optimizer's state. The parameters themselves are ``y``."""

    count: StepCount
    b1: jax.Array
    weight_sum: jax.Array
    lr_max: jax.Array
    z: Any
    base_optimizer_state: Any


def _z_dtype(dtype: Any, state_dtype: Any | None) -> Any:
    """``z`` in ``state_dtype``, else in the parameter's dtype widened to float32 for
    float16/bfloat16 (``y - x`` is a small difference of two nearby iterates)."""
    if state_dtype is not None:
        return jnp.dtype(state_dtype)
    dtype = jnp.dtype(dtype)
    return jnp.dtype(jnp.float32) if dtype in (jnp.float16, jnp.bfloat16) else dtype


def schedule_free(
    base_optimizer: GradientTransformation,
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    weight_lr_power: Scalar = 2.0,
    state_dtype: Any | None = None,
    *,
    r: Scalar = 0.0,
    weight_lr_ahead: bool = False,
    weight_decay_at_z: Scalar = 0.0,
) -> GradientTransformationExtraArgs:
    """Make ``base_optimizer`` schedule-free; its updates are the steps of ``z``.

    ``learning_rate`` is the one ``base_optimizer`` uses (same count: 0 at the first step);
    it only enters the averaging weights ``c_t``. ``weight_lr_ahead`` evaluates it one step
    ahead (``lr(t + 1)``), as ``optax.contrib.schedule_free`` does (its weights count from 1
    while its base optimizer counts from 0). Turn off the base optimizer's momentum.
    ``weight_decay_at_z`` adds ``-lr_t * weight_decay_at_z * z_t`` to the ``z`` step (decay
    taken at ``z``, not at the gradient point ``y``). The equations are in
    :func:`schedule_free_adamw`.

    Args:
      base_optimizer: the optimizer whose updates step ``z`` (without momentum).
      learning_rate: the base optimizer's learning rate (a number or a schedule).
      b1: interpolation between ``x`` and ``z``, in (0, 1).
      weight_lr_power: the power of ``max lr`` in the averaging weights.
      state_dtype: dtype of ``z`` (default: the parameters', float32 for 16-bit ones).
      r: the power of ``t + 1`` in the averaging weights.
      weight_lr_ahead: evaluate the learning rate of the weights at ``t + 1`` (optax's).
      weight_decay_at_z: weight decay taken at ``z``.

    Returns:
      A ``GradientTransformationExtraArgs`` with state ``ScheduleFreeState``; its updates
      move the parameters ``y``.

    Example:
      >>> tx = jz.schedule_free(jz.sgd(0.1), 0.1)
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> for _ in range(2):  # z: 0.9, 0.8; x: their average; y: 0.9 x + 0.1 z
      ...     updates, state = tx.update({"w": jnp.ones(2)}, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> round(float(params["w"][0]), 4), round(float(state.z["w"][0]), 4)
      (0.845, 0.8)
    """
    check_scalar("b1", b1, low=0.0, high=1.0, low_open=True, high_open=True, schedule_ok=False)
    check_nonneg("weight_lr_power", weight_lr_power, schedule_ok=False)
    check_nonneg("r", r, schedule_ok=False)
    check_nonneg("learning_rate", learning_rate)
    check_nonneg("weight_decay_at_z", weight_decay_at_z, schedule_ok=False)
    decay_z = not is_zero(weight_decay_at_z)
    extra_ok = isinstance(base_optimizer, GradientTransformationExtraArgs)

    def init_fn(params):
        dt = scalar_dtype(params)
        z = jax.tree.map(lambda p: fresh_copy(p, _z_dtype(p.dtype, state_dtype)), params)
        return ScheduleFreeState(
            count=zero_count(),
            b1=jnp.asarray(b1, dt),
            weight_sum=jnp.zeros([], dt),
            lr_max=jnp.zeros([], dt),
            z=z,
            base_optimizer_state=base_optimizer.init(params),
        )

    def update_fn(updates, state, params=None, **extra):
        require_params(params, "schedule_free")
        dt = state.weight_sum.dtype
        k = state.count
        lr = jnp.asarray(resolve(learning_rate, increment(k) if weight_lr_ahead else k), dt)
        lr_max = jnp.maximum(state.lr_max, lr)
        weight = (k.astype(dt) + 1) ** r * lr_max**weight_lr_power
        weight_sum = state.weight_sum + weight
        ck = jnp.where(weight_sum > 0, weight / jnp.where(weight_sum > 0, weight_sum, 1), 0)
        if extra_ok:
            steps, base_state = base_optimizer.update(
                updates, state.base_optimizer_state, params, **extra
            )
        else:
            steps, base_state = base_optimizer.update(updates, state.base_optimizer_state, params)

        if decay_z:
            lr_z = jnp.asarray(resolve(learning_rate, k), dt)
            steps = jax.tree.map(
                lambda dz, z: (
                    dz - (lr_z * weight_decay_at_z).astype(z.real.dtype) * z.astype(dz.dtype)
                ),
                steps,
                state.z,
            )

        z = jax.tree.map(lambda z, dz: (z + dz.astype(z.dtype)).astype(z.dtype), state.z, steps)

        def leaf(y, z_old, z_new, g):
            # y' = y + c (z - y) + (1 - b1 (1 - c)) dz  with  z' = z + dz  (the authors' form),
            # dz taken as z' - z: the base step then has one reader (the new z) and XLA fuses
            # it there instead of writing it out and reading it twice (optax's dataflow too).
            c = ck.astype(z_old.real.dtype)
            dz = z_new - z_old
            step = c * (z_old - y.astype(z_old.dtype)) + (1 - b1 * (1 - c)) * dz
            return step.astype(g.dtype)

        out = jax.tree.map(leaf, params, state.z, z, updates)
        return out, ScheduleFreeState(
            count=increment(k),
            b1=state.b1,
            weight_sum=weight_sum,
            lr_max=lr_max,
            z=z,
            base_optimizer_state=base_state,
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)


def schedule_free_eval_params(state: Any, params: Any) -> Any:
    """The evaluation point ``x = (y - (1 - b1) z) / b1`` of a schedule-free optimizer.

    ``state`` is the optimizer state of any chain, wrapper or ``inject_hyperparams`` that
    holds one :class:`ScheduleFreeState`; ``params`` are the training parameters ``y``.
    Evaluate (and checkpoint for inference) at ``x``; keep training from ``y``.

    Args:
      state: the optimizer state, holding exactly one ``ScheduleFreeState``.
      params: the training parameters ``y``.

    Returns:
      The evaluation parameters ``x``, a tree like ``params`` in their dtypes.

    Example:
      >>> tx = jz.schedule_free_sgd(0.1)
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> for _ in range(2):  # z: 0.9, 0.8
      ...     updates, state = tx.update({"w": jnp.ones(2)}, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> x = jz.schedule_free_eval_params(state, params)
      >>> round(float(x["w"][0]), 4)  # the average of z_1 and z_2
      0.85
    """
    found = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, ScheduleFreeState))
        if isinstance(s, ScheduleFreeState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"schedule_free_eval_params: expected one ScheduleFreeState in the optimizer state, "
            f"found {len(found)}. Pass the state of a schedule_free_* optimizer."
        )
    sf = found[0]

    def leaf(y, z):
        b = sf.b1.astype(z.real.dtype)
        return ((y.astype(z.dtype) - (1 - b) * z) / b).astype(y.dtype)

    return jax.tree.map(leaf, params, sf.z)


def _warmed(
    learning_rate: ScalarOrSchedule,
    warmup_steps: int | None,
    from_zero: bool,
    b2: Optional[Scalar] = None,
) -> ScalarOrSchedule:
    """``lr(t) * min((t + 1) / warmup_steps, 1)`` (the authors'; ``from_zero``: ``t /
    warmup_steps``, optax's ``warmup_constant_schedule``), times ``sqrt(1 - b2^(t+1))`` when
    ``b2`` is given."""
    if warmup_steps is None and b2 is None:
        return learning_rate

    def schedule(count):
        base = resolve(learning_rate, count)
        dt = jnp.result_type(float)
        t = jnp.asarray(count).astype(dt)
        if warmup_steps is not None:
            base = base * jnp.minimum((t + (0 if from_zero else 1)) / warmup_steps, 1)
        if b2 is not None:
            base = base * jnp.sqrt(1 - jnp.asarray(b2, dt) ** (t + 1))
        return base

    return schedule


def _check_warmup(warmup_steps: int | None) -> int | None:
    return None if warmup_steps is None else check_int("warmup_steps", warmup_steps, low=1)


def schedule_free_sgd(
    learning_rate: ScalarOrSchedule = 1.0,
    warmup_steps: int | None = None,
    b1: Scalar = 0.9,
    weight_decay: Optional[Scalar] = 0.0,
    weight_lr_power: Scalar = 2.0,
    state_dtype: Any | None = None,
    *,
    r: Scalar = 0.0,
    mask: MaskOrFn = None,
    optax_warmup: bool = False,
) -> GradientTransformationExtraArgs:
    """Schedule-free SGD (Defazio et al. 2024): :func:`schedule_free_adamw` with the raw
    (weight-decayed) gradient ``g_t + weight_decay * y_t`` as the direction ``d_t``.

    Reproduces ``schedulefree.SGDScheduleFree`` (``lr``, ``momentum=b1``, ``warmup_steps``,
    ``r``, ``weight_lr_power``, ``weight_decay``) and, with ``optax_warmup=True``,
    ``optax.contrib.schedule_free_sgd``. The defaults are the authors' (``lr=1.0``).

    Args:
      learning_rate: peak learning rate (a number or a schedule).
      warmup_steps: linear warmup steps (``None``: none).
      b1: interpolation between ``x`` and ``z``, in (0, 1) (the authors' ``momentum``).
      weight_decay: decay added to the gradient at ``y`` (``None``: 0, as optax).
      weight_lr_power: the power of ``max lr`` in the averaging weights.
      state_dtype: dtype of ``z`` (default: the parameters', float32 for 16-bit ones).
      r: the power of ``t + 1`` in the averaging weights.
      mask: which leaves decay (a tree of booleans or a function of the params).
      optax_warmup: optax's warmup, which starts at 0 (see :func:`schedule_free_adamw`).

    Returns:
      ``schedule_free(chain(add_decayed_weights, scale_by_learning_rate))``.

    Example:
      >>> tx = jz.schedule_free_sgd(0.1, warmup_steps=10)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
      >>> round(float(updates["w"][0]), 4)  # the first z step: -0.1 / 10
      -0.01
    """
    warmup_steps = _check_warmup(warmup_steps)
    weight_decay = 0.0 if weight_decay is None else weight_decay  # optax's "no decay"
    lr = _warmed(learning_rate, warmup_steps, optax_warmup)
    parts = [] if is_zero(weight_decay) else [add_decayed_weights(weight_decay, mask)]
    base = chain(*parts, scale_by_learning_rate(lr))
    return schedule_free(
        base, lr, b1, weight_lr_power, state_dtype, r=r, weight_lr_ahead=optax_warmup
    )


def schedule_free_adamw(
    learning_rate: ScalarOrSchedule = 0.0025,
    warmup_steps: int | None = None,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    weight_lr_power: Scalar = 2.0,
    state_dtype: Any | None = None,
    *,
    r: Scalar = 0.0,
    mask: MaskOrFn = None,
    optax_warmup: bool = False,
    bias_correct_lr: bool = False,
    decay_at_z: bool = False,
) -> GradientTransformationExtraArgs:
    r"""Schedule-free AdamW (Defazio et al. 2024, "The Road Less Scheduled",
    https://arxiv.org/abs/2405.15682).

    The parameters are the gradient point ``y``; ``z`` is the base iterate and ``x`` the
    average, the point to evaluate at (:func:`schedule_free_eval_params`). At step
    ``t = 0, 1, ...`` with ``g_t`` the gradient at ``y_t`` and ``z_0 = x_0 = y_0``::

        lr_t = learning_rate(t) * min((t + 1) / warmup_steps, 1)
        v_t  = b2 v_{t-1} + (1 - b2) g_t^2;   d_t = g_t / (sqrt(v_t / (1 - b2^(t+1))) + eps)
        d_t += weight_decay * y_t                        (decay at y, as the authors do)
        z_{t+1} = z_t - lr_t d_t
        c_{t+1} = w_t / sum_{i<=t} w_i,   w_t = (t + 1)^r * max_{i<=t} lr_i ^ weight_lr_power
        x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}
        y_{t+1} = b1 x_{t+1} + (1 - b1) z_{t+1}

    Args:
      learning_rate, warmup_steps: peak learning rate (or a schedule) and linear warmup.
      b1: interpolation between ``x`` and ``z``, in (0, 1) (the authors' ``betas[0]``).
      b2, eps: second-moment decay and the epsilon added outside the root.
      weight_decay, mask: decoupled weight decay at ``y`` and the leaves it applies to.
      weight_lr_power, r: the averaging weights ``w_t`` above.
      state_dtype: dtype of ``z`` (default: the parameters', float32 for 16-bit ones).
      optax_warmup: reproduce ``optax.contrib.schedule_free_adamw``: its warmup starts at 0
        (``t / warmup_steps``), so the ``z`` step lags the averaging weight by one step and
        the first step does not move (a deviation from the paper, where one ``lr_t`` serves
        both). Identical without warmup.
      bias_correct_lr: ``schedulefree.AdamWScheduleFreePaper``: ``lr_t`` is multiplied by
        ``sqrt(1 - b2^(t+1))`` (so the averaging weights grow with it) and ``d_t =
        g_t / (sqrt(v_t) + eps)``.

      decay_at_z: take the weight decay at ``z`` (``d_t += weight_decay * z_t``), as
        ``schedulefree.AdamWScheduleFreeReference(decay_at_z=True)``; no ``mask`` then.

    Returns:
      ``schedule_free(chain(scale_by_rms, add_decayed_weights, scale_by_learning_rate))``.

    Example:
      >>> import jax.numpy as jnp, jaxopt_zoo as jz
      >>> tx = jz.schedule_free_adamw(1e-3, warmup_steps=100)
      >>> params = {"w": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)
      >>> eval_params = jz.schedule_free_eval_params(state, params)

    Verified against ``schedulefree.AdamWScheduleFree`` 1.4.1 (``y`` and ``x``), whose
    ``foreach`` and per-tensor paths are this update; the package's older releases and
    ``AdamWScheduleFreePaper`` bias-correct the learning rate instead (``bias_correct_lr``).
    Its ``AdamWScheduleFreeReference`` can also decay at ``z`` (``decay_at_z``).
    ``keras.optimizers.ScheduleFreeAdamW`` averages uniformly (``c_t = 1 / t``): it is
    ``weight_lr_power=0`` here, without weight decay (Keras' generic decay shrinks ``y``
    directly, outside ``z``; the paper puts it in the ``z`` step).
    """
    check_scalar("b2", b2, low=0.0, high=1.0, high_open=True, schedule_ok=False)
    check_nonneg("eps", eps, schedule_ok=False)
    warmup_steps = _check_warmup(warmup_steps)
    lr = _warmed(learning_rate, warmup_steps, optax_warmup, b2 if bias_correct_lr else None)
    if decay_at_z and mask is not None:
        raise ValueError(
            "schedule_free_adamw: decay_at_z=True decays every leaf; a mask is "
            "only supported with the decay at y (decay_at_z=False)."
        )
    parts = [scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction_=not bias_correct_lr)]
    if not is_zero(weight_decay) and not decay_at_z:
        parts.append(add_decayed_weights(weight_decay, mask))
    base = chain(*parts, scale_by_learning_rate(lr))
    return schedule_free(
        base,
        lr,
        b1,
        weight_lr_power,
        state_dtype,
        r=r,
        weight_lr_ahead=optax_warmup,
        weight_decay_at_z=weight_decay if decay_at_z else 0.0,
    )
