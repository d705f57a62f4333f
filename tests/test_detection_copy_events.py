"""Copy-event scoring on a hand-made attention example, without a model."""

import pytest
import torch

from rh_tasks.detection.copy_events import copy_scores

PROMPT = torch.tensor([10, 11, 12, 13, 14, 15])
SPAN = (2, 5)  # needle tokens 12, 13, 14
GENERATED = torch.tensor([12, 13, 13, 12])
# positions[step, layer, head]; position 6 is the first generated token, outside the prompt
POSITIONS = torch.tensor(
    [
        [[2, 2, 0], [4, 3, 1]],
        [[3, 4, 1], [4, 3, 3]],
        [[3, 3, 5], [4, 3, 6]],
        [[2, 5, 6], [4, 3, 2]],
    ]
)


def test_set_and_multiset_scores_match_the_hand_count():
    scores = copy_scores(POSITIONS, GENERATED, PROMPT, SPAN)
    # layer 0: head 0 copies 12, 13, 13, 12 (two distinct positions, four events); head 1 copies 12 and 13,
    # misses 14 != 13 and position 5 outside the needle; head 2 never looks inside the needle.
    # layer 1: head 0 stares at 14, never generated; head 1 copies position 3 twice; head 2 copies 13 then 12.
    expected_set = torch.tensor([[2 / 3, 2 / 3, 0.0], [0.0, 1 / 3, 2 / 3]])
    expected_multiset = torch.tensor([[4 / 3, 2 / 3, 0.0], [0.0, 2 / 3, 2 / 3]])
    torch.testing.assert_close(scores.set, expected_set)
    torch.testing.assert_close(scores.multiset, expected_multiset)
    assert scores.get("multiset").max() > 1  # the reference's definition can exceed 1
    assert scores.get("set").max() <= 1


def test_no_steps_scores_zero_and_bad_input_is_refused():
    empty = copy_scores(torch.zeros(0, 2, 3, dtype=torch.long), torch.zeros(0, dtype=torch.long), PROMPT, SPAN)
    assert empty.set.shape == (2, 3) and empty.set.sum() == 0
    with pytest.raises(ValueError, match="empty"):
        copy_scores(POSITIONS, GENERATED, PROMPT, (3, 3))
    with pytest.raises(ValueError, match="one step per token"):
        copy_scores(POSITIONS, GENERATED[:2], PROMPT, SPAN)
    with pytest.raises(ValueError, match="Unknown score definition"):
        copy_scores(POSITIONS, GENERATED, PROMPT, SPAN).get("bag")


def test_set_counts_distinct_answer_tokens_not_positions():
    """The paper's |g_h ∩ k| / |k| on an answer that repeats a token: A B A C (k = {A, B, C})."""
    prompt = torch.tensor([7, 20, 21, 20, 22, 8])
    span = (1, 5)
    generated = torch.tensor([20, 21, 20, 22])
    # head 0 copies every token, the repeated A both times from its first position (as arg-max attention may);
    # head 1 copies only A, twice; head 2 copies A from each of its positions and nothing else
    positions = torch.tensor([[[1, 1, 1]], [[2, 4, 4]], [[1, 1, 3]], [[4, 0, 0]]])
    scores = copy_scores(positions, generated, prompt, span)
    torch.testing.assert_close(scores.set, torch.tensor([[3 / 3, 1 / 3, 1 / 3]]))
    torch.testing.assert_close(scores.multiset, torch.tensor([[4 / 4, 2 / 4, 2 / 4]]))
