"""One condition type: what rh-masked records reads back as the condition a suite named, with one label scheme."""

from __future__ import annotations

import pytest

from model_wrappers.condition import Condition
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
