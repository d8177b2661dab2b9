"""``registry.state_bytes_per_param``: optimizer-state memory from ``init``'s shapes."""

import jax
import jax.numpy as jnp
import pytest

import jaxopt_zoo as jz
from jaxopt_zoo import registry

N_REF = 1024 * 1024 + 1024


@pytest.mark.parametrize(
    "name,per_elem", [("sgd", 0), ("momentum", 4), ("adam", 8), ("amsgrad", 12), ("keras.ftrl", 8)]
)
def test_elementwise_states(name, per_elem):
    b = registry.state_bytes_per_param(name)
    # the per-element buffers plus a few int32 step counters spread over the elements
    assert per_elem <= b < per_elem + 64 / N_REF, b


def test_soap_counts_its_preconditioner_matrices():
    # mu, nu (4 + 4 bytes per element) + L, R and their eigenbases: 4 matrices of 1024^2
    # float32 for the kernel; the bias (1-D) is not preconditioned
    b = registry.state_bytes_per_param("soap")
    want = (8 * N_REF + 4 * 4 * 1024**2) / N_REF
    assert want <= b < want + 1e-4, b
    assert registry.state_bytes_per_param("soap", max_precondition_dim=512) < 8.001


def test_dtypes_and_factored_states():
    f64 = {"w": jax.ShapeDtypeStruct((256, 256), jnp.float64)}
    bf16 = {"w": jax.ShapeDtypeStruct((256, 256), jnp.bfloat16)}
    with jax.enable_x64(True):  # float64 states only exist with x64 on
        assert registry.state_bytes_per_param("adam", params=f64) == pytest.approx(16, abs=1e-3)
    assert registry.state_bytes_per_param("adam", params=bf16) == pytest.approx(4, abs=1e-3)
    # Adafactor (optax's form) keeps a row and a column factor: ~8 / 256 bytes per element
    assert registry.state_bytes_per_param("adafactor", params=f64) < 0.1


def test_no_allocation_and_transformations_accepted():
    huge = {"w": jax.ShapeDtypeStruct((100_000, 100_000), jnp.float32)}  # 40 GB if allocated
    assert registry.state_bytes_per_param(jz.adam(1e-3), params=huge) == pytest.approx(8)
    with pytest.raises(ValueError, match="no elements"):
        registry.state_bytes_per_param("adam", params={})


# L-BFGS keeps memory_size=10 pairs (s, y), the last parameters and gradient, and its line
# search's gradient: 23 float32 buffers, 92 B/param.
# torch.lbfgs keeps history_size = 100 pairs (y, s) of flat vectors, as torch does.
LARGER_STATE = {"lbfgs": 96, "torch.lbfgs": 2 * 100 * 4 + 64}


def test_every_registered_optimizer_has_a_size():
    for name in jz.available() + jz.available("torch.") + jz.available("keras."):
        b = registry.state_bytes_per_param(name)
        assert 0 <= b < LARGER_STATE.get(name, 64), (name, b)
