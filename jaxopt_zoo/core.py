"""Core types, ``chain``, tree helpers and hyperparameter validation.

The base types are optax's, so that every transformation here is an
``optax.GradientTransformation`` and drops into optax, Flax ``TrainState`` and
``nnx.Optimizer`` unchanged. Everything else in this module is ours.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from optax import (  # base types only; the math lives in this package
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    Params,
    Schedule,
    Updates,
)

from jaxopt_zoo.fast.spec import BlockSpec, describe

#: A scalar hyperparameter: a Python number or a JAX array (a tracer under
#: ``optax.inject_hyperparams`` or in a sweep). Concrete numbers are validated at construction.
Scalar = Union[float, jax.Array]
#: A scalar hyperparameter that may also be a schedule, a function of the step count.
ScalarOrSchedule = Union[float, jax.Array, Schedule]
#: A state's step count (an int32 array). Its NamedTuple field is called ``count`` as in
#: optax, which shadows ``tuple.count``; mypy accepts no type there but ``Any``, so this
#: alias names what the field holds instead of an ignore comment on every state.
StepCount = Any
MaskOrFn = Union[None, Any, Callable[[Params], Any]]

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "OptState",
    "Params",
    "Schedule",
    "Scalar",
    "ScalarOrSchedule",
    "StepCount",
    "Updates",
    "chain",
    "identity",
]


# --------------------------------------------------------------------------- #
# Hyperparameter validation
# --------------------------------------------------------------------------- #


def is_concrete_scalar(x: Any) -> bool:
    """True for Python / NumPy real numbers (not bools, arrays, tracers or callables)."""
    return isinstance(x, (numbers.Real, np.number)) and not isinstance(x, (bool, np.bool_))


def is_zero(x: Any) -> bool:
    """True only for a concrete number equal to 0 (arrays and tracers are never "zero")."""
    return is_concrete_scalar(x) and x == 0


def check_scalar(
    name: str,
    value: Any,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_open: bool = False,
    high_open: bool = False,
    schedule_ok: bool = True,
) -> Any:
    """Validate a concrete hyperparameter; pass arrays, tracers and schedules through.

    Raises ``ValueError("Invalid <name>: <value>. Expected ...")`` when a Python or NumPy
    number lies outside ``[low, high]`` (bounds open where asked) or is NaN. Returns
    ``value`` unchanged so it can be used inline.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"Invalid {name}: {value!r}. Expected a number, got a bool.")
    if callable(value):
        if not schedule_ok:
            raise TypeError(
                f"Invalid {name}: {value!r}. Expected a number; schedules are not supported "
                f"for {name}."
            )
        return value
    if isinstance(value, str):
        raise TypeError(f"Invalid {name}: {value!r}. Expected a number, got a string.")
    if not is_concrete_scalar(value):
        return value  # jax arrays, tracers, numpy arrays: checked by the caller's math
    v = float(value)
    ok = not np.isnan(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {high:g}")
        expected = " and ".join(parts) if parts else "a finite number"
        sched = " or a schedule (a function of the step count)" if schedule_ok else ""
        raise ValueError(f"Invalid {name}: {value!r}. Expected a number {expected}{sched}.")
    return value


def check_nonneg(name: str, value: Any, **kw) -> Any:
    return check_scalar(name, value, low=0.0, **kw)


def check_decay(name: str, value: Any, **kw) -> Any:
    """A decay rate / beta: a number in [0, 1)."""
    return check_scalar(name, value, low=0.0, high=1.0, high_open=True, **kw)


def check_betas(
    b1: Any,
    b2: Any,
    eps: Any = 0.0,
    eps_root: Any = 0.0,
    *,
    names: Tuple[str, str, str, str] = ("b1", "b2", "eps", "eps_root"),
) -> None:
    """Validate Adam-style hyperparameters: two decay rates in [0, 1) and non-negative
    epsilons (constants, not schedules). ``names`` are the argument names the error
    messages use (``("beta_1", "beta_2", "epsilon", ...)`` for Keras' spelling)."""
    check_decay(names[0], b1, schedule_ok=False)
    check_decay(names[1], b2, schedule_ok=False)
    check_nonneg(names[2], eps, schedule_ok=False)
    check_nonneg(names[3], eps_root, schedule_ok=False)


def check_int(name: str, value: Any, *, low: int = 0) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral,)):
        raise TypeError(f"Invalid {name}: {value!r}. Expected an integer >= {low}.")
    if value < low:
        raise ValueError(f"Invalid {name}: {value!r}. Expected an integer >= {low}.")
    return int(value)


