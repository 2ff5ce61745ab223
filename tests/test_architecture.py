"""The package's layout, read from its own imports (docs/architecture.md is the map).

Every import in the package, at module level or inside a function, must go from a room to one of the
rooms its layer may use; no two files may import each other, directly or in a longer circle; and no
file may import a name that starts with an underscore from another file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tandem_lm_eval"
NAME = "tandem_lm_eval"

# room -> the rooms it may import (besides itself). The order is the layer order, top floor first.
MAY_IMPORT: dict[str, set[str]] = {
    "cli": {"workflows", "harness", "calibration", "cascade", "judgment", "backends", "store", "cost", "data"}
    | {"scoring", "common"},
    "workflows": {"harness", "calibration", "cascade", "judgment", "backends", "store", "cost", "data"}
    | {"scoring", "common"},
    "harness": {"cascade", "judgment", "backends", "store", "cost", "data", "scoring", "common"},
    "calibration": {"judgment", "cost", "data", "common"},
    "cascade": {"store", "judgment", "backends", "cost", "common"},
    "store": {"backends", "data", "common"},
    "judgment": {"common"},
    "backends": {"data", "common"},
    "cost": {"common"},
    "data": {"scoring", "common"},
    "scoring": {"common"},
    "common": set(),
}
# Files at the package's top: entry points that may reach any room.
ENTRY_POINTS = {"__init__", "__main__", "_startup", "model"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, known: set[str]) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import of the package in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == NAME:
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            names = [a.name for a in node.names]
            for name in names:  # "from pkg import submodule" imports the submodule
                if f"{node.module}.{name}" in known:
                    out.append((f"{node.module}.{name}", [], node.lineno))
            out.append((node.module, [n for n in names if f"{node.module}.{n}" not in known], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == NAME:
                    out.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import")
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        m: {imp for imp, _, _ in _imports(p, set(modules)) if imp in modules and imp != m}
        for m, p in modules.items()
    }


def test_every_room_imports_only_the_rooms_below_it():
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        room = _room(module)
        if room in ENTRY_POINTS:
            continue
        assert room in MAY_IMPORT, (
            f"{module}: room {room!r} is not in the architecture (docs/architecture.md)"
        )
        for imported, _, line in _imports(path, set(modules)):
            other = _room(imported)
            if other != room and other not in MAY_IMPORT[room]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {room} imports {imported}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_circles():
    graph = _graph()
    circles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, path)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    # a package's __init__ and its own modules are one room: only circles between files count
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_no_private_name_crosses_files():
    modules = _modules()
    crossing = []
    for path in modules.values():
        for imported, names, line in _imports(path, set(modules)):
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    crossing.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {imported}.{name}")
    assert not crossing, "private names imported from another file:\n" + "\n".join(crossing)


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_each_room_says_what_it_owns_and_may_import(room):
    init = PACKAGE / room / "__init__.py"
    assert init.is_file(), f"{room}/ has no __init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc, f"{room}/__init__.py has no docstring saying what the room owns"
    assert "import" in doc.lower(), f"{room}/__init__.py does not say what it may import"


def test_the_checker_sees_a_violation(tmp_path):
    """The layer check must be able to fail: an upward import in a fake room is reported."""
    fake = tmp_path / NAME
    (fake / "cost").mkdir(parents=True)
    (fake / "harness").mkdir()
    (fake / "cost" / "__init__.py").write_text('"""cost. May import: common."""\n')
    (fake / "harness" / "__init__.py").write_text('"""harness. May import: cost."""\n')
    (fake / "cost" / "ledger.py").write_text("from tandem_lm_eval.harness.lm import TandemLM\n")
    (fake / "harness" / "lm.py").write_text("from tandem_lm_eval.cost.ledger import x\n")
    globals()["PACKAGE"], saved = fake, PACKAGE
    try:
        with pytest.raises(AssertionError, match="cost imports tandem_lm_eval.harness.lm"):
            test_every_room_imports_only_the_rooms_below_it()
        with pytest.raises(AssertionError, match="import circles"):
            test_no_import_circles()
    finally:
        globals()["PACKAGE"] = saved
