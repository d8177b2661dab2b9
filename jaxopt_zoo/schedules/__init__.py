"""Learning-rate schedules: plain functions of the (integer) step count, usable under jit.

Each constructor validates its arguments and returns ``schedule(count) -> scalar``. The
modules, by kind:

- ``jaxopt_zoo.schedules.decay``: :func:`constant`, :func:`linear`, :func:`polynomial`,
  :func:`exponential`, :func:`piecewise_constant`, :func:`cosine`;
- ``jaxopt_zoo.schedules.warmup``: a warm-up then a decay: :func:`warmup_cosine`,
  :func:`one_cycle`, :func:`wsd`, :func:`inverse_sqrt`;
- ``jaxopt_zoo.schedules.compose``: schedules made of others: :func:`sgdr`, :func:`join`,
  :func:`swa_lr`.
"""

from jaxopt_zoo.schedules.compose import join, sgdr, swa_lr
from jaxopt_zoo.schedules.decay import (
    Schedule as Schedule,  # the type, as before the split
)
from jaxopt_zoo.schedules.decay import (
    constant,
    cosine,
    exponential,
    linear,
    piecewise_constant,
    polynomial,
)
from jaxopt_zoo.schedules.warmup import inverse_sqrt, one_cycle, warmup_cosine, wsd

__all__ = [
    "constant",
    "cosine",
    "exponential",
    "inverse_sqrt",
    "join",
    "linear",
    "one_cycle",
    "piecewise_constant",
    "polynomial",
    "sgdr",
    "swa_lr",
    "warmup_cosine",
    "wsd",
]
