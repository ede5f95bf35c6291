"""A cloze multiple-choice specialist: answers lettered questions by option log-likelihood.

Small models know more than their letter answers show: SmolLM2-135M picks the right letter 27.5%
of the time (chance, with a strong "A" bias) but ranks the right option TEXT first 49% of the time
when each option is scored as a continuation of "Question: …\\nAnswer:" (200 ARC-Easy + MMLU items,
see ../docs/offline-pool.md). This chat model does exactly that and replies "X. option text".
It is deliberately narrow: a prompt without lettered options gets a short refusal, never a
generated answer, so the router has a real specialist to learn to call — and not to call.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict

from hierrouter_graph.confidence import option_confidence

__all__ = ["REFUSAL", "ClozeMultipleChoiceChat", "MultipleChoice", "parse_multiple_choice"]

REFUSAL = "I can only answer multiple-choice questions with lettered options (A., B., ...)."

_OPTION_LINE = re.compile(r"^\s*\(?([A-J])[.)]\s+(.+?)\s*$")


@dataclass(frozen=True)
class MultipleChoice:
    question: str
    letters: tuple[str, ...]
    options: tuple[str, ...]


def parse_multiple_choice(text: str) -> MultipleChoice | None:
    """The FIRST run of lettered option lines (A., B., … consecutive, at least two) and its question.

    The first run, because later hops append replies to the context and a reply may repeat the
    options; the question is the paragraph right above the options (the hop prompt puts the stage
    instruction in its own paragraph before the query).
    """
    lines = text.splitlines()
    for start, line in enumerate(lines):
        first = _OPTION_LINE.match(line)
        if not first or first.group(1) != "A":
            continue
        letters: list[str] = []
        options: list[str] = []
        for follow in lines[start:]:
            match = _OPTION_LINE.match(follow)
            expected = chr(ord("A") + len(letters))
            if not match or match.group(1) != expected:
                break
            letters.append(match.group(1))
            options.append(match.group(2))
        if len(options) < 2:
            continue
        above = "\n".join(lines[:start]).rstrip()
        question = above.split("\n\n")[-1].strip()
        if question:
            return MultipleChoice(question, tuple(letters), tuple(options))
    return None


class ClozeMultipleChoiceChat(BaseChatModel):
    """LangChain chat model over a causal LM that scores options instead of generating.

    Every option of a question is scored in ONE batched forward pass (right-padded); the score is
    the sum of the option tokens' log-probabilities after the prefix "Question: q\\nAnswer:", with no
    chat template (the measured 49% used exactly this). ``usage_metadata.input_tokens`` is the
    number of tokens scored (prefix + option, for each option), so the hop prices it as
    base_rate × tokens scored; ``output_tokens`` is 0 because nothing is generated.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any
    tokenizer: Any
    model_id: str = "cloze-mc"
    refusal: str = REFUSAL
    scoring: Literal["option_text", "letter"] = "option_text"
    """'option_text' (above) or 'letter': the chat prompt the member was given, then "Answer:", and
    each option letter's next-token log-probability (one forward pass of the prompt; an
    instruction-tuned model's letter is far better than its rambling generation, OFFLINE probe:
    Qwen2.5-Coder-1.5B 25/30 ARC-Easy by letter vs 24/30 generating, 21/40 vs 18/40 MMLU)."""

    @property
    def _llm_type(self) -> str:
        return "cloze-multiple-choice"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        parsed = parse_multiple_choice(messages[-1].text if messages else "")
        if parsed is None:
            message = AIMessage(
                self.refusal, usage_metadata={"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
            )
            return ChatResult(generations=[ChatGeneration(message=message)])
        if self.scoring == "letter":
            scores, scored_tokens = self.score_letters(messages, parsed.letters)
        else:
            scores, scored_tokens = self.score_options(parsed.question, parsed.options)
        best = max(range(len(scores)), key=scores.__getitem__)
        reply = f"{parsed.letters[best]}. {parsed.options[best]}"
        message = AIMessage(
            reply,
            usage_metadata={"input_tokens": scored_tokens, "output_tokens": 0, "total_tokens": scored_tokens},
            response_metadata={
                "option_logprobs": dict(zip(parsed.letters, scores, strict=True)),
                "confidence": option_confidence(scores).as_dict(),
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def score_options(self, question: str, options: Sequence[str]) -> tuple[list[float], int]:
        """(sum of option-token log-probs per option, total tokens scored)."""
        import torch

        prefix = self.tokenizer(f"Question: {question}\nAnswer:", add_special_tokens=True)["input_ids"]
        continuations = [
            self.tokenizer(f" {option}", add_special_tokens=False)["input_ids"] for option in options
        ]
        rows = [prefix + cont for cont in continuations]
        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            ids[index, : len(row)] = torch.tensor(row)
            mask[index, : len(row)] = 1
        device = next(self.model.parameters()).device
        with _forward_lock(self.model), torch.inference_mode():
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1).cpu()
        scores = []
        for index, cont in enumerate(continuations):
            positions = torch.arange(len(prefix) - 1, len(prefix) - 1 + len(cont))
            targets = torch.tensor(cont)
            scores.append(float(logprobs[index, positions, targets].sum()))
        return scores, sum(len(row) for row in rows)

    def score_letters(
        self, messages: Sequence[BaseMessage], letters: Sequence[str]
    ) -> tuple[list[float], int]:
        """(log-prob of each letter as the next token after the chat prompt + "Answer:", tokens scored).

        A letter may be tokenized with or without a leading space; the better of the two counts.
        """
        import torch

        roles = {"system": "system", "human": "user", "ai": "assistant"}
        chat = [{"role": roles.get(m.type, "user"), "content": m.text} for m in messages]
        prompt = self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(prompt + "Answer:", add_special_tokens=False)["input_ids"]
        device = next(self.model.parameters()).device
        with _forward_lock(self.model), torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float()
        logprobs = torch.log_softmax(logits, dim=-1).cpu()
        scores = []
        for letter in letters:
            variants = {
                tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
                for text in (letter, f" {letter}")
            }
            single = [v[0] for v in variants if len(v) == 1] or [v[0] for v in variants if v]
            scores.append(max(float(logprobs[token]) for token in single))
        return scores, len(ids)


_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _forward_lock(model: Any) -> threading.Lock:
    """One forward at a time per shared model: the generalist and the specialist share weights."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(model), threading.Lock())
