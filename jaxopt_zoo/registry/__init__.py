"""Name -> optimizer constructor, for the CLI, experiments and tests.

``get("adam", learning_rate=3e-4)`` builds an optimizer; ``available()`` lists the names.
Names with a framework prefix (``"torch.adam"``, ``"keras.adam"``) build the
``jaxopt_zoo.compat`` versions with that framework's formulas and defaults.

Modules: ``jaxopt_zoo.registry.base`` (the registry and its functions),
``jaxopt_zoo.registry.builtin`` (the built-in optimizers, one ``register`` call each; a new
optimizer adds one there) and ``jaxopt_zoo.registry.memory`` (:func:`state_bytes_per_param`).
"""

from jaxopt_zoo.registry import builtin as builtin  # registers the built-in optimizers
from jaxopt_zoo.registry.base import (
    _REGISTRY as _REGISTRY,  # the name -> Entry table itself (tests read it)
)
from jaxopt_zoo.registry.base import (
    Entry,
    UnknownOptimizerError,
    available,
    entry,
    get,
    register,
)
from jaxopt_zoo.registry.memory import reference_params, state_bytes_per_param

__all__ = [
    "Entry",
    "UnknownOptimizerError",
    "available",
    "entry",
    "get",
    "reference_params",
    "register",
    "state_bytes_per_param",
]
