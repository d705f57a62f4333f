"""Resolving heads=none|retrieval|random|[[l,h],...] into concrete, reproducible head sets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_wrappers import HeadGeometry, load_head_scores, select_heads

GEOMETRY = HeadGeometry(num_layers=4, num_heads=6, num_kv_heads=2, head_dim=8)  # groups of 3 query heads


@pytest.fixture
def scores(tmp_path):
    rng = np.random.default_rng(0)
    means = rng.uniform(0, 0.05, size=(4, 6))
    for (layer, head), value in {(2, 1): 0.9, (2, 4): 0.5, (3, 0): 0.3, (1, 5): 0.2, (3, 2): 0.12}.items():
        means[layer, head] = value
    path = tmp_path / "scores.json"
    path.write_text(json.dumps({f"{l}-{h}": [float(means[l, h])] * 3 for l in range(4) for h in range(6)}))
    return load_head_scores(path)


def test_retrieval_takes_the_top_k(scores):
    selection = select_heads("retrieval", GEOMETRY, k=3, scores=scores)
    assert selection.heads == ((2, 1), (2, 4), (3, 0))
    assert selection.kind == "retrieval"


def test_retrieval_defaults_to_every_head_above_threshold(scores):
    assert len(select_heads("retrieval", GEOMETRY, scores=scores).heads) == 5


def test_random_is_seeded_and_excludes_retrieval_heads(scores):
    first = select_heads("random", GEOMETRY, k=4, scores=scores, seed=7)
    again = select_heads("random", GEOMETRY, k=4, scores=scores, seed=7)
    other = select_heads("random", GEOMETRY, k=4, scores=scores, seed=8)
    assert first.heads == again.heads
    assert first.heads != other.heads
    retrieval = set(scores.retrieval_heads())
    for seed in range(50):
        drawn = select_heads("random", GEOMETRY, k=4, scores=scores, seed=seed).heads
        assert len(drawn) == 4 and not retrieval & set(drawn)


def test_random_never_takes_top_k_even_below_threshold(scores):
    # With k larger than the number of retrieval heads, the top k are still excluded from the control.
    top = set(select_heads("retrieval", GEOMETRY, k=8, scores=scores).heads)
    for seed in range(30):
        assert not top & set(select_heads("random", GEOMETRY, k=8, scores=scores, seed=seed).heads)


def test_layer_matched_random_draws_the_same_number_per_layer(scores):
    retrieval = select_heads("retrieval", GEOMETRY, k=3, scores=scores).heads
    for seed in range(20):
        drawn = select_heads("random", GEOMETRY, k=3, scores=scores, seed=seed, match="layer").heads
        assert sorted(l for l, _ in drawn) == sorted(l for l, _ in retrieval)
        assert not set(drawn) & set(scores.retrieval_heads())


def test_kv_group_unit_masks_whole_groups(scores):
    selection = select_heads("retrieval", GEOMETRY, k=2, scores=scores, unit="kv_group")
    # Layer 2 holds both top heads, in groups 0 (heads 0-2) and 1 (heads 3-5).
    assert selection.heads == tuple((2, h) for h in range(6))
    explicit = select_heads([[0, 4]], GEOMETRY, unit="kv_group")
    assert explicit.heads == ((0, 3), (0, 4), (0, 5))
    drawn = select_heads("random", GEOMETRY, k=2, scores=scores, seed=1, unit="kv_group").heads
    assert len(drawn) == 6
    groups = {(l, h // 3) for l, h in drawn}
    assert len(groups) == 2 and not any(max(scores.means[l, 3 * g : 3 * g + 3]) >= 0.1 for l, g in groups)


def test_explicit_list_and_none():
    assert select_heads("[[3,5],[0,1]]", GEOMETRY).heads == ((0, 1), (3, 5))
    assert select_heads([[3, 5], [3, 5]], GEOMETRY).heads == ((3, 5),)
    assert select_heads("none", GEOMETRY).heads == ()


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(heads="everything"), "not understood"),
        (dict(heads="[[1,2"), "not a valid list"),
        (dict(heads=[[4, 0]]), "out of range"),
        (dict(heads=[[0, 6]]), "out of range"),
        (dict(heads="retrieval"), "needs head scores"),
        (dict(heads="retrieval", k=25), "exceeds"),
        (dict(heads="random", k=20), "exceeds the 4 non-retrieval"),  # 24 heads minus the top 20
        (dict(heads="retrieval", k=0), "positive integer"),
        (dict(heads="none", k=3), "meaningless"),
        (dict(heads="retrieval", match="layer"), "only to heads=random"),
        (dict(heads="random", match="depth"), "match='depth' is unknown"),
        (dict(heads="random", unit="layer"), "unit='layer' is unknown"),
    ],
)
def test_bad_arguments_fail_with_a_clear_message(args, message, scores):
    heads = args.pop("heads")
    needs_scores = message != "needs head scores"
    with pytest.raises(ValueError, match=message):
        select_heads(heads, GEOMETRY, scores=scores if needs_scores else None, **args)


def test_score_file_of_another_shape_is_rejected(scores):
    with pytest.raises(ValueError, match="4 layers x 6 heads, but the model has 30 layers x 9"):
        select_heads("retrieval", HeadGeometry(30, 9, 3, 64), k=2, scores=scores)
