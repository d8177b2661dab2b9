"""The package's layout keeps its rules: no module imports one that imports it back (imports
inside functions included, ``TYPE_CHECKING`` blocks aside), each layer imports only the
layers below it, and the modules that moved into subpackages keep their old import paths."""

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "jaxopt_zoo"


def _modules():
    """{dotted name: path} of every module of the package (a package is its __init__)."""
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name):
    """The module of ours that importing ``name`` runs (a name in a module: that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_nodes(tree):
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    return skip


def _imports(name):
    """The modules of ours that ``name`` imports, anywhere in the file."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(_resolve(a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                found.add(full if full in MODULES else _resolve(base))
    found.discard(None)
    found.discard(name)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_function_level_imports():
    # cli/common.py imports the trainer inside functions only: the graph must see those
    assert "jaxopt_zoo.train.runner" in GRAPH["jaxopt_zoo.cli.common"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_one_that_imports_it_back():
    cycles = _cycles(GRAPH)
    detail = [
        [f"{a} -> {b}" for a in comp for b in sorted(GRAPH[a]) if b in comp] for comp in cycles
    ]
    assert not cycles, f"import cycles: {detail}"


# (layer, what it must not import): the rules of the guide's layout page
RULES = [
    ("jaxopt_zoo.core", ("jaxopt_zoo.optim", "jaxopt_zoo.transforms", "jaxopt_zoo.train")),
    ("jaxopt_zoo.transforms", ("jaxopt_zoo.optim", "jaxopt_zoo.compat", "jaxopt_zoo.train")),
    (
        "jaxopt_zoo.optim",
        ("jaxopt_zoo.train", "jaxopt_zoo.data", "jaxopt_zoo.cli", "jaxopt_zoo.models"),
    ),
    ("jaxopt_zoo.fast", ("jaxopt_zoo.train", "jaxopt_zoo.cli", "jaxopt_zoo.data")),
    ("jaxopt_zoo.train", ("jaxopt_zoo.cli",)),
    (
        "jaxopt_zoo.quant",
        ("jaxopt_zoo.optim", "jaxopt_zoo.transforms", "jaxopt_zoo.train", "jaxopt_zoo.cli"),
    ),
]


@pytest.mark.parametrize("layer,forbidden", RULES, ids=[r[0] for r in RULES])
def test_each_layer_imports_only_the_layers_below(layer, forbidden):
    members = [m for m in GRAPH if m == layer or m.startswith(layer + ".")]
    assert members, layer
    bad = [
        f"{m} -> {t}"
        for m in members
        for t in sorted(GRAPH[m])
        if any(t == f or t.startswith(f + ".") for f in forbidden)
    ]
    assert not bad, bad


def test_train_groups_its_concepts_into_subpackages():
    train = PKG / "train"
    flat = sorted(p.stem for p in train.glob("*.py") if not p.stem.startswith("_"))
    assert len(flat) <= 14, flat
    for sub in ("checkpoint", "sweep", "distributed"):
        init = train / sub / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.split()) > 5, f"train/{sub}/__init__.py says what it is for"
    for old in ("checkpoint_dir", "sweep_report", "processes", "sweep_run"):
        assert not (train / f"{old}.py").exists(), old


@pytest.mark.parametrize(
    "old,new",
    [
        ("jaxopt_zoo.train.sweep_report", "jaxopt_zoo.train.sweep.report"),
        ("jaxopt_zoo.train.processes", "jaxopt_zoo.train.distributed.processes"),
        ("jaxopt_zoo.train.checkpoint_dir", "jaxopt_zoo.train.checkpoint.directory"),
        ("jaxopt_zoo.train.checkpoint_format", "jaxopt_zoo.train.checkpoint.format"),
        ("jaxopt_zoo.train.sweep_plan", "jaxopt_zoo.train.sweep.plan"),
    ],
)
def test_old_import_paths_give_the_moved_module_and_say_where_it_went(old, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        moved = importlib.import_module(old)
    assert moved is importlib.import_module(new)
    assert moved.__name__ == new and moved.__spec__.name == new  # its own identity kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the names users imported from the old module are there
        assert all(hasattr(moved, n) for n in getattr(moved, "__all__", ()))
        importlib.import_module(new)  # the new path warns nothing


def test_the_old_module_paths_of_the_trainers_names_still_work():
    from jaxopt_zoo.train import distributed
    from jaxopt_zoo.train.checkpoint import RUN_FILE, Checkpointer
    from jaxopt_zoo.train.sweep import SweepConfig, sweep

    assert callable(distributed.prepare) and callable(distributed.initialize)
    assert RUN_FILE.endswith(".json") and Checkpointer.__module__.endswith("checkpointer")
    assert callable(sweep) and SweepConfig.__module__ == "jaxopt_zoo.train.sweep.api"
