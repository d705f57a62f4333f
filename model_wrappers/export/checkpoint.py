"""Writing an edited copy of a safetensors checkpoint at the least cost on disk.

Only the weight files that hold an edited tensor are rewritten; every other weight file is hard-linked to the
source's (copied when the two folders sit on different filesystems). The folder is then a complete, ordinary
checkpoint: transformers loads every tensor of every listed shard and vLLM globs ``*.safetensors``, so a delta
shard beside the source's would load the unedited tensors too. A single-file checkpoint is rewritten whole.
A hard link shares the file with the source: editing the source in place would change the export as well, and it
keeps the source's permissions. Every file written here gets the umask's mode (0644 under the usual 022).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..files import new_file_mode, sha256_file
from ..masking.weight_edits import ExportRefusedError, TensorEdit
from .record import MARKER_KEY, RECORD_NAME

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Files that are not carried over: other weight formats, and the GGUF cache's manifest (it describes the source).
_NOT_COPIED = (".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".safetensors")
_NOT_COPIED_NAMES = {"rh_eval_cache.json", RECORD_NAME}


@dataclass
class WrittenFiles:
    """What writing the folder cost: bytes actually written, and how each source file got there."""

    bytes_written: int = 0
    rewritten: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)


def tensor_files(source: Path) -> dict[str, str]:
    """``{tensor name: weight file}`` of a safetensors checkpoint folder (one file, or shards with an index)."""
    if (source / INDEX_FILE).is_file():
        return dict(json.loads((source / INDEX_FILE).read_text(encoding="utf-8"))["weight_map"])
    if (source / SINGLE_FILE).is_file():
        from safetensors import safe_open

        with safe_open(source / SINGLE_FILE, framework="pt") as f:
            return {name: SINGLE_FILE for name in f.keys()}
    raise ExportRefusedError(
        f"{source} holds no safetensors weights ({SINGLE_FILE} or {INDEX_FILE}); export rewrites safetensors only. "
        "Load the model and save it with save_pretrained(DIR) first."
    )


def weights_sha256(source: Path) -> str:
    """One digest of all weight files (``name:sha256`` lines, sorted), as ``rh-eval detect`` records weights."""
    files = sorted(set(tensor_files(source).values()))
    return hashlib.sha256("".join(f"{name}:{sha256_file(source / name)}\n" for name in files).encode()).hexdigest()


def checkpoint_names(edits: dict[str, TensorEdit], files: dict[str, str], prefix: str) -> dict[str, TensorEdit]:
    """The edits keyed by the checkpoint's tensor names, which may lack the base model's ``prefix`` (GPT-2)."""
    renamed = {}
    for name, edit in edits.items():
        stored = next((n for n in (name, name.removeprefix(f"{prefix}.")) if n in files), None)
        if stored is None:
            raise ExportRefusedError(
                f"The checkpoint has no tensor {name!r} (nor without the prefix {prefix!r}), so its weights cannot "
                "be edited by name. Load the model and save it with save_pretrained(DIR) first."
            )
        renamed[stored] = edit
    return renamed


def write_checkpoint(source: Path, folder: Path, edits: dict[str, TensorEdit], files: dict[str, str]) -> WrittenFiles:
    """Write ``source`` with ``edits`` (checkpoint names) applied into the empty ``folder``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    written = WrittenFiles()
    edited_files = {files[name] for name in edits}
    for name in sorted(set(files.values())):
        origin, target = (source / name).resolve(), folder / name
        if name not in edited_files:
            _link_or_copy(origin, target, written)
            continue
        with safe_open(origin, framework="pt") as f:
            metadata = f.metadata()
            tensors = {key: f.get_tensor(key) for key in f.keys()}
        for key in tensors.keys() & edits.keys():
            tensors[key] = edits[key].apply(tensors[key])
        save_file(tensors, target, metadata=metadata)
        os.chmod(target, new_file_mode())  # a served folder is read by the server's user, whatever the source allows
        written.rewritten.append(name)
        written.bytes_written += target.stat().st_size
    for path in sorted(source.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name in _NOT_COPIED_NAMES:
            continue
        if path.name.endswith(_NOT_COPIED):
            continue
        if path.name == "config.json":
            config = json.loads(path.read_text(encoding="utf-8"))
            (folder / path.name).write_text(json.dumps({**config, MARKER_KEY: RECORD_NAME}, indent=2) + "\n")
        else:
            shutil.copyfile(path, folder / path.name)
        written.copied.append(path.name)
        written.bytes_written += (folder / path.name).stat().st_size
    return written


def _link_or_copy(origin: Path, target: Path, written: WrittenFiles) -> None:
    try:
        os.link(origin, target)
        written.linked.append(target.name)
    except OSError:  # another filesystem, or links not allowed there
        shutil.copyfile(origin, target)
        written.copied.append(target.name)
        written.bytes_written += target.stat().st_size
