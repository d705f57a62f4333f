"""Installed package versions, recorded beside results so that each result says what produced it."""

from __future__ import annotations

from importlib import metadata


def versions(*names: str) -> dict[str, str]:
    """``{name: version}``, with ``unknown`` for a package that is not installed (rh-eval run from a source tree)."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found
