"""The condition to export, resolved by ``rh-masked`` itself, so heads, scores and units mean exactly what they
mean in an evaluation. This is the one place that reads ``RHMaskedLM``'s resolved state."""

from __future__ import annotations

from pathlib import Path

from ..condition import ARGUMENTS, Condition
from ..masking.canary import PROBE_TEXT
from ..masking.weight_edits import ExportRefusedError
from .export import MaskedSource


def masked_source(model_args: dict, device: str = "cpu", condition: Condition | None = None) -> MaskedSource:
    """Load the model ``model_args`` (rh-masked's ``--model_args``) names in float32, with its condition resolved.

    The condition is ``condition`` or, without it, the one ``model_args`` describe.

    Raises :class:`ExportRefusedError` for a condition no weight edit can express, before any weights load.
    """
    from ..lm.rh_masked import RHMaskedLM

    args = dict(model_args)
    described = {name: args.pop(name) for name in ARGUMENTS if name in args}
    condition = condition or Condition.parse(**described)
    if condition.window is not None:
        raise ExportRefusedError(
            f"window={condition.window} cannot be exported: a window restricts which positions a head reads, which "
            "no weight edit can do. Evaluate it with --model rh-masked."
        )
    if condition.phase != "all":
        raise ExportRefusedError(
            f"phase={condition.phase} cannot be exported: it masks from the prompt's last token on, which no weight "
            "edit can do. Evaluate it with --model rh-masked, or export phase=all."
        )
    for key in ("dtype", "device", "batch_size"):
        if key in args:
            raise ExportRefusedError(
                f"{key}= is not an export argument: export computes in float32 and writes the source's dtype"
                + (" (use --device)." if key == "device" else ".")
            )
    lm = RHMaskedLM(condition=condition, **args, device=device, batch_size=1, dtype="float32")
    folder = Path(lm._source["path"])
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(folder), revision=args.get("revision")))
    probe = lm.tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"].to(lm.model.device)
    return MaskedSource(
        model=lm.model,
        folder=folder,
        heads=lm.condition.heads,
        mode=lm.state.mode,
        probe_ids=probe,
        rh_masking=lm.get_model_info()["rh_masking"],
    )
