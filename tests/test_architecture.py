"""docs/ARCHITECTURE.md stays true: its import table holds for every import, and no cycle exists."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from check_layers import allowed_table, cycles, import_graph, violations  # noqa: E402


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "runner" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "runner"


def test_every_import_in_runner_is_allowed_by_the_table() -> None:
    """Each import of runner/, lazy ones included, is in its unit's row of the table."""
    assert violations(import_graph(), allowed_table()) == []


def test_runner_has_no_import_cycle() -> None:
    """No two modules of runner/ import each other, directly or round a longer circle."""
    assert cycles(import_graph()) == []


def test_the_table_names_every_folder_of_runner() -> None:
    """Every package folder under runner/ has a row of its own (or is a folder of rows)."""
    table = allowed_table()
    for init in (ROOT / "runner").rglob("__init__.py"):
        name = ".".join(init.parent.relative_to(ROOT).parts)
        assert name in table, f"{name} has no row in docs/ARCHITECTURE.md"


def test_no_folder_holds_more_than_a_dozen_modules() -> None:
    """A folder of more than about a dozen modules should be split by concern."""
    for folder in [ROOT / "runner", *(p.parent for p in (ROOT / "runner").rglob("__init__.py"))]:
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= 13, f"{folder} holds {len(modules)} modules"


def test_a_lazy_import_against_the_table_is_reported(tmp_path: Path) -> None:
    """An import inside a function that the table does not allow is a violation."""
    package = _package(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "def f():\n    from runner.high import b\n    return b\n",
        "high/__init__.py": "",
        "high/b.py": "from runner.low import a\n",
    })
    table = {"runner": set(), "runner.low": set(), "runner.high": {"runner.low"}}
    found = violations(import_graph(package), table)
    assert found == ["runner.low.a imports runner.high.b: `runner.low` may not import `runner.high`"]


def test_a_cycle_through_a_lazy_import_is_found(tmp_path: Path) -> None:
    """Two modules that import each other, one of them inside a function, form a cycle."""
    package = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from runner import b\n",
        "b.py": "def g():\n    import runner.a\n",
    })
    assert cycles(import_graph(package)) == [["runner.a", "runner.b"]]


def test_a_package_reexporting_its_modules_is_no_cycle(tmp_path: Path) -> None:
    """`pkg/__init__` importing `pkg.mod`, which uses `from . import other`, is not a cycle."""
    package = _package(tmp_path, {
        "__init__.py": "",
        "store/__init__.py": "from .journal import J\n",
        "store/journal.py": "from . import atomic\nJ = 1\n",
        "store/atomic.py": "",
    })
    assert cycles(import_graph(package)) == []


def test_a_module_outside_every_row_is_reported(tmp_path: Path) -> None:
    """A new folder without a row in the table is named, so the map cannot fall behind."""
    package = _package(tmp_path, {"__init__.py": "", "newthing/__init__.py": "", "newthing/x.py": ""})
    found = violations(import_graph(package), {"runner": set(), "runner.errors": set()})
    assert "runner.newthing: in no unit of the table; add a row for it" in found
