#!/usr/bin/env python3
"""Quick start on a fresh machine with only Python 3.11+:

    python3 run.py dev     # install into .venv if needed, then run the whole service
    python3 run.py test    # install into .venv if needed, then run the test suite
    python3 run.py course lessons check lessons/family-guide    # any `course` command

Anything after the command is passed on (to `course dev`, to pytest, or to `course`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".homeward-installed"


def _wanted() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def installed() -> bool:
    """Whether .venv holds what this pyproject.toml asks for."""
    return STAMP.exists() and STAMP.read_text() == _wanted()


def ensure_installed() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036  (this script must explain itself on old Pythons)
        sys.exit(f"Homeward needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    if installed():
        return
    if not (BIN / "python").exists():
        print("Creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
    print("Installing Homeward and its dependencies into .venv ...", flush=True)
    subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-e",
            f"{ROOT}[dev]",
        ],
        check=True,
    )
    STAMP.write_text(_wanted())


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("dev", "test", "course"):
        print(__doc__)
        return 2
    ensure_installed()
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "dev":
        argv = [str(BIN / "course"), "dev", *rest]
    elif command == "course":
        argv = [str(BIN / "course"), *rest]
    else:
        argv = [str(BIN / "python"), "-m", "pytest", *rest]
    # A `course` command reads the paths it is given from the folder it was typed in.
    if command != "course":
        os.chdir(ROOT)
    sys.stdout.flush()
    if os.name == "nt":  # no exec there that keeps the process
        return subprocess.run(argv).returncode
    # Become the command rather than wait for it: `kill` on the process started from the quick
    # start then reaches `course dev` itself, which stops everything it started; a waiting
    # launcher would die alone and leave the service running.
    os.execv(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main())
