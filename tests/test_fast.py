"""The fast path's structure: blocks described as data, one stage table for Python and C++,
no import cycle, and a fusability check that uses public JAX APIs only."""

from __future__ import annotations

import ast
import copy
import re
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_zoo as jz
from jaxopt_zoo import registry
from jaxopt_zoo.core import increment
from jaxopt_zoo.fast import check, native, spec, stages
from jaxopt_zoo.fast.layout import Layout
from jaxopt_zoo.fast.spec import BlockSpec, leaf_specs, spec_of

FAST = Path(jz.__file__).parent / "fast"
KERNEL = Path(jz.__file__).parent / "csrc" / "step_kernel.cc"
ORDER = [  # each imports only earlier ones
    "stages",
    "spec",
    "layout",
    "probe",
    "diagnose",
    "dataflow",
    "check",
    "native",
    "fuse",
]


def test_the_header_is_generated_from_the_table():
    # Run `python -m jaxopt_zoo.fast.stages` after changing STAGES.
    assert stages.HEADER.read_text() == stages.header()


def test_the_kernel_has_a_loop_for_every_stage_and_no_table_of_its_own():
    source = KERNEL.read_text()
    assert '#include "stages.h"' in source
    assert "enum Op" not in source and "case kAdam: return" not in source  # sizes: generated
    for name, st in stages.STAGES.items():
        assert re.search(rf"\bk{stages._camel(name)}\b", source), f"no C++ loop for {name}"
        for scalar in st.scalars:  # every named scalar is read by name in some loop
            family = (
                "adam"
                if name in ("nadam", "amsgrad") and scalar in stages.STAGES["adam"].scalars
                else name
            )
            assert f"sc_{family}::{scalar}" in source, (name, scalar)
    adam = stages.STAGES["adam"].scalars  # NAdam and AMSGrad read Adam's scalars in place
    assert stages.STAGES["nadam"].scalars[: len(adam)] == adam
    assert stages.STAGES["amsgrad"].scalars == adam
    assert len({st.opcode for st in stages.STAGES.values()}) == len(stages.STAGES)


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_the_fast_package_has_no_import_cycle():
    assert sorted(p.stem for p in FAST.glob("*.py") if p.stem != "__init__") == sorted(ORDER)
    for i, name in enumerate(ORDER):
        for module, names in _imports(FAST / f"{name}.py"):
            if not module.startswith("jaxopt_zoo"):
                continue
            targets = [module.split(".")[-1]] if module != "jaxopt_zoo.fast" else names
            assert module.startswith("jaxopt_zoo.fast"), (name, module)  # nothing outside
            for t in targets:
                assert t in ORDER[:i], f"fast/{name}.py imports {t}, not an earlier module"
    assert not (FAST.parent / "fused.py").exists() and not (FAST.parent / "native.py").exists()


def test_blocks_carry_their_spec_through_chain_and_copies():
    tx = jz.adamw(1e-3, weight_decay=0.1)
    blocks = leaf_specs(tx)
    assert [s.name for s, _ in blocks] == [
        "scale_by_adam",
        "add_decayed_weights",
        "scale_by_learning_rate",
    ]
    assert [s.stage for s, _ in blocks] == ["adam", "decay", "scale"]
    for other in (copy.copy(tx), copy.deepcopy(tx)):
        assert [s.stage for s, _ in leaf_specs(other)] == ["adam", "decay", "scale"]
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    assert isinstance(jz.scale(0.1), optax.GradientTransformation)
    assert native.explain(tx) is None
    assert spec_of(jz.adam(1e-3, mu_dtype=jnp.bfloat16)).parts[0].spec.stage is None


@pytest.mark.parametrize(
    "label, make",
    [
        ("optax.chain", lambda: optax.chain(jz.scale_by_adam(), jz.scale(-1e-3))),
        ("inject_hyperparams", lambda: optax.inject_hyperparams(jz.adam)(learning_rate=1e-3)),
        ("masked", lambda: jz.masked(jz.adam(1e-3), lambda p: jax.tree.map(lambda x: True, p))),
        ("_replace", lambda: jz.scale(0.5)._replace(update=jz.scale(2.0).update)),
    ],
)
def test_wrappers_drop_the_spec_and_say_so(label, make):
    # A transformation built around a block has no spec: the kernel leaves it to XLA (see
    # test_native.py) and explain() names the part; it never runs with another's spec.
    tx = make()
    assert spec_of(tx) is None or leaf_specs(tx) is None
    assert "carries no BlockSpec" in native.explain(jz.chain(jz.scale(1.0), tx))


