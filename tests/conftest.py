"""Test-wide settings: strict JAX numerics and Keras on the JAX backend."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# Hypothesis: CI (CI=true) draws the same examples on every run, so a submission's result does
# not depend on luck; locally each run explores new trees.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
