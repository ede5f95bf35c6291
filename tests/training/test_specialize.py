"""LoRA specialists: data halves, targets, label masking, bucketing, training, resume, output.

Training runs on the tiny random Qwen2 of ``tests/tiny_models.py`` (seconds, no hub); the data
tests use the real benchmark files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from hierrouter_graph import ModelSpec, RouterConfig
from hierrouter_graph.hop import build_hop_messages
from hierrouter_graph.members.local import build_pool_member
from training.specialists.card import CARD_NAME
from training.specialists.examples import (
    DOMAINS,
    Example,
    PromptFormat,
    answer_loss,
    build_examples,
    code_target,
    collate,
    domain_items,
    encode_example,
    length_bucketed_batches,
    math_target,
    train_schedule,
)
from training.specialists.lora import CHECKPOINT_NAME, train_specialist
from training.specialists.settings import SpecializeArgs, resolve_precision
from training.tasks.benchmarks import load_routing_items, load_specialization_items
from training.tasks.items import ALL_TASKS, Item
from training.tasks.metrics import score
from training.tasks.routing_data import build_routing_dataset

# ------------------------------------------------------------------------------------- data halves


def _native(item: Item) -> str:
    return item.id.split("/", 1)[1]


@pytest.mark.parametrize("task", [*ALL_TASKS, "humaneval"])
def test_specialization_items_never_meet_the_routing_dataset(task: str) -> None:
    special = {_native(it) for it in load_specialization_items(task)}
    assert special, task
    assert all(it.half == "specialization" for it in load_specialization_items(task))
    if task == "humaneval":  # no routing half at all
        assert load_routing_items(task) == []
        return
    # The largest routing dataset there can be: every routing item of the task, train and test.
    biggest = build_routing_dataset([task], per_task=10**9)
    routing = {_native(it) for it in [*biggest.train, *biggest.test]}
    assert routing == {_native(it) for it in load_routing_items(task)}
    assert routing, task
    assert not routing & special, f"{task}: {sorted(routing & special)[:5]}"


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_domain_items_are_the_specialization_half_of_its_tasks(domain: str) -> None:
    items = domain_items(domain)
    assert {it.task for it in items} == set(DOMAINS[domain])
    routing = {it.id for task in DOMAINS[domain] for it in load_routing_items(task)}
    expected = {it.id for task in DOMAINS[domain] for it in load_specialization_items(task)}
    assert {it.id for it in items} == expected
    assert not {it.id for it in items} & routing
    with pytest.raises(ValueError, match="unknown domain"):
        domain_items("poetry")


# ------------------------------------------------------------------------------------------ targets


def test_code_targets_are_one_fenced_block_that_passes_the_benchmark_tests() -> None:
    mbpp = load_specialization_items("mbpp")[:8]
    humaneval = load_specialization_items("humaneval")[:4]
    for item in [*mbpp, *humaneval]:
        target = code_target(item)
        assert target.startswith("```python\n") and target.endswith("\n```")
        assert target.count("```") == 2
        assert '"""' not in target  # docstrings removed: the prompt already shows them
        assert "\r" not in target
        assert score(item, target) == 1.0, item.id  # ast normalisation kept the semantics


def test_math_targets_end_in_a_boxed_answer_the_metric_accepts() -> None:
    gsm = load_specialization_items("gsm8k")[:10]
    math = load_specialization_items("math")[:10]
    for item in [*gsm, *math]:
        target = math_target(item)
        assert "\\boxed{" in target
        assert score(item, target) == 1.0, item.id
    for item in gsm:
        target = math_target(item)
        assert "####" not in target and "<<" not in target
        assert target.endswith(f"\\boxed{{{item.references[0]}}}.")


# ------------------------------------------------------------------------- prompts and label masking


@pytest.fixture(scope="module")
def tiny_spec(tiny_folders: dict[str, Path]) -> ModelSpec:
    return ModelSpec(name="tiny-a", source=str(tiny_folders["tiny-a"]), max_new_tokens=16)


