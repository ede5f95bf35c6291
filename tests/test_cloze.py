from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from langchain_core.messages import HumanMessage, SystemMessage

from hierrouter_graph import FixedRoutePolicy, HierRouterGraph, ModelSpec, RouterConfig
from hierrouter_graph.graph import build_pool
from hierrouter_graph.members.cloze import REFUSAL, parse_multiple_choice

MC = "Which planet is largest?\n\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth\n\nAnswer with the letter."


def test_parse_takes_the_first_option_run_and_its_paragraph() -> None:
    parsed = parse_multiple_choice("Describe the problem.\n\n" + MC + "\n\nA. Mars\nB. Jupiter (repeated)")
    assert parsed is not None
    assert parsed.question == "Which planet is largest?"
    assert parsed.letters == ("A", "B", "C", "D")
    assert parsed.options == ("Mars", "Jupiter", "Venus", "Earth")


@pytest.mark.parametrize(
    "text",
    ["What is 2 + 2?", "Q?\n\nB. one\nC. two", "Q?\n\nA. only one option", "A. no question\nB. above"],
)
def test_parse_rejects_non_multiple_choice(text: str) -> None:
    assert parse_multiple_choice(text) is None


@pytest.fixture()
def cloze_config(tiny_folders: dict[str, Path], tmp_path: Path) -> RouterConfig:
    source = str(tiny_folders["tiny-a"])
    return RouterConfig(
        models=[
            ModelSpec(name="gen", source=source, base_rate=0.001, max_new_tokens=4),
            ModelSpec(name="cloze", kind="cloze_mc", source=source, base_rate=0.002),
        ],
        horizon=1,
        cache_dir=tmp_path,
    )


def test_cloze_scores_each_option_like_an_unbatched_forward(cloze_config: RouterConfig) -> None:
    pool = build_pool(cloze_config)
    chat = pool["cloze"].chat_model
    assert chat.model is pool["gen"].batch_generate.model  # type: ignore[attr-defined]  # one shared base
    tok = chat.tokenizer
    options = ["Mars", "Jupiter", "Venus", "Earth"]
    batched, scored = chat.score_options("Which planet is largest?", options)
    prefix = tok("Question: Which planet is largest?\nAnswer:")["input_ids"]
    expected, total = [], 0
    for option in options:
        cont = tok(f" {option}", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prefix + cont])
        with torch.no_grad():
            logprobs = torch.log_softmax(chat.model(input_ids=ids).logits[0, :-1].float(), -1)
        expected.append(sum(float(logprobs[len(prefix) - 1 + i, t]) for i, t in enumerate(cont)))
        total += len(prefix) + len(cont)
    assert batched == pytest.approx(expected, abs=1e-4)
    assert scored == total
    reply = chat.invoke([HumanMessage(MC)])
    best = max(range(4), key=expected.__getitem__)
    assert reply.content == f"{'ABCD'[best]}. {options[best]}"
    assert reply.usage_metadata["input_tokens"] == total and reply.usage_metadata["output_tokens"] == 0


def test_cloze_member_in_the_graph_prices_scored_tokens_and_refuses_open_questions(
    cloze_config: RouterConfig,
) -> None:
    router = HierRouterGraph(cloze_config, FixedRoutePolicy(cloze_config.model_names, ["cloze"]))
    out = router.invoke(MC)
    hop = out["trace"][0]
    assert hop["reply"][0] in "ABCD" and hop["tokens_out"] == 0
    confidence = hop["confidence"]  # the option distribution's, from the same forward pass
    assert confidence is not None and -math.log(4) - 1e-9 <= confidence["mean_logprob"] <= 0
    assert 0 <= confidence["mean_entropy"] <= math.log(4) + 1e-9
    assert hop["cost"] == pytest.approx(0.002 * hop["tokens_in"])
    refused = router.invoke("What is seven times six?")
    assert refused["answer"] == REFUSAL and refused["cost"] == 0.0


def test_a_route_ending_on_the_cloze_specialist_answers_with_the_earlier_reply(
    cloze_config: RouterConfig,
) -> None:
    """The refusal of a specialist asked outside its domain is not the answer the user gets."""
    config = cloze_config.model_copy(update={"horizon": 2})
    router = HierRouterGraph(config, FixedRoutePolicy(config.model_names, ["gen", "cloze"]))
    out = router.invoke("What is seven times six?")
    first, second = out["trace"]
    assert second["reply"] == REFUSAL and first["reply"] != REFUSAL
    assert out["answer"] == first["reply"]
    assert out["context"].endswith(REFUSAL)  # the context (what the router saw) is unchanged


def test_letter_scoring_reads_the_next_token_after_the_chat_prompt(
    tiny_folders: dict[str, Path], tmp_path: Path
) -> None:
    source = str(tiny_folders["tiny-a"])
    spec = ModelSpec(name="letter", kind="cloze_mc", cloze_scoring="letter", source=source, dtype="float32")
    config = RouterConfig(models=[spec], horizon=1, cache_dir=tmp_path)
    chat = build_pool(config)["letter"].chat_model
    tok = chat.tokenizer
    messages = [SystemMessage("Be brief."), HumanMessage(MC)]
    reply = chat.invoke(messages)
    chat_text = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": MC}]
    prompt = tok.apply_chat_template(chat_text, tokenize=False, add_generation_prompt=True) + "Answer:"
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(chat.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
    expected = []
    for letter in "ABCD":
        variants = [tok(t, add_special_tokens=False)["input_ids"] for t in (letter, f" {letter}")]
        single = [v[0] for v in variants if len(v) == 1] or [v[0] for v in variants]
        expected.append(max(float(logprobs[t]) for t in single))
    best = max(range(4), key=expected.__getitem__)
    assert reply.content == f"{'ABCD'[best]}. {['Mars', 'Jupiter', 'Venus', 'Earth'][best]}"
    assert reply.response_metadata["option_logprobs"] == pytest.approx(
        dict(zip("ABCD", expected, strict=True)), abs=1e-4
    )
    assert reply.usage_metadata == {"input_tokens": len(ids), "output_tokens": 0, "total_tokens": len(ids)}


def test_letter_scoring_is_in_the_fingerprint_and_only_for_cloze_members(
    tiny_folders: dict[str, Path],
) -> None:
    source = str(tiny_folders["tiny-a"])
    text = ModelSpec(name="c", kind="cloze_mc", source=source)
    letter = ModelSpec(name="c", kind="cloze_mc", source=source, cloze_scoring="letter")
    assert "cloze_scoring" not in text.fingerprint()  # existing cloze members keep their replay keys
    assert '"cloze_scoring": "letter"' in letter.fingerprint()
    with pytest.raises(ValueError, match="cloze_scoring: only a kind 'cloze_mc' member scores options"):
        ModelSpec(name="g", source=source, cloze_scoring="letter")
