"""Export one ``phase=all`` masking condition as a checkpoint folder, proven equal to ``rh-masked`` before it counts.

The folder is built under a temporary name beside ``output`` and renamed into place only after the written
checkpoint, loaded fresh, gave the hooked source model's logits on a probe. Anything short of that removes it,
so a folder at ``output`` is always a verified export, and an existing folder is never overwritten.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from ..condition import Head
from ..masking.audit import MaskingAudit
from ..masking.hooks import mask_heads
from ..masking.modes import MaskMode
from ..masking.weight_edits import ExportRefusedError
from .checkpoint import checkpoint_names, tensor_files, weights_sha256, write_checkpoint
from .record import RECORD_NAME
from .weights import weight_edits

logger = logging.getLogger(__name__)

# Largest |logit difference| accepted at float32: zeroing is exact, the mean's bias fold rounds differently.
TOLERANCE = {"uniform": 1e-5, "zero": 1e-5, "mean": 1e-4}


class ExportVerificationError(RuntimeError):
    """The written checkpoint does not compute what rh-masked computes; nothing was kept."""


@dataclass(frozen=True)
class MaskedSource:
    """A loaded source model and the condition to bake into it, as ``rh-masked`` resolved it."""

    model: nn.Module  # float32
    folder: Path  # its safetensors checkpoint
    heads: tuple[Head, ...]
    mode: MaskMode  # bound to ``model``
    probe_ids: torch.Tensor  # [1, T]
    rh_masking: dict  # what rh-masked records in config.rh_masking


def export_masked(source: MaskedSource, output: str | Path) -> dict:
    """Write and verify the export of ``source`` at ``output`` (absent or empty); return its record."""
    output = Path(output)
    check_output(output)
    start = time.perf_counter()
    edits = weight_edits(source.model, source.heads, source.mode)
    files = tensor_files(source.folder)
    edits = checkpoint_names(edits, files, source.model.base_model_prefix)
    audit = MaskingAudit()
    with torch.no_grad():
        unmasked = source.model(source.probe_ids).logits
        with mask_heads(source.model, source.heads, mode=source.mode, audit=audit):
            expected = source.model(source.probe_ids).logits
    audit.canary_logit_change = float((expected - unmasked).abs().max())
    staging = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        written = write_checkpoint(source.folder, staging, edits, files)
        reached = verify(staging, source.probe_ids, expected, source.model.config._attn_implementation)
        tolerance = TOLERANCE[source.mode.name]
        if not reached <= tolerance:
            raise ExportVerificationError(
                f"The exported checkpoint's logits differ from rh-masked's by {reached:.3g} (tolerance {tolerance:g}) "
                "on the probe, so it does not compute the masked condition; nothing was written. Please report it."
            )
        record = {
            "rh_masking": {**source.rh_masking, "audit": _probe_audit(audit, source, reached, tolerance)},
            "export": {
                "source": str(source.folder),
                "source_sha256": weights_sha256(source.folder),
                "edited_tensors": sorted(edits),
                "verified_dtype": "float32",
                "tolerance": tolerance,
                "max_abs_logit_diff": reached,
                "bytes_written": written.bytes_written,
                "rewritten_files": written.rewritten,
                "linked_files": written.linked,
                "copied_files": written.copied,
                "seconds": round(time.perf_counter() - start, 1),
                "rh_eval_version": metadata.version("rh-eval"),
                "created": time.time(),
            },
        }
        (staging / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if output.exists():
            output.rmdir()  # empty, as check_output made sure
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return record


def _probe_audit(audit: MaskingAudit, source: MaskedSource, reached: float, tolerance: float) -> dict:
    """What the export proved, in the form of rh-masked's audit, since no evaluation runs under these hooks.

    The counts are those of the masked probe pass, the canary is how far masking moved the probe's logits, and
    the written checkpoint gave that pass's logits within ``tolerance`` (checked before any record is written).
    """
    described = audit.describe({layer for layer, _ in source.heads})
    return {
        **described,
        "probe_tokens": int(source.probe_ids.shape[-1]),
        "max_abs_logit_diff": reached,
        "tolerance": tolerance,
    }


def check_output(output: Path) -> None:
    """Refuse an output that exists and is not an empty folder: an export never overwrites anything."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ExportRefusedError(
            f"{output} already exists and is not empty; export never overwrites. Choose a new folder."
        )


@torch.no_grad()
def verify(folder: Path, probe_ids: torch.Tensor, expected: torch.Tensor, attn_implementation: str) -> float:
    """Largest |logit difference| between the checkpoint in ``folder``, loaded fresh, and ``expected``."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=attn_implementation)
    logits = model.eval()(probe_ids.to(model.device)).logits
    return float((logits.cpu() - expected.cpu()).abs().max())
