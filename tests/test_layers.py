"""The house's layers: no module of mtl_core imports one above it (an import inside a function counts), and no
function in mtl_core or the plugin grows past a page."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: mtl_core's rooms, ground floor first (docs/architecture.md says what goes where)
LAYERS = [
    {"errors"},
    {"io", "spec"},
    {"config", "norm", "split", "metrics", "model", "modelfile", "sample_data"},
    {"explain"},
    {"engine"},
    {"training"},
    {"jobs"},
    {"worker", "cli_args", "cli_sites", "cli_train"},
    {"cli", "__init__"},
]
FLOOR = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
MAX_LINES = 80  # of a function's body, its docstring left out


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, mtl_core module) of every import in a file, lazy ones included."""
    rel = path.relative_to(ROOT).with_suffix("").parts
    package = rel[:-1] if rel[-1] != "__init__" else rel
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = ".".join(list(package[:len(package) - node.level + 1]) + ([node.module] if node.module else [])) \
                if node.level else node.module or ""
            names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m.startswith("mtl_core.")]


def test_no_import_runs_up_the_layers():
    rooms = {p.stem if p.parent.name == "mtl_core" else p.parent.name
             for p in (ROOT / "mtl_core").rglob("*.py")}
    assert rooms <= set(FLOOR), f"rooms without a floor in LAYERS: {sorted(rooms - set(FLOOR))}"
    upward = []
    for path in sorted((ROOT / "mtl_core").rglob("*.py")):
        here = _room(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for line, module in _imports(path):
            there = _room(module)
            if there in FLOOR and FLOOR[there] > FLOOR[here]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {module} ({there})")
    assert upward == [], "imports that climb:\n" + "\n".join(upward)


def _body_lines(node: ast.FunctionDef) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]  # the docstring
    return (body[-1].end_lineno - body[0].lineno + 1) if body else 0


def test_no_function_is_longer_than_a_page():
    long = []
    for folder in ("mtl_core", "plugin"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > MAX_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({_body_lines(node)} lines)")
    assert long == [], "split these into named steps:\n" + "\n".join(long)
