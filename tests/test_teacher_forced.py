"""gsm8k_cot_nll and gsm8k_direct_nll through the stock ``lm_eval`` command, checked against plain transformers;
rh-masked's token record checked against a one-forward reference of the decode phase."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from conftest import REPO_ROOT

from rh_tasks.gsm8k.solutions import gold_solution
from rh_tasks.shared.task_data import TASK_DATA

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TASKS = ("gsm8k_cot_nll", "gsm8k_direct_nll")
POSITIONS = 2048  # the 8-shot prompts take about 900 tokens of the embedded tokenizer


def long_tiny_model(model_type: str):
    """A tiny random model with the embedded model's vocabulary, long enough for the 8-shot prompts."""
    from conftest import tiny_model

    model = tiny_model(model_type)
    model.resize_token_embeddings(49152, mean_resizing=False)
    model.config.max_position_embeddings = POSITIONS
    return model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A tiny random GQA Llama (4 query heads, 2 KV heads) saved as a local checkpoint with the embedded tokenizer."""
    import shutil

    from model_wrappers.sources.gguf_cache import embedded_model_dir

    path = tmp_path_factory.mktemp("tiny-long-llama")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(embedded_model_dir() / name, path / name)
    long_tiny_model("llama").save_pretrained(path)
    return str(path)


def lm_eval(output: Path, model: str, model_args: str, *extra: str, limit: int = 2) -> tuple[dict, dict[str, list]]:
    """The stock console script, as a user runs it: its results file and samples by task."""
    command = [
        str(Path(sys.executable).parent / "lm_eval"),
        "--model", model,
        "--model_args", model_args,
        "--tasks", ",".join(TASKS),
        "--limit", str(limit),
        "--device", "cpu",
        "--log_samples",
        "--output_path", str(output),
        *extra,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=1800, cwd=REPO_ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(next(output.rglob("results_*.json")).read_text())
    samples = {
        task: [json.loads(line) for line in next(output.rglob(f"samples_{task}_*.jsonl")).read_text().splitlines()]
        for task in TASKS
    }
    return results, samples


def request(row: dict, index: int) -> tuple[str, str]:
    """A sample row's request as (context, continuation): saved rows name them, in-process rows list them."""
    arguments = row["arguments"]
    if isinstance(arguments, dict):
        return arguments[f"gen_args_{index}"]["arg_0"], arguments[f"gen_args_{index}"]["arg_1"]
    return tuple(arguments[index])


def plain_logprobs(model, tokenizer, context: str, continuation: str) -> tuple[list[int], torch.Tensor]:
    """Continuation tokens and their log-probabilities from one unmasked forward pass, split as lm-eval splits a
    request: the tokens of context + continuation beyond those of the context."""
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    continuation_ids = whole[len(context_ids) :]
    with torch.no_grad():  # every token but the last predicts the next one, in float32 as the model computes
        logits = model(torch.tensor([whole[:-1]])).logits[0, -len(continuation_ids) :]
    logprobs = torch.log_softmax(logits, dim=-1).double()
    return continuation_ids, logprobs.gather(1, torch.tensor(continuation_ids)[:, None]).squeeze(1)


def load(path: str):
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, transformers.AutoTokenizer.from_pretrained(path)


def check_against_plain_transformers(samples: dict[str, list], model, tokenizer) -> None:
    """Every logged log-likelihood, and the metrics made of them, from an independent forward pass."""
    test = TASK_DATA.read_jsonl("gsm8k/test.jsonl.gz")
    for task in TASKS:
        for row in samples[task]:
            (whole_context, whole), (before_context, before) = request(row, 0), request(row, 1)
            assert whole_context == before_context and whole.startswith(before)
            assert whole.endswith(f"The answer is {row['target']}.")
            if task == "gsm8k_cot_nll":
                assert whole.strip() == gold_solution(test[row["doc_id"]]["answer"])
                assert "<<" not in whole and "####" not in whole
            else:
                assert whole.strip() == f"The answer is {row['target']}."
            ids, logprobs = plain_logprobs(model, tokenizer, whole_context, whole)
            _, before_logprobs = plain_logprobs(model, tokenizer, whole_context, before)
            logged = float(row["resps"][0][0][0]), float(row["resps"][1][0][0])
            assert logged[0] == pytest.approx(float(logprobs.sum()), abs=1e-4)
            assert logged[1] == pytest.approx(float(before_logprobs.sum()), abs=1e-4)
            assert row["nll_token"] == pytest.approx(-float(logprobs.sum()) / len(ids), abs=1e-5)
            assert row["nll_byte"] == pytest.approx(-float(logprobs.sum()) / len(whole.encode()), abs=1e-5)
            assert row["nll_answer"] == pytest.approx(float(before_logprobs.sum() - logprobs.sum()), abs=1e-4)
            assert row["nll_answer"] == pytest.approx(-float(logprobs[len(before_logprobs) :].sum()), abs=1e-4)


def test_stock_hf_loglikelihoods_equal_plain_transformers(tiny_checkpoint, tmp_path):
    results, samples = lm_eval(tmp_path, "hf", f"pretrained={tiny_checkpoint},dtype=float32")
    assert "token_logprobs" not in results["config"]  # a stock backend records sums only
    assert results["higher_is_better"]["gsm8k_cot_nll"] == {"nll_token": False, "nll_byte": False, "nll_answer": False}
    assert [row["doc_id"] for row in samples["gsm8k_cot_nll"]] == [row["doc_id"] for row in samples["gsm8k_direct_nll"]]
    check_against_plain_transformers(samples, *load(tiny_checkpoint))


