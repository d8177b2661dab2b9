"""The repository keeps its promises: README commands, CI script, pinned torch."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert len(blocks) >= 2, "README must start with two command blocks"
    return blocks[0].strip(), blocks[1].strip()


def _ci_commands():
    """The command lines of .ci/run (comments, blank lines and continuations dropped)."""
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def test_ci_runs_the_readme_test_command_verbatim():
    _, test_cmd = readme_commands()
    assert len(test_cmd.splitlines()) == 1, test_cmd
    # The last thing CI does is the README's second command, character for character.
    assert _ci_commands()[-1] == test_cmd, (test_cmd, ".ci/run")


def test_readme_test_command_installs_what_the_tests_need_and_runs_them():
    _, test_cmd = readme_commands()
    assert re.fullmatch(r'pip install -e "\.\[dev\]" && python -m pytest -q', test_cmd), test_cmd
    # Nothing else is installed by hand before it: the dev extra pins what CI needs.
    assert not [c for c in _ci_commands()[:-1] if re.search(r"pip install.*torch", c)]


def test_readme_main_command_installs_the_train_extra_and_runs_the_cli():
    main_cmd, _ = readme_commands()
    assert len(main_cmd.splitlines()) == 1, main_cmd
    install, run = main_cmd.split(" && ", 1)
    assert re.fullmatch(r'pip install -e "\.\[train\]"', install), install
    assert run.startswith("jaxopt-zoo compare "), run


def test_ci_builds_the_api_reference_with_warnings_as_errors_before_the_tests():
    cmds = _ci_commands()
    docs = [i for i, c in enumerate(cmds) if "sphinx" in c and " docs " in f"{c} "]
    assert docs, cmds
    assert "-W" in cmds[docs[0]].split() and "--keep-going" in cmds[docs[0]].split()
    install = [i for i, c in enumerate(cmds) if ".[dev]" in c and "pip install" in c]
    assert install[0] < docs[0] < len(cmds) - 1  # installed, then docs, then the tests


def test_dev_extra_pins_the_local_cpu_torch_build():
    text = (ROOT / "pyproject.toml").read_text()
    # torch itself, not the packages whose names start with it (torchao)
    pins = re.findall(r'"torch(?![\w-])([^"]*)"', text)
    assert pins == ["==2.13.0"], "dev extra pins torch==2.13.0"
    try:
        import torch
    except ImportError:
        return
    assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__


def test_no_dataset_files_are_tracked():
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout
    assert not re.search(r"idx[13]-ubyte|\.npz$|\.pt$|\.ckpt$", files, re.M)
