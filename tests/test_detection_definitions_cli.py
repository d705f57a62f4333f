"""``rh-eval detect --score A,B,...`` writes one file per definition; ``heads --compare`` compares several files."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from model_wrappers.heads.load import load_head_scores
from model_wrappers.heads.scores import metadata_path, write_retrieval_head_json
from model_wrappers.heads.selection import select_heads
from model_wrappers.masking.architectures import HeadGeometry
from rh_tasks.detection import detect as detect_module
from rh_tasks.plugin.command import build_parser, main

TINY = HeadGeometry(num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16)
DEFINITIONS = "set,retrieval_reasoning,query_focus"


def test_detect_help_names_every_definition_its_source_and_the_file_names(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["detect", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("set", "multiset", "retrieval_reasoning", "query_focus"):
        assert f"{name} " in text
    assert "arXiv 2410.19258" in text and "retrieval_detection_r2.py" not in text  # HeadKV, its file named right
    assert "Important_Head/retrieval_head_detection_r2.py" in text and "arXiv 2506.09944" in text
    assert "OUTPUT's stem + '.<definition>.json'" in text and "without --force" in text


def test_an_unknown_or_repeated_definition_is_refused_before_any_work(capsys):
    for score, message in (("set,attention", "Unknown score definition(s) 'attention'"), ("set,set", "more than once")):
        with pytest.raises(SystemExit) as exit_info:
            main(["detect", "--score", score])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


@pytest.fixture
def answered(monkeypatch):
    """Every sample counts as answered: a random-weight model answers none, and the copy scores need some."""
    monkeypatch.setattr(detect_module, "rouge1_recall", lambda response, answer: 1.0)


def _detect(checkpoint_dir, output, *extra):
    return main(
        [
            "detect", "--model_args", f"pretrained={checkpoint_dir}", "--lengths", "160", "--depths", "50",
            "--needles", "rye_bread", "--max_new_tokens", "3", "--device", "cpu", "--output", str(output), *extra,
        ]
    )  # fmt: skip


def test_detect_writes_one_file_per_definition_and_refuses_to_overwrite_any(
    tiny_checkpoint, tmp_path, answered, capsys, caplog
):
    output = tmp_path / "tiny.json"
    assert _detect(tiny_checkpoint, output, "--score", DEFINITIONS) == 0
    files = {
        "set": output,
        "retrieval_reasoning": tmp_path / "tiny.retrieval_reasoning.json",
        "query_focus": tmp_path / "tiny.query_focus.json",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [p.name for p in files.values()] + [metadata_path(p).name for p in files.values()]
    )  # no checkpoint left behind
    for name, path in files.items():
        meta = json.loads(metadata_path(path).read_text())
        assert meta["score"]["definition"] == name
        assert meta["definitions"] == ["set", "retrieval_reasoning", "query_focus"]  # one pass computed all three
        assert meta["scored_samples"] == ["rye_bread/160/50"]
        assert load_head_scores(path, TINY).num_samples == 1
    assert json.loads(metadata_path(files["set"]).read_text())["score"]["retrieval_threshold"] == 0.1
    assert json.loads(metadata_path(files["query_focus"]).read_text())["score"]["retrieval_threshold"] is None
    out = capsys.readouterr().out
    assert "3 definition(s) from one decode pass" in out and f"--compare {output} " in out

    before = {path: path.read_bytes() for path in files.values()}
    output.unlink()
    metadata_path(output).unlink()  # the first file is gone, the others are still there
    caplog.clear()
    assert _detect(tiny_checkpoint, output, "--score", DEFINITIONS) == 2
    assert "tiny.retrieval_reasoning.json" in caplog.text and "pass --force" in caplog.text
    assert not output.exists()  # refused before any work
    assert _detect(tiny_checkpoint, output, "--score", DEFINITIONS, "--force") == 0
    assert {path: path.read_bytes() for path in files.values()} == before  # deterministic: the same scores again


def test_an_interrupted_multi_definition_run_resumes_every_file(
    tiny_checkpoint, tmp_path, answered, monkeypatch, caplog
):
    from rh_tasks.detection import aggregate

    output = tmp_path / "tiny.json"
    write_scores = aggregate.write_scores

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(aggregate, "write_scores", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _detect(tiny_checkpoint, output, "--score", "query_focus,set")
    checkpoint = tmp_path / "tiny.json.checkpoint.jsonl"
    assert checkpoint.is_file() and not output.exists()
    record = json.loads(checkpoint.read_text().splitlines()[1])
    assert sorted(record["scores"]) == ["query_focus", "set"]
    record["scores"]["query_focus"][0][0] = 123.0  # proves the sample is read back, not recomputed
    header = checkpoint.read_text().splitlines()[0]
    checkpoint.write_text(header + "\n" + json.dumps(record) + "\n")

    monkeypatch.setattr(aggregate, "write_scores", write_scores)
    caplog.clear()
    assert _detect(tiny_checkpoint, output, "--score", "set,multiset") == 2  # other definitions: refused
    assert "other settings (definitions differ)" in caplog.text and checkpoint.is_file()
    caplog.set_level(logging.INFO, logger="rh_tasks.detection")
    assert _detect(tiny_checkpoint, output, "--score", "query_focus,set") == 0
    assert "Resuming: 1 of 1" in caplog.text and not checkpoint.exists()
    assert load_head_scores(output, TINY).means[0, 0] == 123.0  # query_focus, the first, went to OUTPUT
    assert json.loads(metadata_path(tmp_path / "tiny.set.json").read_text())["score"]["definition"] == "set"


def _definition_file(path, per_sample, definition: str, threshold):
    meta = {
        "num_layers": per_sample.shape[1],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "score": {"definition": definition, "retrieval_threshold": threshold},
    }
    write_retrieval_head_json(path, per_sample, meta)
    return path


def test_heads_compare_tabulates_every_pair_of_several_definitions(tmp_path, capsys):
    base = np.arange(8, dtype=float).reshape(1, 2, 4) / 10  # head (1, 3) best, then (1, 2), ...
    a = _definition_file(tmp_path / "a.json", base, "set", 0.1)
    b = _definition_file(tmp_path / "b.json", base[:, ::-1, :], "retrieval_reasoning", None)  # layers swapped
    c = _definition_file(tmp_path / "c.json", base * 2, "query_focus", None)  # A's ranking exactly
    assert main(["heads", "--compare", str(a), str(b), str(c), "--top", "2"]) == 0
    text = capsys.readouterr().out
    assert f"A: {a} (set score, 1 samples, 7 of 8 heads >= 0.1)" in text
    assert f"B: {b} (retrieval_reasoning score, 1 samples, no retrieval-head cut-off)" in text
    # A's top 2: (1,3), (1,2); B's: (0,3), (0,2); rank correlation over the 8 heads of 0..7 vs 4..7,0..3
    rho = np.corrcoef(np.arange(8), np.r_[4:8, 0:4])[0, 1]
    assert f"| A–B | 0.00 (0) | {rho:.3f} |" in text
    assert "| A–C | 1.00 (2) | 1.000 |" in text and "| B–C | 0.00 (0) |" in text
    assert "| 1 | 1-3 | 0-3 | 1-3 |" in text and "| 2 | 1-2 | 0-2 | 1-2 |" in text


def test_heads_compare_refuses_several_files_of_different_models_and_a_single_file(tmp_path, caplog):
    a = _definition_file(tmp_path / "a.json", np.ones((1, 2, 4)), "set", 0.1)
    other = _definition_file(tmp_path / "o.json", np.ones((1, 3, 4)), "set", 0.1)
    assert main(["heads", "--compare", str(a), str(a), str(other)]) == 2
    assert "needs files of one model" in caplog.text
    caplog.clear()
    assert main(["heads", "--compare", str(a)]) == 2
    assert "at least two files" in caplog.text


def test_a_definition_without_cut_off_masks_its_top_k_only_when_k_is_given(tmp_path):
    per_sample = np.zeros((1, 2, 4))
    per_sample[0, 1, 2], per_sample[0, 0, 1] = 0.9, 0.5
    focus = load_head_scores(_definition_file(tmp_path / "f.json", per_sample, "query_focus", None), TINY)
    assert not focus.has_cutoff
    with pytest.raises(ValueError, match="holds 'query_focus' scores, which have no retrieval-head cut-off; pass k="):
        select_heads("retrieval", TINY, scores=focus)
    assert select_heads("retrieval", TINY, k=2, scores=focus).heads == ((0, 1), (1, 2))
    random = select_heads("random", TINY, k=2, seed=0, scores=focus).heads
    assert not set(random) & {(1, 2), (0, 1)}  # the random control still excludes the top K
    copy = load_head_scores(_definition_file(tmp_path / "s.json", per_sample, "set", 0.1), TINY)
    assert copy.has_cutoff and select_heads("retrieval", TINY, scores=copy).heads == ((0, 1), (1, 2))


@pytest.mark.slow
def test_on_the_embedded_model_extra_definitions_leave_the_copy_scores_unchanged(tmp_path, capsys):
    smol = HeadGeometry(num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64)
    common = ["detect", "--lengths", "256", "--depths", "50", "--needles", "rye_bread", "--device", "cpu"]
    assert main([*common, "--output", str(tmp_path / "alone.json")]) == 0
    assert (
        main(
            [*common, "--output", str(tmp_path / "all.json"), "--score", "set,multiset,retrieval_reasoning,query_focus"]
        )
        == 0
    )
    assert "1/1 samples accepted" in capsys.readouterr().out
    assert (tmp_path / "all.json").read_bytes() == (tmp_path / "alone.json").read_bytes()
    reasoning = load_head_scores(tmp_path / "all.retrieval_reasoning.json", smol)
    focus = load_head_scores(tmp_path / "all.query_focus.json", smol)
    copy = load_head_scores(tmp_path / "all.json", smol)
    assert 0.3 < reasoning.means.max() <= 1  # some head puts most of its attention on the answer it copies
    assert focus.means.max() > 0 > focus.means.min()  # calibrated: heads look more, or less, than for "N/A"
    assert copy.ranking()[0] in reasoning.ranking()[:10]
