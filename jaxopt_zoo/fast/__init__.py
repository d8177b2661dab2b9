"""The fast path: flat buffers, ``fuse``/``fused_apply``, the block spec, the native kernel.

Modules, each one concept, imported in this order (none imports a later one):

- ``jaxopt_zoo.fast.stages``: the kernel stages' table (opcodes, named scalars, state
  buffers), shared with C++ through the generated ``csrc/stages.h``;
- ``jaxopt_zoo.fast.spec``: :class:`BlockSpec`, a block's properties as data, carried by
  the transformation (:func:`describe`, :func:`spec_of`);
- ``jaxopt_zoo.fast.layout``: :class:`Layout` and :class:`FlatParams`;
- ``jaxopt_zoo.fast.probe``, ``jaxopt_zoo.fast.diagnose``, ``jaxopt_zoo.fast.dataflow``:
  the probe on tree and flat buffers, the cause of a difference, which buffers an update
  reads;
- ``jaxopt_zoo.fast.check``: whether a transformation is exact on flat buffers
  (:func:`check_fusable`, :class:`NotFusableError`);
- :mod:`~jaxopt_zoo.fast.native`: the one-pass C++ kernel (build, load, call);
- ``jaxopt_zoo.fast.fuse``: :func:`fuse`, :func:`fused_apply`, :func:`update_and_apply`.

The package imports nothing else from jaxopt_zoo, so the blocks in ``core``, ``transforms``
and ``optim`` can import ``jaxopt_zoo.fast.spec`` without a cycle.
"""

from jaxopt_zoo.fast import native
from jaxopt_zoo.fast.check import NotFusableError, check_fusable
from jaxopt_zoo.fast.fuse import (
    FusedState,
    FusedTransformation,
    fuse,
    fused_apply,
    is_fused,
    update_and_apply,
)
from jaxopt_zoo.fast.layout import FlatParams, Layout
from jaxopt_zoo.fast.spec import BlockSpec, describe, spec_of
from jaxopt_zoo.fast.stages import STAGES

__all__ = [
    "STAGES",
    "BlockSpec",
    "FlatParams",
    "FusedState",
    "FusedTransformation",
    "Layout",
    "NotFusableError",
    "check_fusable",
    "describe",
    "fuse",
    "fused_apply",
    "native",
    "spec_of",
    "is_fused",
    "update_and_apply",
]
