"""The code's shape, checked as CI checks it: import-linter's contracts (``pyproject.toml``: no
import cycle in ``app`` or ``client``; the client's CLI above its tools, the tools above the
library, the library above the wire contract; the client and the emulator never import the
server), the type checker over ``app/`` and ``client/``, and ruff."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

BIN = Path(sys.executable).parent


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_import_contracts_are_kept():
    done = run(str(BIN / "lint-imports"), "--no-cache")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_app_and_client_type_check():
    done = run(sys.executable, "-m", "mypy", "--cache-dir", "/dev/null")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_lint_and_format():
    lint = run(str(BIN / "ruff"), "check", ".")
    assert lint.returncode == 0, lint.stdout
    form = run(str(BIN / "ruff"), "format", "--check", ".")
    assert form.returncode == 0, form.stdout


def test_no_command_imports_the_dispatcher():
    """``python -m client``'s commands (one module each) import their shared options, never the
    dispatcher that imports them (as pip's ``commands/`` package)."""
    for path in (ROOT / "client" / "cli").glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            else:
                continue
            assert "client.cli" not in names, f"{path.name} imports the dispatcher"