@pytest.fixture()
def tiny_pool(tiny_spec: ModelSpec, tmp_path: Path) -> RouterConfig:
    return RouterConfig(models=[tiny_spec], horizon=2, cache_dir=tmp_path / "cache")


def _items(n: int = 12) -> list[Item]:
    return [
        Item(
            id=f"mbpp/{k}",
            task="mbpp",
            prompt=f"Write a function add{k} that adds two numbers.",
            references=[f"def add{k}(a, b):\n    return a + b"],
            metric="mbpp_pass",
            half="specialization",
            meta={"test_list": [f"assert add{k}(1, 2) == 3"]},
        )
        for k in range(n)
    ]


def test_prompt_is_the_pools_stage0_hop_and_only_answer_tokens_are_labelled(
    tiny_spec: ModelSpec, tiny_pool: RouterConfig
) -> None:
    member = build_pool_member(tiny_spec, tiny_pool.resolved_cache_dir)
    tokenizer = member.counter.tokenizer  # type: ignore[union-attr]
    fmt = PromptFormat.for_pool(member, tiny_pool)
    item = _items(1)[0]
    answer = code_target(item)
    example = encode_example(tokenizer, fmt, item.id, item.task, item.prompt, answer)

    # Exactly what run_hop / BatchGenerator feed the model at stage 0.
    hop_prompt = member.counter.render_prompt(  # type: ignore[union-attr]
        build_hop_messages(member, tiny_pool.stage_prompt(0), item.prompt)
    )
    assert hop_prompt.startswith("<|im_start|>user\n" + tiny_pool.stage_prompt(0) + "\n\n" + item.prompt)
    assert hop_prompt.endswith("<|im_start|>assistant\n")
    prompt_ids = tokenizer(hop_prompt)["input_ids"]
    assert list(example.input_ids[: example.n_prompt]) == prompt_ids

    labels = example.labels
    assert labels[: example.n_prompt] == [-100] * example.n_prompt
    assert labels[example.n_prompt :] == list(example.input_ids[example.n_prompt :])
    answer_text = tokenizer.decode(example.input_ids[example.n_prompt :])
    assert answer_text == answer + "<|im_end|>"  # learns to stop at the turn terminator


def test_collate_masks_padding_even_when_pad_is_the_terminator() -> None:
    eos = 7
    short = Example("a", "mbpp", (1, 2, 3, eos), n_prompt=2)
    long = Example("b", "mbpp", (1, 2, 3, 4, 5, eos), n_prompt=3)
    batch = collate([short, long], pad_id=eos)
    assert batch["input_ids"].tolist() == [[1, 2, 3, eos, eos, eos], [1, 2, 3, 4, 5, eos]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]
    # The answer's own terminator is a label; the identical pad ids after it are not.
    assert batch["labels"].tolist() == [[-100, -100, 3, eos, -100, -100], [-100, -100, -100, 4, 5, eos]]


def test_examples_with_answers_over_the_budget_are_dropped_and_counted(
    tiny_spec: ModelSpec, tiny_pool: RouterConfig
) -> None:
    member = build_pool_member(tiny_spec, tiny_pool.resolved_cache_dir)
    fmt = PromptFormat.for_pool(member, tiny_pool)
    items = _items(3)
    long = Item(
        id="mbpp/99",
        task="mbpp",
        prompt="Write a long function.",
        references=["def f(x):\n" + "    x = x + 1\n" * 80 + "    return x"],
        metric="mbpp_pass",
        half="specialization",
    )
    examples, counts = build_examples(member.counter.tokenizer, fmt, [*items, long], 40)  # type: ignore[union-attr]
    assert [ex.id for ex in examples] == [it.id for it in items]
    assert counts == {"mbpp": {"available": 4, "used": 3, "dropped_too_long": 1}}


# ------------------------------------------------------------------------------------------ batches


