"""Head-score files: Retrieval_Head JSON and DuoAttention TSV, read, written, validated against the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_wrappers.heads.load import load_head_scores
from model_wrappers.heads.scores import HeadScoreFileError, metadata_path, write_duo_tsv, write_retrieval_head_json
from model_wrappers.masking.architectures import HeadGeometry

SHARED_SCORES = Path(__file__).parents[1].parent / "shared" / "data" / "head_scores"
GEOMETRY = HeadGeometry(num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8)  # groups of 2 query heads


def _shared(path: str) -> Path:
    file = SHARED_SCORES / path
    if not file.is_file():
        pytest.skip(f"{file} is absent (the shared reference data is not mounted)")
    return file


def test_reference_llama_file_reproduces_its_own_mean_ranking():
    file = _shared("retrieval_head/llama-2-7b-80k.json")
    scores = load_head_scores(file)
    raw = json.loads(file.read_text())
    by_mean = sorted(raw, key=lambda key: -np.mean(raw[key]))
    assert scores.means.shape == (32, 32) and scores.num_samples == 586
    assert scores.ranking()[:3] == [(16, 19), (11, 15), (8, 26)]
    assert [f"{l}-{h}" for l, h in scores.ranking()[:20]] == by_mean[:20]
    assert len(scores.retrieval_heads()) == int(sum(np.mean(v) >= 0.1 for v in raw.values()))
    llama = HeadGeometry(num_layers=32, num_heads=32, num_kv_heads=32, head_dim=128)
    assert load_head_scores(file, llama).means.shape == (32, 32)
    with pytest.raises(HeadScoreFileError, match="32 layers x 32 heads, but the model has 30 layers x 9"):
        load_head_scores(file, HeadGeometry(num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64))


def test_reference_duo_attention_file_maps_kv_heads_to_their_query_groups():
    file = _shared("duo_attention/Mistral-7B-Instruct-v0.2/full_attention_heads.tsv")
    gates = np.loadtxt(file, delimiter="\t")
    mistral = HeadGeometry(num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128)
    scores = load_head_scores(file, mistral)
    assert scores.means.shape == (32, 32)
    assert scores.means[0, 8] == scores.means[0, 11] == gates[0, 2]  # query heads 8-11 read KV head 2
    np.testing.assert_array_equal(scores.kv_gates(mistral), gates)
    with pytest.raises(HeadScoreFileError, match="8 KV heads, but the model has 32 layers x 4 KV heads"):
        load_head_scores(file, HeadGeometry(num_layers=32, num_heads=32, num_kv_heads=4, head_dim=128))
    alone = load_head_scores(file)  # without the model: one gate per KV head, as written
    assert alone.kv_heads_only and alone.means.shape == (32, 8)
    np.testing.assert_array_equal(alone.means, gates)


def test_retrieval_head_json_round_trip_with_sidecar(tmp_path):
    per_sample = np.random.default_rng(0).uniform(0, 1, size=(5, 3, 4))
    path = tmp_path / "model.json"
    write_retrieval_head_json(path, per_sample, {"num_key_value_heads": 2, "model": "tiny"})
    keys = list(json.loads(path.read_text()))
    assert keys[:5] == ["0-0", "0-1", "0-2", "0-3", "1-0"]  # layer-major: HeadKV reshapes in key order
    scores = load_head_scores(path, GEOMETRY)
    np.testing.assert_allclose(scores.means, per_sample.mean(0))
    assert scores.num_samples == 5 and scores.metadata["model"] == "tiny"
    assert metadata_path(path) == tmp_path / "model.meta.json"
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    write_retrieval_head_json(path, per_sample, {"num_key_value_heads": 3})
    with pytest.raises(HeadScoreFileError, match="3 KV heads, but this model has 2"):
        load_head_scores(path, GEOMETRY)


def test_duo_tsv_round_trip(tmp_path):
    gates = np.array([[0.0, 1.0], [0.25, -1e-4], [0.5, 0.75]])
    path = tmp_path / "full_attention_heads.tsv"
    write_duo_tsv(path, gates)
    assert path.read_text().splitlines()[0].count("\t") == 1
    scores = load_head_scores(path, GEOMETRY)
    np.testing.assert_array_equal(scores.means, np.repeat(gates, 2, axis=1))
    np.testing.assert_array_equal(scores.kv_gates(GEOMETRY), gates)

    json_path = tmp_path / "scores.json"  # query-head scores exported: a group's gate is its best head
    write_retrieval_head_json(json_path, np.arange(12, dtype=float).reshape(1, 3, 4) / 12)
    exported = load_head_scores(json_path, GEOMETRY).kv_gates(GEOMETRY)
    np.testing.assert_allclose(exported, np.array([[1, 3], [5, 7], [9, 11]]) / 12)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", "{not json", "not valid JSON"),
        ("empty.json", "", "is empty; regenerate it"),
        ("none.json", "{}", "holds no head scores"),
        ("key.json", '{"0_0": [0.1]}', "is not 'layer-head'"),
        ("nan.json", '{"0-0": [NaN]}', "not a finite number"),
        ("list.json", '{"0-0": []}', "non-empty list"),
        ("hole.json", '{"0-0": [1], "1-1": [1]}', "mis-shaped: 2 of the 2 x 2 heads"),
        ("ragged.json", '{"0-0": [1], "0-1": [1, 2]}', "different numbers of samples"),
        ("empty.tsv", "", "is empty"),
        ("text.tsv", "0.1\tabc\n", "not a tab-separated matrix"),
        ("ragged.tsv", "0.1\t0.2\n0.3\n", "not a tab-separated matrix"),
        ("nan.tsv", "0.1\tnan\n0.1\t0.2\n0.1\t0.2\n", "not a finite number"),
        ("shape.tsv", "0.1\t0.2\t0.3\n", "holds 1 layers x 3 KV heads"),
    ],
)
def test_malformed_files_give_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(HeadScoreFileError, match=message):
        load_head_scores(path, GEOMETRY if name.endswith(".tsv") else None)


def test_missing_file_and_bad_sidecar(tmp_path):
    with pytest.raises(HeadScoreFileError, match="Cannot read"):
        load_head_scores(tmp_path / "absent.json")
    path = tmp_path / "s.json"
    write_retrieval_head_json(path, np.zeros((1, 3, 4)))
    metadata_path(path).write_text("{")
    with pytest.raises(HeadScoreFileError, match="regenerate"):
        load_head_scores(path)


def test_writers_refuse_bad_scores(tmp_path):
    with pytest.raises(ValueError, match="at least one sample"):
        write_retrieval_head_json(tmp_path / "a.json", np.zeros((0, 3, 4)))
    with pytest.raises(ValueError, match="finite"):
        write_retrieval_head_json(tmp_path / "a.json", np.full((1, 3, 4), np.nan))
    with pytest.raises(ValueError, match="kv_heads"):
        write_duo_tsv(tmp_path / "a.tsv", np.zeros(3))
    assert not any(tmp_path.iterdir())
