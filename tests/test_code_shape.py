"""The code's shape, read with ast: no function over 60 lines, no module over 450 lines whose docstring does not
say why (a line starting "Why one module", e.g. "Why one module of ~550 lines: ..."), and no import cycle in the
package."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("src", "stages", "scripts")
MAX_FUNCTION, MAX_MODULE = 60, 450
REASON = "Why one module"

ALLOWED: set[tuple[str, str | None]] = set()  # (file, function or None for the module): none


def python_files() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def too_long() -> set[tuple[str, str | None]]:
    """(file, function) for every function over MAX_FUNCTION lines, (file, None) for a module over MAX_MODULE
    lines that gives no reason."""
    found = set()
    for path in python_files():
        text = path.read_text()
        tree = ast.parse(text)
        rel = path.relative_to(ROOT).as_posix()
        doc = ast.get_docstring(tree) or ""
        if len(text.splitlines()) > MAX_MODULE and not any(line.startswith(REASON) for line in doc.splitlines()):
            found.add((rel, None))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    node.end_lineno - node.lineno + 1 > MAX_FUNCTION:
                found.add((rel, node.name))
    return found


def test_no_long_function_or_unexplained_long_module():
    found = too_long()
    assert not found - ALLOWED, (f"over {MAX_FUNCTION} lines (function) or {MAX_MODULE} lines (module, with no "
                                 f"'{REASON}' line in its docstring): {sorted(found - ALLOWED, key=str)}")
    assert not ALLOWED - found, f"no longer too long: remove from ALLOWED {sorted(ALLOWED - found, key=str)}"


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package modules ``path`` (module ``name``) imports, wherever in the file (a function-level import
    that dodges a cycle is a cycle all the same)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found & modules - {name}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    src = ROOT / "src"
    files = {module_name(p, src): p for p in src.rglob("*.py")}
    graph = {m: imports_of(p, m, set(files)) for m, p in files.items()}
    assert graph["shrink.train"] >= {"shrink.device", "shrink.distributed"}  # the scan sees relative imports
    assert "shrink.data" in graph["shrink.bench.datapath"]  # ... and those of a sub-package (..data)
    assert cycle(graph) is None, f"import cycle: {' -> '.join(cycle(graph))}"
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check finds one
