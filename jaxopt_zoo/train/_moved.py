"""Import paths of modules that moved into the subpackages: ``jaxopt_zoo.train.sweep_report``
is :mod:`jaxopt_zoo.train.sweep.report` and so on. Importing an old path gives the module at
its new place (the same module object) and a ``DeprecationWarning`` naming that place."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Optional, Sequence

_PACKAGE = "jaxopt_zoo.train"

# old module (under jaxopt_zoo.train) -> new module (under jaxopt_zoo.train)
MOVED = {
    "checkpoint_dir": "checkpoint.directory",
    "checkpoint_format": "checkpoint.format",
    "checkpoint_sharded": "checkpoint.sharded",
    "processes": "distributed.processes",
    "sweep_plan": "sweep.plan",
    "sweep_report": "sweep.report",
    "sweep_run": "sweep.run",
    "sweep_workloads": "sweep.workloads",
}

_OWN_SPECS: dict = {}  # new name -> its spec, which the import system overwrites


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old names of :data:`MOVED`, and loads each as its new module."""

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        package, _, name = fullname.rpartition(".")
        if package != _PACKAGE or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = f"{_PACKAGE}.{MOVED[spec.name.rpartition('.')[2]]}"
        warnings.warn(
            f"{spec.name} moved to {new}: import it from there (the old path will go)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        _OWN_SPECS[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run (the module was imported at its new place); the import system
        gave it the old name's spec, and it gets its own back."""
        module.__spec__ = _OWN_SPECS[module.__name__]


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once; importing :mod:`jaxopt_zoo.train` does)."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
