"""The embedded offline default: a pool that needs no hub, and its policy.

``default_config()`` is what ``HierRouterGraph()``, ``make demo``, ``python -m hierrouter_graph``
and the Studio graph use when given nothing else. ``default_policy`` loads the trained policy
shipped in ``hierrouter_graph/default_policy/`` when it was trained for the config's pool, encoder and
horizon, and otherwise builds an untrained (near-uniform, deterministic) policy.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.loading_errors import read_json_object
from hierrouter_graph.model_spec import ModelSpec
from hierrouter_graph.policy.encoder import load_encoder
from hierrouter_graph.policy.router import RouterPolicy
from hierrouter_graph.policy.signature import PolicySignature

__all__ = [
    "CODE_SPECIALIST_DIR",
    "DEFAULT_POLICY_DIR",
    "DEFAULT_STAGE_PROMPTS",
    "default_config",
    "default_policy",
    "untrained_policy",
]

DEFAULT_POLICY_DIR = Path(__file__).parent / "default_policy"
CODE_SPECIALIST_DIR = Path(__file__).parent / "specialists" / "smollm2-135m-code"
"""The shipped LoRA code specialist (docs/specialists.md), rebuilt by
``training/specialists/specialize.py``; a member of the earlier default pool
(``configs/smollm2-gemma-pool.yaml``)."""


DEFAULT_STAGE_PROMPTS = (
    "Solve the problem step by step, then give the final answer in the format the problem asks for.",
    "Check the previous solution step by step. If it has a mistake, correct it. Then give the final "
    "answer in the format the problem asks for.",
)
"""The default pool's stage prompts. Why these: every stage asks for a complete worked answer, so a
route's last reply is its answer (``hop.answer_text``), and stage 1 checks and corrects stage 0's
answer — where a larger model pays (docs/offline-pool.md)."""


def default_config(**overrides: object) -> RouterConfig:
    """The offline pool, in action order, cheapest first (``configs/qwen-coder-pool.yaml`` is the
    same pool written out as YAML, a starting point to edit).

    - ``smollm2-135m``: SmolLM2-135M-Instruct, the cheapest instruction-tuned generalist.
    - ``cloze-mc``: a multiple-choice specialist on the SAME loaded SmolLM2 weights: it scores the
      lettered options by log-likelihood instead of generating (see ``cloze.py``), and refuses
      anything else at no cost.
    - ``qwen2.5-coder-0.5b``: Qwen2.5-Coder-0.5B-Instruct, ~4x SmolLM2's size and price.
    - ``qwen2.5-coder-1.5b``: Qwen2.5-Coder-1.5B-Instruct, ~11x SmolLM2's size and price, the best
      member on math and code.

    Both Qwen members take ``quantization: "int8"`` (every Linear but ``down_proj`` in int8 on CPU,
    ~2.8-3x float32's speed at batch 16, see docs/offline-pool.md); on CUDA the same setting
    loads bitsandbytes LLM.int8 with ``down_proj`` skipped
    (``quantize.cuda_int8_load_kwargs``). Every generating member writes up to 320 tokens: GSM8K
    chains need 250-350.

    Both Qwen members pin ``backend="transformers"``: the shipped record and policy were made on
    that engine, and ``backend: auto`` would run them on OpenVINO where the ``openvino`` extra is
    installed (a different fingerprint, so the record would not replay). A pool recorded on
    OpenVINO drops the pin (docs/offline-pool.md, "CPU engines").
    """
    models = [
        ModelSpec(
            name="smollm2-135m",
            source="offline:smollm2-135m-instruct",
            max_new_tokens=320,
            description="SmolLM2-135M-Instruct: the cheapest instruction-tuned generalist (ChatML).",
        ),
        ModelSpec(
            name="cloze-mc",
            kind="cloze_mc",
            source="offline:smollm2-135m-instruct",
            description="Multiple-choice specialist: option log-likelihood on the shared SmolLM2 base.",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            source="offline:qwen2.5-coder-0.5b-instruct",
            quantization="int8",
            backend="transformers",
            max_new_tokens=320,
            description="Qwen2.5-Coder-0.5B-Instruct, int8 except down_proj (CPU fast path).",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            source="offline:qwen2.5-coder-1.5b-instruct",
            quantization="int8",
            backend="transformers",
            max_new_tokens=320,
            description="Qwen2.5-Coder-1.5B-Instruct, int8 except down_proj (CPU fast path).",
        ),
    ]
    return RouterConfig.model_validate(
        {"models": models, "stage_prompts": list(DEFAULT_STAGE_PROMPTS), **overrides}
    )


def untrained_policy(config: RouterConfig, seed: int = 0) -> RouterPolicy:
    """A fresh policy for ``config``; the init is seeded so untrained routing is reproducible."""
    encoder = load_encoder(config.encoder, config.max_seq_len, cache_dir=config.resolved_cache_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RouterPolicy.for_encoder(
            config.model_names,
            encoder,
            horizon=config.horizon,
            allow_stop=config.allow_stop,
            uncertainty_state=config.uncertainty_state,
            alpha_range=config.alpha_range,
        )


def _shipped_policy_matches(config: RouterConfig) -> bool:
    meta_path = DEFAULT_POLICY_DIR / "policy.json"
    if not meta_path.is_file():
        return False
    meta = read_json_object(meta_path, "the shipped policy's metadata")
    try:
        saved = PolicySignature.from_meta(meta)
    except (KeyError, TypeError):  # a hand-edited file without these fields matches nothing
        return False
    return not PolicySignature.from_config(config).mismatches(saved)


def default_policy(config: RouterConfig) -> RouterPolicy:
    """The shipped trained policy when it fits ``config``, else an untrained one."""
    if _shipped_policy_matches(config):
        encoder = load_encoder(config.encoder, config.max_seq_len, cache_dir=config.resolved_cache_dir)
        return RouterPolicy.load_for(DEFAULT_POLICY_DIR, config, encoder)
    return untrained_policy(config)