def test_length_buckets_cover_every_example_once_within_the_budget() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(5, 300) for _ in range(200)] + [900]
    batches = length_bucketed_batches(lengths, 1024, random.Random(1))
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) * longest <= 1024 or len(batch) == 1
    # Similar lengths share a batch: far less padding than the same batch sizes drawn at random.
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    shuffled = list(range(len(lengths)))
    random.Random(2).shuffle(shuffled)
    random_padded, start = 0, 0
    for batch in batches:
        chunk = shuffled[start : start + len(batch)]
        random_padded += len(chunk) * max(lengths[i] for i in chunk)
        start += len(batch)
    assert padded < 0.7 * random_padded
    assert padded < 1.15 * sum(lengths)
    # The batch count depends on the lengths only; the order and ties on the rng.
    other = length_bucketed_batches(lengths, 1024, random.Random(99))
    assert len(other) == len(batches) and other != batches


def test_schedule_is_deterministic_and_runs_over_epochs() -> None:
    lengths = [10, 12, 30, 31, 60, 62, 90]
    per_epoch = len(length_bucketed_batches(lengths, 64, random.Random(0)))
    schedule = train_schedule(lengths, 64, seed=3, steps=2 * per_epoch + 1)
    assert schedule == train_schedule(lengths, 64, seed=3, steps=2 * per_epoch + 1)
    assert len(schedule) == 2 * per_epoch + 1
    first, second = schedule[:per_epoch], schedule[per_epoch : 2 * per_epoch]
    assert sorted(i for b in first for i in b) == list(range(len(lengths)))
    assert sorted(i for b in second for i in b) == list(range(len(lengths)))
    assert train_schedule(lengths, 64, seed=4, steps=per_epoch) != first


def test_precision_choice() -> None:
    assert resolve_precision("fp32") == "fp32"
    assert resolve_precision("bf16") == "bf16"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert resolve_precision("auto") == ("bf16" if native else "fp32")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8")


# ----------------------------------------------------------------------------------------- training

FAST = SpecializeArgs(domain="code", lr=1e-2, rank=4, batch_tokens=256, checkpoint_every=2, dropout=0.1)


def _mean_loss(model: torch.nn.Module, examples: list[Example], pad_id: int) -> float:
    model.eval()
    with torch.no_grad():
        return float(model(**collate(examples, pad_id)).loss)


def test_a_few_steps_reduce_the_answer_loss(
    tiny_spec: ModelSpec, tiny_pool: RouterConfig, tmp_path: Path
) -> None:
    items = _items(12)
    args = SpecializeArgs(**{**FAST.as_dict(), "steps": 10, "dropout": 0.0})
    result = train_specialist(tiny_spec, tiny_pool, items, tmp_path / "out", args, progress=False)
    assert result.finished and result.steps_done == 10
    member = build_pool_member(tiny_spec, tiny_pool.resolved_cache_dir)
    tokenizer = member.counter.tokenizer  # type: ignore[union-attr]
    examples, _ = build_examples(tokenizer, PromptFormat.for_pool(member, tiny_pool), items, 128)
    model = result.model
    after = _mean_loss(model, examples, tokenizer.pad_token_id)
    with model.disable_adapter():
        before = _mean_loss(model, examples, tokenizer.pad_token_id)
    assert after < 0.7 * before, (before, after)
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_answer_loss_equals_the_models_own_loss(
    tiny_spec: ModelSpec, tiny_pool: RouterConfig, tmp_path: Path
) -> None:
    items = _items(6)
    args = SpecializeArgs(**{**FAST.as_dict(), "steps": 2, "dropout": 0.0})
    model = train_specialist(tiny_spec, tiny_pool, items, tmp_path / "out", args, progress=False).model
    member = build_pool_member(tiny_spec, tiny_pool.resolved_cache_dir)
    tokenizer = member.counter.tokenizer  # type: ignore[union-attr]
    examples, _ = build_examples(tokenizer, PromptFormat.for_pool(member, tiny_pool), items, 128)
    batch = collate(examples, tokenizer.pad_token_id)
    model.eval()
    with torch.no_grad():
        fast, reference = answer_loss(model, batch), model(**batch).loss
    assert torch.allclose(fast, reference, rtol=1e-5), (fast, reference)
    batch["labels"][:, -3:] = -100  # fewer labelled tokens: a different value, still equal
    with torch.no_grad():
        assert torch.allclose(answer_loss(model, batch), model(**batch).loss, rtol=1e-5)


