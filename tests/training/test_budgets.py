"""training/budgets.py: reply lengths, budget hits, accuracy and cost per member and task, on
specialization/train items only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from hierrouter_graph import ModelSpec, PoolMember, RouterConfig
from tests.test_program_member import _Coder
from tests.training.scripted_pool import make_items
from training.experiments.budgets import budget_items, main, measure_budgets, percentile
from training.tasks.items import SPECIALIZATION
from training.tasks.routing_data import build_routing_dataset


class _Talker(FakeListChatModel):
    """Answers short for even items, with a 6-word (over-budget) ramble for odd ones; reports usage."""

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        prompt = str(messages[-1].content)
        text = "The answer is 23." if "Question 0:" in prompt else "Well, let me think about it"
        usage = {"input_tokens": 10, "output_tokens": len(text.split()), "total_tokens": 0}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text, usage_metadata=usage))])  # type: ignore[arg-type]


def test_rows_count_budget_hits_accuracy_and_cost_exactly() -> None:
    config = RouterConfig(
        models=[
            ModelSpec(name="talk-1B", source="fake", base_rate=0.01, max_new_tokens=5),
            ModelSpec(name="coder-1B", kind="program", source="fake", base_rate=0.01, execution_cost=0.5),
        ]
    )
    from hierrouter_graph.graph import build_pool

    talker = PoolMember("talk-1B", _Talker(responses=["x"]), 0.01, max_new_tokens=5)
    pool = build_pool(config, {"talk-1B": talker, "coder-1B": _Coder(responses=["x"])})
    items = make_items(2)  # 3 + 20 = 23, then 5 + 23 = 28
    talk, code = measure_budgets(config, pool, {"sum": items})
    assert (talk.items, talk.budget, talk.capped, talk.capped_share) == (2, 5, 1, 0.5)
    assert (talk.p50_tokens_out, talk.p90_tokens_out, talk.p99_tokens_out) == (5.0, 5.8, 5.98)
    assert talk.accuracy == 0.5 and talk.mean_cost == (0.01 * (10 + 4) + 0.01 * (10 + 6)) / 2
    assert (code.accuracy, code.capped, code.budget) == (
        1.0,
        0,
        None,
    )  # both programs print the sum; a given chat model: budget unknown
    assert code.mean_cost > 0.5  # tokens × rate plus the execution price of each run


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([7], 99) == 7
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([1, 2, 3, 4], 90) == pytest.approx(3.7)
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_items_never_come_from_the_router_test_split() -> None:
    special = budget_items(["arc_easy"], 5, "specialization")["arc_easy"]
    assert len(special) == 5 and all(item.half == SPECIALIZATION for item in special)
    assert budget_items(["arc_easy"], 5, "specialization") == {"arc_easy": special}  # seeded
    train = budget_items(["arc_easy"], 5, "train")["arc_easy"]
    test_ids = {item.id for item in build_routing_dataset(["arc_easy"], per_task=100).test}
    assert len(train) == 5 and not test_ids & {item.id for item in train}
    with pytest.raises(ValueError, match="source must be one of"):
        budget_items(["arc_easy"], 5, "test")


def test_cli_refuses_unknown_members_naming_the_config(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "c.yaml"
    RouterConfig(models=[ModelSpec(name="a", source="fake", base_rate=0.01)]).to_file(path)
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(path), "--members", "b", "--out", str(tmp_path / "o.json")])
    assert exited.value.code == 2 and re.search(
        r"--members: \['b'\] are not in .*c.yaml", capsys.readouterr().err
    )
    assert not (tmp_path / "o.json").exists()
