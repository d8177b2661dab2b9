"""The README and the user guide (``docs/*.md``) keep their promises: every ``python`` block
runs, every ``jaxopt-zoo`` command line parses, every state-memory number in a table is what
the registry measures, every optimizer is named, and every relative link finds its file.

A page's ``python`` blocks run in order in one fresh namespace (so a page may build on its
own earlier blocks, never on another page's), in a temporary working folder. A block is
left out only when the line before it says why: ``<!-- skip-test: reason -->``, or
``<!-- tests/FILE.py runs this block -->`` for a block another test runs. Sample output is
fenced as ``text``. MNIST comes from ``$JAXOPT_ZOO_DATA`` as in the other tests.
"""

import re
import shlex
from pathlib import Path
from typing import List, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*(skip-test:\s*\S.*?|tests/[\w/]+\.py runs this block)\s*-->")
LANGUAGES = {"python", "bash", "text", "{toctree}", "{include}"}
SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}
README_MAX_LINES = 200


class Block(NamedTuple):
    page: Path  # the page the block appears on (an included file's blocks: the includer)
    source: Path  # the file that holds it
    line: int
    language: str
    code: str
    marker: str  # "" when the block runs here


def pages() -> List[Path]:
    return [README] + sorted(DOCS.glob("*.md"))


def _blocks_of(page: Path, source: Path) -> List[Block]:
    text = source.read_text()
    out = []
    for m in FENCE.finditer(text):
        language = m.group(1).strip()
        if language.startswith("{include}"):
            included = (source.parent / language.split(None, 1)[1]).resolve()
            out += _blocks_of(page, included)
            continue
        before = text[: m.start()].rstrip().splitlines()
        marker = MARKER.search(before[-1]) if before else None
        line = text.count("\n", 0, m.start()) + 1
        reason = marker.group(1) if marker else ""
        out.append(Block(page, source, line, language, m.group(2), reason))
    return out


def blocks(page: Path) -> List[Block]:
    return _blocks_of(page, page)


def _id(page: Path) -> str:
    return str(page.relative_to(ROOT))


PYTHON_PAGES = [
    p for p in pages() if any(b.language == "python" and not b.marker for b in blocks(p))
]
SHELL_PAGES = [p for p in pages() if any(b.language == "bash" for b in blocks(p))]


def test_the_guide_has_its_pages():
    names = {p.name for p in DOCS.glob("*.md")}
    want = {
        "index.md",
        "getting-started.md",
        "optimizers.md",
        "muon.md",
        "schedule-free.md",
        "sam-averaging.md",
        "verification.md",
        "training.md",
        "language-model.md",
        "results.md",
        "speed.md",
        "scale-out.md",
        "migrating.md",
        "layout.md",
        "RELIABILITY.md",
        "BENCHMARKS.md",
    }
    assert want <= names, want - names
    assert len(PYTHON_PAGES) >= 10, [_id(p) for p in PYTHON_PAGES]


@pytest.mark.parametrize("page", pages(), ids=_id)
def test_every_block_says_its_language_and_skips_say_why(page):
    for b in blocks(page):
        where = f"{_id(b.source)}:{b.line}"
        assert b.language in LANGUAGES or b.language.startswith("{"), (where, b.language)
        if b.marker.startswith("tests/"):  # run by another test: it must read this page
            other = (ROOT / b.marker.split()[0]).read_text()
            assert _id(b.source) in other, (where, f"{b.marker.split()[0]} does not read it")
        assert not b.marker or b.language == "python", (where, "only python blocks are skipped")


# What a page's blocks load, for conftest's needs_data (skipped where the data cannot be had).
DATA_CALLS = {
    "mnist": re.compile(r"\bload_(mnist|data)\("),
    "fashion_mnist": re.compile(r"\bload_fashion_mnist\(|fashion"),
    "shakespeare": re.compile(r"\bload_(lm_data|shakespeare)\(|read_shakespeare\("),
}


def _with_data_marks(page: Path):
    code = "\n".join(b.code for b in blocks(page) if b.language == "python" and not b.marker)
    needs = [name for name, call in DATA_CALLS.items() if call.search(code)]
    return pytest.param(page, marks=[pytest.mark.needs_data(*needs)] if needs else [])


@pytest.mark.parametrize("page", [_with_data_marks(p) for p in PYTHON_PAGES], ids=_id)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files (checkpoints, results) write here
    import jax

    namespace = {"__name__": "__guide__"}
    ran = 0
    for b in blocks(page):
        if b.language != "python" or b.marker:
            continue
        # Line numbers in tracebacks are the page's: pad the code to its place in the file.
        code = "\n" * b.line + b.code
        # Readers run with JAX's defaults: a bias broadcast is fine in an example
        # (conftest.py makes rank promotion an error for the library's own code).
        with jax.numpy_rank_promotion("allow"):
            exec(compile(code, str(b.source), "exec"), namespace)
        ran += 1
    assert ran


def command_lines(code: str) -> List[List[str]]:
    """The ``jaxopt-zoo`` invocations of a shell block, as argument lists without the program
    name: backslash continuations joined, comments dropped, ``&&``/``;``/``|``/``&`` chains
    split and leading ``VAR=value`` assignments skipped."""
    text = re.sub(r"\\\n", " ", code)
    out = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        part: List[str] = []
        for token in list(lexer) + [";"]:
            if token not in SHELL_OPERATORS:
                part.append(token)
                continue
            while part and re.fullmatch(r"[A-Za-z_]\w*=.*", part[0]):
                part = part[1:]
            if part and part[0] == "jaxopt-zoo":
                out.append(part[1:])
            part = []
    return out


