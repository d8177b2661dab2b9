"""The stages of the one-pass CPU kernel: one table for Python and C++.

Each stage of ``csrc/step_kernel.cc`` is one optimizer block's loop over a block of
elements. This table names, per stage, its opcode, its scalar inputs (in the order the
kernel reads them) and its state buffers (in the order the kernel reads and writes them).
Python builds the kernel's inputs from it (:mod:`jaxopt_zoo.fast.native`), a block's
:class:`~jaxopt_zoo.fast.spec.BlockSpec` names its scalars after it, and the C++ side
includes ``csrc/stages.h``, generated from it::

    python -m jaxopt_zoo.fast.stages        # rewrite csrc/stages.h

(``tests/test_fast.py`` fails when the committed header differs from the table.)

A new kernel stage: one row here, the block's ``BlockSpec`` naming it, and its loop in
``step_kernel.cc`` (reading its scalars as ``sc[sc_<stage>::<scalar>]``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, NamedTuple, Tuple

__all__ = ["HEADER", "STAGES", "Stage", "header"]

HEADER = Path(__file__).resolve().parent.parent / "csrc" / "stages.h"


class Stage(NamedTuple):
    """One kernel stage: its opcode, its scalars and its state buffers, in kernel order."""

    opcode: int
    scalars: Tuple[str, ...]
    buffers: Tuple[str, ...]
    doc: str


_ADAM_SCALARS = (
    "b1",
    "one_minus_b1",
    "b2",
    "one_minus_b2",
    "eps",
    "eps_root",
    "inv_bc1",
    "inv_bc2",
)

STAGES: Dict[str, Stage] = {
    "adam": Stage(1, _ADAM_SCALARS, ("mu", "nu"), "Adam; inv_bc = 1 / (1 - b^t) for this step's t"),
    "trace": Stage(
        2,
        ("decay", "one_minus_dampening", "first", "nesterov"),
        ("trace",),
        "momentum; first = 1 on the first step, nesterov = 0 or 1",
    ),
    "lion": Stage(3, ("b1", "one_minus_b1", "b2", "one_minus_b2"), ("mu",), "Lion"),
    "rms": Stage(
        4,
        ("decay", "one_minus_decay", "eps", "eps_in_sqrt"),
        ("nu",),
        "RMSprop (not centered); eps_in_sqrt = 0 or 1",
    ),
    "rss": Stage(5, ("eps", "eps_in_sqrt"), ("sum_of_squares",), "AdaGrad"),
    "decay": Stage(6, ("weight_decay",), (), "adds weight_decay * params"),
    "scale": Stage(7, ("step_size",), (), "multiplies by step_size"),
    "nadam": Stage(
        8,
        _ADAM_SCALARS + ("inv_next_bc1",),
        ("mu", "nu"),
        "NAdam; inv_next_bc1 = 1 / (1 - b1^(t+1))",
    ),
    "amsgrad": Stage(9, _ADAM_SCALARS, ("mu", "nu", "nu_max"), "AMSGrad"),
    "adamax": Stage(10, ("b1", "one_minus_b1", "b2", "eps", "inv_bc1"), ("mu", "nu"), "AdaMax"),
    "sign": Stage(11, (), (), "sign of the update (signSGD)"),
    "ema": Stage(
        12,
        ("decay", "one_minus_decay", "inv_bc"),
        ("ema",),
        "moving average; inv_bc = 1 / (1 - decay^t), 1 without debiasing",
    ),
    "adan": Stage(
        13,
        (
            "b1",
            "one_minus_b1",
            "b2",
            "one_minus_b2",
            "b3",
            "one_minus_b3",
            "c",
            "eps",
            "eps_root",
            "inv_bc1",
            "inv_bc2",
            "inv_bc3",
            "first",
        ),
        ("mu", "delta", "nu", "prev_grad"),
        "Adan; c weights the difference, first = 1 on the first step",
    ),
    "optimistic": Stage(
        14,
        ("alpha_plus_beta", "beta", "first"),
        ("previous_gradient",),
        "optimistic gradient (alpha + beta) g - beta g_prev; first = 1 on the first step",
    ),
    "simplified_ademamix": Stage(
        15,
        ("b1", "b2", "one_minus_b2", "alpha", "eps", "eps_root", "inv_bc2"),
        ("m", "n"),
        "simplified AdEMAMix; alpha at this step",
    ),
    "belief": Stage(16, _ADAM_SCALARS, ("mu", "nu"), "AdaBelief"),
    "acprop": Stage(
        17,
        ("b1", "one_minus_b1", "b2", "one_minus_b2", "eps", "eps_root", "inv_prev_bc2", "first"),
        ("mu", "nu"),
        "ACProp; inv_prev_bc2 = 1 / (1 - b2^(t-1)), first = 1 on the first step",
    ),
    "rprop": Stage(
        18,
        (
            "eta_minus",
            "eta_plus",
            "min_step_size",
            "max_step_size",
            "current_step",
            "clamp_unchanged",
        ),
        ("step_sizes", "prev_updates"),
        "Rprop (iRprop-); current_step, clamp_unchanged = 0 or 1",
    ),
    "madgrad": Stage(
        19,
        ("lamb", "one_minus_momentum", "eps", "lr_wd", "decay", "decay_x0"),
        ("grad_sum_sq", "s", "x0"),
        "MADGRAD (reads params); decay, decay_x0 = 0 or 1; x0 is written only when decay_x0",
    ),
    "cocob": Stage(
        20,
        ("alpha",),
        ("init_particles", "cumulative_gradients", "scale", "subgradients", "reward"),
        "COCOB-Backprop (reads params); init_particles is read, never written",
    ),
    "proximal_decay": Stage(
        21,
        ("lr_wd",),
        (),
        "(u - lr_wd * params) / (1 + lr_wd): Adan's proximal weight decay",
    ),
}


def header() -> str:
    """The text of ``csrc/stages.h``: opcodes, scalar indices and sizes of every stage."""
    by_code = sorted(STAGES.items(), key=lambda kv: kv[1].opcode)
    n = max(st.opcode for _, st in by_code) + 1
    sizes = {st.opcode: (len(st.scalars), len(st.buffers)) for _, st in by_code}
    out = [
        "// Generated by `python -m jaxopt_zoo.fast.stages` from jaxopt_zoo/fast/stages.py.",
        "// Do not edit: change the table there and regenerate.",
        "#pragma once",
        "",
        "#include <cstdint>",
        "",
        "enum Op : int64_t {",
    ]
    for name, st in by_code:
        out.append(
            f"  k{_camel(name)} = {st.opcode},  // {st.doc}; bufs {', '.join(st.buffers) or '-'}"
        )
    out += [
        "};",
        "",
        f"constexpr int64_t kNumOps = {n};",
        "// Scalars and state buffers per opcode (-1: no such opcode).",
        "constexpr int64_t kScalars[kNumOps] = {"
        + ", ".join(str(sizes.get(i, (-1, -1))[0]) for i in range(n))
        + "};",
        "constexpr int64_t kBuffers[kNumOps] = {"
        + ", ".join(str(sizes.get(i, (-1, -1))[1]) for i in range(n))
        + "};",
        "",
        "// Index of each named scalar within its stage's scalars: sc_<stage>::<scalar>.",
    ]
    for name, st in by_code:
        items = ", ".join(f"{s} = {i}" for i, s in enumerate(st.scalars))
        out.append(
            f"namespace sc_{name} {{ constexpr int64_t {items}; }}"
            if items
            else f"namespace sc_{name} {{}}  // no scalars"
        )
    return "\n".join(out) + "\n"


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


if __name__ == "__main__":  # pragma: no cover -- a developer command
    HEADER.write_text(header())
    sys.stdout.write(f"wrote {HEADER}\n")
