"""Long-context prompts per second: contexts spliced from cached tokens against tokenizing every context whole.

Both paths build the same prompts (tests/test_prompt_identity.py checks it) and run side by side in one process.
The whole-text path, the reference in tests/whole_text.py, tokenizes the haystack (repeated as needed) with
offsets for every prompt and counts the finished context again; the spliced path tokenizes each haystack or passage
once per tokenizer and then only short windows around the joins. Rates are warm: the haystack is cached before
timing (the one-off cost is printed), and every round uses fresh depths so no join is served from the cache.
Goals on 2 CPU cores: >= 1,000 prompts/s up to 4K tokens and >= 100 prompts/s at 32K.

The last section builds the paper's NIAH grid (40 lengths up to 128K tokens x 10 depths, Wu et al. 2024) with
the spliced path, and estimates the whole-text path's time from one depth per length.

    python benchmarks/bench_prompts.py [--lengths 1024,4096,32768] [--seconds 3] [--tokenizer PATH]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from unittest import mock

from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from whole_text import count, reference_insert_needle, reference_passages  # noqa: E402

from model_wrappers.sources.gguf_cache import embedded_model_dir
from rh_tasks.extractive_qa import task as extractive_qa
from rh_tasks.niah import task as niah
from rh_tasks.niah.haystack import HAYSTACKS, NeedleContext
from rh_tasks.shared import packaged_data


def whole_text_insert_needle(tokenizer, haystack: str, needle: str, context_tokens: int, depth: float):
    return NeedleContext(*reference_insert_needle(tokenizer, haystack, needle, context_tokens, depth))


def niah_prompts(tokenizer, lengths, depths, whole_text: bool) -> int:
    options = niah.DEFAULTS | {"lengths": lengths, "depths": depths}
    if whole_text:
        with mock.patch.object(niah, "insert_needle", whole_text_insert_needle):
            return len(niah.build_grid(tokenizer, **options))
    return len(niah.build_grid(tokenizer, **options))


def qa_prompts(tokenizer, lengths, depths, whole_text: bool) -> int:
    if not whole_text:
        options = extractive_qa.DEFAULTS | {"lengths": lengths, "depths": depths, "questions_per_cell": 2}
        return len(extractive_qa.build_grid(tokenizer, **options))
    reserve = count(tokenizer, extractive_qa.PROMPT.format(context="", question=""))
    built = 0
    for question in extractive_qa.choose_questions(2, extractive_qa.DEFAULTS["question_seed"]):
        distractors = extractive_qa._distractors(question, extractive_qa.DEFAULTS["question_seed"])
        fixed = reserve + count(tokenizer, question.question)
        for length in lengths:
            for depth in depths:
                context = reference_passages(tokenizer, question.paragraph.text, distractors, length - fixed, depth)
                count(tokenizer, extractive_qa.PROMPT.format(context=context["text"], question=question.question))
                built += 1
    return built


def rate(build, tokenizer, length: int, whole_text: bool, seconds: float, rng: random.Random) -> float:
    """Prompts per second over rounds of fresh random depths, for at least ``seconds``."""
    prompts, start = 0, time.perf_counter()
    while True:
        prompts += build(tokenizer, [length], [round(rng.uniform(0, 100), 4) for _ in range(3)], whole_text)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return prompts / elapsed


def paper_grid(tokenizer) -> None:
    lengths = [round(1000 + i * (128_000 - 1000) / 39) for i in range(40)]
    depths = [round(i * 100 / 9, 2) for i in range(10)]
    options = niah.DEFAULTS | {"lengths": lengths, "depths": depths, "needles": ["sf_sandwich"]}
    start = time.perf_counter()
    niah.build_grid(tokenizer, **options | {"lengths": [128_000], "depths": [50]})  # caches the haystack
    once = time.perf_counter() - start
    start = time.perf_counter()
    docs = niah.build_grid(tokenizer, **options)
    spliced = time.perf_counter() - start
    start = time.perf_counter()
    with mock.patch.object(niah, "insert_needle", whole_text_insert_needle):
        niah.build_grid(tokenizer, **options | {"depths": [50]})
    whole = (time.perf_counter() - start) * len(depths)
    print(
        f"\npaper grid: {len(docs)} prompts, {lengths[0]}-{lengths[-1]} tokens x {len(depths)} depths, one needle\n"
        f"  spliced     {spliced:8.2f} s ({len(docs) / spliced:,.0f} prompts/s), after {once:.2f} s to tokenize "
        "the haystack repeated to 128K tokens once\n"
        f"  whole-text  {whole:8.1f} s (estimated: one depth per length, x {len(depths)})\n"
        f"  ratio       {whole / spliced:8.0f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", help="tokenizer folder or hub id (default: the embedded model's)")
    parser.add_argument("--lengths", default="1024,4096,32768", help="prompt lengths in tokens")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timing per path and length")
    parser.add_argument("--no-paper-grid", action="store_true", help="skip the 400-prompt grid up to 128K tokens")
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or str(embedded_model_dir()))
    lengths = [int(n) for n in args.lengths.split(",")]
    haystack = packaged_data.TASK_DATA.read_text(HAYSTACKS["time_machine"])
    start = time.perf_counter()
    niah.build_grid(tokenizer, **niah.DEFAULTS | {"lengths": [max(lengths)], "depths": [50], "needles": ["owl_stamp"]})
    print(
        f"haystack {len(haystack):,} characters; tokenized once for {max(lengths):,}-token prompts in "
        f"{time.perf_counter() - start:.2f} s (cached per tokenizer)"
    )
    rng = random.Random(0)
    for name, build in (("niah", niah_prompts), ("extractive_qa", qa_prompts)):
        build(tokenizer, lengths, [50], whole_text=False)  # warm the caches of every length
        print(f"\n{name}: prompts per second (warm)\n{'tokens':>8} {'whole-text':>11} {'spliced':>10} {'ratio':>7}")
        for length in lengths:
            seconds = args.seconds
            whole = rate(build, tokenizer, length, True, seconds, rng)
            spliced = rate(build, tokenizer, length, False, seconds, rng)
            goal = 1000 if length <= 4096 else 100
            verdict = "meets" if spliced >= goal else "misses"
            print(f"{length:>8} {whole:>11,.1f} {spliced:>10,.0f} {spliced / whole:>6.0f}x  {verdict} >= {goal:,}/s")
    if not args.no_paper_grid:
        paper_grid(tokenizer)


if __name__ == "__main__":
    main()