def test_token_record_sums_to_the_samples_and_spells_the_continuation(tiny_checkpoint, tmp_path):
    results, samples = lm_eval(tmp_path, "rh-masked", f"pretrained={tiny_checkpoint},heads=none,dtype=float32")
    check_against_plain_transformers(samples, *load(tiny_checkpoint))
    record = results["config"]["token_logprobs"]
    assert sorted(record) == list(TASKS)
    for task in TASKS:
        for row in samples[task]:
            entries = record[task][str(row["doc_id"])]
            assert [e["idx"] for e in entries] == [0, 1]
            for i, entry in enumerate(entries):
                context, continuation = request(row, i)
                assert entry["context_sha256"] == row["prompt_hash"]
                assert sum(entry["logprobs"]) == pytest.approx(float(row["resps"][i][0][0]), abs=1e-4)
                assert continuation.endswith(entry["text"]) and len(entry["ends"]) == len(entry["tokens"])


def decode_reference(model, heads: list[tuple[int, int]], context: list[int], continuation: list[int]) -> torch.Tensor:
    """The decode phase written out: one unmasked pass over the context but its last token, then one pass over
    that token and the whole continuation (but its last token) with each masked head's query zeroed, which makes
    its attention uniform over what it may see (the paper's masking)."""
    from model_wrappers.masking.architectures import cache_keyword

    cache = transformers.DynamicCache(config=model.config)
    cached = {cache_keyword(model): cache, "use_cache": True}  # the keyword this transformers release takes
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    head_dim = getattr(model.config, "head_dim", None) or head_dim
    with torch.no_grad():
        model(torch.tensor([context[:-1]]), **cached)
        handles = []
        for layer in sorted({l for l, _ in heads}):
            rows = [h for l, h in heads if l == layer]

            def zero_queries(module, args, output, rows=rows):
                output = output.clone()
                for h in rows:
                    output[..., h * head_dim : (h + 1) * head_dim] = 0
                return output

            handles.append(model.model.layers[layer].self_attn.q_proj.register_forward_hook(zero_queries))
        try:
            tail = torch.tensor([context[-1:] + continuation[:-1]])
            logits = model(tail, **cached).logits[0]
        finally:
            for handle in handles:
                handle.remove()
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return logprobs.gather(1, torch.tensor(continuation)[:, None]).squeeze(1)


def check_record_equals_reference(pretrained, heads: list[tuple[int, int]], **model_args) -> None:
    import lm_eval as harness

    from model_wrappers.lm.rh_masked import RHMaskedLM

    lm = RHMaskedLM(pretrained=pretrained, heads=[list(h) for h in heads], phase="decode", device="cpu", **model_args)
    out = harness.simple_evaluate(model=lm, tasks=list(TASKS), limit=2, log_samples=True)
    record = out["config"]["token_logprobs"]
    for task in TASKS:
        for row in out["samples"][task]:
            for i, entry in enumerate(record[task][str(row["doc_id"])]):
                context, continuation = request(row, i)
                context_ids = lm.tok_encode(context)
                assert entry["tokens"] == lm.tok_encode(context + continuation)[len(context_ids) :]
                reference = decode_reference(lm.model, heads, context_ids, entry["tokens"])
                torch.testing.assert_close(torch.tensor(entry["logprobs"]), reference, atol=1e-4, rtol=0)
    unmasked = plain_logprobs(lm.model, lm.tokenizer, context, continuation)[1]
    assert (unmasked.float() - reference).abs().max() > 1e-2  # the masked heads changed the scores


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_decode_record_equals_one_forward_reference_on_tiny_models(model_type, tiny_checkpoint):
    """A GQA Llama (4 query heads, 2 KV heads) and Qwen2 (GQA, query biases), with the embedded tokenizer."""
    check_record_equals_reference(long_tiny_model(model_type), [(0, 1), (1, 3)], tokenizer=tiny_checkpoint)


@pytest.mark.slow
def test_decode_record_equals_one_forward_reference_on_the_embedded_model():
    from model_wrappers.sources.gguf_cache import embedded_model_dir

    check_record_equals_reference(str(embedded_model_dir()), [(17, 3), (18, 6), (23, 2)])


@pytest.mark.slow
def test_stock_hf_on_the_embedded_model_equals_plain_transformers(tmp_path):
    from model_wrappers.sources.gguf_cache import embedded_model_dir

    path = str(embedded_model_dir())
    _, samples = lm_eval(tmp_path, "hf", f"pretrained={path},dtype=float32", limit=2)
    check_against_plain_transformers(samples, *load(path))


@pytest.mark.parametrize(
    ("forced", "generated"), [("gsm8k_cot_nll", "gsm8k_cot"), ("gsm8k_direct_nll", "gsm8k_direct")]
)
@pytest.mark.parametrize("chat", [False, True])
def test_prompts_are_those_of_the_accuracy_tasks(forced, generated, chat):
    """The teacher-forced tasks score their continuations after exactly the prompt the model would answer."""
    from lm_eval.tasks import TaskManager

    from model_wrappers.sources.gguf_cache import embedded_model_dir

    manager = TaskManager()
    tasks = manager.load_task_or_group([forced, generated])
    template = None
    if chat:
        tokenizer = transformers.AutoTokenizer.from_pretrained(embedded_model_dir())

        def template(history, add_generation_prompt=True):
            return tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=add_generation_prompt)

    contexts = {}
    for name in (forced, generated):
        tasks[name].build_all_requests(limit=3, rank=0, world_size=1, apply_chat_template=chat, chat_template=template)
        contexts[name] = {i.doc_id: i.args[0] for i in tasks[name].instances}
    assert contexts[forced] == contexts[generated] and len(contexts[forced]) == 3
    continuations = [i.args[1] for i in tasks[forced].instances if i.idx == 0]
    assert all(c.startswith(" ") != chat and c.strip()[0].isalpha() for c in continuations)  # no doubled space