def resolve(hparam: ScalarOrSchedule, count: jax.Array) -> Any:
    """The value of a hyperparameter at step ``count`` (call it if it is a schedule)."""
    return hparam(count) if callable(hparam) else hparam


# --------------------------------------------------------------------------- #
# Tree helpers
# --------------------------------------------------------------------------- #


def fresh_copy(x: Any, dtype: Any = None) -> jax.Array:
    """``x`` as a new array (cast to ``dtype`` if given): never ``x`` itself, never its buffer.

    For optimizer state that starts at the parameters' values. Called eagerly,
    ``jnp.asarray(p)`` and ``p.astype(p.dtype)`` return ``p`` itself, and a state holding the
    parameters' own arrays cannot be donated together with them: ``jax.jit(step,
    donate_argnums=(0, 1))`` fails with "Attempt to donate the same buffer twice". Under
    ``jit`` the copy costs nothing (outputs get their own buffers anyway).
    """
    return jnp.array(x, dtype=dtype, copy=True)


def tree_zeros_like(tree: Any, dtype: Any = None) -> Any:
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


def tree_sum_squares(tree: Any) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return functools.reduce(jnp.add, (sum_sq(x) for x in leaves))


def global_norm(tree: Any) -> jax.Array:
    """sqrt of the sum of squared magnitudes over all leaves.

    ``||tree|| = sqrt(sum_leaves sum |x|^2)`` (real for complex leaves).

    Args:
      tree: a pytree of arrays.

    Returns:
      A scalar array.

    Example:
      >>> float(jz.global_norm({"a": jnp.array([3.0]), "b": jnp.array([4.0])}))
      5.0
    """
    return jnp.sqrt(tree_sum_squares(tree))


def abs_sq(x: jax.Array) -> jax.Array:
    """|x|^2, real for complex inputs."""
    if jnp.iscomplexobj(x):
        return x.real * x.real + x.imag * x.imag
    return x * x


def abs_sq_in(x: jax.Array, dtype: Any) -> jax.Array:
    """|x|^2 in the real ``dtype``, squaring after widening (a float16 gradient squares in
    a float32 statistic's dtype instead of underflowing to 0 first)."""
    if jnp.iscomplexobj(x):
        return abs_sq(x).astype(dtype)
    x = x.astype(dtype)
    return x * x


def sum_sq(x: jax.Array) -> jax.Array:
    """sum |x|^2 in the leaf's compute dtype (float32 for float16 and bfloat16): a float16
    leaf's squares overflow float16 once an element passes 256, and its sum long before."""
    return jnp.sum(abs_sq_in(x, compute_dtype(x.dtype)))


def mean_sq(x: jax.Array) -> jax.Array:
    """mean |x|^2 in the leaf's compute dtype, as :func:`sum_sq`."""
    return jnp.mean(abs_sq_in(x, compute_dtype(x.dtype)))


def increment(count: jax.Array) -> jax.Array:
    """count + 1, saturating at int32 max instead of wrapping around."""
    limit = jnp.iinfo(jnp.int32).max
    return jnp.where(count < limit, count + 1, limit).astype(jnp.int32)


def zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def compute_dtype(dtype: Any) -> Any:
    """float64 for float64/complex128 leaves, float32 otherwise (bf16/f16 math in f32)."""
    real = jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.float32
    return jnp.float64 if real == jnp.float64 else jnp.float32


