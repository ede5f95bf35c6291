"""LoRA adapter members: one shared base, adapters selected per call, plain members left exact.

Every reference is computed WITHOUT the code under test: a freshly loaded tiny model (no peft) for
plain and cloze members, and ``PeftModel.from_pretrained`` on another fresh copy (the adapter as
peft's ordinary active adapter) for adapter members. Everything is fp32 on CPU, so "equal" means
token-identical replies and bit-identical log-probs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hierrouter_graph import AdapterError, FixedRoutePolicy, HierRouterGraph, ModelSpec, RouterConfig, run_hop
from hierrouter_graph.cost import base_rate_from_param_count
from hierrouter_graph.graph import build_pool
from hierrouter_graph.hop import build_hop_messages, extend_context, run_hops
from hierrouter_graph.members import local as models_module
from hierrouter_graph.members.adapters import base_parameter_count, read_adapter_config, shared_peft_model
from hierrouter_graph.members.cloze import ClozeMultipleChoiceChat
from hierrouter_graph.members.local import build_pool_member
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.microbatch import MicroBatchedChatModel
from tests.tiny_models import special_token_ids
from tests.trace_compare import assert_same_hops, assert_same_traces

INSTRUCTION = "Describe the problem in detail, then plan how you would solve it."
CONTEXTS = [
    "What is seven times six?",
    "def add(a, b):",
    "The quick brown fox jumps over the lazy dog.",
    "numbers 0 1 2 3 boxed answer",
]
QUESTION, OPTIONS = "Which planet is largest?", ["Mars", "Jupiter", "Venus", "Earth"]
ADAPTER_MEMBERS = ("lora-math", "lora-code")
ATTENTION = ["q_proj", "v_proj"]
EVERY_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _save_lora(model: Any, out: Path, seed: int, targets: list[str], safe: bool = True, **lora: Any) -> Path:
    """A LoRA adapter with random, NON-zero lora_B (init_lora_weights=False), saved like a real one."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, init_lora_weights=False, **lora
    )
    peft_model = get_peft_model(model, config)
    assert any(p.abs().sum() > 0 for n, p in peft_model.named_parameters() if "lora_B" in n)
    peft_model.save_pretrained(str(out), safe_serialization=safe)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    base = tiny_folders["tiny-a"]

    def fresh() -> Any:
        return AutoModelForCausalLM.from_pretrained(str(base))

    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    narrow = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=1, n_head=2))
    folders = {
        "math": _save_lora(fresh(), root / "math", 11, ATTENTION),
        "code": _save_lora(fresh(), root / "code", 12, EVERY_LINEAR),
        "dora": _save_lora(fresh(), root / "dora", 13, ATTENTION, use_dora=True),
        "narrow": _save_lora(narrow, root / "narrow", 14, ATTENTION),
        "narrow-bin": _save_lora(narrow, root / "narrow-bin", 16, ATTENTION, safe=False),  # no pre-check
        "gpt2": _save_lora(gpt2, root / "gpt2", 15, ["c_attn"], fan_in_fan_out=True),
    }
    ia3 = root / "ia3"
    shutil.copytree(folders["math"], ia3)
    config = json.loads((ia3 / "adapter_config.json").read_text())
    (ia3 / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    no_weights = root / "no-weights"
    no_weights.mkdir()
    shutil.copy(folders["math"] / "adapter_config.json", no_weights)
    return {**folders, "ia3": ia3, "no-weights": no_weights}


@pytest.fixture()
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """An empty shared-weights cache, and every base-model load recorded (so sharing is counted)."""
    monkeypatch.setattr(models_module, "_LOADED", {})
    loads: list[str] = []
    original = AutoModelForCausalLM.from_pretrained

    def counting(folder: Any, *args: Any, **kwargs: Any) -> Any:
        loads.append(str(folder))
        return original(folder, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counting)
    return loads


def _specs(source: Path, adapters: dict[str, Path], **common: Any) -> list[ModelSpec]:
    """Adapter members FIRST, so the plain and cloze members are built on an already-adapted base."""
    # float32 pinned: these tests assert exact equality, which bf16 ('auto' on avx512_bf16 CPUs) breaks.
    settings = {
        "max_new_tokens": 8,
        "dtype": "float32",
        "generation_kwargs": {"suppress_tokens": special_token_ids(source)},
    }
    settings |= common
    return [
        ModelSpec(name="lora-math", source=str(source), adapter=str(adapters["math"]), **settings),
        ModelSpec(
            name="lora-code",
            source=str(source),
            adapter=str(adapters["code"]),
            system_prompt="You write code.",
            **settings,
        ),
        ModelSpec(name="plain", source=str(source), **settings),
        ModelSpec(name="cloze", kind="cloze_mc", source=str(source), dtype="float32"),
    ]


def _close(pool: dict[str, PoolMember]) -> None:
    for member in pool.values():
        if isinstance(member.chat_model, MicroBatchedChatModel):
            member.chat_model.batcher.close()


@pytest.fixture()
def make_pool(
    tiny_folders: dict[str, Path], adapters: dict[str, Path], fresh_cache: list[str], tmp_path: Path
) -> Iterator[Callable[..., dict[str, PoolMember]]]:
    built: list[dict[str, PoolMember]] = []

    def make(**common: Any) -> dict[str, PoolMember]:
        config = RouterConfig(
            models=_specs(tiny_folders["tiny-a"], adapters, **common),
            horizon=3,
            stage_prompt_fallback="Conclude.",
            cache_dir=tmp_path / "cache",
        )
        built.append(build_pool(config))
        return built[-1]

    yield make
    for pool in built:
        _close(pool)


class Reference:
    """What each member must reply, computed on fresh models by plain transformers/peft calls."""

    def __init__(self, folder: Path, adapters: dict[str, Path]) -> None:
        from peft import PeftModel

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.models: dict[str, Any] = {"plain": AutoModelForCausalLM.from_pretrained(str(folder)).eval()}
        for member, key in zip(ADAPTER_MEMBERS, ("math", "code"), strict=True):
            fresh = AutoModelForCausalLM.from_pretrained(str(folder))
            self.models[member] = PeftModel.from_pretrained(fresh, str(adapters[key])).eval()
        self.cloze = ClozeMultipleChoiceChat(model=self.models["plain"], tokenizer=self.tokenizer)

    def reply(self, member: PoolMember, context: str, instruction: str = INSTRUCTION) -> str:
        assert member.counter is not None and member.batch_generate is not None
        prompt = member.counter.render_prompt(build_hop_messages(member, instruction, context))  # type: ignore[attr-defined]
        ids = self.tokenizer(prompt, return_tensors="pt")
        kwargs = member.batch_generate.generate_kwargs  # type: ignore[attr-defined]
        with torch.inference_mode():
            output = self.models[member.name].generate(**ids, **kwargs)
        return str(self.tokenizer.decode(output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))


@pytest.fixture(scope="module")
def reference(tiny_folders: dict[str, Path], adapters: dict[str, Path]) -> Reference:
    return Reference(tiny_folders["tiny-a"], adapters)


def _generator_model(member: PoolMember) -> Any:
    assert member.batch_generate is not None
    return member.batch_generate.model  # type: ignore[attr-defined]


def test_members_share_one_loaded_base_holding_both_adapters(
    make_pool, fresh_cache, adapters, tiny_folders, tmp_path
) -> None:
    pool = make_pool()
    assert len(fresh_cache) == 1, f"the base was loaded {len(fresh_cache)} times: {fresh_cache}"
    assert len(models_module._LOADED) == 1
    base = next(iter(models_module._LOADED.values())).model
    assert _generator_model(pool["plain"]) is base
    assert pool["cloze"].chat_model.model is base  # type: ignore[attr-defined]
    peft_model = shared_peft_model(base)
    assert peft_model is not None and peft_model.base_model.model is base
    assert len(peft_model.peft_config) == 2  # both adapters, on the one base
    storages = {p.data_ptr() for p in base.parameters()}
    for name in ADAPTER_MEMBERS:
        view = _generator_model(pool[name])
        assert view is not base and shared_peft_model(view) is peft_model
        assert {p.data_ptr() for p in view.parameters()} == storages  # the same weights, not a copy
        assert "adapter" in json.loads(pool[name].fingerprint)
    # A further member naming an adapter folder already loaded reuses that adapter.
    spec = ModelSpec(
        name="math-again", source=str(tiny_folders["tiny-a"]), adapter=str(adapters["math"]), dtype="float32"
    )
    again = build_pool_member(spec, tmp_path / "cache")
    _close({"math-again": again})
    assert len(peft_model.peft_config) == 2 and len(fresh_cache) == 1


@pytest.mark.parametrize("max_batch_size", [1, 16], ids=["pipeline", "micro-batched"])
def test_each_member_equals_its_model_loaded_alone(make_pool, reference, max_batch_size) -> None:
    pool = make_pool(max_batch_size=max_batch_size)
    replies: dict[str, list[str]] = {}
    for name in (*ADAPTER_MEMBERS, "plain"):
        replies[name] = [run_hop(pool[name], context, INSTRUCTION).reply for context in CONTEXTS]
        assert replies[name] == [reference.reply(pool[name], c) for c in CONTEXTS], name
    # The adapters really change the replies (so the equalities above mean something).
    for name in ADAPTER_MEMBERS:
        assert replies[name] != replies["plain"], name
    assert replies["lora-math"] != replies["lora-code"]


def test_cloze_member_on_the_adapted_base_scores_like_the_plain_model(make_pool, reference) -> None:
    pool = make_pool()
    run_hop(pool["lora-code"], CONTEXTS[0], INSTRUCTION)  # an adapter has run on the shared base
    chat = pool["cloze"].chat_model
    got = chat.score_options(QUESTION, OPTIONS)  # type: ignore[attr-defined]
    assert got == reference.cloze.score_options(QUESTION, OPTIONS)  # bit-identical log-probs
    hop = run_hop(pool["cloze"], f"{QUESTION}\n\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth", INSTRUCTION)
    best = max(range(4), key=got[0].__getitem__)
    assert hop.reply == f"{'ABCD'[best]}. {OPTIONS[best]}"


def test_batched_hops_equal_single_hops(make_pool) -> None:
    pool = make_pool()
    for name in (*ADAPTER_MEMBERS, "plain"):
        batched = run_hops(pool[name], CONTEXTS, INSTRUCTION)
        single = [run_hop(pool[name], context, INSTRUCTION) for context in CONTEXTS]
        assert_same_hops(batched, single)


@pytest.mark.parametrize("max_batch_size", [1, 16], ids=["pipeline", "micro-batched"])
def test_concurrent_members_of_one_base_keep_their_own_adapter(make_pool, max_batch_size) -> None:
    """Adapter and plain members hit the shared base from many threads at once (as graph.batch does)."""
    pool = make_pool(max_batch_size=max_batch_size)
    names = [*ADAPTER_MEMBERS, "plain"]
    expected = {(n, c): run_hop(pool[n], c, INSTRUCTION).reply for n in names for c in CONTEXTS}
    jobs = [(n, c) for _ in range(3) for n in names for c in CONTEXTS]
    start = Barrier(len(jobs))

    def hop(job: tuple[str, str]) -> str:
        start.wait()
        return run_hop(pool[job[0]], job[1], INSTRUCTION).reply

    with ThreadPoolExecutor(max_workers=len(jobs)) as threads:
        got = list(threads.map(hop, jobs))
    assert got == [expected[job] for job in jobs]


def test_graph_routes_through_adapter_members_with_exact_hops(
    tiny_folders, adapters, fresh_cache, tmp_path
) -> None:
    config = RouterConfig(
        models=_specs(tiny_folders["tiny-a"], adapters),
        horizon=3,
        stage_prompt_fallback="Conclude.",
        cache_dir=tmp_path / "cache",
    )
    route = ["lora-math", "plain", "lora-code"]
    pool = build_pool(config)
    try:
        router = HierRouterGraph(config, FixedRoutePolicy(config.model_names, route), chat_models=pool)
        out = router.invoke(CONTEXTS[0])
        assert [hop["model"] for hop in out["trace"]] == route
        assert [hop["stage"] for hop in out["trace"]] == [0, 1, 2]
        context, cost = CONTEXTS[0], 0.0
        for stage, (name, hop) in enumerate(zip(route, out["trace"], strict=True)):
            expected = run_hop(pool[name], context, config.stage_prompt(stage))
            assert (hop["reply"], hop["tokens_in"], hop["tokens_out"]) == (
                expected.reply,
                expected.tokens_in,
                expected.tokens_out,
            )
            context, cost = extend_context(context, expected.reply), cost + expected.cost
        assert out["answer"] == out["trace"][-1]["reply"]
        assert out["cost"] == pytest.approx(cost)
        batched = router.batch(CONTEXTS)  # threads: members of one base run concurrently
        assert_same_traces([b["trace"] for b in batched], [router.invoke(q)["trace"] for q in CONTEXTS])
        assert all([h["model"] for h in b["trace"]] == route for b in batched)
    finally:
        _close(pool)
    assert len(fresh_cache) == 1


def test_price_counts_base_weights_only(tiny_folders, adapters, fresh_cache, tmp_path) -> None:
    """base_rate=None: every member of the base costs the same, however many adapters were attached."""
    specs = [spec.model_copy(update={"base_rate": None}) for spec in _specs(tiny_folders["tiny-a"], adapters)]
    pool = build_pool(RouterConfig(models=specs, horizon=2, cache_dir=tmp_path / "cache"))
    try:
        plain_params = AutoModelForCausalLM.from_pretrained(str(tiny_folders["tiny-a"])).num_parameters()
        view = _generator_model(pool["lora-code"])
        assert view.num_parameters() > plain_params  # the LoRA layers are there ...
        assert base_parameter_count(view) == plain_params  # ... and not priced
        rate = base_rate_from_param_count(plain_params)
        assert {member.base_rate for member in pool.values()} == {rate}
    finally:
        _close(pool)


BAD_ADAPTERS = {  # case → what the message must say after "models[bad].adapter: "
    "missing": "not found",
    "model-folder": "no adapter_config.json .*full model folder",
    "ia3": "PEFT IA3 adapter; expected a LoRA adapter",
    "no-weights": "no adapter_model.safetensors",
    "dora": "DoRA",
    "narrow": "trained for another base.*shape",
    "gpt2": "trained for another base.*does not have",
}


@pytest.mark.parametrize("case", list(BAD_ADAPTERS))
def test_bad_adapters_raise_an_error_naming_the_field(
    case, make_pool, adapters, tiny_folders, tmp_path
) -> None:
    pool = make_pool()
    base = _generator_model(pool["plain"])
    peft_model = shared_peft_model(base)
    before = set(peft_model.peft_config), sum(1 for _ in base.modules())
    folder = {
        "missing": tmp_path / "no-such-adapter",
        "model-folder": tiny_folders["tiny-a"],
    }.get(case, adapters.get(case))
    spec = ModelSpec(name="bad", source=str(tiny_folders["tiny-a"]), adapter=str(folder), dtype="float32")
    with pytest.raises(AdapterError, match=r"models\[bad\]\.adapter: .*" + BAD_ADAPTERS[case]):
        build_pool_member(spec, tmp_path / "cache")
    # Refused before peft touched the shared base: the same adapters and the same modules.
    assert (set(peft_model.peft_config), sum(1 for _ in base.modules())) == before


def test_an_adapter_recorded_for_another_offline_model_is_refused(adapters, tmp_path) -> None:
    folder = tmp_path / "for-gemma"
    shutil.copytree(adapters["math"], folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "offline:gemma-3-270m"})
    )
    spec = ModelSpec(
        name="smol-math", source="offline:smollm2-135m-instruct", adapter=str(folder), dtype="float32"
    )
    with pytest.raises(AdapterError, match=r"models\[smol-math\]\.adapter: .*another base.*gemma-3-270m"):
        read_adapter_config(spec)
    ok = spec.model_copy(update={"source": "offline:gemma-3-270m"})
    assert read_adapter_config(ok)[0] == folder.resolve()


