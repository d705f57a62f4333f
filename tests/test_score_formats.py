"""The field's head-score formats: each sample file is recognised from its content and read as its project means it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model_wrappers.heads.formats import FORMATS
from model_wrappers.heads.load import load_head_scores
from model_wrappers.heads.parsers import ScoreFile
from model_wrappers.heads.scores import HeadScoreFileError
from model_wrappers.heads.selection import select_heads
from model_wrappers.masking.architectures import HeadGeometry

DATA = Path(__file__).parent / "data" / "head_score_formats"
LLAMA_1B = HeadGeometry(num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64)
LLAMA_8B = HeadGeometry(num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128)
QWEN2_1_5B = HeadGeometry(num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128)
SMALL = HeadGeometry(num_layers=4, num_heads=6, num_kv_heads=2, head_dim=8)  # the synthetic samples' grid
QR_1B = [(8, 21), (8, 14), (7, 22), (6, 31), (8, 28), (10, 26), (10, 0), (5, 5)]  # the file's first 8


def test_every_sample_file_is_recognised_by_its_content(tmp_path):
    expected = {
        "Llama-3.2-1B-Instruct_qr_head_NQ.yaml": "qrhead_yaml",
        "Llama-3.1-8B-Instruct_qr_head_NQ.yaml": "qrhead_yaml",
        "attention_tracker_Qwen2-1.5B-Instruct.json": "vllm_hook",
        "attention_tracker_Meta-Llama-3-8B-Instruct.json": "vllm_hook",
        "duo-attention_Meta-Llama-3.1-8B-Instruct_full_attention_heads.tsv": "kv_gates",
        "synthetic_rlkv_adapter_weights.tsv": "kv_gates",
        "synthetic_retrieval_head.json": "retrieval_head",
        "synthetic_qrhead_detection.json": "qrhead_scores",
    }
    for name, format_name in expected.items():
        renamed = tmp_path / f"{format_name}-{name}.data"  # no telling extension: the content decides
        shutil.copy(DATA / name, renamed)
        assert load_head_scores(renamed).format == format_name, name


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=list(FORMATS))
def test_every_format_has_a_sample_that_it_alone_recognises_and_reads(fmt):
    sample = DATA / fmt.sample
    file = ScoreFile.read(sample.read_bytes(), sample)
    assert [other.name for other in FORMATS.values() if other.recognises(file)] == [fmt.name]
    assert load_head_scores(sample).format == fmt.name


def test_qrhead_yaml_is_a_ranked_list_in_file_order():
    scores = load_head_scores(DATA / "Llama-3.2-1B-Instruct_qr_head_NQ.yaml", LLAMA_1B)
    assert scores.ranked[:8] == tuple(QR_1B) and len(scores.ranked) == 16  # "# top16" comment ignored
    assert scores.ranking()[:16] == list(scores.ranked) and scores.means.shape == (16, 32)
    assert select_heads("retrieval", LLAMA_1B, k=3, scores=scores).heads == tuple(sorted(QR_1B[:3]))
    everything = select_heads("retrieval", LLAMA_1B, scores=scores)  # no k: the whole list
    assert everything.k == 16 and set(everything.heads) == set(scores.ranked)
    with pytest.raises(ValueError, match="k=17 exceeds the 16 heads that .* ranks"):
        select_heads("retrieval", LLAMA_1B, k=17, scores=scores)


def test_random_control_from_a_list_excludes_every_listed_head():
    scores = load_head_scores(DATA / "Llama-3.2-1B-Instruct_qr_head_NQ.yaml", LLAMA_1B)
    listed = set(scores.ranked)
    for seed in range(20):
        drawn = select_heads("random", LLAMA_1B, k=3, scores=scores, seed=seed)
        assert len(drawn.heads) == 3 and not listed & set(drawn.heads)
    by_layer = select_heads("random", LLAMA_1B, k=3, scores=scores, seed=0, match="layer")
    assert sorted(l for l, _ in by_layer.heads) == sorted(l for l, _ in QR_1B[:3]) and not listed & set(by_layer.heads)
    groups = select_heads("random", LLAMA_1B, k=2, scores=scores, unit="kv_group")
    assert not {(l, LLAMA_1B.kv_group(h)) for l, h in listed} & {(l, LLAMA_1B.kv_group(h)) for l, h in groups.heads}


def test_kv_group_ranking_of_a_list_follows_each_groups_first_listed_head():
    scores = load_head_scores(DATA / "Llama-3.2-1B-Instruct_qr_head_NQ.yaml", LLAMA_1B)
    groups = select_heads("retrieval", LLAMA_1B, k=2, scores=scores, unit="kv_group")
    assert groups.heads == tuple((8, h) for h in [*range(12, 16), *range(20, 24)])  # (8,21): group 5, (8,14): 3


def test_list_checked_against_the_model_naming_both_shapes():
    with pytest.raises(HeadScoreFileError, match=r"lists head \(16, 19\).*16 layers x 32 query heads"):
        load_head_scores(DATA / "Llama-3.1-8B-Instruct_qr_head_NQ.yaml", LLAMA_1B)
    read_alone = load_head_scores(DATA / "Llama-3.1-8B-Instruct_qr_head_NQ.yaml")
    with pytest.raises(HeadScoreFileError, match="grid of 21 layers x 32 heads, but the model has 16 layers"):
        read_alone.check_geometry(LLAMA_1B)
    assert load_head_scores(DATA / "Llama-3.1-8B-Instruct_qr_head_NQ.yaml", LLAMA_8B).ranked[0] == (14, 22)


def test_vllm_hook_reads_params_important_heads():
    qwen = load_head_scores(DATA / "attention_tracker_Qwen2-1.5B-Instruct.json", QWEN2_1_5B)
    raw = json.loads((DATA / "attention_tracker_Qwen2-1.5B-Instruct.json").read_text())["params"]["important_heads"]
    assert qwen.ranked == tuple(map(tuple, raw)) and len(qwen.ranked) == 14
    assert select_heads("retrieval", QWEN2_1_5B, k=2, scores=qwen).heads == ((10, 6), (11, 0))
    llama = load_head_scores(DATA / "attention_tracker_Meta-Llama-3-8B-Instruct.json", LLAMA_8B)
    assert len(llama.ranked) == 4
    with pytest.raises(HeadScoreFileError, match="but the model has 28 layers x 12 query heads"):
        load_head_scores(DATA / "attention_tracker_Meta-Llama-3-8B-Instruct.json", QWEN2_1_5B)


def test_kv_gate_files_per_kv_head_alone_and_per_query_head_with_the_model():
    duo = DATA / "duo-attention_Meta-Llama-3.1-8B-Instruct_full_attention_heads.tsv"
    gates = np.loadtxt(duo, delimiter="\t")
    alone = load_head_scores(duo)
    assert alone.kv_heads_only and alone.means.shape == (32, 8)
    with pytest.raises(HeadScoreFileError, match="read without the model"):
        select_heads("retrieval", LLAMA_8B, k=1, scores=alone)
    expanded = load_head_scores(duo, LLAMA_8B)
    assert expanded.means.shape == (32, 32) and expanded.means[5, 4 * 3 + 1] == gates[5, 3]

    rlkv = load_head_scores(DATA / "synthetic_rlkv_adapter_weights.tsv", SMALL)
    assert rlkv.means[2, 0] == pytest.approx(1.0078) and rlkv.means[0, 5] == pytest.approx(-0.0048)  # kept
    assert select_heads("retrieval", SMALL, k=1, scores=rlkv, unit="kv_group").heads == ((2, 0), (2, 1), (2, 2))
    with pytest.raises(HeadScoreFileError, match="holds 4 layers x 2 KV heads, but the model has 32 layers x 8"):
        load_head_scores(DATA / "synthetic_rlkv_adapter_weights.tsv", LLAMA_8B)


def test_retrieval_head_json_and_qrhead_scores():
    wu = load_head_scores(DATA / "synthetic_retrieval_head.json", SMALL)
    assert wu.num_samples == 3 and wu.ranking()[:3] == [(2, 4), (3, 1), (1, 0)]
    assert select_heads("retrieval", SMALL, scores=wu).heads == ((2, 4), (3, 1))  # mean >= 0.1; (1, 0) has 0.083

    qr = load_head_scores(DATA / "synthetic_qrhead_detection.json", SMALL)
    items = json.loads((DATA / "synthetic_qrhead_detection.json").read_text())
    assert [f"{l}-{h}" for l, h in qr.ranking()] == [key for key, _ in items]
    assert select_heads("retrieval", SMALL, k=2, scores=qr).heads == ((2, 4), (3, 1))
    with pytest.raises(ValueError, match="no retrieval-head cut-off; pass k="):
        select_heads("retrieval", SMALL, scores=qr)
    with pytest.raises(HeadScoreFileError, match="4 layers x 6 heads, but the model has 32 layers"):
        load_head_scores(DATA / "synthetic_qrhead_detection.json", LLAMA_8B)


ACCEPTED = "Accepted formats:"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("compresskv.json", (DATA / "synthetic_compresskv_head_idx.json").read_text(), "per-layer head order"),
        ("config.json", '{"sink_size": 128, "recent_size": 256}', ACCEPTED),
        ("notes.txt", "retrieval heads of my model\n", ACCEPTED),
        ("other.yaml", "model: llama\nheads: 3\n", ACCEPTED),
        ("binary.bin", b"\xff\xfe\x00\x01", ACCEPTED),
        ("pairs.json", "[[3, 5], [7, 1]]", ACCEPTED),
        ("words.tsv", "layer\thead\n", ACCEPTED),
        ("full.yaml", 'attn_head_set: "full_heads"\n', "means every head"),
        ("bad.yaml", 'attn_head_set: "3-1,x"\n', "'x' is not a head written 'layer-head'"),
        ("twice.yaml", 'attn_head_set: "3-1,3-1"\n', r"\[\(3, 1\)\] more than once"),
        ("hook.json", '{"params": {"important_heads": [[1, "a"]]}}', "integer pairs"),
        ("qr.json", '[["0-0", 0.5], ["0-1", "high"]]', "not a finite number"),
        ("qrhole.json", '[["0-0", 0.5], ["1-1", 0.2]]', "2 of the 2 x 2 heads have no score"),
    ],
)
def test_unknown_or_malformed_files_are_refused_clearly(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(HeadScoreFileError, match=message) as error:
        load_head_scores(path)
    if message == ACCEPTED:
        assert all(project in str(error.value) for project in ("Retrieval_Head", "QRHead", "vLLM-Hook", "RLKV"))
