"""GPL code stays in its own process: gurux-dlms (GPL-2.0) is only imported by scripts under tests/peers/,
which the tests run as subprocesses. The product (Apache-2.0) and every module the pytest process may
import (tests/, conftest, fixtures) neither import it nor import those scripts.

Shell equivalent: git grep -nE '^\\s*(import|from)\\s+(gurux|tests\\.peers)' -- '*.py' ':!tests/peers/'
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.architecture.imports import PACKAGES, ROOT

GPL_MODULES = ("gurux_dlms", "gurux_common", "gurux_net", "gurux_serial")
PEERS = ROOT / "tests" / "peers"


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _forbidden(name: str) -> bool:
    top = name.split(".")[0]
    return top in GPL_MODULES or name == "tests.peers" or name.startswith("tests.peers.")


def _checked_files() -> list[Path]:
    files = [p for package in (*PACKAGES, "tests", "bench") for p in sorted((ROOT / package).rglob("*.py"))]
    return [p for p in files if PEERS not in p.parents and ".venv" not in p.parts]


def test_no_module_but_the_peer_scripts_imports_gurux() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imported(path) if _forbidden(n)) for path in _checked_files()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_checked_files_include_the_product_and_the_tests() -> None:
    names = {str(p.relative_to(ROOT)) for p in _checked_files()}
    assert {"tests/conftest.py", "tests/fixtures/dlms_peer.py", "gateway/__init__.py"} <= names
    assert not any(n.startswith("tests/peers/") for n in names)


def test_the_peer_scripts_are_not_a_package_pytest_could_import() -> None:
    assert not (PEERS / "__init__.py").exists()
    assert not [p.name for p in PEERS.glob("test_*.py")]


def test_the_pytest_process_has_not_loaded_gurux() -> None:
    # The plugins of tests/conftest.py (with the DLMS peer fixture) are loaded by now.
    assert "tests.fixtures.dlms_peer" in sys.modules
    assert sorted(m for m in sys.modules if m.split(".")[0] in GPL_MODULES) == []
