"""The compiled programs of a sweep and the loop that trains one chunk of configurations.

Internal to :func:`jaxopt_zoo.train.sweep.sweep`. The step is
:func:`jaxopt_zoo.train.steps.train_step` (the one ``train`` takes) vmapped over the
configurations; the evaluation is the workload's, vmapped too. When the optimizer keeps an
average of the weights (``--ema``: :func:`jaxopt_zoo.ema_weights`, or SWA), the averaged
parameters are evaluated as well and each record gets ``val_loss_avg`` and
``val_accuracy_avg``, as ``train`` writes them.
"""

from __future__ import annotations

import math
import time
from typing import Callable, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_zoo.train.checks import distinct_buffers
from jaxopt_zoo.train.state import step_dropout_key
from jaxopt_zoo.train.steps import Metrics, train_step
from jaxopt_zoo.train.sweep.workloads import Workload
from jaxopt_zoo.transforms.averaging import average_started, averaged_params, find_average
from jaxopt_zoo.transforms.bf16_params import params_for

__all__: list = []  # internal: the public API is jaxopt_zoo.train.sweep

BITS_PER_NAT = 1.0 / math.log(2.0)


class Fns(NamedTuple):
    init: Callable  # (rngs, hparams) -> (params, opt_state)
    step: Callable  # the vmapped train step (jitted, donating)
    evaluate: Optional[Callable]  # (params, *val) -> Metrics of (C,) arrays
    # (params, opt_state, *val) -> (Metrics of the averaged weights, started): None when
    # the optimizer keeps no average of the weights or there is no validation data
    evaluate_average: Optional[Callable]


def compiled_fns(workload: Workload, make_tx: Callable, point: dict) -> Fns:
    """The vmapped, jitted programs; ``point`` (one grid point) tells whether the optimizer
    keeps an average of the weights."""
    model = workload.model

    def init_one(rng, hp):
        tx = make_tx(**hp)
        params = params_for(tx, workload.init(rng))  # bfloat16 for jz.bf16_params
        return params, tx.init(params)

    def step_one(params, opt_state, totals, hp, rng, aux, data, batch, step):
        x, y, w = workload.batch(data, aux, rng, batch, step)
        r = train_step(
            model, make_tx(**hp), params, opt_state, x, y, w, step_dropout_key(rng, step)
        )
        return r.params, r.opt_state, Metrics(*(t + v for t, v in zip(totals, r.metrics)))

    step = jax.jit(
        jax.vmap(step_one, in_axes=(0, 0, 0, 0, 0, 0, None, None, None)), donate_argnums=(0, 1, 2)
    )
    evaluate = evaluate_average = None
    if workload.val_data is not None:
        evaluate = jax.jit(jax.vmap(workload.evaluate, in_axes=(0,) + (None,) * 2))
        hp = {n: jnp.float32(v) for n, v in point.items()}
        _, opt_state = jax.eval_shape(init_one, jax.random.PRNGKey(0), hp)
        if find_average(opt_state) is not None:

            def average_one(params, opt_state, *val):
                avg = averaged_params(opt_state, like=params)
                return workload.evaluate(avg, *val), average_started(find_average(opt_state))

            evaluate_average = jax.jit(jax.vmap(average_one, in_axes=(0, 0) + (None,) * 2))
    return Fns(jax.jit(jax.vmap(init_one)), step, evaluate, evaluate_average)


def run_chunk(fns: Fns, compiled, workload: Workload, configs, total: int, evals, say):
    """Train one chunk of configurations; ``(histories, final params)``."""
    size = len(configs)
    names = list(configs[0][0])
    hp = {n: jnp.asarray([p[n] for p, _ in configs], jnp.float32) for n in names}
    rngs = jnp.stack([jax.random.PRNGKey(s) for _, s in configs])
    params, opt_state = distinct_buffers(compiled.init(rngs, hp))
    totals = _zero_totals(size)
    per_epoch = workload.steps_per_epoch
    histories: List[List[dict]] = [[] for _ in range(size)]
    aux, aux_epoch, t0, step = None, -1, time.perf_counter(), 0
    pending = list(evals)
    while step < total:
        epoch, batch = divmod(step, per_epoch) if per_epoch else (0, 0)
        if epoch != aux_epoch:
            aux, aux_epoch = workload.epoch_aux(rngs, epoch), epoch
        params, opt_state, totals = compiled.step(
            params, opt_state, totals, hp, rngs, aux, workload.train_data, _i32(batch), _i32(step)
        )
        step += 1
        if pending and step == pending[0]:
            pending.pop(0)
            index = len(histories[0]) + 1
            done = step // per_epoch if per_epoch else index
            average = None
            if fns.evaluate_average is not None:
                val = workload.val_data or ()
                m, started = fns.evaluate_average(params, opt_state, *val)
                average = (_sums(m), np.asarray(started))
            _record(compiled, workload, params, totals, histories, done, step, t0, average)
            say(_progress(histories, step, total))
            totals, t0 = _zero_totals(size), time.perf_counter()
    return histories, params


def _sums(m: Metrics) -> np.ndarray:
    return np.asarray(jax.device_get(jnp.stack(list(m))), np.float64)  # (3, C)


def _record(compiled, workload, params, totals, histories, epoch, step, t0, average) -> None:
    train = _sums(totals)
    val = (
        None if compiled.evaluate is None else _sums(compiled.evaluate(params, *workload.val_data))
    )
    seconds = time.perf_counter() - t0
    for c, history in enumerate(histories):
        tl, ta = _means(train[:, c])
        vl, va = (None, None) if val is None else _means(val[:, c])
        record = {
            "epoch": int(epoch),
            "step": int(step),
            "train_loss": tl,
            "train_accuracy": ta,
            "val_loss": vl,
            "val_accuracy": va,
            "seconds": seconds,
        }
        if workload.lm:
            record["train_bits_per_char"] = tl * BITS_PER_NAT
            record["val_bits_per_char"] = None if vl is None else vl * BITS_PER_NAT
        if average is not None:  # the weights' average, once it holds any (as train)
            sums, started = average
            al, aa = _means(sums[:, c]) if started[c] else (None, None)
            record.update(val_loss_avg=al, val_accuracy_avg=aa)
        history.append(record)


def _means(sums: np.ndarray):
    """``(mean loss, accuracy)`` from ``(loss, correct, count)`` sums, as ``Metrics.means``."""
    loss, correct, count = (float(v) for v in sums)
    if count == 0:
        return float("nan"), float("nan")
    return loss / count, correct / count


def _progress(histories, step: int, total: int) -> str:
    key = "val_loss" if histories[0][-1]["val_loss"] is not None else "train_loss"
    values = [h[-1][key] for h in histories]
    return (
        f"step {step}/{total}: {key} min {min(values):.4f} "
        f"max {max(values):.4f} over {len(values)} configs"
    )


def _zero_totals(size: int) -> Metrics:
    return Metrics(*(jnp.zeros((size,), jnp.float32) for _ in range(3)))


def _i32(x: int) -> jax.Array:
    return jnp.asarray(x, jnp.int32)
