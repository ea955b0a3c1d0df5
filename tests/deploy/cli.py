"""The built job binaries' command lines, to check that deployment commands call real options."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

# Binaries whose first argument is a subcommand.
WITH_SUBCOMMANDS = {"maintenance", "lakectl"}


def binary(name: str) -> Path:
    """A release binary from the cargo target dir (scripts/test.sh builds them first)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "lakehouse" / "target"))
    path = target / "release" / name
    assert path.exists(), f"{path}: build the binaries first (scripts/test.sh does)"
    return path


def assert_cli_accepts(command: list[str]) -> None:
    """The binary (and subcommand) exist and every --flag is one of its options."""
    name, args = command[0], command[1:]
    sub = [args[0]] if args and not args[0].startswith("-") and name in WITH_SUBCOMMANDS else []
    result = subprocess.run([str(binary(name)), *sub, "--help"], capture_output=True, text=True)
    assert result.returncode == 0, f"{name} {' '.join(sub)} --help: {result.stderr}"
    for flag in (a.split("=")[0] for a in args if a.startswith("--")):
        assert re.search(rf"(^|\s){re.escape(flag)}[\s=<,]", result.stdout, re.M), f"{name} {' '.join(sub)}: no option {flag}"
