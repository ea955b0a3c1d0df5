"""The Terraform module as data (python-hcl2) and the pipeline configuration, for wiring checks."""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path

import hcl2

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"


@cache
def module(folder: Path = TERRAFORM) -> dict:
    """Every top-level block of the module's .tf files, merged: {"resource": {type: {name: body}}, ...}."""
    merged: dict = {"resource": {}, "data": {}, "variable": {}, "output": {}, "locals": {}}
    for path in sorted(folder.glob("*.tf")):
        with path.open() as f:
            parsed = hcl2.load(f)
        for kind in ("resource", "data"):
            for block in parsed.get(kind, []):
                for type_, named in block.items():
                    merged[kind].setdefault(type_, {}).update(named)
        for kind in ("variable", "output"):
            for block in parsed.get(kind, []):
                merged[kind].update(block)
        for block in parsed.get("locals", []):
            merged["locals"].update({k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in block.items()})
    return merged


def resource(type_: str, name: str) -> dict:
    return module()["resource"][type_][name]


def attr(body: dict, key: str):
    """An attribute's value (python-hcl2 wraps values in one-element lists)."""
    value = body[key]
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def blocks(body: dict, key: str) -> list[dict]:
    return body.get(key, [])


@cache
def pipeline() -> dict:
    return tomllib.loads((REPO / "schemas" / "pipeline.toml").read_text())


def table_path(name_or_path: str) -> str:
    """A configured table's folder (dead-letter and tombstone settings are folders already)."""
    tables = pipeline()["tables"]
    return tables[name_or_path]["path"] if name_or_path in tables else name_or_path


def job_binaries() -> set[str]:
    """The jobs the `lakehouse` executable answers to (its JOBS list; lakectl is the operator
    tool, not a job)."""
    main = (REPO / "jobs" / "lakehouse" / "src" / "main.rs").read_text()
    names = re.search(r"const JOBS: \[&str; \d+\] = \[([^\]]*)\]", main).group(1)
    return set(re.findall(r'"([^"]+)"', names)) - {"lakectl"}

