#!/usr/bin/env python3
"""Write a pip constraints file pinning every dependency to the lowest version pyproject.toml allows.

`tox -e mindeps` installs the project with it, so the unit tests run against the floors that
pyproject.toml promises (the lowest direct versions; pip resolves everything else as usual):

    python tools/lowest_constraints.py --extra test --out constraints.txt
    python -m pip install --constraint constraints.txt ".[test]"

Every requirement of [project.dependencies] and of the named extras must have a lower bound
(`>=X`, `~=X` or `==X`); one without is refused, since "any version" cannot be tested.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def lowest_pins(requirements: list[str]) -> list[str]:
    """`name==floor` for each requirement string.

    Args:
        requirements: PEP 508 requirement strings, e.g. "scipy>=1.13,<2" or "tensorflow~=2.21.0".

    Returns:
        One "name==version" line per requirement, in the given order.

    Raises:
        ValueError: a requirement without a lower bound (`>=`, `~=` or `==`).
    """
    pins = []
    for text in requirements:
        requirement = Requirement(text)
        floors = [s.version for s in requirement.specifier if s.operator in (">=", "~=", "==")]
        if not floors:
            raise ValueError(f"{text!r} has no lower bound (>=, ~= or ==); give it one in "
                             "pyproject.toml")
        pins.append(f"{requirement.name}=={max(floors, key=Version)}")
    return pins


def main(argv: list[str] | None = None) -> int:
    """Print (or write with --out) the constraints of the dependencies and the named extras."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", action="append", default=[],
                        help="also pin this optional-dependency group (repeatable)")
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT)
    args = parser.parse_args(argv)
    project = tomllib.loads(args.pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in args.extra:
        if extra not in optional:
            parser.error(f"unknown extra {extra!r}; pyproject.toml has {', '.join(optional)}")
        requirements += optional[extra]
    try:
        text = "\n".join(lowest_pins(requirements)) + "\n"
    except ValueError as exc:
        parser.error(str(exc))
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
