"""`make lint` in CI: ruff check, ruff format --check and mypy over src/, agents/, gateway/,
topics/, bench/ and tools/, each failing with the tool's own report.

Deselect with `-m "not lint"` while editing; CI runs `make test`, so these keep lint clean.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.lint, pytest.mark.timeout(600)]

CHECKS = {
  "ruff check": [str(BIN / "ruff"), "check", "--no-cache", "."],
  "ruff format --check": [str(BIN / "ruff"), "format", "--check", "--no-cache", "."],
  "mypy": [sys.executable, "tools/typecheck.py"],
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_lint_is_clean(name: str) -> None:
  proc = subprocess.run(
    CHECKS[name], cwd=ROOT, capture_output=True, text=True, timeout=540, check=False
  )
  assert proc.returncode == 0, f"`{name}` is not clean (make lint):\n{proc.stdout}{proc.stderr}"