def _adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_killed_run_resumes_to_identical_weights(
    tiny_spec: ModelSpec, tiny_pool: RouterConfig, tmp_path: Path
) -> None:
    items = _items(12)
    args = SpecializeArgs(**{**FAST.as_dict(), "steps": 7})
    whole = train_specialist(tiny_spec, tiny_pool, items, tmp_path / "whole", args, progress=False)
    assert whole.finished

    killed = train_specialist(
        tiny_spec, tiny_pool, items, tmp_path / "killed", args, progress=False, stop_after=5
    )
    assert not killed.finished and killed.steps_done == 5
    folder = tmp_path / "killed"
    assert not (folder / CARD_NAME).exists() and not (folder / "adapter_model.safetensors").exists()
    saved = torch.load(folder / CHECKPOINT_NAME, weights_only=False)
    assert saved["step"] == 4  # every 2 steps: step 5 was lost with the "kill"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporaries left

    resumed = train_specialist(tiny_spec, tiny_pool, items, folder, args, progress=False)
    assert resumed.finished and resumed.resumed_from == 4
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history]
    final_whole, final_resumed = _adapter_tensors(tmp_path / "whole"), _adapter_tensors(folder)
    assert final_whole.keys() == final_resumed.keys() and final_whole
    for name, tensor in final_whole.items():
        assert torch.equal(tensor, final_resumed[name]), name
    for name, param in whole.model.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, dict(resumed.model.named_parameters())[name]), name
    assert json.loads((folder / CARD_NAME).read_text())["training"]["resumed_at_steps"] == [4]


def test_resuming_with_other_settings_is_refused(
    tiny_spec: ModelSpec, tiny_pool: RouterConfig, tmp_path: Path
) -> None:
    items = _items(6)
    args = SpecializeArgs(**{**FAST.as_dict(), "steps": 4})
    train_specialist(tiny_spec, tiny_pool, items, tmp_path / "run", args, progress=False, stop_after=2)
    other = SpecializeArgs(**{**args.as_dict(), "lr": 1e-3})
    with pytest.raises(ValueError, match="lr"):
        train_specialist(tiny_spec, tiny_pool, items, tmp_path / "run", other, progress=False)
    fresh = train_specialist(
        tiny_spec, tiny_pool, items, tmp_path / "run", other, progress=False, resume=False
    )
    assert fresh.finished and fresh.resumed_from == 0


