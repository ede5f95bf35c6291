"""LoRA pool members: several PEFT adapters over ONE loaded base model, each selected per call.

Why: a LoRA specialist is a few MB on top of its base; loading the base again for every specialist
would multiply the pool's memory by the number of adapters. So every member whose ``source`` (and
device, dtype, chat template) resolves to the same loaded model (``local.load_causal_lm``) shares
it: the base becomes a peft ``PeftModel`` holding every adapter of the pool, loaded with
``PeftModel.from_pretrained`` (first adapter) and ``load_adapter`` (the rest).

Why the selection is per call and not peft's ``set_adapter``: ``graph.batch``, a LangGraph server and
the micro-batch workers run members of one base in different threads at the same time, and
``set_adapter`` (like peft's own ``generate(adapter_names=...)``, which registers and removes hooks
on the shared layers around each call) changes state every thread sees. Instead:

* every LoRA layer of a shared base carries ONE permanent pre-forward hook that passes
  ``adapter_names=[selected] * batch`` — peft's mixed-batch path — where ``selected`` is read from a
  ``ContextVar``, i.e. per thread. Its default is ``"__base__"``: plain and ``cloze_mc`` members
  on that base compute exactly the base layer (``base_layer(x)``, nothing added), so their
  replies and log-probs equal the model without peft bit for bit;
* each adapter member gets a *view* of the base: a shallow copy of the transformers model (same
  submodules, same weight tensors, no memory) whose own top-level forward hooks select its adapter
  for the duration of each forward, in whichever thread runs it (a micro-batch worker included).
  The view is a real ``PreTrainedModel``, so the pipeline, ``BatchGenerator`` and the cloze scorer
  take it unchanged.

Adapters are attached while the pool is built; attaching one to a base that is generating at that
moment (in another thread) is not supported.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from hierrouter_graph.model_spec import ModelSpec

__all__ = [
    "BASE_ADAPTER",
    "AdapterError",
    "adapter_view",
    "base_parameter_count",
    "read_adapter_config",
    "shared_peft_model",
]

BASE_ADAPTER = "__base__"
"""peft's name for "no adapter" in ``adapter_names``."""

_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_PEFT_PREFIX = "base_model.model."
_OFFLINE_PREFIX = "offline:"
_VIEW_ATTR = "_hierrouter_adapter"
_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)
# Adapter settings whose layers cannot be selected per call on a shared base (peft's per-row path
# refuses them or is not plain LoRA, or they hold full module copies): refused when the folder is
# read, before anything touches the shared model.
_VARIANT_CONFIGS = ("velora_config", "monteclora_config", "use_bdlora", "arrow_config", "kasa_config")
_UNSUPPORTED: dict[str, str] = {
    "use_dora": "DoRA (`use_dora`)",
    "alora_invocation_tokens": "activated LoRA (`alora_invocation_tokens`)",
    **{key: f"a LoRA variant (`{key}`)" for key in _VARIANT_CONFIGS},
    "modules_to_save": "`modules_to_save` (full copies of whole modules, not LoRA layers)",
    "trainable_token_indices": "`trainable_token_indices` (trainable token embeddings)",
    "target_parameters": "`target_parameters` (LoRA on raw parameters)",
    "layer_replication": "`layer_replication` (replicated base layers)",
}

_SELECTED: ContextVar[str] = ContextVar("hierrouter_adapter", default=BASE_ADAPTER)


class AdapterError(ValueError):
    """A ``ModelSpec.adapter`` that cannot be applied: missing, not a PEFT LoRA folder, or made for
    another base. The message names ``models[<name>].adapter`` and what was expected."""


@dataclass
class _SharedBase:
    """One loaded base and the PeftModel that holds its adapters."""

    base: Any
    peft_model: Any
    names: dict[str, str] = field(default_factory=dict)  # resolved adapter folder → adapter name
    hooked: set[int] = field(default_factory=set)  # ids of LoRA layers carrying the selection hook


@dataclass(frozen=True)
class _ViewOf:
    """Kept on a view: which base it shares and which adapter it selects."""

    base: Any
    adapter_name: str


