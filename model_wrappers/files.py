"""Files rh-eval writes and reads: outputs complete or absent, folders checked before long work, sha256 digests."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class OutputFolderError(OSError):
    """An output folder cannot be created or written to."""


def writable_folder(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove it takes a file, so a run fails now rather than after hours of work.

    A real write is the only test that holds for every user: ``os.access`` says yes to root on a read-only
    mount, or a path whose parent is a file, alike.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OutputFolderError(
            f"Cannot write to the output folder {folder} ({err.strerror or err}). Choose a folder you can write to."
        ) from None
    return folder


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a temporary file beside ``path`` and rename it over ``path``: a crash never leaves half a file."""
    path = Path(path)
    writable_folder(path.parent)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(staging, new_file_mode())  # mkstemp's 0600 would hide the file from other users
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def new_file_mode(folder: bool = False) -> int:
    """The mode ``open`` or ``mkdir`` would give under the process's umask (0644 or 0755 under the usual 022).

    Files written through a temporary name (``mkstemp``, ``mkdtemp``, safetensors) start private; outputs that a
    server or another user reads are set to this mode instead.
    """
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask
