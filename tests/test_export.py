"""rh-eval export: the written checkpoint's plain forward equals rh-masked's phase=all forward, at little disk cost."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import torch
import transformers
from conftest import REPO_ROOT, tiny_model

from model_wrappers import head_output_means, mask_heads
from model_wrappers.export.export import ExportVerificationError, MaskedSource, export_masked
from model_wrappers.export.record import RECORD_NAME, ExportRecordError, read_export_record
from model_wrappers.files import new_file_mode
from model_wrappers.masking.canary import PROBE_TEXT
from model_wrappers.masking.modes import as_mode
from model_wrappers.masking.weight_edits import ExportRefusedError
from rh_tasks.plugin.command import main

HEADS = ((0, 1), (1, 0), (1, 3))
MEAN_EXPORTABLE = {"gpt2"}  # the only tiny architecture whose output projection has a bias
BIN = os.path.dirname(sys.executable)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _source(model, folder, mode, probe, **kwargs) -> MaskedSource:
    means = head_output_means(model, probe) if mode == "mean" else None
    bound = as_mode(mode, means)
    return MaskedSource(model, folder, HEADS, bound, probe, {"mode": mode, "heads": [list(h) for h in HEADS]})


def _saved(tmp_path, model_type, attn, **save):
    model = tiny_model(model_type, attn)
    folder = tmp_path / "source"
    model.save_pretrained(folder, **save)
    return model, folder


def _hooked(source: MaskedSource, ids):
    with torch.no_grad(), mask_heads(source.model, HEADS, mode=source.mode, phase="all"):
        return source.model(ids).logits


def _exported(folder, probe, attn):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=attn)
    with torch.no_grad():
        return model.eval()(probe).logits


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("mode", ["uniform", "zero", "mean"])
def test_exported_logits_equal_the_hooked_model(model_type, attn, mode, input_ids, tmp_path):
    model, folder = _saved(tmp_path, model_type, attn)
    source = _source(model, folder, mode, input_ids[:1])
    if mode == "mean" and model_type not in MEAN_EXPORTABLE:
        with pytest.raises(ExportRefusedError, match=f"mode=mean cannot be exported for model_type {model_type}"):
            export_masked(source, tmp_path / "out")
        assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
        return
    record = export_masked(source, tmp_path / "out")
    expected = _hooked(source, input_ids)
    assert (expected - model(input_ids).logits).abs().max() > 1e-3, "masking these heads should change the logits"
    tolerance = 1e-4 if mode == "mean" else 1e-5
    torch.testing.assert_close(_exported(tmp_path / "out", input_ids, attn), expected, atol=tolerance, rtol=0)
    assert record["export"]["max_abs_logit_diff"] <= tolerance == record["export"]["tolerance"]
    assert read_export_record(tmp_path / "out") == json.loads((tmp_path / "out" / RECORD_NAME).read_text())


def test_llama_with_an_attention_bias_exports_mean(input_ids, tmp_path):
    model = tiny_model("llama")
    model.config.attention_bias = True
    biased = transformers.AutoModelForCausalLM.from_config(model.config, attn_implementation="sdpa").eval()
    biased.load_state_dict(model.state_dict(), strict=False)
    biased.save_pretrained(tmp_path / "source")
    source = _source(biased, tmp_path / "source", "mean", input_ids[:1])
    export_masked(source, tmp_path / "out")
    expected = _hooked(source, input_ids)
    torch.testing.assert_close(_exported(tmp_path / "out", input_ids, "sdpa"), expected, atol=1e-4, rtol=0)


def test_only_edited_shards_are_rewritten_and_the_rest_hard_linked(input_ids, tmp_path):
    model, folder = _saved(tmp_path, "llama", "sdpa", max_shard_size="60KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    shards = sorted(set(index.values()))
    source = _source(model, folder, "zero", input_ids[:1])
    record = export_masked(source, tmp_path / "out")["export"]
    out = tmp_path / "out"
    edited = {index[name] for name in record["edited_tensors"]}
    assert len(shards) > len(edited) >= 1
    assert sorted(record["rewritten_files"]) == sorted(edited)
    assert sorted(record["linked_files"]) == sorted(set(shards) - edited)
    for shard in shards:
        same = os.stat(out / shard).st_ino == os.stat(folder / shard).st_ino
        assert same == (shard not in edited) and (os.stat(out / shard).st_nlink == 2) == same
    assert (
        record["bytes_written"]
        == sum(os.stat(out / name).st_size for name in os.listdir(out) if name not in record["linked_files"])
        - os.stat(out / RECORD_NAME).st_size
    )
    assert sorted(n for n in os.listdir(out) if n.endswith(".safetensors")) == shards  # no stray shard to glob
    torch.testing.assert_close(_exported(out, input_ids, "sdpa"), _hooked(source, input_ids), atol=1e-5, rtol=0)
    total = sum(os.stat(folder / shard).st_size for shard in shards)
    print(
        f"sharded: {record['bytes_written']} bytes written, {len(record['linked_files'])}/{len(shards)} shards "
        f"linked, {total} bytes of weights"
    )


def test_a_failed_verification_removes_the_folder(input_ids, tmp_path, monkeypatch):
    model, folder = _saved(tmp_path, "llama", "sdpa")
    monkeypatch.setattr("model_wrappers.export.export.verify", lambda *args: 1.0)
    with pytest.raises(ExportVerificationError, match="differ from rh-masked's by 1"):
        export_masked(_source(model, folder, "uniform", input_ids[:1]), tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["source"]


def test_an_existing_folder_is_never_overwritten(input_ids, tmp_path):
    model, folder = _saved(tmp_path, "llama", "sdpa")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ExportRefusedError, match="already exists and is not empty"):
        export_masked(_source(model, folder, "uniform", input_ids[:1]), tmp_path / "out")
    assert os.listdir(tmp_path / "out") == ["keep.txt"]


def test_exported_files_are_readable_by_a_server_whatever_the_source_allows(input_ids, tmp_path):
    """A private source file (a cache written through mkstemp) must not make the export private too."""
    model, folder = _saved(tmp_path, "llama", "sdpa")
    (folder / "model.safetensors").chmod(0o600)
    export_masked(_source(model, folder, "uniform", input_ids[:1]), tmp_path / "out")
    modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "out").iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {new_file_mode()}, modes
    assert (tmp_path / "out").stat().st_mode & 0o777 == new_file_mode(folder=True)


@pytest.mark.slow
def test_the_embedded_model_cache_is_readable_by_others(tmp_path, monkeypatch):
    from model_wrappers.sources.gguf_cache import embedded_model_dir

    monkeypatch.setenv("RH_EVAL_CACHE", str(tmp_path))
    folder = embedded_model_dir()
    assert folder.stat().st_mode & 0o777 == new_file_mode(folder=True)
    assert {path.stat().st_mode & 0o777 for path in folder.iterdir()} == {new_file_mode()}


def test_a_marked_folder_without_its_record_is_refused(input_ids, tmp_path):
    model, folder = _saved(tmp_path, "llama", "sdpa")
    export_masked(_source(model, folder, "uniform", input_ids[:1]), tmp_path / "out")
    assert read_export_record(folder) is None
    (tmp_path / "out" / RECORD_NAME).unlink()
    with pytest.raises(ExportRecordError, match="cannot be read"):
        read_export_record(tmp_path / "out")


@pytest.mark.parametrize(
    "model_args, message",
    [
        ("heads=[[0,1]],phase=decode", "phase=decode cannot be exported"),
        ("heads=[[0,1]],mode=mean", "mode=mean cannot be exported for model_type llama"),
        ("heads=[[9,0]]", "Head (9, 0) is out of range"),
        ("heads=none", "No heads to mask"),
    ],
)
def test_refusals_are_one_line_exit_2_and_write_nothing(tiny_checkpoint, tmp_path, caplog, model_args, message):
    out = str(tmp_path / "o")
    code = main(["export", "--model_args", f"pretrained={tiny_checkpoint},{model_args}", "--output", out])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert code == 2 and len(errors) == 1 and message in errors[0] and "\n" not in errors[0]
    assert os.listdir(tmp_path) == []


def test_the_command_exports_what_rh_masked_resolves(tiny_checkpoint, tmp_path, capsys):
    from model_wrappers.lm.rh_masked import RHMaskedLM

    args = f"pretrained={tiny_checkpoint},heads=[[0,1],[1,2]],unit=kv_group,mode=zero"
    assert main(["export", "--model_args", args, "--output", str(tmp_path / "o")]) == 0
    assert "bytes written" in capsys.readouterr().out
    lm = RHMaskedLM(pretrained=tiny_checkpoint, heads=[[0, 1], [1, 2]], unit="kv_group", mode="zero", device="cpu")
    record = read_export_record(tmp_path / "o")
    audit = record["rh_masking"].pop("audit")
    resolved = json.loads(json.dumps(lm.get_model_info()["rh_masking"]))
    assert record["rh_masking"] == {key: value for key, value in resolved.items() if key != "audit"}
    # what the export verified: one masked probe pass, the layers it masked, the written weights' logit difference
    probe = len(lm.tokenizer(PROBE_TEXT)["input_ids"])
    assert (
        audit["clean"] and audit["problems"] == [] and audit["forward_passes"] == 1 and audit["probe_tokens"] == probe
    )
    assert {layer: counts["masked_positions"] for layer, counts in audit["layers"].items()} == {"0": probe, "1": probe}
    assert audit["canary_logit_change"] > 0 and audit["max_abs_logit_diff"] <= audit["tolerance"] == 1e-5
    assert record["rh_masking"]["heads"] == [[0, 0], [0, 1], [1, 2], [1, 3]]  # the KV groups' query heads
    assert len(record["export"]["source_sha256"]) == 64 and record["export"]["rh_eval_version"]


@pytest.mark.slow
def test_stock_lm_eval_on_an_export_gives_rh_masked_samples_and_reports_as_masked(tmp_path):
    def run(*args):
        done = subprocess.run(args, capture_output=True, text=True, env=ENV, cwd=REPO_ROOT, timeout=1800)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    export = tmp_path / "export"
    run(f"{BIN}/rh-eval", "export", "--model_args", "heads=retrieval,k=5", "--output", str(export))
    common = ("--tasks", "niah", "--limit", "2", "--device", "cpu", "--apply_chat_template", "--log_samples")
    run(f"{BIN}/lm_eval", "--model", "hf", "--model_args", f"pretrained={export}", *common,
        "--output_path", str(tmp_path / "runs" / "stock"))  # fmt: skip
    run(f"{BIN}/lm_eval", "--model", "rh-masked", "--model_args", "heads=retrieval,k=5,phase=all", *common,
        "--output_path", str(tmp_path / "runs" / "masked"))  # fmt: skip
    samples = {
        kind: [json.loads(line) for line in next((tmp_path / "runs" / kind).rglob("samples_niah_*")).open()]
        for kind in ("stock", "masked")
    }
    for stock, masked in zip(samples["stock"], samples["masked"], strict=True):
        assert (stock["doc_id"], stock["prompt_hash"]) == (masked["doc_id"], masked["prompt_hash"])
        assert stock["resps"] == masked["resps"] and stock["filtered_resps"] == masked["filtered_resps"]

    from rh_tasks.report.runs import load_runs

    runs = load_runs([tmp_path / "runs"])
    assert {run.condition.label for run in runs} == {"retrieval@5"}
    assert {run.model for run in runs} == {"SmolLM2-135M-Instruct"}
    assert all(run.audit.clean for run in runs)


def _exported_run(tmp_path, input_ids) -> tuple:
    from report_runs import mc_rows, write_run

    model, folder = _saved(tmp_path, "llama", "sdpa")
    masking = {"heads_kind": "retrieval", "k": 3, "num_masked": 3, "heads": [list(h) for h in HEADS]}
    masking |= {"mode": "zero", "phase": "all", "model": "tiny-llama", "audit": {"canary_logit_change": 0.5}}
    source = _source(model, folder, "zero", input_ids[:1])
    export_masked(dataclasses.replace(source, rh_masking=masking), tmp_path / "out")
    runs = tmp_path / "runs"
    after = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%S.%f")  # the run started after the export
    write_run(runs / "stock", {"mmlu_x": mc_rows([1, 0, 1], "x")}, model=str(tmp_path / "out"), date=after)
    return runs


def test_a_stock_run_on_an_export_is_its_masked_condition(input_ids, tmp_path):
    from rh_tasks.report.runs import load_runs, refuse_untrusted

    (run,) = load_runs([_exported_run(tmp_path, input_ids)])
    assert run.condition.label == "retrieval@3 [zero]" and run.model == "tiny-llama"
    refuse_untrusted([run])  # no hook ran: the export's verification is its audit


def test_a_stock_run_on_an_export_without_its_record_is_refused(input_ids, tmp_path):
    from rh_tasks.report.runs import ReportInputError, load_runs

    runs = _exported_run(tmp_path, input_ids)
    (tmp_path / "out" / RECORD_NAME).write_text("{")
    with pytest.raises(ReportInputError, match="the run evaluated .*out, but .* cannot be read"):
        load_runs([runs])


def test_a_stock_run_on_a_missing_folder_is_refused_not_read_as_unmasked(input_ids, tmp_path):
    from rh_tasks.report.runs import ReportInputError, load_runs

    runs = _exported_run(tmp_path, input_ids)
    (tmp_path / "out").rename(tmp_path / "moved")
    with pytest.raises(ReportInputError, match=f"evaluated {tmp_path / 'out'}, which is not a folder here"):
        load_runs([runs])


def test_a_stock_run_on_a_folder_exported_again_after_it_is_refused(input_ids, tmp_path):
    from report_runs import mc_rows, write_run

    from rh_tasks.report.runs import ReportInputError, load_runs

    _exported_run(tmp_path, input_ids)
    earlier = tmp_path / "earlier"  # a run from before the folder's current weights were written
    write_run(earlier, {"mmlu_x": mc_rows([1, 0, 1], "x")}, model=str(tmp_path / "out"))
    with pytest.raises(ReportInputError, match=r"out was exported at .* after this run started \(2026-01-01 10:00"):
        load_runs([earlier])


def test_a_stock_run_on_a_hub_id_is_the_unmasked_model(tmp_path):
    from report_runs import mc_rows, write_run

    from rh_tasks.report.runs import load_runs

    write_run(tmp_path / "hub", {"mmlu_x": mc_rows([1, 0, 1], "x")}, model="HuggingFaceTB/SmolLM2-135M-Instruct")
    (run,) = load_runs([tmp_path / "hub"])
    assert run.condition.label == "none" and run.model == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_a_stock_run_on_an_unverified_export_is_not_trusted(input_ids, tmp_path):
    from rh_tasks.report.runs import ReportInputError, load_runs, refuse_untrusted

    runs = _exported_run(tmp_path, input_ids)
    record = json.loads((tmp_path / "out" / RECORD_NAME).read_text())
    record["export"]["max_abs_logit_diff"] = 1.0
    (tmp_path / "out" / RECORD_NAME).write_text(json.dumps(record))
    with pytest.raises(ReportInputError, match="not verified within its tolerance"):
        refuse_untrusted(load_runs([runs]))