def scalar_dtype(tree: Any) -> Any:
    """float64 if any leaf computes in float64, else float32: the dtype of scalar state
    shared by all leaves (a running product of momentum factors, say)."""
    dts = [compute_dtype(jnp.asarray(x).dtype) for x in jax.tree.leaves(tree)]
    return jnp.float64 if any(d == jnp.float64 for d in dts) else jnp.float32


def bias_correction(moment: Any, decay: Any, count: jax.Array) -> Any:
    """moment / (1 - decay**count), leaf-wise, in each leaf's dtype."""

    def corr(t):
        dt = compute_dtype(t.dtype)
        c = 1 - jnp.asarray(decay, dt) ** count.astype(dt)
        return (t / c.astype(t.dtype)).astype(t.dtype)

    return jax.tree.map(corr, moment)


def inv_bias_correction(decay: Any, ahead: int = 0) -> Callable[[jax.Array], jax.Array]:
    """A kernel-stage scalar (``BlockSpec.scalars``): ``count -> 1 / (1 - decay^(t + ahead))``
    in float32, with ``t = count + 1`` this step's count: :func:`bias_correction`'s divisor
    as the reciprocal the native kernel multiplies by (``ahead=1``: NAdam's next step)."""

    def inv(count: jax.Array) -> jax.Array:
        t = increment(count).astype(jnp.float32) + ahead
        return 1 / (1 - jnp.asarray(decay, jnp.float32) ** t)

    return inv


def moment_scalars(b1: Any, b2: Any, eps: Any, eps_root: Any, debias: bool = True) -> dict:
    """The kernel-stage scalars of a two-moment block (Adam's, AdaBelief's, ACProp's):
    ``b1, 1 - b1, b2, 1 - b2, eps, eps_root`` and, with ``debias``, this step's
    ``inv_bc1`` and ``inv_bc2`` (:func:`inv_bias_correction`)."""
    out = {
        "b1": b1,
        "one_minus_b1": 1 - b1,
        "b2": b2,
        "one_minus_b2": 1 - b2,
        "eps": eps,
        "eps_root": eps_root,
    }
    if debias:
        out.update(inv_bc1=inv_bias_correction(b1), inv_bc2=inv_bias_correction(b2))
    return out


def ema_update(new: Any, old: Any, decay: Any, order: int = 1) -> Any:
    """``decay * old + (1 - decay) * new`` leaf-wise, in ``old``'s dtype; ``order=2`` uses
    ``|new|^2`` (real for complex ``new``)."""

    def f(g, m):
        x = g.astype(m.dtype) if order == 1 else abs_sq_in(g, m.dtype)
        return (decay * m + (1 - decay) * x).astype(m.dtype)

    return jax.tree.map(f, new, old)


def real_dtype(dtype: Any) -> Any:
    """The real counterpart of a dtype (float32 for complex64); other dtypes unchanged."""
    dtype = jnp.dtype(dtype)
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def stat_dtype(dtype: Any) -> Any:
    """The dtype of a second-moment-like statistic (an EMA or sum of ``|g|^2``, a running
    maximum of ``|g|``) for parameters of ``dtype``: the real dtype, except that float16 is
    widened to float32.

    float16 cannot hold these: ``|g|^2`` underflows to 0 for ``|g| < 2.5e-4`` and overflows
    above 256, and the usual eps (1e-8 and smaller) rounds to 0, so a small or zero gradient
    element divides by zero. bfloat16 has float32's range and stays bfloat16.
    """
    real = real_dtype(dtype)
    return jnp.dtype(jnp.float32) if real == jnp.float16 else real


