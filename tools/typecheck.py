"""Run mypy over Bond as the wheel lays it out, and over bench/ and tools/.

    python tools/typecheck.py [mypy options]      (make lint runs it)

agents/, gateway/ and topics/ are the packages bond.agents, bond.gateway and bond.topics
(setuptools package-dir). mypy cannot follow that mapping (nor the import hook of an editable
install), so `mypy agents` would check them as top-level `agents.*` with every `bond.agents`
import unresolved. Instead this copies src/bond and the three folders into the wheel's layout
under .bond/typecheck (only files that changed, so mypy's cache stays warm), runs mypy there
and on bench/ and tools/, and reports every error at its real path.
"""

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / ".bond" / "typecheck"
# Where each part of the `bond` package lives in the repository (the wheel's package-dir).
LAYOUT = {
  "bond/agents": ROOT / "agents",
  "bond/gateway": ROOT / "gateway",
  "bond/topics": ROOT / "topics",
  "bond": ROOT / "src" / "bond",
}
SUFFIXES = (".py", ".pyi", "py.typed")
CHECKED_AS_IS = ["bench", "tools"]


def _sources() -> dict[Path, Path]:
  """Return staged path -> real path for every Python file of the `bond` package."""
  files: dict[Path, Path] = {}
  for staged, real in LAYOUT.items():
    for path in real.rglob("*"):
      if path.is_file() and path.name.endswith(SUFFIXES) and "__pycache__" not in path.parts:
        files.setdefault(STAGE / staged / path.relative_to(real), path)
  return files


def stage() -> dict[Path, Path]:
  """Mirror the `bond` package into STAGE (copy changed files, drop removed ones)."""
  files = _sources()
  for staged, real in files.items():
    if not staged.exists() or not filecmp.cmp(staged, real, shallow=False):
      staged.parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(real, staged)
  for path in sorted(STAGE.rglob("*"), reverse=True):
    if path.is_file() and path not in files:
      path.unlink()
    elif path.is_dir() and not any(path.iterdir()):
      path.rmdir()
  return files


def real_path(line: str, files: dict[Path, Path]) -> str:
  """Rewrite a mypy output line that names a staged file to name the repository's file."""
  head, sep, rest = line.partition(":")
  staged = Path(head) if Path(head).is_absolute() else ROOT / head
  if sep and staged in files:
    return f"{files[staged].relative_to(ROOT)}:{rest}"
  return line


def main(argv: list[str]) -> int:
  """Stage, run mypy, print its report with real paths; return mypy's exit code."""
  files = stage()
  cmd = [sys.executable, "-m", "mypy", *argv, str(STAGE / "bond"), *CHECKED_AS_IS]
  env = {**os.environ, "MYPYPATH": str(STAGE)}
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  for line in (proc.stdout + proc.stderr).splitlines():
    print(real_path(line, files))
  return proc.returncode


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
