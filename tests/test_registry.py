"""The registry is built from the compat modules' own tables, which name real classes."""

import jax
import jax.numpy as jnp
import keras
import torch

import jaxopt_zoo as jz
from jaxopt_zoo.compat import keras as kz
from jaxopt_zoo.compat import torch as tc


def test_compat_names_come_from_the_compat_tables():
    assert jz.available("torch.") == sorted(f"torch.{n}" for n in tc.CLASS_NAMES)
    assert jz.available("keras.") == sorted(f"keras.{n}" for n in kz.CLASS_NAMES)
    assert sorted(kz.CLASS_NAMES) == kz.available()  # get() knows exactly these
    for name, cls in tc.CLASS_NAMES.items():
        assert callable(getattr(tc, name)) and hasattr(torch.optim, cls), name
        assert jz.entry(f"torch.{name}").paper == f"torch.optim.{cls}"
    for name, cls in kz.CLASS_NAMES.items():
        assert callable(getattr(kz, name)) and hasattr(keras.optimizers, cls), name
        assert jz.entry(f"keras.{name}").paper == f"keras.optimizers.{cls}"


def test_keras_get_takes_the_class_names():
    p = {"w": jnp.ones((2, 3))}
    for name, cls in kz.CLASS_NAMES.items():
        a, b = kz.get(cls), kz.get(name)
        assert jax.tree.structure(a.init(p)) == jax.tree.structure(b.init(p)), cls
