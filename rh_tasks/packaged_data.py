"""Checksummed access to the data files that ship inside the package.

A result is only reproducible if its inputs are the ones we think they are, so every packaged file is
verified against ``data/SHA256SUMS`` before use. A missing or modified file is an error, never a silent
download or fallback.
"""

from __future__ import annotations

import gzip
from functools import cache
from pathlib import Path

from model_wrappers.files import sha256_file

DATA_DIR = Path(__file__).resolve().parent / "data"
MANIFEST = DATA_DIR / "SHA256SUMS"


class PackagedDataError(RuntimeError):
    """A packaged data file is missing or does not match its recorded sha256."""


@cache
def manifest() -> dict[str, str]:
    """Map of relative path -> sha256, parsed from ``SHA256SUMS`` (sha256sum format)."""
    if not MANIFEST.is_file():
        raise PackagedDataError(f"{MANIFEST} is missing; reinstall rh-eval (pip install --force-reinstall rh-eval).")
    entries = {}
    for line in MANIFEST.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            entries[name.lstrip("*").removeprefix("./")] = digest
    return entries


@cache
def data_path(name: str) -> Path:
    """Path of packaged file ``name`` (relative to ``rh_tasks/data``), verified against the manifest."""
    expected = manifest().get(name)
    if expected is None:
        raise PackagedDataError(f"{name!r} is not a packaged data file. Known files: {', '.join(sorted(manifest()))}.")
    path = DATA_DIR / name
    if not path.is_file():
        raise PackagedDataError(f"Packaged data file {path} is missing; reinstall rh-eval.")
    actual = sha256_file(path)
    if actual != expected:
        raise PackagedDataError(
            f"Packaged data file {path} has sha256 {actual}, expected {expected}: it was modified. "
            "Reinstall rh-eval to restore it."
        )
    return path


def read_text(name: str) -> str:
    """Verified text of a packaged file; ``.gz`` files are decompressed."""
    path = data_path(name)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return raw.decode("utf-8")


def read_jsonl(name: str) -> list[dict]:
    import json

    return [json.loads(line) for line in read_text(name).splitlines() if line.strip()]
