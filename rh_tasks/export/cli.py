"""``rh-eval export --model_args ... --output DIR``: write one ``phase=all`` condition as a verified checkpoint."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from model_wrappers.export.record import RECORD_NAME
from rh_tasks.plugin.errors import CommandError, command

HELP = "write a masked condition into a checkpoint folder that vLLM, SGLang, TGI or plain hf can evaluate"
DESCRIPTION = (
    "Bake a phase=all masking condition into the weights: mode=uniform zeroes the masked heads' query rows, "
    "mode=zero their output-projection columns, mode=mean also folds their mean output into the output "
    "projection's bias (only where the architecture has one). The written checkpoint is loaded back and its "
    "logits compared with rh-masked's on a probe before the folder appears; the folder records the condition in "
    f"{RECORD_NAME}, so rh-eval report reads stock lm_eval runs on it as that condition. Weight files without an "
    "edited tensor are hard-linked to the source's; a single-file checkpoint is copied whole."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model_args",
        default="",
        help="rh-masked's model arguments: pretrained=DIR (default: the embedded SmolLM2-135M-Instruct), heads, k, "
        "head_scores, mode, unit, seed, match; e.g. heads=retrieval,k=5,mode=zero. phase=decode is refused",
    )
    parser.add_argument(
        "--output",
        type=Path,
        required=True,
        metavar="DIR",
        help="new folder for the checkpoint (an existing non-empty folder is refused, never overwritten)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the source model runs to compute mean outputs and the verification probe (default: cpu)",
    )


@command(ValueError, OSError)
def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from model_wrappers.export.export import check_output, export_masked
    from model_wrappers.export.source import masked_source

    check_output(args.output)
    model_args = _parse_model_args(args.model_args)
    if str(model_args.get("heads", "none")).strip().lower() == "none":
        raise CommandError(
            "No heads to mask (heads=none): the export would be the source model itself. Pass heads=retrieval,k=N "
            "or heads=[[layer,head],...]."
        )
    source = masked_source(model_args, device=args.device)
    record = export_masked(source, args.output)["export"]
    masking = source.rh_masking
    print(
        f"Wrote {args.output}: {masking['num_masked']} heads masked (mode={masking['mode']}, unit={masking['unit']}), "
        f"max |logit difference| {record['max_abs_logit_diff']:.2g} vs rh-masked (tolerance {record['tolerance']:g}), "
        f"{record['bytes_written']:,} bytes written, {len(record['linked_files'])} weight files hard-linked."
    )
    return 0


def _parse_model_args(text: str) -> dict:
    """lm-eval's own ``--model_args`` reading, so ``heads=[[3,5],[7,1]]`` keeps its commas."""
    from lm_eval._cli.utils import key_val_to_dict

    try:
        return key_val_to_dict(text)
    except ValueError as err:
        raise CommandError(f"--model_args {text!r}: {err}. Write key=value pairs separated by commas.") from None
