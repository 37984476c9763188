"""The layers of docs/ARCHITECTURE.md, checked from the source (function-level imports included).

`lint-imports` (import-linter) enforces the contracts in pyproject.toml: pipeline above the three
peer stages (training, ensembles, reports), which never import each other, above data_utils and
zoo, above core; no deep-learning framework in ensembles, reports or core; no import cycle inside
a package. These tests run it on the real tree, show it failing on a copy with one forbidden
import, and keep every source file under 600 lines.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "data_utils", "zoo", "training", "ensembles", "reports", "pipeline")
MAX_LINES = 600


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command;"
               " sys.exit(lint_imports_command())", "--no-cache"]
    # The copy's packages must shadow the installed (editable) ones: PYTHONPATH = the copy.
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)})


def _copy_tree(target: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO / package, target / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", target / "pyproject.toml")
    return target


def test_the_layer_contracts_hold(tmp_path):
    result = _lint_imports(_copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    # a peer stage importing another (here lazily, inside a function)
    ("ensembles/build.py", "def _violation():\n    import reports.build  # noqa: F401\n",
     "ensembles.build -> reports.build"),
    # the foundations importing a later layer
    ("core/metrics.py", "import data_utils.splits  # noqa: F401,E402\n",
     "core.metrics -> data_utils.splits"),
    # a framework in the reports
    ("reports/figures.py", "import keras  # noqa: F401,E402\n", "reports.figures -> keras"),
])
def test_a_violation_fails_naming_the_import(tmp_path, module, line, broken):
    tree = _copy_tree(tmp_path)
    with open(tree / module, "a", encoding="utf-8") as handle:
        handle.write("\n" + line)
    result = _lint_imports(tree)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert broken in result.stdout, result.stdout


def test_a_cycle_inside_a_package_fails(tmp_path):
    tree = _copy_tree(tmp_path)
    # core.atomic is imported by core.predictions; importing it back closes a cycle.
    with open(tree / "core/atomic.py", "a", encoding="utf-8") as handle:
        handle.write("\ndef _violation():\n    import core.predictions  # noqa: F401\n")
    result = _lint_imports(tree)
    assert result.returncode != 0
    assert "No import cycle between the modules of a package BROKEN" in result.stdout


def test_no_source_file_is_over_600_lines():
    sources = [p for package in (*PACKAGES, "tools") for p in (REPO / package).rglob("*.py")]
    sources.append(REPO / "benchmark.py")
    long = {str(p.relative_to(REPO)): n for p in sources
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"
