"""Check `runner/`'s imports against the table in docs/ARCHITECTURE.md, and find import cycles.

    python scripts/check_layers.py        # exit 0: every import allowed and no cycle

Every `import` and `from ... import` counts, at the top of a module or inside a function
(a lazy import is still a dependency). Modules are grouped into units: each subpackage of
`runner/` and `runner/llm/` is one unit, and each loose module (`runner/errors.py`,
`runner/llm/builtin.py`, ...) is a unit of its own. The table's row for a unit lists the
units it may import; an import of anything else is a violation. Cycles are looked for among
modules (a module importing its own package's `__init__` does not count: that is the package
re-exporting its parts).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

__all__ = ["allowed_table", "cycles", "import_graph", "main", "unit_of", "violations"]

ROOT = Path(__file__).resolve().parents[1]
_ROW = re.compile(r"^\|\s*`(runner[\w.]*)`\s*\|\s*(.*?)\s*\|")


def _modules(package_dir: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _targets(node: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = module if is_package else module.rpartition(".")[0]
        if node.level:
            base = ".".join(base.split(".")[: len(base.split(".")) - (node.level - 1)])
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        # `from pkg import mod` imports the module; `from pkg import name` the package.
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    else:
        return set()
    out = set()
    for name in names:
        while name and name not in known:  # `import a.b.c` of a function's module, say
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


def import_graph(package_dir: Path = ROOT / "runner") -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in its body)."""
    modules = _modules(package_dir)
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):
            edges |= _targets(node, name, path.name == "__init__.py", known)
        graph[name] = {e for e in edges if e != name}
    return graph


def unit_of(module: str, units: set[str]) -> str:
    """The table's unit that holds `module`, or `module` itself when none does.

    A unit holds itself and the modules below it, except a folder of units (`runner`,
    `runner.llm`): that holds only its `__init__`, so a new module or folder in it needs a
    row of its own.
    """
    folders = {u for u in units if any(v.startswith(u + ".") for v in units)}
    for unit in sorted(units, key=len, reverse=True):
        if module == unit or (module.startswith(unit + ".") and unit not in folders):
            return unit
    return module


def allowed_table(doc: Path = ROOT / "docs" / "ARCHITECTURE.md") -> dict[str, set[str]]:
    """unit -> units it may import, read from the rows of the import table in `doc`."""
    table: dict[str, set[str]] = {}
    for line in doc.read_text().splitlines():
        match = _ROW.match(line)
        if match:
            table[match.group(1)] = set(re.findall(r"`(runner[\w.]*)`", match.group(2)))
    return table


def violations(graph: dict[str, set[str]], table: dict[str, set[str]]) -> list[str]:
    """One line per import the table does not allow, and per module no unit holds."""
    units = set(table)
    out = []
    for module, targets in sorted(graph.items()):
        unit = unit_of(module, units)
        if unit not in table:
            out.append(f"{module}: in no unit of the table; add a row for it")
            continue
        for target in sorted(targets):
            other = unit_of(target, units)
            if other != unit and other not in table[unit]:
                out.append(f"{module} imports {target}: `{unit}` may not import `{other}`")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan), each sorted."""
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    graph = import_graph()
    problems = violations(graph, allowed_table())
    problems += ["import cycle: " + " -> ".join(group) for group in cycles(graph)]
    for line in problems:
        print(line)
    edges = sum(len(t) for t in graph.values())
    print(f"{len(graph)} modules, {edges} imports: "
          f"{'no cycle, every import allowed' if not problems else f'{len(problems)} problems'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