def test_command_lines_are_split_as_the_shell_does():
    code = (
        'pip install -e ".[train]" && jaxopt-zoo list  # the names\n'
        "X=1 jaxopt-zoo train --optimizer adam \\\n    --model mlp &\n"
        "# jaxopt-zoo not-a-command\n"
        'jaxopt-zoo sample --prompt "ROMEO: hi"; echo done\n'
    )
    assert command_lines(code) == [
        ["list"],
        ["train", "--optimizer", "adam", "--model", "mlp"],
        ["sample", "--prompt", "ROMEO: hi"],
    ]


@pytest.mark.parametrize("page", SHELL_PAGES, ids=_id)
def test_command_lines_parse(page):
    from jaxopt_zoo.cli import build_parser

    parser = build_parser()
    for b in blocks(page):
        if b.language != "bash":
            continue
        for argv in command_lines(b.code):
            try:
                parser.parse_args(argv)
            except Exception as e:  # UsageError: an unknown flag or a bad value
                pytest.fail(f"{_id(b.source)}:{b.line}: jaxopt-zoo {shlex.join(argv)}: {e}")


def test_the_guide_documents_every_command():
    commands = {argv[0] for p in SHELL_PAGES for b in blocks(p) for argv in command_lines(b.code)}
    assert {"list", "train", "compare", "sweep", "sample"} <= commands, commands


def _state_tables():
    """(page, name, number) for each row of a table with a ``state B/param`` column: the
    row's first backticked registered name (a ``torch.``/``keras.`` one if the row has
    one), and the number in that column."""
    import jaxopt_zoo as jz

    registered = set(jz.available() + jz.available("torch.") + jz.available("keras."))
    rows = []
    for page in pages():
        column = None
        for line in page.read_text().splitlines():
            if not line.startswith("|"):
                column = None
                continue
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            if column is None:
                column = cells.index("state B/param") if "state B/param" in cells else -1
                continue
            if column < 0 or set(cells[0]) <= set("-: "):
                continue
            names = [n for n in re.findall(r"`([\w.]+)`", line) if n in registered]
            assert names, (_id(page), line)
            compat = [n for n in names if "." in n]  # `torch.sgd` names the row, not `sgd`
            rows.append((page, (compat or names)[0], cells[column]))
    return rows


def test_state_memory_in_the_tables_is_measured():
    from jaxopt_zoo import registry

    rows = _state_tables()
    assert len(rows) >= 29 + 10, len(rows)  # the optimizer table and the migration maps
    for page, name, shown in rows:
        measured = registry.state_bytes_per_param(name)
        assert abs(float(shown) - measured) < 0.006, (_id(page), name, shown, measured)


def test_the_optimizer_table_lists_every_registered_optimizer():
    import jaxopt_zoo as jz

    listed = {name for page, name, _ in _state_tables() if page.name == "optimizers.md"}
    assert listed == set(jz.available()), set(jz.available()) ^ listed


def test_the_readme_names_every_optimizer_and_stays_short():
    import jaxopt_zoo as jz

    text = README.read_text()
    named = set(re.findall(r"`([\w.]+)`", text))
    assert set(jz.available()) <= named, set(jz.available()) - named
    assert len(text.splitlines()) <= README_MAX_LINES, len(text.splitlines())


def _slug(heading: str) -> str:
    """A heading's anchor, as GitHub and MyST (``myst_heading_anchors``) make it."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set:
    text = FENCE.sub("", path.read_text())
    return {_slug(h) for h in re.findall(r"^#{1,6}\s+(.*)$", text, re.M)}


@pytest.mark.parametrize("page", pages(), ids=_id)
def test_relative_links_and_images_resolve(page):
    text = FENCE.sub("", page.read_text())
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), (_id(page), link)
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), (_id(page), link, sorted(_anchors(target)))


# docs/layout.md, "What each folder may import": the folders below import only these
# parts of jaxopt_zoo (anywhere in the file, lazy imports included).
IMPORT_RULES = {
    "core.py": {"core", "fast"},
    "transforms": {"core", "fast", "transforms"},
    "optim": {"core", "transforms", "fast", "sharding", "optim", "quant"},
    "fast": {"fast"},
    "quant": {"core", "fast", "quant"},
}


def _imported_parts(path: Path):
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom):  # relative: within its own folder
            names = [f"jaxopt_zoo.{path.parent.name}"]
        for name in names:
            parts = name.split(".")
            if parts[0] == "jaxopt_zoo":
                yield parts[1] if len(parts) > 1 else "jaxopt_zoo"


@pytest.mark.parametrize("folder", sorted(IMPORT_RULES))
def test_the_layout_pages_import_rules_hold(folder):
    where = ROOT / "jaxopt_zoo" / folder
    files = [where] if where.suffix == ".py" else sorted(where.rglob("*.py"))
    assert files
    for path in files:
        bad = set(_imported_parts(path)) - IMPORT_RULES[folder]
        assert not bad, f"{path.relative_to(ROOT)} imports jaxopt_zoo.{sorted(bad)}"
