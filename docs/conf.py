"""Sphinx configuration: the user guide (the Markdown pages in docs/) and the API reference
from the docstrings.

Build (CI does, with warnings as errors):
``python -m sphinx -W --keep-going -q -b html docs docs/_build/html``
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # document this checkout, not an installed copy
os.environ.setdefault("JAX_PLATFORMS", "cpu")

project = "jaxopt_zoo"
author = "jaxopt_zoo developers"
copyright = "jaxopt_zoo developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
templates_path = ["_templates"]
exclude_patterns = ["_build", "api/generated/*.rst.txt"]

# API pages: one per public module, listing its __all__ (new names appear by themselves).
autosummary_generate = True
autosummary_ignore_module_all = False
autosummary_imported_members = False  # but a module's __all__ is followed
autodoc_typehints = "none"  # signatures as written; docstrings describe the types
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # Attributes: as fields, not index entries (NamedTuple fields)

# A reference to a name of ours that does not exist is an error (-W); names of other
# libraries are not linked (no network for intersphinx) and are let through.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(jax|jnp|jaxlib|optax|numpy|np|flax|nn|nnx|orbax|ocp|chex|torch|keras|"
        r"typing|collections|abc|builtins|pathlib|os|tqdm|matplotlib|PIL)(\..*)?",
    ),
    (
        r"py:.*",
        r"(int|float|bool|str|bytes|None|tuple|list|dict|callable|Callable|Any|"
        r"Optional|Union|Sequence|Mapping|Iterator|NamedTuple|Exception|ValueError|"
        r"TypeError|KeyError|RuntimeError|ModuleNotFoundError|PathLike|array|Array)",
    ),
]


def _reexported():
    """{module: [names]}: classes a page lists that a more specific documented module also
    lists (``jaxopt_zoo.FlatParams`` is ``jaxopt_zoo.fast.FlatParams``). The template
    documents them there with ``:no-index:``, so each class has one index entry."""
    import importlib
    import inspect
    import re as _re

    api = open(os.path.join(os.path.dirname(__file__), "api.rst")).read()
    modules = _re.findall(r"^   (jaxopt_zoo[\w.]*)$", api, _re.M)
    exported = {}
    for name in modules:
        mod = importlib.import_module(name)
        exported[name] = {
            n: getattr(mod, n)
            for n in getattr(mod, "__all__", ())
            if inspect.isclass(getattr(mod, n, None))
        }
    out = {}
    for name, objs in exported.items():
        for other, theirs in exported.items():
            if other.startswith(name + "."):
                ids = {id(o) for o in theirs.values()}
                out.setdefault(name, []).extend(n for n, o in objs.items() if id(o) in ids)
    return out


autosummary_context = {"reexported": _reexported()}

myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

html_theme = "furo"
html_title = "jaxopt_zoo"


def _require_docstring(app, what, name, obj, options, lines):
    """A public function, class or method documented without a docstring is an error."""
    if what in ("function", "class", "exception", "method") and not any(ln.strip() for ln in lines):
        from sphinx.util import logging

        logging.getLogger("jaxopt_zoo.docs").warning(f"{what} {name} has no docstring")


def _resolve_short_name(app, env, node, contnode):
    """Resolve a reference to a name of ours documented on another page (``FusedState`` in
    :func:`jaxopt_zoo.fuse` is ``jaxopt_zoo.fused.FusedState``) when exactly one object of
    jaxopt_zoo has that name; anything else stays unresolved (an error under -W)."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    if target.startswith("jaxopt_zoo."):  # a re-export: jaxopt_zoo.X documented elsewhere
        target = target.rsplit(".", 1)[-1]
    objects = env.get_domain("py").objects
    found = sorted(
        (
            n
            for n in objects
            if n.startswith("jaxopt_zoo") and (n == target or n.endswith("." + target))
        ),
        key=len,
    )
    if not found or (len(found) > 1 and len(found[1]) == len(found[0])):
        return None
    from sphinx.util.nodes import make_refnode

    obj = objects[found[0]]
    return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, found[0])


def setup(app):
    app.connect("autodoc-process-docstring", _require_docstring)
    app.connect("missing-reference", _resolve_short_name)
