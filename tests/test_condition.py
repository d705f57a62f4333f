"""One condition type: what rh-masked records reads back as the condition a suite named, with one label scheme."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from model_wrappers.condition import Condition, ConditionError, refuse_misspelt
from model_wrappers.heads.selection import select_heads
from model_wrappers.masking.architectures import HeadGeometry

GEOMETRY = HeadGeometry(num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16)


@pytest.mark.parametrize(
    "condition, label, name, series",
    [
        (Condition("none"), "none", "none", "none"),
        (Condition("retrieval", k=5), "retrieval@5", "retrieval-k5", "retrieval"),
        (Condition("random", k=5, seed=0), "random@5/seed=0", "random-k5-seed0", "random"),
        (
            Condition("random", k=2, seed=1, match="layer", unit="kv_group"),
            "random-layer@2 [kv_group]/seed=1",
            "random-k2-seed1",
            "random-layer [kv_group]",
        ),
    ],
)
def test_label_folder_name_and_series(condition, label, name, series):
    assert (condition.label, condition.name, condition.series) == (label, name, series)
    assert condition.is_variant == (condition.match is not None or condition.unit != "head")


def test_the_recorded_head_set_reads_back_as_its_condition():
    selection = select_heads([[1, 3], [0, 2]], GEOMETRY)
    record = selection.record() | {"mode": "zero", "phase": "decode"}
    condition = Condition.from_record(record)
    assert condition == Condition("explicit", heads=((0, 2), (1, 3)), mode="zero", phase="decode")
    assert condition.label == "explicit[0.2,1.3] [zero, decode]"
    assert Condition.from_record({}) == Condition("none")


def test_a_condition_travels_whole_from_suite_to_report(tiny_checkpoint, tmp_path):
    """The suite's condition, resolved by rh-masked and recorded in the results file, is what the report reads."""
    from model_wrappers.lm.rh_masked import RHMaskedLM

    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({f"{l}-{h}": [0.5 if h == 1 else 0.0] for l in range(2) for h in range(4)}))
    requested = Condition.parse(
        heads="random", k=2, seed=3, match="layer", unit="head", mode="zero", phase="decode", head_scores=str(scores)
    )
    lm = RHMaskedLM(pretrained=tiny_checkpoint, condition=requested, batch_size=1, device="cpu")
    record = lm.get_model_info()["rh_masking"]
    assert Condition.from_record(record) == lm.condition
    assert lm.condition == dataclasses.replace(requested, heads=lm.condition.heads) and len(lm.condition.heads) == 2
    assert record["head_scores"] == str(scores) and record["audit"]["canary_logit_change"] > 0


def test_records_written_before_read_back_as_their_conditions():
    """rh-masked's records from earlier releases: an unmasked run that carried the suite's mode and phase, and a
    random draw, as the results files of committed reports hold them."""
    unmasked = {
        "heads_kind": "none",
        "k": None,
        "seed": 0,
        "match": None,
        "unit": "head",
        "num_masked": 0,
        "heads": [],
        "mode": "mean",
        "phase": "decode",
        "head_scores": None,
    }
    drawn = {
        "heads_kind": "random",
        "k": 2,
        "seed": 4,
        "match": None,
        "unit": "kv_group",
        "num_masked": 6,
        "heads": [[3, 0], [3, 1], [3, 2], [7, 3], [7, 4], [7, 5]],
        "audit": {"clean": True},
        "mode": "uniform",
        "phase": "all",
        "head_scores": "scores.json",
        "head_scores_sha256": "ab",
        "model": "m",
    }
    assert Condition.from_record(unmasked) == Condition()
    condition = Condition.from_record(drawn)
    assert (condition.label, condition.name) == ("random@2 [kv_group]/seed=4", "random-k2-seed4")
    assert condition.heads[:2] == ((3, 0), (3, 1)) and condition.head_scores == "scores.json"


