"""``rh-eval detect``: score every attention head of a model for copy-paste retrieval on needle prompts."""

from __future__ import annotations

import argparse
import logging
import re
import time
from pathlib import Path

from rh_tasks.plugin.errors import CommandError, command

logger = logging.getLogger(__name__)

DEFAULT_LENGTHS = "512,1024,2048"
DEFAULT_DEPTHS = "0,25,50,75,100"


def _numbers(kind):
    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers.") from None
        if not values:
            raise argparse.ArgumentTypeError("the list is empty.")
        return values

    return parse


HELP = "find a model's retrieval heads (Wu et al. 2024 copy-paste score) and write a head-score file"
DESCRIPTION = (
    "Greedy-decode needle-in-a-haystack prompts and score, for every layer and query head, how "
    "often its most-attended token is the needle token being generated. Writes Retrieval_Head JSON "
    "(read by rh-masked head_scores=, HeadKV and DeCoRe) plus a .meta.json sidecar. An interrupted run "
    "resumes from OUTPUT.checkpoint.jsonl when rerun with the same settings."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model_args",
        default="",
        help="lm-eval style model arguments, e.g. pretrained=Qwen/Qwen2.5-0.5B-Instruct or "
        "pretrained=DIR,gguf_file=FILE.gguf (default: the embedded SmolLM2-135M-Instruct)",
    )
    parser.add_argument(
        "--lengths",
        type=_numbers(int),
        default=DEFAULT_LENGTHS,
        help=f"context lengths in tokens (default {DEFAULT_LENGTHS})",
    )
    parser.add_argument(
        "--depths",
        type=_numbers(float),
        default=DEFAULT_DEPTHS,
        help=f"needle depths in percent (default {DEFAULT_DEPTHS})",
    )
    parser.add_argument(
        "--needles",
        default=None,
        help="comma-separated ids of packaged detection needles, or a JSONL file with id, needle, question, "
        "answer_prefix and answer (default: all packaged detection needles, disjoint from niah's)",
    )
    parser.add_argument(
        "--haystack",
        default=None,
        help="a text file or folder of .txt files (default: the packaged detection haystack)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="score file to write (default: <model name>.json in the current folder)",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite OUTPUT and discard an interrupted run's checkpoint"
    )
    parser.add_argument(
        "--score",
        choices=("set", "multiset"),
        default="set",
        help="set: the paper's |g_h ∩ k| / |k|, each distinct answer token counts once, scores <= 1 (default); "
        "multiset: every copy counts, divided by the answer's length in tokens, as the reference code does",
    )
    parser.add_argument("--max_new_tokens", type=int, default=32, help="greedy decoding budget per sample (default 32)")
    parser.add_argument(
        "--chat-template",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wrap prompts in the tokenizer's chat template, as lm-eval's --apply_chat_template does (default: "
        "when the tokenizer has one)",
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        default=1,
        help="samples of similar length decoded together; larger batches pay off on a GPU (default 1)",
    )
    parser.add_argument("--device", default=None, help="cuda, cuda:0, cpu, ... (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto (default float32)")
    parser.add_argument("--seed", type=int, default=1234, help="torch seed, recorded in the sidecar (default 1234)")


def _default_output(identity: dict) -> Path:
    name = Path(identity["model"].rstrip("/")).name
    return Path(re.sub(r"[^a-z0-9.]+", "-", Path(name).stem.lower()).strip("-") + ".json")


def _claim_output(args, identity: dict) -> tuple[Path, Path]:
    """The scores file and its checkpoint, refused before any work if the file exists or cannot be written."""
    from model_wrappers.files import OutputFolderError, writable_folder

    output = args.output or _default_output(identity)
    checkpoint = output.with_name(output.name + ".checkpoint.jsonl")
    if args.force:
        checkpoint.unlink(missing_ok=True)
    elif output.exists():
        raise CommandError(f"{output} exists; pass --force to overwrite it, or choose another --output.")
    try:
        writable_folder(output.parent)
    except OutputFolderError as err:
        raise CommandError(str(err)) from None
    return output, checkpoint


def _settings(args, identity: dict, needles: list[dict], chat_template: bool) -> dict:
    """Everything that decides the scores, recorded in the sidecar; a checkpoint resumes only under the same."""
    from .copy_events import SET_COUNTING

    return {
        "model": identity,
        "grid": {"lengths": args.lengths, "depths": args.depths},
        "needles": [t["id"] for t in needles],
        "haystack": args.haystack or "packaged:time_machine_ch09-16",
        "chat_template": chat_template,
        "max_new_tokens": args.max_new_tokens,
        "dtype": args.dtype,
        "seed": args.seed,
        "set_counting": SET_COUNTING,  # how ``set`` counts; a checkpoint counted otherwise is not resumed
    }


@command()
def main(args) -> int:
    import torch

    from model_wrappers.head_scores import RETRIEVAL_THRESHOLD

    from .aggregate import write_scores
    from .detect import detect
    from .prompts import build_samples, load_needles, use_chat_template
    from .source import load_geometry, load_model, model_identity, parse_model_args

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model_args = parse_model_args(args.model_args)
    identity = model_identity(model_args)
    output, checkpoint = _claim_output(args, identity)
    try:  # the config alone: a refused or unsupported model fails before any download or weights load
        geometry = load_geometry(model_args)
    except (ValueError, OSError) as err:
        raise CommandError(f"Cannot use {identity['model']}: {err}") from None

    torch.manual_seed(args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    model, tokenizer = load_model(model_args, device, args.dtype)
    needles = load_needles(args.needles)
    chat_template = use_chat_template(tokenizer, args.chat_template)
    samples = build_samples(
        tokenizer,
        lengths=args.lengths,
        depths=args.depths,
        needles=needles,
        haystack=args.haystack,
        chat_template=chat_template,
    )
    settings = _settings(args, identity, needles, chat_template)
    logger.info("Scoring %d samples of %s", len(samples), identity["model"])
    results = detect(
        model,
        tokenizer,
        samples,
        settings=settings,
        checkpoint=checkpoint,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )
    metadata = write_scores(
        output,
        results,
        definition=args.score,
        settings=settings,
        geometry=geometry,
        runtime_seconds=time.perf_counter() - start,
    )
    checkpoint.unlink(missing_ok=True)
    rate = metadata["acceptance"]
    print(
        f"{output}: {rate['accepted']}/{rate['samples']} samples accepted, {metadata['retrieval_heads']} heads "
        f"score >= {RETRIEVAL_THRESHOLD} ({metadata['runtime_seconds']:.0f} s). Inspect with: rh-eval heads {output}"
    )
    return 0
