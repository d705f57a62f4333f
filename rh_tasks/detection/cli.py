"""``rh-eval detect``: score every attention head of a model for retrieval on needle prompts, under one or more
definitions computed from the same greedy decode, one score file each."""

from __future__ import annotations

import argparse
import logging
import re
import textwrap
import time
from pathlib import Path

from rh_tasks.plugin.errors import CommandError, command

from .definitions import DEFINITIONS, parse_definitions

logger = logging.getLogger(__name__)

DEFAULT_LENGTHS = "512,1024,2048"
DEFAULT_DEPTHS = "0,25,50,75,100"
HELP_WIDTH = 100


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


def _definitions(text: str) -> list[str]:
    try:
        return parse_definitions(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _definitions_help() -> str:
    """The --score definitions, their sources, and how their files are named."""
    lines = ["score definitions (--score):"]
    for d in DEFINITIONS.values():
        lines.append(textwrap.fill(d.help, HELP_WIDTH, initial_indent=f"  {d.name:<20} ", subsequent_indent=" " * 23))
        lines.append(
            textwrap.fill(f"source: {d.source}", HELP_WIDTH, initial_indent=" " * 23, subsequent_indent=" " * 23)
        )
    naming = (
        "With several definitions, the first is written to OUTPUT and each other one to OUTPUT's stem + "
        "'.<definition>.json' (scores.json, scores.query_focus.json, ...), each with its own .meta.json sidecar "
        "naming its definition; no existing file is overwritten without --force. retrieval_reasoning and "
        "query_focus have no 0.1 cut-off: mask their top heads with heads=retrieval,k=K."
    )
    return "\n".join([*lines, "", textwrap.fill(naming, HELP_WIDTH)])


HELP = (
    "find a model's retrieval heads (Wu et al. 2024 copy-paste score, or other definitions) and write head-score files"
)
DESCRIPTION = textwrap.fill(
    "Greedy-decode needle-in-a-haystack prompts and score, for every layer and query head, how often its "
    "most-attended token is the needle token being generated (or, with --score, other definitions of a "
    "retrieval head, all from the same decode). Writes Retrieval_Head JSON (read by rh-masked "
    "head_scores=, HeadKV and DeCoRe) plus a .meta.json sidecar naming the definition. An interrupted run "
    "resumes from OUTPUT.checkpoint.jsonl when rerun with the same settings.",
    HELP_WIDTH,
)
EPILOG = _definitions_help()  # pre-formatted: the command prints it verbatim


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
        help="score file to write; further --score definitions go to OUTPUT's stem + .<definition>.json "
        "(default: <model name>.json in the current folder)",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite the score files and discard an interrupted run's checkpoint"
    )
    parser.add_argument(
        "--score",
        type=_definitions,
        default="set",
        metavar="DEFINITION[,DEFINITION...]",
        help=f"one or more of {', '.join(DEFINITIONS)}, comma-separated, all from one decode pass (default set; "
        "see below)",
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


def output_paths(output: Path, definitions: list[str]) -> dict[str, Path]:
    """The first definition's scores go to ``output``, each other's to ``<stem>.<definition>.json`` beside it."""
    first, *others = definitions
    return {first: output, **{name: output.with_name(f"{output.stem}.{name}.json") for name in others}}


def _claim_detection_outputs(args, identity: dict) -> tuple[dict[str, Path], Path]:
    """The score files and the checkpoint, refused before any work if a file exists or cannot be written."""
    from model_wrappers.files import OutputFolderError, writable_folder
    from model_wrappers.heads.scores import metadata_path

    output = args.output or _default_output(identity)
    outputs = output_paths(output, args.score)
    checkpoint = output.with_name(output.name + ".checkpoint.jsonl")
    if args.force:
        checkpoint.unlink(missing_ok=True)
    else:
        existing = [p for path in outputs.values() for p in (path, metadata_path(path)) if p.exists()]
        if existing:
            raise CommandError(
                f"{', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}; pass --force "
                "to overwrite, or choose another --output."
            )
    try:
        writable_folder(output.parent)
    except OutputFolderError as err:
        raise CommandError(str(err)) from None
    return outputs, checkpoint


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
        "definitions": [name for name in DEFINITIONS if name in args.score],  # all computed in this pass
    }


@command()
def main(args) -> int:
    import torch

    from model_wrappers.heads.scores import RETRIEVAL_THRESHOLD

    from .aggregate import write_scores
    from .detect import CheckpointMismatchError, detect
    from .prompts import build_samples, load_needles, use_chat_template
    from .source import load_geometry, load_model, model_identity, parse_model_args

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model_args = parse_model_args(args.model_args)
    identity = model_identity(model_args)
    outputs, checkpoint = _claim_detection_outputs(args, identity)
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
    try:
        results = detect(
            model,
            tokenizer,
            samples,
            settings=settings,
            definitions=settings["definitions"],
            checkpoint=checkpoint,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
        )
    except CheckpointMismatchError as err:
        raise CommandError(str(err)) from None
    runtime = time.perf_counter() - start
    for name, output in outputs.items():
        metadata = write_scores(
            output, results, definition=name, settings=settings, geometry=geometry, runtime_seconds=runtime
        )
        rate = metadata["acceptance"]
        strong = metadata["retrieval_heads"]
        cutoff = f"{strong} heads score >= {RETRIEVAL_THRESHOLD}" if strong is not None else "no cut-off: use k="
        print(
            f"{output} ({name}): {rate['accepted']}/{rate['samples']} samples accepted, "
            f"{len(metadata['scored_samples'])} scored; {cutoff}."
        )
    checkpoint.unlink(missing_ok=True)
    inspect = " ".join(map(str, outputs.values()))
    print(
        f"{len(outputs)} definition(s) from one decode pass in {runtime:.0f} s. Inspect with: rh-eval heads "
        + (f"--compare {inspect}" if len(outputs) > 1 else inspect)
    )
    return 0
