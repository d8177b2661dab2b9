"""Test-wide settings: strict JAX numerics, Keras on the JAX backend, and the real data sets
(``needs_data``: skipped where the data cannot be had, required in CI)."""

import os
import shutil
import tempfile

import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")

# One persistent compilation cache for the whole run: the pytest workers and every process
# they start (the distributed, sharding and checkpoint workers launch the same trainer in
# up to a dozen processes, each compiling the same programs) share what any of them
# compiled. Created by the first process to load this file (pytest itself, before it starts
# its workers, which inherit the variable), removed at its end; a fresh machine starts empty,
# so no result depends on an earlier run. Programs that compile in under 0.2 s are not
# stored (reading them back costs about as much).
_CACHE_VAR = "JAX_COMPILATION_CACHE_DIR"
_OWN_CACHE = None
if _CACHE_VAR not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="jaxopt-zoo-tests-xla-")
    os.environ[_CACHE_VAR] = _OWN_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

# Cheaper CPU code generation for the whole run (and the processes it starts): LLVM at -O1
# without its expensive passes. XLA's own HLO passes (fusion, algebraic simplification) are
# unchanged, and XLA:CPU does not reassociate float operations at any level (fast math stays
# off). Measured on this 2-core machine: tests/test_optimizers.py 134 s -> 119 s (mostly
# compiles). -O0 was faster still (104 s) but not safe: the explainer's Hessian-vector
# products (forward-over-reverse through the CNN) came out NaN at -O0 and finite at -O1
# and -O2 (tests/test_experiments_small.py::test_explainer_quick_run_writes_its_tables;
# not root-caused). No test measures speed (the benchmark scripts' smoke runs here check
# that they run), and `python benchmarks/...` never sees these flags.
_FAST_COMPILE = " --xla_backend_optimization_level=1 --xla_llvm_disable_expensive_passes=true"
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + _FAST_COMPILE

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# Hypothesis: CI (CI=true) draws the same examples on every run, so a submission's result does
# not depend on luck; locally each run explores new trees.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# Real data sets. A test that reads one is marked ``@pytest.mark.needs_data("mnist", ...)``.
# Where the data is not on this machine and cannot be downloaded, the test is skipped with a
# line saying how to provide it, so that the README's test command passes on a fresh machine
# as it stands. CI (``.ci/run``) provides every data set and sets JAXOPT_ZOO_REQUIRE_DATA=1,
# which turns such a skip into a failure: nothing is skipped there for want of data.
REQUIRE_DATA = "JAXOPT_ZOO_REQUIRE_DATA"
HOW_TO_GET = {
    "mnist": "set JAXOPT_ZOO_DATA=<folder with the four MNIST IDX files>, or run the tests "
    "once with internet access (they are downloaded to ~/.cache/jaxopt_zoo)",
    "fashion_mnist": "apt-get install dataset-fashion-mnist (Debian's package, as .ci/run "
    "does), or run the tests once with internet access",
    "shakespeare": "set JAXOPT_ZOO_DATA to a data folder whose sibling 'shakespeare' holds "
    "the corpus, or run the tests once with internet access",
}


def pytest_unconfigure(config):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "needs_data(*names): reads real data sets (mnist, fashion_mnist, shakespeare); "
        f"skipped where they cannot be found or downloaded, unless {REQUIRE_DATA}=1",
    )


_MISSING: dict = {}


def _missing(name):
    """Why the data set ``name`` cannot be had here (None: it is here, found or downloaded).
    Looked up once per test process."""
    if name not in _MISSING:
        from jaxopt_zoo.data import DataNotFoundError, load
        from jaxopt_zoo.data.text import read_shakespeare

        try:
            if name == "shakespeare":
                read_shakespeare()
            else:
                for split in ("train", "test"):
                    load(name, split)
            _MISSING[name] = None
        except DataNotFoundError as e:
            _MISSING[name] = str(e).splitlines()[0].removesuffix(" Looked in:")
    return _MISSING[name]


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs_data"):
        for name in mark.args:
            assert name in HOW_TO_GET, f"needs_data: unknown data set {name!r}"
            why = _missing(name)
            if why is None:
                continue
            message = f"needs the {name} data set, which is not here ({why}): {HOW_TO_GET[name]}"
            if os.environ.get(REQUIRE_DATA) == "1":
                pytest.fail(f"{REQUIRE_DATA}=1 and this test {message}", pytrace=False)
            pytest.skip(message)
