"""The architecture, checked: no import cycles among archcalc's modules (the layers themselves are
import-linter's contract in pyproject.toml, run by .ci/run), and the size budget of STYLE.md."""

from __future__ import annotations

import ast

import networkx as nx
import pytest
from conftest import ROOT

MODULE_LINES = 400
FUNCTION_LINES = 40
# Functions over the budget, each with the reason it is one piece.
LONG_FUNCTIONS = {
}


def _sources():
    return sorted((ROOT / "archcalc").rglob("*.py"))


def test_no_import_cycles():
    grimp = pytest.importorskip("grimp")  # installed with import-linter (the test extra)
    graph = grimp.build_graph("archcalc")
    imports = nx.DiGraph([(m, i) for m in graph.modules for i in graph.find_modules_directly_imported_by(m)])
    assert list(nx.simple_cycles(imports)) == []


def test_modules_and_functions_stay_small():
    too_long = []
    for path in _sources():
        rel = str(path.relative_to(ROOT / "archcalc"))
        text = path.read_text()
        if len(text.splitlines()) >= MODULE_LINES:
            too_long.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = node.end_lineno - node.lineno + 1
                if size > FUNCTION_LINES and (rel, node.name) not in LONG_FUNCTIONS:
                    too_long.append(f"{rel}:{node.lineno} {node.name}: {size} lines")
    assert not too_long


def test_every_allowed_exception_still_exists():
    """An exception whose function shrank or vanished is struck from the list."""
    found = set()
    for path in _sources():
        rel = str(path.relative_to(ROOT / "archcalc"))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > FUNCTION_LINES:
                found.add((rel, node.name))
    assert set(LONG_FUNCTIONS) <= found


def _layout_bullets() -> dict[str, str]:
    """README's layout section, one entry per top-level bullet, keyed by the folder or file it opens with."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout\n"):]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    bullets: dict[str, str] = {}
    for chunk in section.split("\n- `archcalc/")[1:]:
        head = chunk.split("`", 1)[0]
        bullets[head] = chunk
    return bullets


def test_readme_layout_names_every_module():
    """Each module is named in its folder's bullet (by its path inside that folder), each top-level
    module somewhere in the section: a module added without a word in README fails here."""
    bullets = _layout_bullets()
    missing = []
    for path in _sources():
        rel = path.relative_to(ROOT / "archcalc")
        if rel.name == "__init__.py":
            continue
        if len(rel.parts) == 1:
            found = any(f"`{rel.name}`" in b or f"`archcalc/{rel.name}`" in b or b.startswith(rel.name)
                        for b in bullets.values())
        else:
            folder = rel.parts[0] + "/"
            inner = "/".join(rel.parts[1:])
            found = folder in bullets and f"`{inner}`" in bullets[folder]
        if not found:
            missing.append(str(rel))
    assert not missing, f"README's layout section does not name: {missing}"
