"""Optional dependencies: a clear error naming the extra that provides a missing package.

``import jaxopt_zoo`` needs only jax, jaxlib, optax and numpy. The trainer, the models, the
command line and the plots need the ``[train]`` extra (flax, orbax-checkpoint, tqdm,
matplotlib, pillow); their packages call :func:`require` before importing it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

#: The import names of the ``[train]`` extra's packages.
TRAIN_MODULES = ("flax", "orbax.checkpoint", "tqdm")
INSTALL_HINT = 'pip install "jaxopt-zoo[train]"  (or, in a checkout, pip install -e ".[train]")'


class MissingExtraError(ModuleNotFoundError):
    """A package of an optional extra is not installed; the message says which extra."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


def require(feature: str, modules: Sequence[str] = TRAIN_MODULES, extra: str = "train") -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` if any of ``modules`` is missing.

    Args:
      feature: what needs them, for the message (e.g. ``"jaxopt_zoo.train"``).
      modules: import names to look for (found without importing them).
      extra: the name of the pip extra that installs them.
    """
    missing = [m for m in modules if not _installed(m)]
    if missing:
        raise MissingExtraError(
            f"{feature}: the [{extra}] extra is not installed (missing: {', '.join(missing)}). "
            f"Install it with: {INSTALL_HINT}",
            name=missing[0],
        )
