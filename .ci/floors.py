"""Print a pip constraints file that pins every dependency of pyproject.toml at its floor.

Every `name>=X` of [project] dependencies and of the optional dependencies becomes
`name==X` (the oldest release the project admits); exact pins (the lint tools) and the
project's own extras are left out. .ci/run installs `.[test]` with these constraints.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)")


def floors(pyproject: Path) -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    out: dict[str, str] = {}
    for requirement in requirements:
        match = FLOOR.match(requirement)
        if match is None:
            continue
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        version = match.group(2)
        if name in out and out[name] != version:
            sys.exit(f"floors: {name} has two floors in pyproject.toml: {out[name]}, {version}")
        out[name] = version
    return out


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    print("# The oldest versions pyproject.toml admits (written by .ci/floors.py)")
    for name, version in sorted(floors(root / "pyproject.toml").items()):
        print(f"{name}=={version}")