def test_output_folder_is_a_bf16_peft_adapter_with_a_card(
    tiny_spec: ModelSpec, tiny_pool: RouterConfig, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    items = _items(8)
    args = SpecializeArgs(**{**FAST.as_dict(), "steps": 4})
    out = tmp_path / "adapter"
    result = train_specialist(tiny_spec, tiny_pool, items, out, args, progress=False)
    tensors = _adapter_tensors(out)
    assert tensors and all(t.dtype == torch.bfloat16 for t in tensors.values())
    assert all("lora_" in name for name in tensors)

    base = AutoModelForCausalLM.from_pretrained(tiny_spec.source, dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, str(out))
    trained = {n: p for n, p in result.model.named_parameters() if p.requires_grad}
    for name, param in loaded.named_parameters():
        if "lora_" in name:
            assert torch.equal(param.float(), trained[name].detach().to(torch.bfloat16).float()), name
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        adapted = loaded(input_ids=ids).logits
        with loaded.disable_adapter():
            plain = loaded(input_ids=ids).logits
    assert not torch.allclose(adapted, plain)  # the adapter changes the model

    card = json.loads((out / CARD_NAME).read_text())
    assert card["method"]["type"] == "LoRA" and card["method"]["rank"] == 4
    assert card["data"]["tasks"] == {"mbpp": {"available": 8, "used": 8, "dropped_too_long": 0}}
    assert card["data"]["half"] == "specialization"
    assert card["training"]["steps"] == 4 and card["seed"] == 42
    assert card["training"]["tokens_per_s"] > 0 and card["training"]["seconds"] > 0
    assert card["prompt_format"]["instruction"] == tiny_pool.stage_prompt(0)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == tiny_spec.source


# ------------------------------------------------------------------------------------- evaluation


def test_evaluation_items_are_the_routers_test_split_of_the_domain() -> None:
    from training.specialists.paired_check import eval_items

    items = eval_items("code")
    expected = [it for it in build_routing_dataset(per_task=100).test if it.task == "mbpp"]
    assert sorted(it.id for it in items) == sorted(it.id for it in expected) and len(items) == 30
    assert all(it.half == "routing" for it in items)
    special = {it.id for it in domain_items("code")}
    assert not special & {it.id for it in eval_items("code", "routing")}
    assert {it.task for it in eval_items("math")} == {"gsm8k", "math"}


def test_paired_comparison_keeps_only_a_win_beyond_the_noise() -> None:
    from training.specialists.paired_check import mcnemar_exact, paired_comparison

    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar_exact(3, 7) == mcnemar_exact(7, 3)
    generalist = [0.0] * 20 + [1.0] * 10
    clear = [1.0] * 30
    result = paired_comparison(generalist, clear)
    assert result["keep"] and result["difference"].low > 0
    assert result["specialist_wins"] == 20 and result["specialist_losses"] == 0
    noisy = [1.0] * 5 + [0.0] * 20 + [1.0] * 5  # 5 wins, 5 losses
    tie = paired_comparison(generalist, noisy)
    assert not tie["keep"] and tie["difference"].low <= 0 <= tie["difference"].high
    assert tie["specialist_wins"] == tie["specialist_losses"] == 5
    assert tie["mcnemar_p"] == 1.0


def test_evaluation_runs_both_members_through_the_pool_and_resumes(
    tiny_spec: ModelSpec, tiny_pool: RouterConfig, tmp_path: Path
) -> None:
    from training.specialists.paired_check import evaluate_specialist

    adapter = tmp_path / "adapter"
    args = SpecializeArgs(**{**FAST.as_dict(), "steps": 2})
    train_specialist(tiny_spec, tiny_pool, _items(4), adapter, args, progress=False)
    items = _items(3)
    out = tmp_path / "eval"
    summary = evaluate_specialist(adapter, items, out, config=tiny_pool, spec=tiny_spec, progress=False)
    assert summary["items"] == 3 and summary["specialist"] == "tiny-a-code"
    row = summary["results"]["all"]
    assert row["n"] == 3 and 0.0 <= row["generalist"]["mean"] <= 1.0
    assert summary["decision"] in ("keep", "drop")
    lines = (out / "tiny-a-code.jsonl").read_text().splitlines()
    replies = [json.loads(line) for line in lines]
    assert [r["id"] for r in replies] == [it.id for it in items]
    assert all("adapter" in r["fingerprint"] for r in replies)  # the adapter's identity is recorded
    again = evaluate_specialist(adapter, items, out, config=tiny_pool, spec=tiny_spec, progress=False)
    assert set(again["generation_seconds_this_run"].values()) == {0.0}  # nothing regenerated
    assert (out / "tiny-a-code.jsonl").read_text().splitlines() == lines


def test_the_bare_code_command_is_the_shipped_adapters_recipe() -> None:
    """``python training/specialists/specialize.py --domain code`` must rebuild the adapter the pool ships."""
    import json

    from hierrouter_graph.defaults import CODE_SPECIALIST_DIR
    from training.cli.specialize import args_from, parse_args

    card = json.loads((CODE_SPECIALIST_DIR / "card.json").read_text())
    ns = parse_args(["--domain", "code"])
    assert args_from(ns).as_dict() == card["args"]
    assert ns.threads == card["training"]["torch_threads"] == 1
    overridden = parse_args(["--domain", "code", "--steps", "3", "--lr", "0.01", "--threads", "2"])
    assert (overridden.steps, overridden.lr, overridden.threads) == (3, 0.01, 2)
