"""Quality Q: token F1 and every task metric, on hand-checked cases and real benchmark items."""

from __future__ import annotations

import pytest

from training.tasks.answers import (
    extract_choice,
    extract_code,
    extract_math_answer,
    extract_number,
    math_equal,
    normalize_math_answer,
    numbers_equal,
)
from training.tasks.benchmarks import load_task
from training.tasks.items import Item
from training.tasks.metrics import evaluate_reply, normalize_text, score, token_f1

CHOICES = ["The rainbow", "Circumcision", "A son", "Bar mitzvah"]


def _mc_item() -> Item:
    return Item(
        id="mmlu/x",
        task="mmlu",
        prompt="?",
        references=["B", "Circumcision"],
        metric="mc_letter",
        half="routing",
        meta={"choices": CHOICES, "gold_index": 1},
    )


def _by_id(task: str) -> dict[str, Item]:
    return {it.id: it for it in load_task(task)}


# ---------------------------------------------------------------------------------------------
# Token F1
# ---------------------------------------------------------------------------------------------


def test_normalize_text() -> None:
    assert normalize_text("The  Cat, an apple & A dog!") == "cat apple dog"


@pytest.mark.parametrize(
    ("prediction", "references", "expected"),
    [
        ("Paris", ["Paris"], 1.0),
        ("the cat sat", "cat sat on mat", 2 * 1.0 * 0.5 / 1.5),  # p=2/2, r=2/4
        ("cat cat dog", ["cat"], 2 * (1 / 3) * 1 / (1 / 3 + 1)),  # multiset: one "cat" counts
        ("Paris is nice", ["London", "paris"], 2 * (1 / 3) * 1 / (1 / 3 + 1)),  # max over refs
        ("B", ["B", "Circumcision"], 1.0),
        ("A", ["A"], 0.0),  # quirk: "a" is an article, removed on both sides
        ("", ["Paris"], 0.0),
        ("Paris", [], 0.0),
        ("London", ["Paris"], 0.0),
        ("The answer: 42.", ["42"], 2 * 0.5 * 1 / 1.5),
    ],
)
def test_token_f1_values(prediction: str, references: list[str] | str, expected: float) -> None:
    assert token_f1(prediction, references) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Answer: B", 1),
        ("The answer is (C).", 2),
        ("answer: **C**", 2),
        ("The final answer is: D", 3),
        ("The correct option is C because it fits.", 2),
        ("I choose A", 0),
        ("\\boxed{D}", 3),
        ("B", 1),
        ("B.", 1),
        ("(D)", 3),
        ("**B**", 1),
        ("B. Circumcision", 1),
        ("C) A son", 2),
        ("I think it is circumcision.", 1),  # option text, no letter
        ("Option (A) is wrong, (B) is right", 1),  # parenthesised letters: last wins
        # The last explicit statement wins over earlier mentions (multi-reply context).
        ("A is wrong. The answer is B. Actually, the correct answer is D.", 3),
        ("Answer: B\n\nOn reflection, Answer: C", 2),
        ("The answer is B.\nA. The rainbow\nC. A son", 1),  # statement beats listed options
        # No decision:
        ("A. The rainbow\nB. Circumcision\nC. A son\nD. Bar mitzvah", None),  # echoed list
        ("A duck is a bird", None),
        ("The answer is a bit unclear", None),  # lowercase "a" is an article
        ("Circumcision, not the rainbow", None),  # two option texts: ambiguous
        ("", None),
    ],
)
def test_extract_choice(reply: str, expected: int | None) -> None:
    assert extract_choice(reply, CHOICES) == expected


def test_extract_choice_respects_the_number_of_options() -> None:
    assert extract_choice("Answer: E", 4) is None
    assert extract_choice("Answer: E", 5) == 4


def test_mc_score_and_f1() -> None:
    item = _mc_item()
    assert score(item, "Let me think. Answer: B") == 1.0
    assert score(item, "Answer: A") == 0.0
    assert score(item, "Circumcision", metric="f1") == 1.0
    assert evaluate_reply(item, "B") == {"task_metric": 1.0, "f1": 1.0}
    assert evaluate_reply(item, "A") == {"task_metric": 0.0, "f1": 0.0}


def test_mc_gold_letter_of_real_items() -> None:
    for it in load_task("arc_challenge")[:100]:
        assert score(it, f"Answer: {it.references[0]}") == 1.0
        wrong = "A" if it.references[0] != "A" else "B"
        assert score(it, f"Answer: {wrong}") == 0.0


# ---------------------------------------------------------------------------------------------
# GSM8K
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("#### 1,234", "1,234"),
        ("The answer is $18.00.", "18.00"),
        ("so 5 + 3 = 8 apples", "8"),
        ("\\boxed{42}", "42"),
        ("Answer: -3", "-3"),
        ("She had 18. Then 20 more.\n#### 18\nand 7 left over", "18"),  # statement beats last
        ("answer is 5. Wait, the answer is 6", "6"),  # last statement wins
        ("It costs 0.5 dollars", "0.5"),
        ("nothing here", None),
    ],
)
def test_extract_number(reply: str, expected: str | None) -> None:
    assert extract_number(reply) == expected


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("18.0", "18", True),
        ("$1,000", "1000", True),
        ("18.", "18", True),
        ("5%", "5", True),
        (".5", "0.5", True),
        ("17", "18", False),
        ("abc", "18", False),
    ],
)
def test_numbers_equal(a: str, b: str, equal: bool) -> None:
    assert numbers_equal(a, b) is equal