def check_same_structure(updates: Any, reference: Any, where: str) -> None:
    """Raise a ValueError naming both structures when two trees do not line up.

    Runs at trace time (structures are static), so it costs nothing under ``jit``.
    """
    s_u, s_r = jax.tree.structure(updates), jax.tree.structure(reference)
    if s_u != s_r:  # type: ignore[operator]
        raise ValueError(
            f"{where}: the gradient tree does not match the optimizer state.\n"
            f"  gradients:           {s_u}\n"
            f"  state (from init):   {s_r}\n"
            "Call `init` on parameters with the same structure as the gradients you pass "
            "to `update` (same keys, same nesting, same number of leaves)."
        )
    for i, (a, b) in enumerate(zip(jax.tree.leaves(updates), jax.tree.leaves(reference))):
        if jnp.shape(a) != jnp.shape(b):
            path = jax.tree_util.keystr(jax.tree_util.tree_flatten_with_path(reference)[0][i][0])
            raise ValueError(
                f"{where}: gradient leaf {path or i} has shape {jnp.shape(a)}, but the "
                f"optimizer state was initialised for shape {jnp.shape(b)}. Re-run `init` on "
                "parameters of the shapes you train."
            )


def require_params(params: Any, where: str) -> None:
    if params is None:
        raise ValueError(
            f"{where} needs the current parameters: call `update(grads, state, params)`."
        )


# --------------------------------------------------------------------------- #
# Composition
# --------------------------------------------------------------------------- #


def _accepts_extra_args(tx: GradientTransformation) -> bool:
    return isinstance(tx, GradientTransformationExtraArgs)


def chain(*transforms: GradientTransformation) -> GradientTransformationExtraArgs:
    """Apply transformations in order; the state is a tuple of their states.

    Extra keyword arguments given to ``update`` (e.g. ``value=`` for line searches) are
    forwarded to the transformations that accept them (``GradientTransformationExtraArgs``).

    Args:
      *transforms: ``GradientTransformation`` s (ours or optax's), applied left to right.

    Returns:
      A ``GradientTransformationExtraArgs`` whose state is the tuple of the inner states.

    Example:
      >>> tx = jz.chain(jz.clip_by_global_norm(1.0), jz.scale_by_adam(),
      ...               jz.scale_by_learning_rate(1e-3))
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    for i, tx in enumerate(transforms):
        if not (hasattr(tx, "init") and hasattr(tx, "update")):
            raise TypeError(
                f"chain: argument {i} is {type(tx).__name__}, expected a GradientTransformation "
                "(an object with `init` and `update`)."
            )

    def init_fn(params):
        return tuple(tx.init(params) for tx in transforms)

    def update_fn(updates, state, params=None, **extra_args):
        if len(state) != len(transforms):
            raise ValueError(
                f"chain: the state has {len(state)} entries but the chain has "
                f"{len(transforms)} transformations; was it built by this chain's init?"
            )
        new_state = []
        for tx, s in zip(transforms, state):
            if _accepts_extra_args(tx):
                updates, s = tx.update(updates, s, params, **extra_args)
            else:
                updates, s = tx.update(updates, s, params)
            new_state.append(s)
        return updates, tuple(new_state)

    # The parts, as data: the fast path opens the chain (jaxopt_zoo.fast.spec.leaf_specs).
    return describe(
        GradientTransformationExtraArgs(init_fn, update_fn),
        BlockSpec("chain", parts=tuple(transforms)),
    )


def identity() -> GradientTransformation:
    """Leave updates unchanged (useful as a placeholder in ``partition``).

    Example:
      >>> tx = jz.identity()
      >>> updates, _ = tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.zeros(2)}))
      >>> updates["w"]
      Array([1., 1.], dtype=float32)
    """

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return updates, state

    return GradientTransformation(init_fn, update_fn)


def tree_real_vdot(a: Any, b: Any, dtype: Any) -> jax.Array:
    """``Re <a, b> = sum over leaves of Re(sum(conj(a) * b))``, as a scalar of ``dtype``.

    Each leaf's product is one ``tensordot`` over all its axes (a dot product, summed in the
    order XLA's dot uses, as optax's ``tree.vdot``), and the leaves are added in order.
    """
    total = jnp.zeros([], dtype)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x = jnp.conj(x) if jnp.iscomplexobj(x) else x
        d = jnp.tensordot(x, y, x.ndim, precision=jax.lax.Precision.HIGHEST)
        total = total + jnp.real(d).astype(dtype)
    return total
