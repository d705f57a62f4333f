"""``rh-eval heads`` on the field's formats: with and without a model, and refusals without a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rh_tasks.plugin.command import build_parser, main

DATA = Path(__file__).parent / "data" / "head_score_formats"
QR_1B = DATA / "Llama-3.2-1B-Instruct_qr_head_NQ.yaml"
DUO = DATA / "duo-attention_Meta-Llama-3.1-8B-Instruct_full_attention_heads.tsv"


def test_heads_help_shows_a_plain_percent_sign(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["heads", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "under 5%)" in text and "%%" not in text
    assert "QRHead" in text and "vLLM-Hook" in text and "RLKV" in text


def test_heads_summarises_kv_gates_without_a_model(capsys):
    assert main(["heads", str(DUO), "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "32 layers x 8 KV heads, DuoAttention full_attention_heads.tsv or RLKV adapter_weights.tsv" in text
    assert "pass --model_args to expand the gates to the query heads" in text
    assert main(["heads", str(DATA / "synthetic_rlkv_adapter_weights.tsv"), "--top", "1"]) == 0
    top = capsys.readouterr().out.split("Top 1 heads:")[1].splitlines()[2]
    assert top.split() == ["1", "2", "0", "1.008"]  # the overshoot above 1 is kept: it still ranks first


def test_heads_shows_a_ranked_list_in_its_order_without_scores(capsys):
    assert main(["heads", str(QR_1B), "--top", "2"]) == 0
    text = capsys.readouterr().out
    assert "QRHead head set" in text and "A ranked list of 16 heads without scores" in text
    assert text.split("First 2 heads:")[1].splitlines()[2].split() == ["1", "8", "21"]
    assert "mean" not in text


def test_heads_will_not_export_gates_from_a_list_without_scores(tmp_path, caplog):
    assert main(["heads", str(QR_1B), "--export-duo", str(tmp_path / "gates.tsv")]) == 2
    assert "ranked list without scores" in caplog.text
    assert not (tmp_path / "gates.tsv").exists()


def test_heads_compare_pairs_lists_by_head_without_rank_correlation(capsys, caplog):
    qrhead_8b = DATA / "Llama-3.1-8B-Instruct_qr_head_NQ.yaml"
    assert main(["heads", "--compare", str(qrhead_8b), str(qrhead_8b)]) == 0
    text = capsys.readouterr().out
    assert "K=10   Jaccard 1.00  (10 shared)" in text and "(16 shared, 0 only in A, 0 only in B)" in text
    assert "A and B rank only the heads they list" in text and "rho" not in text
    assert main(["heads", "--compare", str(DUO), str(qrhead_8b)]) == 2
    assert "pass --model_args to expand the gates" in caplog.text


def test_unknown_format_exits_non_zero_with_the_accepted_formats_and_no_traceback(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my favourite heads: 14-22 and 13-16\n")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "rh-eval"), "heads", str(notes)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Accepted formats:" in result.stderr and "QRHead head set" in result.stderr

    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "rh-eval"), "run", "--model", "rh-masked",
            "--model_args", f"heads=retrieval,k=3,head_scores={notes}", "--tasks", "niah", "--device", "cpu",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Accepted formats:" in result.stderr


@pytest.mark.slow
def test_stock_lm_eval_masks_the_first_k_heads_of_a_qrhead_yaml(tmp_path):
    head_set = tmp_path / "SmolLM2-135M-Instruct_qr_head.yaml"
    head_set.write_text(
        '# Default configuration\n\nattn_head_set: "18-6,17-3,23-2,18-7,20-1" # top5\n'
        'model_base_class: "SmolLM2-135M-Instruct"'
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "lm_eval"),
            "--model", "rh-masked",
            "--model_args", f"heads=retrieval,k=3,head_scores={head_set}",
            "--tasks", "niah",
            "--limit", "1",
            "--device", "cpu",
            "--metadata", '{"lengths": [512], "depths": [50]}',
            "--output_path", str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    masking = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["config"]["rh_masking"]
    assert masking["heads"] == [[17, 3], [18, 6], [23, 2]]
    assert masking["heads_kind"] == "retrieval" and masking["k"] == 3 and masking["num_masked"] == 3
    assert masking["head_scores"] == str(head_set) and masking["audit"]["clean"]