def test_gsm8k_real_items() -> None:
    items = load_task("gsm8k")[:50]
    assert all(score(it, it.meta["solution"]) == 1.0 for it in items)
    first = items[0]  # gold 18
    assert score(first, "She makes $18 every day.") == 1.0
    assert score(first, "She makes $18.00 every day. #### 18") == 1.0
    assert score(first, "The answer is \\boxed{18}") == 1.0
    assert score(first, "9 eggs at $2 is 16") == 0.0


# ---------------------------------------------------------------------------------------------
# MATH
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("\\frac{1}{2}", "0.5"),
        ("\\dfrac12", "1/2"),
        ("\\tfrac{3}{4}", "\\frac{3}{4}"),
        ("\\left( 3, 4 \\right)", "(3,4)"),
        ("90^\\circ", "90"),
        ("90^{\\circ}", "90"),
        ("\\$5.00", "5"),
        ("5\\text{ cm}", "5"),
        ("\\text{Monday}", "Monday"),
        ("x = 3", "3"),
        ("10{,}000", "10000"),
        ("10,000", "10000"),
        ("3.", "3"),
        (".5", "\\frac12"),
        ("\\sqrt2", "\\sqrt{2}"),
        ("-\\frac{1}{2}", "-0.5"),
        ("50\\%", "50"),
        ("2 \\sqrt{3}", "2\\sqrt{3}"),
        ("\\frac{\\sqrt{3}}{2}", "\\dfrac{\\sqrt{3}}{2}"),
    ],
)
def test_math_equal_after_normalisation(a: str, b: str) -> None:
    assert math_equal(a, b), (normalize_math_answer(a), normalize_math_answer(b))


@pytest.mark.parametrize(
    ("a", "b"), [("2", "3"), ("\\frac{1}{3}", "0.33"), ("\\sqrt{2}", "2"), ("", "1"), ("x", "y")]
)
def test_math_not_equal(a: str, b: str) -> None:
    assert not math_equal(a, b)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("so \\boxed{\\frac{1}{2}} then \\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
        ("Final Answer: The final answer is $7$. I hope it is correct.", "7"),
        ("\\boxed{\\frac{1}{2}", None),  # unbalanced, truncated reply
        ("no answer", None),
    ],
)
def test_extract_math_answer(reply: str, expected: str | None) -> None:
    assert extract_math_answer(reply) == expected


def test_math_real_items() -> None:
    items = load_task("math")
    assert all(score(it, it.meta["solution"]) == 1.0 for it in items[:300])
    half = next(it for it in items if it.references[0] == "\\frac{1}{2}")
    assert score(half, "so the probability is $\\boxed{0.5}$.") == 1.0
    assert score(half, "so the probability is $\\boxed{\\dfrac{1}{3}}$.") == 0.0
    assert score(half, "the probability is one half") == 0.0


# ---------------------------------------------------------------------------------------------
# Code
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            "Here:\n```python\ndef f():\n    return 1\n```\nthen\n```\nprint(2)\n```",
            "def f():\n    return 1\n",
        ),
        ("```py\nx = 1\n```\n```python\nx = 2\n```", "x = 2\n"),  # last python block
        ("```\nx = 1\n```", "x = 1\n"),  # untagged fence
        ("def f(): pass", "def f(): pass"),  # no fence: whole reply
        ("```python\ndef g():\n    return 2", "def g():\n    return 2"),  # truncated fence
    ],
)
def test_extract_code(reply: str, expected: str) -> None:
    assert extract_code(reply) == expected


def test_mbpp_canonical_solutions_pass_and_wrong_ones_fail() -> None:
    items = _by_id("mbpp")
    for item_id in ("mbpp/11", "mbpp/12", "mbpp/367"):  # 367 needs its test_setup_code
        item = items[item_id]
        assert score(item, f"Sure!\n```python\n{item.references[0]}\n```\nDone.") == 1.0, item_id
    remove_occ = items["mbpp/11"]
    assert score(remove_occ, remove_occ.references[0]) == 1.0  # unfenced reply
    wrong = "```python\ndef remove_Occ(s, ch):\n    return s[1:-1]\n```"
    assert score(remove_occ, wrong) == 0.0
    assert score(remove_occ, "I cannot solve this.") == 0.0
    report = evaluate_reply(remove_occ, wrong)
    assert report["task_metric"] == 0.0
    assert 0.0 <= report["f1"] <= 1.0


def test_humaneval_canonical_solution_passes() -> None:
    item = load_task("humaneval")[0]
    assert score(item, item.references[0]) == 1.0  # completion of the stub
    full = item.meta["code_prompt"] + item.references[0]
    assert score(item, f"```python\n{full}\n```") == 1.0  # whole function
    assert score(item, "```python\ndef has_close_elements(n, t):\n    return False\n```") == 0.0


def test_metric_selection() -> None:
    item = _mc_item()
    assert score(item, "Answer: B", metric="task") == 1.0
    assert score(item, "Answer: B", metric="mc_letter") == 1.0
    assert score(item, "Answer: B", metric="f1") == pytest.approx(token_f1("Answer: B", ["B"]))
    with pytest.raises(ValueError, match="unknown metric"):
        score(item, "B", metric="bleu")
