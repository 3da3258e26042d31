"""The architecture holds: imports point one way, only the command line talks to the terminal.

    cli -> pipeline -> kernels, nn -> io -> engine -> parallel, errors

Read from the source (ast), not by importing, so a violation in a module no
test happens to load is still found.  A layer may use any layer below it
(the command line takes its help text from the engine's border table and
its completions from the kernel catalog); never one above it, never a
sibling that is not listed.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "convcli"

# Which top-level parts of convcli each part may import.
ALLOWED = {
    "cli": {"pipeline", "kernels", "nn", "io", "engine", "parallel", "errors"},
    "pipeline": {"kernels", "nn", "io", "engine", "parallel", "errors"},
    "kernels": {"io", "engine", "parallel", "errors"},
    "nn": {"engine", "parallel", "errors"},
    "io": {"parallel", "errors"},
    "engine": {"parallel", "errors"},
    "parallel": {"errors"},
    "errors": set(),
}
TOP = {"__init__", "__main__"}  # the package's face and entry point may import the layers they name
TERMINAL = {"typer", "rich", "click"}  # only the command line imports these


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imports(path: Path):
    """(line, imported module as an absolute dotted name) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ["convcli", *path.relative_to(PACKAGE).with_suffix("").parts][:-1]  # what "." means here
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [module + "." + a.name for a in node.names] if module in ("convcli",) else [module]
            for name in names:
                yield node.lineno, name


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_import_points_down_the_layers(path):
    part = _part(path)
    if part in TOP:
        return
    allowed = ALLOWED[part] | {part}
    wrong = []
    for line, module in _imports(path):
        pieces = module.split(".")
        if pieces[0] in TERMINAL and part != "cli":
            wrong.append(f"line {line}: {module} (only convcli.cli talks to the terminal)")
        if pieces[0] != "convcli" or len(pieces) < 2:
            continue
        target = pieces[1]
        if target.startswith("__"):
            continue  # the package's face: __version__
        if target not in allowed:
            wrong.append(f"line {line}: {module} ({part} may use {', '.join(sorted(ALLOWED[part])) or 'nothing'})")
    assert not wrong, f"{path.relative_to(PACKAGE)}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("path", [p for p in SOURCES if _part(p) != "cli"], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_below_the_command_line_prints(path):
    """Messages are the CLI's; below it code returns results and raises (data for ``-o -`` is not a message)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "print":
                found.append(f"line {node.lineno}: print()")
            if (isinstance(func, ast.Attribute) and func.attr == "write" and isinstance(func.value, ast.Attribute)
                    and func.value.attr in ("stdout", "stderr")):
                found.append(f"line {node.lineno}: sys.{func.value.attr}.write()")
    assert not found, f"{path.relative_to(PACKAGE)}: " + "; ".join(found)


def test_the_import_reader_resolves_relative_imports():
    """Relative imports are resolved the way Python does (else the tests above would prove nothing)."""
    engine = PACKAGE / "engine" / "correlation.py"
    names = {module for _, module in _imports(engine)}
    assert "convcli.errors" in names and "convcli.engine.borders" in names
    cli = PACKAGE / "cli" / "filter_cmd.py"
    assert any(m.startswith("convcli.pipeline") for _, m in _imports(cli))
