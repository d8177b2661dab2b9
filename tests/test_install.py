"""The lean install: the optimizers need jax, jaxlib, optax and numpy only; the trainer's
packages come with the ``[train]`` extra, and their absence gives an error naming it."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "jaxopt_zoo"
CORE = {"jax", "jaxlib", "optax", "numpy"}
TRAIN = {"flax", "orbax", "tqdm", "matplotlib", "PIL"}
# Packages (folders or modules of jaxopt_zoo) that may use the [train] extra.
NEEDS_TRAIN = ("models", "train", "cli")


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(req: str) -> str:
    for sep in "<>=!~[; ":
        req = req.split(sep)[0]
    return req.strip().lower()


def test_core_dependencies_are_jax_jaxlib_optax_numpy():
    deps = {_name(r) for r in _pyproject()["project"]["dependencies"]}
    assert deps == CORE, deps
    extras = _pyproject()["project"]["optional-dependencies"]
    assert {_name(r) for r in extras["train"]} == {
        "flax",
        "orbax-checkpoint",
        "tqdm",
        "matplotlib",
        "pillow",
    }
    assert "jaxopt-zoo[train]" in extras["dev"]
    # Every reference and tool the tests and CI use is pinned exactly.
    pinned = {_name(r): r for r in extras["dev"] if "==" in r}
    for name in (
        "torch",
        "keras",
        "pytorch-optimizer",
        "schedulefree",
        "prodigyopt",
        "ruff",
        "mypy",
        "sphinx",
    ):
        assert name in pinned, (name, extras["dev"])


def test_import_jaxopt_zoo_imports_no_training_package():
    out = _run(
        "import sys, json\n"
        "import jaxopt_zoo, jaxopt_zoo.schedules, jaxopt_zoo.compat.torch, "
        "jaxopt_zoo.compat.keras, jaxopt_zoo.data, jaxopt_zoo.fast, jaxopt_zoo.fast.native\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert "jaxopt_zoo" in loaded and "optax" in loaded  # it did import something
    assert not loaded & (TRAIN | {"torch", "keras"}), loaded & (TRAIN | {"torch", "keras"})


def _top_level_imports(path: Path):
    """Module-level imports of a file (imports inside functions are lazy, so allowed)."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def test_the_lean_modules_import_only_core_dependencies():
    allowed = CORE | set(sys.stdlib_module_names) | {"jaxopt_zoo", "__future__"}
    checked = 0
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel.startswith(NEEDS_TRAIN):
            continue
        bad = set(_top_level_imports(path)) - allowed
        assert not bad, f"jaxopt_zoo/{rel} imports {sorted(bad)} at module level"
        checked += 1
    assert checked > 20, checked


_BLOCK = (
    "import sys, importlib.abc\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name.split('.')[0] == {mod!r}:\n"
    "            raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


@pytest.mark.parametrize("missing", ["flax", "tqdm"])
def test_without_the_train_extra_the_cli_says_which_extra_to_install(missing):
    out = _run(
        _BLOCK.format(mod=missing) + "import jaxopt_zoo\n"  # the optimizers still work
        "assert jaxopt_zoo.adam(1e-3).init is not None\n"
        "from jaxopt_zoo.cli import main\n"
        "sys.exit(main(['list']))"
    )
    assert out.returncode == 1, (out.stdout, out.stderr)
    err = out.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "[train]" in err and f"missing: {missing}" in err and "pip install" in err, err


def test_without_flax_importing_the_trainer_names_the_extra():
    out = _run(_BLOCK.format(mod="flax") + "import jaxopt_zoo.train")
    assert out.returncode != 0
    assert "MissingExtraError" in out.stderr and "[train]" in out.stderr, out.stderr
