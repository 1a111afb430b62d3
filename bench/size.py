"""Installed size of a set of requirements and everything they pull in, read from a venv's metadata.

Stdlib only, so it runs under any venv: ``python bench/size.py REQUIREMENTS_FILE_OR_NAME...``
prints ``{"bytes": N, "distributions": [...]}``. Requirements behind an extra are not followed.
With ``--image-like``, files the image's dependency layer leaves out (bytecode, tests, ONNX
Runtime's offline tools, stubs and headers; see images/Dockerfile) are not counted.
"""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(arguments: list[str]) -> list[str]:
    names = []
    for argument in arguments:
        path = Path(argument)
        lines = path.read_text().splitlines() if path.is_file() else [argument]
        for line in lines:
            line = line.split("#", 1)[0].strip()
            match = _NAME.match(line)
            if match and not line.startswith("-"):
                names.append(match.group(1))
    return names


def closure(names: list[str]) -> dict[str, metadata.Distribution]:
    """Installed distributions reachable from ``names`` through unconditional (non-extra) requirements."""
    found: dict[str, metadata.Distribution] = {}
    pending = list(names)
    while pending:
        name = _normal(pending.pop())
        if name in found:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[name] = distribution
        for requirement in distribution.requires or []:
            if "extra ==" in requirement.replace("extra==", "extra =="):
                continue
            match = _NAME.match(requirement)
            if match:
                pending.append(match.group(1))
    return found


# What images/Dockerfile leaves out of its dependency layer (pip --no-compile, then pruned).
_PRUNED_DIRS = ("tests", "__pycache__")
_PRUNED_PREFIXES = ("onnxruntime/transformers/", "onnxruntime/quantization/", "onnxruntime/tools/",
                    "onnxruntime/datasets/", "numpy/f2py/")
_PRUNED_SUFFIXES = (".pyc", ".pyi", ".pyx", ".pxd", ".h")


def _pruned(relative: str) -> bool:
    parts = relative.split("/")
    return (any(part in _PRUNED_DIRS for part in parts[:-1]) or relative.startswith(_PRUNED_PREFIXES)
            or relative.endswith(_PRUNED_SUFFIXES))


def installed_bytes(distribution: metadata.Distribution, image_like: bool = False) -> int:
    total = 0
    for file in distribution.files or []:
        if image_like and _pruned(str(file)):
            continue
        try:
            total += file.locate().stat().st_size
        except OSError:
            pass
    return total


def main() -> None:
    arguments = sys.argv[1:]
    image_like = "--image-like" in arguments
    found = closure(_names([argument for argument in arguments if argument != "--image-like"]))
    sizes = {name: installed_bytes(distribution, image_like) for name, distribution in found.items()}
    print(json.dumps({"bytes": sum(sizes.values()),
                      "distributions": sorted(sizes.items(), key=lambda item: -item[1])}))


if __name__ == "__main__":
    main()