@pytest.mark.parametrize(
    "arguments, label, name, series",
    [
        (dict(window=64), "keep none [w=64]", "window64-none", "keep none [w=64]"),
        (
            dict(window="64", keep="retrieval", k="5", unit="kv_group"),
            "keep retrieval@5 [w=64, kv_group]",
            "window64-retrieval-k5",
            "keep retrieval [w=64, kv_group]",
        ),
        (
            dict(window=256, sink=8, keep="random", k=3, seed=1, phase="decode"),
            "keep random@3 [w=256, sink=8, decode]/seed=1",
            "window256-sink8-random-k3-seed1",
            "keep random [w=256, sink=8, decode]",
        ),
        (dict(window=16, keep="[[1,3],[0,2]]"), "keep explicit[0.2,1.3] [w=16]", "window16-explicit-kNone", None),
    ],
)
def test_a_windowed_condition_says_what_it_keeps_and_reads_back_from_its_record(arguments, label, name, series):
    condition = Condition.parse(**arguments)
    assert (condition.label, condition.name) == (label, name)
    assert series is None or condition.series == series
    record = condition.record()
    assert record["window"] == condition.window and record["sink"] == condition.sink and "mode" not in record
    assert Condition.from_record(record) == condition


def test_windows_and_sinks_tell_conditions_apart_and_sort_after_masking():
    conditions = [
        Condition.parse(window=256, keep="retrieval", k=2),
        Condition.parse(window=64, keep="random", k=2, seed=0),
        Condition.parse(window=64),
        Condition.parse(window=64, sink=0),
        Condition.parse(heads="retrieval", k=2),
        Condition(),
    ]
    assert len({c.name for c in conditions}) == len(conditions) == len(set(conditions))
    assert [c.label for c in sorted(conditions, key=lambda c: c.sort_key)] == [
        "none",
        "retrieval@2",
        "keep none [w=64, sink=0]",
        "keep none [w=64]",
        "keep random@2 [w=64]/seed=0",
        "keep retrieval@2 [w=256]",
    ]


def test_records_without_a_window_read_as_masking_conditions():
    record = Condition.parse(heads="retrieval", k=3, phase="decode").record()
    assert "window" not in record and Condition.from_record(record) == Condition("retrieval", k=3, phase="decode")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(heads="none", k=3), "meaningless with heads=none"),
        (dict(heads="retrieval", match="layer"), "only to heads=random"),
        (dict(heads="retrieval", mode="silence"), "mode='silence' is unknown; choose one of uniform, zero, mean"),
        (dict(heads="retrieval", phase=2), "phase=2 is unknown"),
        (dict(heads=[[0, 1]], k=2), "meaningless with an explicit head list"),
        (dict(heads="[[0, 1], [2]]"), "pair of integers"),
        (dict(heads="random", seed=-1), "seed=-1 must be an integer >= 0"),
    ],
)
def test_a_condition_is_refused_before_any_model_loads(arguments, message):
    with pytest.raises(ConditionError, match=re.escape(message)):
        Condition.parse(**arguments)


def test_misspelt_arguments_are_refused_with_the_closest_name():
    for typo, meant in (("head", "heads"), ("mdoe", "mode"), ("phase_", "phase"), ("sede", "seed")):
        with pytest.raises(ConditionError, match=f"did you mean '{meant}'"):
            refuse_misspelt({typo: 1}, known=())
    refuse_misspelt({"dtype": "float32", "trust_remote_code": True}, known=())  # the model's own arguments pass


def test_every_public_name_loads_from_the_package():
    """``from model_wrappers import ...`` keeps working whichever subpackage a name lives in."""
    import model_wrappers

    for name in model_wrappers.__all__:
        value = getattr(model_wrappers, name)
        assert name.isupper() or value.__name__ == name, name
    from model_wrappers import Condition as C  # noqa: F401

    assert C is Condition


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(heads="retrieval", window=64), "one condition does one"),
        (dict(window=0), r"window=0 must be a positive integer"),
        (dict(window=64, sink=-1), r"sink=-1 must be an integer >= 0"),
        (dict(window=64, keep="retrieval", mode="zero"), "mode=zero is meaningless with window="),
        (dict(keep="retrieval", k=2), "keep= applies only to a windowed condition"),
        (dict(heads="retrieval", k=2, sink=4), "sink= applies only to a windowed condition"),
        (dict(window=64, k=2), "k is meaningless with keep=none"),
        (dict(window=64, keep="retrieval", match="layer"), "match=layer applies only to keep=random"),
        (dict(window=64, keep="strongest"), "keep='strongest' is not understood"),
    ],
)
def test_malformed_windows_are_refused_before_any_model_loads(arguments, message):
    with pytest.raises(ConditionError, match=message):
        Condition.parse(**arguments)


def test_a_misspelt_window_argument_is_refused():
    with pytest.raises(ConditionError, match="did you mean 'window'"):
        refuse_misspelt({"windw": 64}, known=())
