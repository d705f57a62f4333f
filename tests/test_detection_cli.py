"""``rh-eval detect`` and ``rh-eval heads`` as a user runs them, and the packaged scores of the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_wrappers.heads.load import load_head_scores
from model_wrappers.heads.scores import metadata_path, write_retrieval_head_json
from model_wrappers.masking.architectures import HeadGeometry
from rh_tasks.plugin.command import build_parser, main

SHARED_LLAMA = (
    Path(__file__).parents[1].parent / "shared" / "data" / "head_scores" / "retrieval_head" / "llama-2-7b-80k.json"
)
SMOLLM2 = HeadGeometry(num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64)


@pytest.mark.parametrize("command", ["detect", "heads"])
def test_help_explains_every_flag(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    flags = ["--model_args", "--lengths", "--depths", "--needles", "--output", "--force", "--score", "--device"]
    for flag in flags if command == "detect" else ["--model_args", "--top", "--threshold", "--export-duo", "--compare"]:
        assert flag in text


def _scores_file(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    per_sample = rng.uniform(0, 0.02, size=(4, 30, 9))
    per_sample[:, 18, 6] = 0.9  # KV group 2 of layer 18 (query heads 6-8)
    per_sample[:, 18, 7] = 0.4
    per_sample[:, 23, 2] = 0.5
    path = tmp_path / "scores.json"
    meta = {
        "num_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "score": {"definition": "set"},
    }
    write_retrieval_head_json(path, per_sample, meta)
    return path


def test_heads_prints_ranking_sparsity_layers_and_kv_groups_and_exports_duo(tmp_path, capsys):
    path = _scores_file(tmp_path)
    duo = tmp_path / "full_attention_heads.tsv"
    assert main(["heads", str(path), "--top", "3", "--export-duo", str(duo)]) == 0
    text = capsys.readouterr().out
    assert "30 layers x 9 query heads (3 KV heads), 4 samples per head, set score" in text
    assert "Retrieval heads (mean >= 0.1): 3 of 270 (1.1%" in text
    top = text.split("Top 3 heads:")[1].splitlines()[2]
    assert top.split() == ["1", "18", "6", "2", "0.900"]
    assert "2 of 90 groups hold a retrieval head" in text
    assert "     18   2    6-8       0.900    2  0.90 0.40" in text
    gates = load_head_scores(duo, SMOLLM2).kv_gates(SMOLLM2)
    assert gates.shape == (30, 3) and gates[18, 2] == pytest.approx(0.9) and gates[23, 0] == pytest.approx(0.5)


def test_heads_compare_gives_top_k_jaccard_and_spearman(tmp_path, capsys):
    a = _scores_file(tmp_path)
    per_sample = np.asarray(json.loads(a.read_text())["18-6"])  # keep A's ranking but swap two top heads' places
    b_scores = np.zeros((4, 30, 9))
    b_scores[:, 18, 6] = per_sample
    b_scores[:, 23, 2] = 0.95
    b_scores[:, 5, 0] = 0.3  # a head A ranks low
    b = tmp_path / "b" / "scores.json"
    b.parent.mkdir()
    write_retrieval_head_json(b, b_scores, json.loads(metadata_path(a).read_text()))

    assert main(["heads", "--compare", str(a), str(b), "--top", "3"]) == 0
    text = capsys.readouterr().out
    # A's top 3: (18,6), (23,2), (18,7); B's: (23,2), (18,6), (5,0): 2 shared of 4.
    assert "K=3    Jaccard 0.50  (2 shared)" in text
    assert "K=5" not in text  # --top caps the K compared
    assert "heads >= 0.1: Jaccard 0.50 (2 shared, 1 only in A, 1 only in B)" in text
    rho = float(text.split("rho = ")[1].split()[0])
    assert 0 < rho < 1

    assert main(["heads", "--compare", str(a), str(a)]) == 0
    same = capsys.readouterr().out
    assert "K=20   Jaccard 1.00  (20 shared)" in same and "rho = 1.000" in same


def test_heads_compare_applies_no_cut_off_to_a_scale_that_has_none(tmp_path, capsys):
    """A query-focus file's sidecar records no retrieval-head threshold: 0.1 on its scale would count nothing."""
    focus = tmp_path / "focus.json"
    per_sample = np.random.default_rng(1).uniform(-0.05, 0.05, size=(3, 30, 9))
    meta = {"num_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64}
    write_retrieval_head_json(
        focus, per_sample, meta | {"score": {"definition": "query_focus", "retrieval_threshold": None}}
    )
    assert main(["heads", "--compare", str(_scores_file(tmp_path)), str(focus)]) == 0
    text = capsys.readouterr().out
    assert "A: 3 of 270 (1.1%); B: no retrieval-head cut-off on its scale (270 heads ranked)" in text
    assert "No retrieval-head overlap: B has no retrieval-head cut-off." in text and "heads >= 0.1" not in text
    assert "K=5    Jaccard" in text and "rho = " in text  # the rankings still compare


def test_heads_compare_across_models_shows_sparsity_and_depth_not_pairs(tmp_path, capsys):
    if not SHARED_LLAMA.is_file():
        pytest.skip(f"{SHARED_LLAMA} is absent (the shared reference data is not mounted)")
    assert main(["heads", "--compare", str(_scores_file(tmp_path)), str(SHARED_LLAMA)]) == 0
    text = capsys.readouterr().out
    assert "A: 3 of 270 (1.1%); B: 33 of 1024 (3.2%)" in text
    assert "heads cannot be paired" in text and "Jaccard 0" not in text and "rho" not in text
    depth_a = text.split("\n  A ")[1].split()
    assert depth_a[:4] == ["0%", "0%", "67%", "33%"] and depth_a[4] == "0.67"  # layer centres 18.5, 18.5, 23.5 of 30


def test_heads_needs_exactly_one_of_file_or_compare(tmp_path, caplog):
    path = str(_scores_file(tmp_path))
    for argv in (["heads"], ["heads", path, "--compare", path, path]):
        caplog.clear()
        assert main(argv) == 2
        assert "one head-score file to summarise, or --compare A B" in caplog.text


def test_heads_without_sidecar_explains_what_is_missing(capsys, caplog):
    if not SHARED_LLAMA.is_file():
        pytest.skip(f"{SHARED_LLAMA} is absent (the shared reference data is not mounted)")
    assert main(["heads", str(SHARED_LLAMA), "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "33 of 1024 (3.2%" in text and "pass --model_args to see which query heads share a KV head" in text
    assert main(["heads", str(SHARED_LLAMA), "--export-duo", "x.tsv"]) == 2
    assert "--export-duo needs the KV groups" in caplog.text


def test_detect_refuses_to_overwrite_without_force(tmp_path, caplog):
    output = tmp_path / "out.json"
    output.write_text("{}")
    assert main(["detect", "--output", str(output)]) == 2
    assert "pass --force" in caplog.text and "Traceback" not in caplog.text


def test_packaged_scores_of_the_embedded_model_are_sparse_and_documented():
    from model_wrappers.packaged import DATA
    from rh_tasks.shared import task_data

    path = DATA.path("head_scores/smollm2-135m-instruct.json")
    scores = load_head_scores(path, SMOLLM2)
    meta = scores.metadata
    assert meta is not None and DATA.path("head_scores/smollm2-135m-instruct.meta.json") == metadata_path(path)
    assert meta["score"]["definition"] == "set" and meta["model"]["model"] == "SmolLM2-135M-Instruct"
    assert meta["acceptance"]["accepted"] == scores.num_samples == len(meta["accepted_samples"])
    assert not set(meta["needles"]) & {t["id"] for t in task_data.TASK_DATA.read_jsonl("needles/niah.jsonl")}
    share = (scores.means >= 0.1).mean()
    assert 0 < share < 0.1  # sparse, as Wu et al. report (< 5%) and the prototype found (~4%)
    assert all(layer >= 12 for layer, _ in scores.ranking()[:5])  # upper-middle layers


@pytest.mark.slow
def test_detect_end_to_end_on_the_embedded_model(tmp_path, capsys, caplog):
    output = tmp_path / "smol.json"
    args = ["detect", "--lengths", "256", "--depths", "50", "--needles", "rye_bread", "--output", str(output)]
    assert main([*args, "--device", "cpu"]) == 0
    assert "1/1 samples accepted" in capsys.readouterr().out
    assert not output.with_name(output.name + ".checkpoint.jsonl").exists()
    scores = load_head_scores(output, SMOLLM2)
    meta = json.loads(metadata_path(output).read_text())
    assert meta["grid"] == {"lengths": [256], "depths": [50.0]} and meta["needles"] == ["rye_bread"]
    assert meta["num_key_value_heads"] == 3 and meta["chat_template"] is True
    assert scores.means.max() > 0.5  # the embedded model copies the answer with a few heads
    assert main([*args]) == 2 and "smol.json, " in caplog.text and "already exist" in caplog.text
