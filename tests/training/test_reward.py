"""The reward R = Q(c_L) − α·C_L, and Q computed on the replies only."""

from __future__ import annotations

import pytest

from training.tasks.items import Item
from training.tasks.reward import ScoreMemo, episode_quality, terminal_reward

CHOICES = ["Mars", "Jupiter", "Venus", "Earth"]
QUERY = "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth"


def _mc_item() -> Item:
    return Item(
        id="arc_easy/x",
        task="arc_easy",
        prompt=QUERY,
        references=["B", "Jupiter"],
        metric="mc_letter",
        half="routing",
        meta={"choices": CHOICES, "gold_index": 1},
    )


@pytest.mark.parametrize(
    ("quality", "cost", "alpha", "expected"),
    [(1.0, 10.0, 0.005, 0.95), (0.0, 0.0, 0.005, 0.0), (0.5, 2.0, 0.0, 0.5), (0.25, 100.0, 0.01, -0.75)],
)
def test_terminal_reward_is_quality_minus_alpha_cost(quality, cost, alpha, expected) -> None:
    assert terminal_reward(quality, cost, alpha) == pytest.approx(expected, abs=1e-12)


def test_the_query_alone_earns_nothing() -> None:
    """The query names the gold option; scoring it would reward an empty route."""
    item = _mc_item()
    empty = episode_quality(item, "I am not sure.", "task")
    assert empty["task_metric"] == 0.0
    assert empty["f1"] == 0.0


def test_episode_quality_picks_the_reward_metric() -> None:
    item = _mc_item()
    answer = "Let me think about sizes. Answer: B"
    task = episode_quality(item, answer, "task")
    f1 = episode_quality(item, answer, "f1")
    assert task["task_metric"] == f1["task_metric"] == 1.0
    assert task["quality"] == 1.0
    assert f1["quality"] == f1["f1"] == task["f1"]
    assert 0.0 < f1["f1"] < 1.0
    with pytest.raises(ValueError, match="reward_metric"):
        episode_quality(item, answer, "bleu")  # type: ignore[arg-type]


def _code_item(k: int) -> Item:
    return Item(
        id=f"mbpp/{k}",
        task="mbpp",
        prompt=f"Write add{k}(a, b).",
        references=[],
        metric="mbpp_pass",
        half="routing",
        meta={"test_list": [f"assert add{k}(1, 2) == 3"]},
    )


def test_score_all_runs_each_distinct_answer_once_and_matches_score() -> None:
    """Concurrent sandbox runs give the scores one-by-one scoring gives, in the pairs' order."""
    items = [_code_item(k) for k in range(3)]
    right = [f"```python\ndef add{k}(a, b):\n    return a + b\n```" for k in range(3)]
    wrong = [f"```python\ndef add{k}(a, b):\n    return a - b\n```" for k in range(3)]
    pairs = [(items[0], right[0]), (items[1], wrong[1]), (items[2], right[2]), (items[0], right[0])]
    memo = ScoreMemo()
    scores = memo.score_all(pairs, "task", workers=3)
    assert [s["task_metric"] for s in scores] == [1.0, 0.0, 1.0, 1.0]
    assert len(memo) == 3 and memo.hits == 1  # the repeated pair was scored once
    assert scores == [episode_quality(item, answer, "task") for item, answer in pairs]
    again = memo.score_all([(items[1], wrong[1]), (items[1], right[1])], "task")
    assert [s["task_metric"] for s in again] == [0.0, 1.0] and len(memo) == 4 and memo.hits == 2
