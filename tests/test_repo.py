"""The repository keeps its promises: README commands, CI script, pinned torch."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert len(blocks) >= 2, "README must start with two command blocks"
    return blocks[0].strip(), blocks[1].strip()


def test_ci_runs_the_readme_test_command_verbatim():
    _, test_cmd = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd.splitlines()[-1] in ci, (test_cmd, ".ci/run")


def test_readme_main_command_installs_and_runs_the_cli():
    main_cmd, _ = readme_commands()
    assert "pip install" in main_cmd and "jaxopt-zoo compare" in main_cmd


def test_ci_pins_the_local_torch_build_inside_the_dev_range():
    ci = (ROOT / ".ci" / "run").read_text()
    pin = re.search(r"torch==([\d.]+)", ci).group(1)
    spec = re.search(r'"torch([^"]*)"', (ROOT / "pyproject.toml").read_text()).group(1)
    from packaging.specifiers import SpecifierSet
    assert pin in SpecifierSet(spec), (pin, spec)


def test_no_dataset_files_are_tracked():
    import subprocess
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout
    assert not re.search(r"idx[13]-ubyte|\.npz$|\.pt$|\.ckpt$", files, re.M)
