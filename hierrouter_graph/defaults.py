"""The embedded offline default: a pool that needs no hub, and its policy.

``default_config()`` is what ``HierRouterGraph()``, ``make demo``, ``python -m hierrouter_graph``
and the Studio graph use when given nothing else. ``default_policy`` loads the trained policy
shipped in ``hierrouter_graph/default_policy/`` when it was trained for the config's pool, encoder and
horizon, and otherwise builds an untrained (near-uniform, deterministic) policy.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import ModelSpec, RouterConfig
from .encoder import load_encoder
from .loading_errors import read_json_object
from .policy_signature import PolicySignature
from .trained_policy import RouterPolicy

__all__ = [
    "CODE_SPECIALIST_DIR",
    "DEFAULT_POLICY_DIR",
    "default_config",
    "default_policy",
    "untrained_policy",
]

DEFAULT_POLICY_DIR = Path(__file__).parent / "default_policy"
CODE_SPECIALIST_DIR = Path(__file__).parent / "specialists" / "smollm2-135m-code"
"""The shipped LoRA code specialist (docs/specialists.md), rebuilt by
``training/specialists/specialize.py``."""


def default_config(**overrides: object) -> RouterConfig:
    """The offline pool, in action order.

    - ``smollm2-135m``: SmolLM2-135M-Instruct, the cheap instruction-tuned generalist.
    - ``cloze-mc``: a multiple-choice specialist on the SAME loaded SmolLM2 weights: it scores the
      lettered options by log-likelihood instead of generating (see ``cloze.py``), and refuses
      anything else.
    - ``smollm2-135m-code``: a LoRA adapter on that same loaded base, fine-tuned on the
      specialization half of MBPP + HumanEval to answer with one fenced python block (it passes
      9.2% of routing-half MBPP against the generalist's 2.7%, see docs/specialists.md).
    - ``gemma-3-270m``: Gemma-3-270M base, twice the size and price, not instruction-tuned.
    """
    models = [
        ModelSpec(
            name="smollm2-135m",
            source="offline:smollm2-135m-instruct",
            max_new_tokens=128,
            description="SmolLM2-135M-Instruct: small instruction-tuned generalist (ChatML).",
        ),
        ModelSpec(
            name="cloze-mc",
            kind="cloze_mc",
            source="offline:smollm2-135m-instruct",
            description="Multiple-choice specialist: option log-likelihood on the shared SmolLM2 base.",
        ),
        ModelSpec(
            name="smollm2-135m-code",
            source="offline:smollm2-135m-instruct",
            adapter=str(CODE_SPECIALIST_DIR),
            max_new_tokens=128,
            description="Code specialist: LoRA on the shared SmolLM2 base, answers with one fenced "
            "python block.",
        ),
        ModelSpec(
            name="gemma-3-270m",
            source="offline:gemma-3-270m",
            max_new_tokens=128,
            description="Gemma-3-270M base: twice the size, not instruction-tuned.",
        ),
    ]
    return RouterConfig.model_validate({"models": models, **overrides})


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