_SHARED: dict[int, _SharedBase] = {}  # id(base) → record; the record keeps the base alive
_ATTACH_LOCK = threading.Lock()


def _field(spec: ModelSpec) -> str:
    return f"models[{spec.name}].adapter"


def read_adapter_config(spec: ModelSpec) -> tuple[Path, dict[str, Any]]:
    """The adapter folder of ``spec`` and its ``adapter_config.json``, checked without loading anything.

    Fails early with an ``AdapterError`` for a missing folder, a folder that is not a PEFT adapter
    (e.g. a full model folder), a non-LoRA or per-call-unselectable adapter, missing weights, or an
    adapter whose recorded base is another built-in offline model.
    """
    if spec.adapter is None:
        raise AdapterError(f"{_field(spec)}: not set")
    where = _field(spec)
    expected = (
        "a PEFT LoRA folder written by save_pretrained (adapter_config.json + adapter_model.safetensors)"
    )
    folder = Path(spec.adapter).expanduser().resolve()
    if not folder.exists():
        raise AdapterError(f"{where}: {spec.adapter!r} not found ({folder}); expected {expected}")
    if not folder.is_dir():
        raise AdapterError(f"{where}: {folder} is a file; expected {expected}")
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        hint = (
            " (it holds config.json: a full model folder belongs in `source`)"
            if (folder / "config.json").is_file()
            else ""
        )
        raise AdapterError(f"{where}: {folder} has no adapter_config.json{hint}; expected {expected}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        problem = f"{config_file} is not valid JSON ({error})"
        raise AdapterError(f"{where}: {problem}; expected {expected}") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{where}: {config_file} is not a JSON object; expected {expected}")
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise AdapterError(
            f"{where}: {folder} is a PEFT {peft_type} adapter; expected a LoRA adapter (peft_type LORA)"
        )
    unsupported = dict(_UNSUPPORTED, init_lora_weights="a LoRA variant (`init_lora_weights: mica`)")
    for key, what in unsupported.items():
        if config.get(key) and (key != "init_lora_weights" or config[key] == "mica"):
            raise AdapterError(
                f"{where}: {folder} uses {what}, which cannot be selected per call on a shared base; "
                "expected a plain LoRA adapter"
            )
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        raise AdapterError(
            f"{where}: {folder} has adapter_config.json but no {' or '.join(_WEIGHT_FILES)}; "
            f"expected {expected}"
        )
    recorded = config.get("base_model_name_or_path")
    if (
        isinstance(recorded, str)
        and recorded.startswith(_OFFLINE_PREFIX)
        and spec.source.startswith(_OFFLINE_PREFIX)
        and recorded != spec.source
    ):
        raise AdapterError(
            f"{where}: {folder} was trained for another base ({recorded!r}); expected an adapter for "
            f"this member's source {spec.source!r}"
        )
    return folder, config


def _base_layer(module: Any) -> Any:
    """The wrapped layer when peft already replaced ``module`` by a LoRA layer, else ``module``."""
    get_base_layer = getattr(module, "get_base_layer", None)
    return get_base_layer() if callable(get_base_layer) else module


def _check_weights_fit(spec: ModelSpec, folder: Path, config: dict[str, Any], base: Any) -> None:
    """Every LoRA tensor must name a module of ``base`` and match its shape.

    Why before loading: peft injects the adapter's layers into the shared base before it loads the
    weights, so a mismatch found by peft would leave half an adapter in the model other members use.
    (Only a base with other shapes or module names can be told apart; the same architecture with
    other weights cannot.)
    """
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():  # legacy .bin adapters: peft's own checks (errors are wrapped below)
        return
    from safetensors import safe_open

    where = _field(spec)
    recorded = config.get("base_model_name_or_path")
    named = f" (adapter_config.json names {recorded!r})" if recorded else ""
    another = f"{where}: {folder} was trained for another base{named}"
    modules = dict(base.named_modules())
    lora_keys = 0
    with safe_open(str(weights), framework="pt") as tensors:
        for key in tensors.keys():  # noqa: SIM118 - safe_open is not a mapping
            path = key.removeprefix(_PEFT_PREFIX)
            cut = path.find(".lora_")
            if cut < 0:
                continue
            lora_keys += 1
            module_path, part = path[:cut], path[cut + 1 :]
            module = modules.get(module_path)
            if module is None:
                raise AdapterError(
                    f"{another}: it adapts {module_path!r}, which {spec.source!r} does not have; "
                    f"expected an adapter for {spec.source!r}"
                )
            layer = _base_layer(module)
            shape = tuple(tensors.get_slice(key).get_shape())
            expected = _expected_dim(layer, part)
            if expected is not None and (len(shape) < 2 or shape[expected[0]] != expected[1]):
                raise AdapterError(
                    f"{another}: {key} has shape {list(shape)} but {module_path} of {spec.source!r} "
                    f"needs size {expected[1]} in dimension {expected[0]}; expected an adapter for "
                    f"{spec.source!r}"
                )
    if lora_keys == 0:
        raise AdapterError(f"{where}: {weights} holds no LoRA weights (no '.lora_' tensors)")


def _expected_dim(layer: Any, part: str) -> tuple[int, int] | None:
    """(dimension, size) a LoRA tensor must have to fit ``layer``, or None when not checked."""
    in_features, out_features = getattr(layer, "in_features", None), getattr(layer, "out_features", None)
    if isinstance(in_features, int) and isinstance(out_features, int):
        if part.startswith("lora_A."):
            return 1, in_features
        if part.startswith("lora_B."):
            return 0, out_features
    num_embeddings, dim = getattr(layer, "num_embeddings", None), getattr(layer, "embedding_dim", None)
    if isinstance(num_embeddings, int) and isinstance(dim, int):
        if part.startswith("lora_embedding_A"):
            return 1, num_embeddings
        if part.startswith("lora_embedding_B"):
            return 0, dim
    return None


def _adapter_name(folder: Path) -> str:
    """A peft adapter name for ``folder``: readable, unique per folder, and free of '.' (torch
    module-dict keys cannot hold one)."""
    stem = re.sub(r"[^A-Za-z0-9_]", "_", folder.name)[:40] or "adapter"
    return f"{stem}_{hashlib.sha1(str(folder).encode()).hexdigest()[:8]}"


def _inject_selection(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Pre-forward hook of every shared LoRA layer: this thread's adapter for every row of the batch."""
    if "adapter_names" in kwargs or not args:  # an explicit per-call choice (peft's own API) wins
        return None
    kwargs["adapter_names"] = [_SELECTED.get()] * len(args[0])
    return args, kwargs


def _select(adapter_name: str, module: Any, args: tuple[Any, ...]) -> None:
    _SELECTED.set(adapter_name)


def _unselect(module: Any, args: tuple[Any, ...], output: Any) -> None:
    _SELECTED.set(BASE_ADAPTER)


def _hook_lora_layers(record: _SharedBase) -> None:
    from peft.tuners.lora import LoraLayer

    for module in record.base.modules():
        if isinstance(module, LoraLayer) and id(module) not in record.hooked:
            layer: Any = module  # peft's LoRA layers are torch modules too
            layer.register_forward_pre_hook(_inject_selection, with_kwargs=True)
            record.hooked.add(id(module))


def _refuse_variants(spec: ModelSpec, record: _SharedBase, name: str, folder: Path) -> None:
    """Layers of ``name`` must be vanilla LoRA: peft's per-call path is exact only for those."""
    from peft.tuners.lora import LoraLayer

    for module in record.base.modules():
        if isinstance(module, LoraLayer) and name in getattr(module, "lora_variant", {}):
            variant = type(module.lora_variant[name]).__name__
            record.peft_model.delete_adapter(name)
            raise AdapterError(
                f"{_field(spec)}: {folder} loads as a LoRA variant ({variant}) that cannot be selected "
                "per call on a shared base; expected a plain LoRA adapter"
            )


def _strip_lora_layers(base: Any) -> None:
    """Put the original layers back after a FIRST adapter failed half-way (peft injects its layers
    before it loads the weights, and the failed PeftModel is gone), so the base stays plain."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for path, module in list(base.named_modules()):
        if isinstance(module, BaseTunerLayer) and path:
            parent_path, _, child = path.rpartition(".")
            setattr(base.get_submodule(parent_path), child, module.get_base_layer())
    if getattr(base, "peft_config", None) is not None:
        del base.peft_config


def _attach(spec: ModelSpec, folder: Path, config: dict[str, Any], base: Any) -> str:
    """Load the adapter at ``folder`` into the PeftModel of ``base`` (once per folder); its name."""
    try:
        from peft import PeftModel
    except ImportError:
        needs = "LoRA adapters need the `peft` package (pip install peft)"
        raise AdapterError(f"{_field(spec)}: {needs}") from None
    with _ATTACH_LOCK:
        record = _SHARED.get(id(base))
        if record is not None and str(folder) in record.names:
            return record.names[str(folder)]
        _check_weights_fit(spec, folder, config, base)
        name = _adapter_name(folder)
        device = str(next(base.parameters()).device)
        try:
            if record is None:
                peft_model = PeftModel.from_pretrained(
                    base, str(folder), adapter_name=name, torch_device=device
                )
                record = _SharedBase(base=base, peft_model=peft_model)
                _SHARED[id(base)] = record
            else:
                record.peft_model.load_adapter(str(folder), adapter_name=name, torch_device=device)
        except Exception as error:
            if record is None:
                _strip_lora_layers(base)
            else:
                if name in record.peft_model.peft_config:
                    record.peft_model.delete_adapter(name)
                _hook_lora_layers(record)  # wrappers left without adapters stay per-call too
            detail = " ".join(str(error).split())
            detail = detail if len(detail) <= 400 else f"{detail[:400]}…"
            raise AdapterError(
                f"{_field(spec)}: peft could not load {folder} over {spec.source!r} ({detail}); expected a "
                f"LoRA adapter trained for {spec.source!r}"
            ) from error
        _refuse_variants(spec, record, name, folder)
        record.peft_model.eval()
        record.names[str(folder)] = name
        _hook_lora_layers(record)
        return name


def _view(base: Any, adapter_name: str) -> Any:
    """A shallow copy of ``base`` that selects ``adapter_name`` for each of its forwards.

    The copy shares the submodule and parameter dicts with ``base`` (no weights are copied); only
    its own hook dicts are fresh, so its selection hooks never fire for ``base`` or other views.
    """
    view = copy.copy(base)
    for attr in _HOOK_DICTS:
        hooks = getattr(base, attr, None)
        if hooks is not None:
            object.__setattr__(view, attr, OrderedDict(hooks))
    view.register_forward_pre_hook(partial(_select, adapter_name))
    view.register_forward_hook(_unselect, always_call=True)
    object.__setattr__(view, _VIEW_ATTR, _ViewOf(base=base, adapter_name=adapter_name))
    return view


def adapter_view(spec: ModelSpec, base: Any) -> Any:
    """The model an adapter member generates with: ``base`` (shared, loaded once) + its LoRA adapter.

    The adapter is loaded into the base's PeftModel the first time a member names its folder;
    members naming the same folder share it. Raises ``AdapterError`` (naming
    ``models[<name>].adapter``) when the folder is missing, is not a PEFT LoRA folder, or does not
    fit the base.
    """
    folder, config = read_adapter_config(spec)
    name = _attach(spec, folder, config, base)
    return _view(base, name)


def shared_peft_model(model: Any) -> Any | None:
    """The PeftModel holding the adapters of a loaded base (``model`` may be a member's view of it),
    or None when no adapter was attached to it."""
    view_of = getattr(model, _VIEW_ATTR, None)
    base = view_of.base if isinstance(view_of, _ViewOf) else model
    record = _SHARED.get(id(base))
    return record.peft_model if record is not None and record.base is base else None


def base_parameter_count(model: Any) -> int:
    """Parameters of the base weights, without the LoRA layers attached to a shared base.

    Why: the default price is per base parameter; a member's price must not depend on how many
    adapters other members happened to attach before it was built.
    """
    if getattr(model, "peft_config", None) is None:
        return int(model.num_parameters())
    return sum(param.numel() for name, param in model.named_parameters() if ".lora_" not in name)
