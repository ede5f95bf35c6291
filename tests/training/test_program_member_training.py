"""A program-aided member in training: recorded into the SQLite replay store, replayed by the tree
walker without running a program again, scored by what its program printed."""

from __future__ import annotations

from pathlib import Path

from hierrouter_graph import ModelSpec, PoolMember, RouterConfig
from hierrouter_graph.graph import build_pool
from hierrouter_graph.members.program import ProgramRunner, ProgramSettings, program_aided
from tests.test_program_member import _Checker, _Coder, _Counting
from tests.training.scripted_pool import make_items
from training.replay.record import record_outcome_tree
from training.replay.store import ReplayStore
from training.replay.tree import outcome_tree
from training.tasks.answers import extract_choice, extract_math_answer, extract_number
from training.tasks.metrics import score


def _config() -> RouterConfig:
    return RouterConfig(
        models=[
            ModelSpec(
                name="coder-1B", kind="program", source="fake:coder-1B", base_rate=0.01, execution_cost=0.5
            ),
            ModelSpec(name="chat-2B", source="fake:chat-2B", base_rate=0.02),
        ],
        horizon=2,
    )


def test_record_then_replay_runs_each_program_once_and_scores_its_output(tmp_path: Path) -> None:
    config, counting = _config(), _Counting()
    runner = ProgramRunner("coder-1B", ProgramSettings(), counting)
    coder = PoolMember(
        "coder-1B", _Coder(responses=["x"]), 0.01, fingerprint=config.spec("coder-1B").fingerprint()
    )
    given = {
        "coder-1B": program_aided(coder, config.spec("coder-1B"), runner),
        "chat-2B": _Checker(responses=["x"]),
    }
    pool = build_pool(config, given)
    items = make_items(2)
    with ReplayStore(tmp_path / "tree.sqlite") as store:
        record_outcome_tree(config, pool, items, store, batch_size=4, progress=False)
        runs_recorded = len(counting.codes)
        assert runs_recorded == 2 * 3  # per item: coder at stage 0, coder after coder, coder after chat
        tree = outcome_tree(config, pool, items, store)
        again = outcome_tree(config, pool, items, store)
    assert len(counting.codes) == runs_recorded  # replay runs nothing
    assert tree == again
    first = tree[items[0].id]
    assert first[("coder-1B",)].quality == 1.0  # 3 + 20 = 23, printed by the program
    assert first[("coder-1B",)].cost == again[items[0].id][("coder-1B",)].cost
    hop_tokens = first[("coder-1B",)].cost - 0.5
    assert hop_tokens > 0 and first[("coder-1B", "chat-2B")].cost == first[("coder-1B",)].cost + 0.02 * 14
    assert first[("coder-1B", "chat-2B")].quality == 1.0  # the checker read the real output
    assert first[("chat-2B",)].quality == 0.0  # no program output in its context


def test_extractors_read_the_output_block_first() -> None:
    reply = "```python\nprint(17)\nprint('answer:', 18)\n```\n```output\n17\nanswer: 18\n\n```"
    assert extract_number(reply) == "18"
    assert extract_number("Work: 3 + 4 = 7, so 12.") == "12"  # no output block: unchanged
    failed = "```python\nprint(1/0)\n```\n```output\n```\nStatus: error (exit status 1)."
    assert extract_number(failed) is None  # code and exit status are not answers
    assert extract_math_answer("```output\n3/4\n```") == "3/4"
    assert extract_math_answer("```output\nx = \\boxed{\\frac{3}{4}}\n```") == "\\frac{3}{4}"
    assert extract_math_answer("So \\boxed{5}.") == "5"
    assert extract_choice("```python\nprint('B')\n```\n```output\nB\n```", 4) == 1
    assert extract_choice("(A) is wrong.\n```output\nAnswer: C\n```", 4) == 2
    assert extract_choice("```output\nJupiter\n```", ["Mars", "Jupiter", "Venus"]) == 1


def test_metric_scores_a_program_reply_by_its_printed_line() -> None:
    item = make_items(1)[0]  # 3 plus 20
    assert score(item, "```python\nprint(3 + 20)\n```\n```output\n23\n```") == 1.0
    assert score(item, "```python\nx = 23\nprint(x + 1)\n```\n```output\n24\n```") == 0.0