def test_a_block_spec_is_checked_against_the_stage_table():
    with pytest.raises(ValueError, match="unknown kernel stage"):
        BlockSpec("x", stage="nope")
    with pytest.raises(ValueError, match="takes the scalars"):
        BlockSpec("x", stage="scale", scalars={"lr": 1.0})
    with pytest.raises(ValueError, match="state buffers"):
        BlockSpec("x", stage="lion", scalars=dict.fromkeys(stages.STAGES["lion"].scalars, 0.5))
    s = BlockSpec(
        "x",
        stage="trace",
        buffers=("trace",),
        scalars={
            "decay": 0.9,
            "one_minus_dampening": 0.7,
            "nesterov": 1.0,
            "first": lambda count: count == 0,
        },
    )
    assert s.scalar_values(0) == [0.9, 0.7, True, 1.0]  # the stage's order, not the dict's
    with pytest.raises(TypeError, match="expected a BlockSpec"):
        spec.describe(jz.scale(1.0), {"name": "x"})


def test_the_kernel_advances_counts_like_core_increment():
    for c in (0, 7, np.iinfo(np.int32).max - 1, np.iinfo(np.int32).max):
        c = jnp.asarray(c, jnp.int32)
        assert int(native._next_count(c)) == int(increment(c))


PARAMS = {
    "w": jax.ShapeDtypeStruct((4, 3), jnp.float32),  # two leaves in one buffer
    "b": jax.ShapeDtypeStruct((3,), jnp.float32),
}
DESCRIBED = [
    n
    for n in jz.available() + jz.available("torch.") + jz.available("keras.")
    if spec.is_elementwise(jz.get(n))
]


def _names(tx):
    """The described blocks of ``tx``, wrappers (``real_view``) opened."""
    return set(re.split(r"[() >-]+", " ".join(spec.block_names(tx)))) - {""}


def test_every_described_block_passes_the_probe():
    # fuse trusts an `elementwise` spec without probing; here registered optimizers that
    # together use every block described as element-wise are probed anyway, so that a spec
    # cannot lie (one optimizer per new block: each probe compiles two programs).
    assert len(DESCRIBED) >= 30 and {"adam", "torch.adam", "keras.lion"} <= set(DESCRIBED)
    seen: set = set()
    for name in DESCRIBED:
        tx = jz.get(name)
        if not _names(tx) <= seen:
            seen |= _names(tx)
            check.check_fusable(tx, PARAMS)
    assert {
        "scale_by_adam",
        "trace",
        "scale_by_lion",
        "scale_by_rss",
        "scale_by_belief",
        "scale_by_keras_nadam",
        "scale_by_torch_radam",
        "real_view",
    } <= seen


def test_the_check_uses_no_deprecated_or_private_jax_api():
    # The probe and the data-flow analysis use public APIs (jit, jvp, eval_shape,
    # make_jaxpr's documented Jaxpr fields, jax.extend.core.Literal); a JAX upgrade that
    # deprecates one fails here instead of silently changing fuse's decisions.
    layout = Layout.of({"w": jnp.ones((3, 2)), "b": jnp.ones(4)}, chunks=2)  # w straddles
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check.separable(jz.adam(1e-3), layout)
        assert check.separable(jz.chain(jz.clip(1.0), jz.lion(1e-3)), layout)
        assert not check.separable(jz.chain(jz.clip_by_global_norm(1.0), jz.sgd(0.1)), layout)
        assert not check.separable(jz.skip_not_finite(jz.sgd(0.1)), layout)  # counts skips
        assert check.analyze(optax.chain(optax.scale_by_adam(), optax.scale(-0.1)), layout)
        assert not check.analyze(
            optax.chain(optax.clip_by_global_norm(1.0), optax.scale(-0.1)), layout
        )
        with pytest.raises(jz.NotFusableError, match="reduces over single parameters"):
            check.check_fusable(jz.lamb(1e-3), layout)


def test_the_probe_sees_small_terms_and_optax_masks():
    # Weight decay of 1e-6 on some parameters only is a small term in the update, but the
    # derivative along the parameters shows it at full weight.
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    by_ndim = optax.adamw(
        1e-3, weight_decay=1e-6, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    )
    with pytest.raises(jz.NotFusableError, match="`\\['w'\\]` gets a different formula"):
        check.check_fusable(by_ndim, params)
    by_name = optax.adamw(1e-3, weight_decay=1e-6, mask={"w": True, "b": False})
    with pytest.raises(jz.NotFusableError, match="fails on flat buffers"):
        check.check_fusable(by_name, params)  # the mask's tree does not fit FlatParams
    check.check_fusable(optax.adamw(1e-3, weight_decay=1e-6), params)


def test_the_registry_text_names_the_described_blocks():
    # Each registry entry's `blocks=` text (qualifiers in parentheses aside) is what the
    # optimizer's own specs say, for every optimizer built from described blocks.
    described = 0
    for name, entry in registry._REGISTRY.items():
        names = spec.block_names(jz.get(name))
        if names is None or entry.blocks.startswith("compat."):
            continue
        described += 1
        assert re.sub(r"\([^)]*\)", "", entry.blocks) == " -> ".join(names), name
    assert described >= 15