def test_a_cloze_member_with_an_adapter_scores_with_it(
    tiny_folders, adapters, reference, fresh_cache, tmp_path
) -> None:
    source = str(tiny_folders["tiny-a"])
    specs = [
        ModelSpec(
            name="cloze-math", kind="cloze_mc", source=source, adapter=str(adapters["math"]), dtype="float32"
        ),
        ModelSpec(name="cloze", kind="cloze_mc", source=source, dtype="float32"),
    ]
    pool = build_pool(RouterConfig(models=specs, horizon=1, cache_dir=tmp_path / "cache"))
    alone = ClozeMultipleChoiceChat(model=reference.models["lora-math"], tokenizer=reference.tokenizer)
    with_adapter = pool["cloze-math"].chat_model.score_options(QUESTION, OPTIONS)  # type: ignore[attr-defined]
    plain = pool["cloze"].chat_model.score_options(QUESTION, OPTIONS)  # type: ignore[attr-defined]
    assert with_adapter == alone.score_options(QUESTION, OPTIONS)
    assert plain == reference.cloze.score_options(QUESTION, OPTIONS)
    assert with_adapter[0] != plain[0]
    assert len(fresh_cache) == 1


@pytest.mark.parametrize("position", ["first", "later"])
def test_an_adapter_that_peft_rejects_half_way_leaves_the_base_as_it_was(
    position, tiny_folders, adapters, reference, fresh_cache, tmp_path
) -> None:
    """A legacy .bin adapter is not shape-checked beforehand: peft fails after injecting its layers."""
    math, _, plain, _ = _specs(tiny_folders["tiny-a"], adapters, max_batch_size=1)
    bad = plain.model_copy(update={"name": "bad", "adapter": str(adapters["narrow-bin"])})
    cache = tmp_path / "cache"
    members = [build_pool_member(math, cache)] if position == "later" else []
    with pytest.raises(AdapterError, match=r"models\[bad\]\.adapter: peft could not load .*size mismatch"):
        build_pool_member(bad, cache)
    members.append(build_pool_member(plain, cache))
    for member in members:
        got = [run_hop(member, context, INSTRUCTION).reply for context in CONTEXTS]
        assert got == [reference.reply(member, context) for context in CONTEXTS], member.name
    base = next(iter(models_module._LOADED.values())).model
    peft_model = shared_peft_model(base)
    if position == "first":
        assert peft_model is None and not any(".lora_" in name for name, _ in base.named_parameters())
    else:
        assert peft_model is not None and len(peft_model.peft_config) == 1
    assert len(fresh_cache) == 1
