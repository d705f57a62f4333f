"""Checksummed access to data files that ship inside a package.

A result is only reproducible if its inputs are the ones we think they are, so every packaged file is
verified against its folder's ``SHA256SUMS`` before use. A missing or modified file is an error, never a silent
download or fallback. ``model_wrappers`` ships head scores and the mean-mode reference text this way;
the task package its task data.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path

from .files import sha256_file


class PackagedDataError(RuntimeError):
    """A packaged data file is missing or does not match its recorded sha256."""


class PackagedData:
    """The files of one data folder, each verified against the folder's ``SHA256SUMS`` (sha256sum format)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.manifest_path = self.folder / "SHA256SUMS"
        self.manifest = cache(self._read_manifest)
        self.path = cache(self._verified_path)

    def _read_manifest(self) -> dict[str, str]:
        """Map of relative path -> sha256."""
        if not self.manifest_path.is_file():
            raise PackagedDataError(
                f"{self.manifest_path} is missing; reinstall rh-eval (pip install --force-reinstall rh-eval)."
            )
        entries = {}
        for line in self.manifest_path.read_text().splitlines():
            if line.strip():
                digest, name = line.split(maxsplit=1)
                entries[name.lstrip("*").removeprefix("./")] = digest
        return entries

    def _verified_path(self, name: str) -> Path:
        """Path of packaged file ``name`` (relative to the folder), verified against the manifest."""
        expected = self.manifest().get(name)
        if expected is None:
            known = ", ".join(sorted(self.manifest()))
            raise PackagedDataError(f"{name!r} is not a packaged data file. Known files: {known}.")
        path = self.folder / name
        if not path.is_file():
            raise PackagedDataError(f"Packaged data file {path} is missing; reinstall rh-eval.")
        actual = sha256_file(path)
        if actual != expected:
            raise PackagedDataError(
                f"Packaged data file {path} has sha256 {actual}, expected {expected}: it was modified. "
                "Reinstall rh-eval to restore it."
            )
        return path

    def read_text(self, name: str) -> str:
        """Verified text of a packaged file; ``.gz`` files are decompressed."""
        path = self.path(name)
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return raw.decode("utf-8")

    def read_jsonl(self, name: str) -> list[dict]:
        return [json.loads(line) for line in self.read_text(name).splitlines() if line.strip()]


DATA = PackagedData(Path(__file__).resolve().parent / "data")  # head scores and the mean-mode reference text
