"""The API reference's promises, checked without building it (CI builds it with -W first):
every public name of every documented module has a docstring of its own, and new ones come
with their arguments and an example."""

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {
    "jaxopt_zoo",
    "jaxopt_zoo.schedules",
    "jaxopt_zoo.compat.torch",
    "jaxopt_zoo.compat.keras",
    "jaxopt_zoo.models",
    "jaxopt_zoo.train",
    "jaxopt_zoo.data",
}


def documented_modules():
    """The modules the API reference has a page for (docs/api.rst's autosummary)."""
    text = (ROOT / "docs" / "api.rst").read_text()
    return re.findall(r"^   (jaxopt_zoo[\w.]*)$", text, re.M)


def public_names(module):
    """``__all__``, or the functions and classes the module defines (as autosummary)."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        n
        for n, o in vars(module).items()
        if not n.startswith("_")
        and (inspect.isfunction(o) or inspect.isclass(o))
        and o.__module__ == module.__name__
    ]


def own_docstring(obj):
    """The object's own docstring: not inherited, not NamedTuple's ``Name(field, ...)``."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    if not doc or not doc.strip():
        return None
    if inspect.isclass(obj) and re.fullmatch(rf"{obj.__name__}\(.*\)", doc.strip()):
        return None
    return doc


def api_objects():
    """(qualified name, object) of every public function and class in the reference."""
    out = []
    for modname in documented_modules():
        module = importlib.import_module(modname)
        for name in public_names(module):
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                out.append((f"{modname}.{name}", obj))
    return out


# Names documented before the rule "arguments and an example" was enforced; complete them
# and take them off the list (the last test fails while a name here is complete). New names
# must be complete.
INCOMPLETE: set = set()


def test_the_reference_documents_the_required_modules():
    assert REQUIRED <= set(documented_modules()), REQUIRED - set(documented_modules())


def test_every_public_name_has_a_docstring():
    objects = api_objects()
    assert len(objects) > 150, len(objects)
    missing = [name for name, obj in objects if own_docstring(obj) is None]
    assert not missing, f"public names without a docstring: {missing}"
    for modname in documented_modules():
        assert (importlib.import_module(modname).__doc__ or "").strip(), modname


def _takes_arguments(obj):
    if not inspect.isfunction(obj):
        return False
    return any(p.name not in ("self", "cls") for p in inspect.signature(obj).parameters.values())


def _incomplete(obj):
    doc = own_docstring(obj) or ""
    no_args = _takes_arguments(obj) and not re.search(r"^\s*(Args|Arguments):", doc, re.M)
    no_example = inspect.isfunction(obj) and not re.search(
        r"^\s*(Example|Examples):|>>>", doc, re.M
    )
    return no_args or no_example


@pytest.mark.parametrize("kind", ["new names are complete", "the list is current"])
def test_docstrings_give_arguments_and_an_example(kind):
    objects = dict(api_objects())
    incomplete = {name for name, obj in objects.items() if _incomplete(obj)}
    if kind == "new names are complete":
        new = sorted(incomplete - INCOMPLETE)
        assert not new, f"these docstrings need an 'Args:' section and an 'Example:': {new}"
    else:
        done = sorted(n for n in INCOMPLETE if n not in incomplete)
        assert not done, f"complete now (or gone): remove from INCOMPLETE in {__file__}: {done}"


def _doctests():
    """The doctests of the reference's objects, each with its defining module's globals
    plus ``jax``, ``jnp``, ``np``, ``optax`` and ``jz``."""
    import doctest

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxopt_zoo as jz

    finder = doctest.DocTestFinder(recurse=False)
    seen, out = set(), []
    for qualname, obj in api_objects():
        key = (obj.__module__, obj.__qualname__)
        if key in seen:
            continue
        seen.add(key)
        module = importlib.import_module(obj.__module__)
        globs = {**vars(module), "jax": jax, "jnp": jnp, "np": np, "optax": optax, "jz": jz}
        out += [t for t in finder.find(obj, qualname, module=module, globs=globs) if t.examples]
    return out


# Examples that read a real data set (the loaders' own): run where the data can be had.
READS_DATA = re.compile(
    r"\bload(_mnist|_fashion_mnist|_data|_shakespeare|_lm_data)?\(|read_shakespeare\("
)


def _run_doctests(tests):
    import doctest

    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0 and not report, "".join(report)


def _reads_data(test):
    return bool(READS_DATA.search("".join(e.source for e in test.examples)))


def test_docstring_examples_run():
    """Every ``>>>`` example of the reference runs, and prints what it shows."""
    tests = [t for t in _doctests() if not _reads_data(t)]
    assert len(tests) > 100, len(tests)
    _run_doctests(tests)


@pytest.mark.needs_data("mnist", "fashion_mnist", "shakespeare")
def test_docstring_examples_that_read_data_run():
    tests = [t for t in _doctests() if _reads_data(t)]
    assert {t.name for t in tests} >= {"jaxopt_zoo.data.load_mnist", "jaxopt_zoo.data.load"}
    _run_doctests(tests)
