"""Load a checkpoint to evaluate — a local HF folder, a ``.gguf`` file or a hub id at a revision — and
record what was loaded (``ModelInfo``) so every result names the exact weights behind it.

A GGUF file is dequantized by transformers once and kept as a plain safetensors folder under the
harness cache, keyed by the file's sha256; later loads read that folder.

The hashes and hub-revision lookup live in ``checkpoint_files``, the run's provenance (git commit,
package versions) in ``provenance``; both are re-exported here, so ``models.<name>`` reaches every
name, and a test that patches one on this module changes what ``load_model`` calls.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from harness.engine.checkpoint_files import (
    TOKENIZER_FILES,
    check_checkpoint_folder,
    check_gguf,
    default_gguf_cache_dir,
    file_sha256,
    folder_content_hash,
    has_safetensors,
    hub_tokenizer_folder,
    no_config_error,
    resolve_hub_revision,
    revision_label,
    tokenizer_files_digest,
)
from harness.engine.provenance import device_name, run_provenance
from harness.errors import UserError

__all__ = [
    "ModelInfo", "load_model", "load_tokenizer", "check_model_source", "model_info", "gguf_folder", "resolve_device", "resolve_dtype",
    "dtype_name", "weights_dtype", "context_length", "count_parameters",
    # from checkpoint_files and provenance
    "TOKENIZER_FILES", "default_gguf_cache_dir", "file_sha256", "folder_content_hash", "resolve_hub_revision",
    "tokenizer_files_digest", "device_name", "run_provenance",
]


@dataclass(frozen=True)
class ModelInfo:
    """What was evaluated; recorded in every results file."""

    model: str  # what the user passed (hub id, folder, or .gguf path)
    revision: str | None  # what the user passed
    resolved_revision: str | None  # hub: the 40-hex commit the revision resolved to; local: None
    content_hash: str | None  # local folder / gguf: sha256 of the files (see folder_content_hash); hub: None
    source: str  # "hub" | "local" | "gguf"
    params_total: int
    params_non_embedding: int  # total minus input embedding and (untied) output embedding matrices
    dtype: str  # "float32" | "bfloat16" | ...
    device: str  # "cpu" | "cuda:0"
    architecture: str  # config.architectures[0] or the model class name
    max_length: int  # context window


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {device!r}; pass auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for but CUDA is not available; pass --device cpu (or auto)")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on CUDA devices that support it, float32 otherwise (CPU half is slow and lossy)."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; pass auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def context_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None) -> int:
    """The model's context window: its position limit from the (text) config, in lm-eval's order,
    else the tokenizer's ``model_max_length`` when that is a real limit (unset ones report ~1e30),
    else 2048."""
    config = model.config
    # Composite configs can carry an encoder's position limit at the top; the text model's is what counts.
    text_config = getattr(config, "text_config", None) or config
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(text_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    if tokenizer is not None and 0 < tokenizer.model_max_length < 1_000_000:
        return int(tokenizer.model_max_length)
    return 2048


def count_parameters(model: PreTrainedModel) -> tuple[int, int]:
    """(total, non-embedding): total counts tied matrices once; non-embedding drops the input
    embedding matrix and the output projection when it is a separate matrix."""
    total = sum(p.numel() for p in model.parameters())
    embedding = 0
    seen: set[int] = set()
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        weight = getattr(module, "weight", None)
        if weight is None or id(weight) in seen:
            continue
        seen.add(id(weight))
        embedding += weight.numel()
    return total, total - embedding


def _model_kind(model: str) -> str:
    """"local", "gguf" or "hub"; a string that names a missing file or folder is a UserError, not a hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise no_config_error(path)
        return "local"
    if model.lower().endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"no such GGUF file {model!r}; check the path")
        return "gguf"
    if path.exists():
        raise UserError(f"{model!r} is a file but not a .gguf; pass a checkpoint folder, a .gguf file or a hub id")
    looks_like_path = model.startswith(("/", "./", "../", "~", ".\\")) or model.count("/") > 1 or "\\" in model
    if looks_like_path:
        raise UserError(f"no such folder {model!r}; pass an existing checkpoint folder, a .gguf file or a hub id")
    return "hub"


def check_model_source(model: str, revision: str | None = None, *, trust_remote_code: bool = False) -> str:
    """What ``harness eval --model MODEL [--revision R]`` names, checked before anything is planned or
    loaded: a local folder has a config, readable weights and a tokenizer (``check_checkpoint_folder``);
    a ``.gguf`` is one; ``--revision`` goes with a hub id only.  Returns the kind ("local", "gguf", "hub")."""
    if not str(model).strip():
        raise UserError("--model is empty; pass a checkpoint folder, a .gguf file or a hub id")
    kind = _model_kind(model)
    if kind != "hub" and revision is not None:
        what = "GGUF file" if kind == "gguf" else "local folder"
        raise UserError(f"--revision {revision!r} does not apply to the {what} {model!r}: it names a hub revision; "
                        "drop it (or pass a hub id)")
    path = Path(model).expanduser()
    if kind == "local":
        check_checkpoint_folder(path, trust_remote_code=trust_remote_code)
    elif kind == "gguf":
        check_gguf(path)
    return kind


def _from_pretrained(
    cls: Any, name_or_path: str, label: str, **kwargs: Any
) -> PreTrainedModel | PreTrainedTokenizerBase:
    """``cls.from_pretrained`` whose missing-file errors (offline and uncached, no weights) become one line."""
    try:
        return cls.from_pretrained(name_or_path, **kwargs)
    except OSError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"could not load {label}: {first_line}; check the files are complete (or cached when HF_HUB_OFFLINE=1)"
        ) from None


def _load_weights(
    name_or_path: str,
    label: str,
    *,
    torch_dtype: torch.dtype,
    use_safetensors: bool,
    trust_remote_code: bool,
    revision: str | None = None,
) -> PreTrainedModel:
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = revision
    # Pinned to safetensors when they exist, so a stray pickle (.bin) next to them is never unpickled.
    if use_safetensors:
        kwargs["use_safetensors"] = True
    return _from_pretrained(AutoModelForCausalLM, name_or_path, label, **kwargs)


def _dequantize_gguf(path: Path, folder: Path) -> None:
    """Write the GGUF file's dequantized float32 model and its tokenizer as an HF folder at ``folder``.

    Built in a temporary sibling folder and renamed into place, so a reader never sees half a folder;
    when another process finished first, its folder is kept and ours dropped.
    """
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"loading {str(path)!r} needs the gguf package; pip install gguf")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        kwargs: dict[str, Any] = {"gguf_file": path.name, "dtype": torch.float32}
        try:
            from transformers import GgufConfig  # transformers that can keep GGUF blocks packed
        except ImportError:
            pass
        else:
            kwargs["quantization_config"] = GgufConfig(dequantize=True)
        try:
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        except (ValueError, KeyError) as error:
            raise UserError(f"transformers cannot load GGUF file {str(path)!r} ({error}); pass an HF checkpoint") from None
        # The weights are plain float tensors now; without the GGUF quantizer attached the model saves
        # (and reloads) as an ordinary checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        packed = [name for name, tensor in model.state_dict().items() if not tensor.is_floating_point()]
        if packed:
            raise RuntimeError(f"GGUF weights of {path} were not dequantized: {packed[:3]}")
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def gguf_folder(path: Path, cache_dir: Path | None = None) -> tuple[Path, str]:
    """The dequantized HF folder for a GGUF file (built on first use) and the file's sha256."""
    check_gguf(path)
    digest = file_sha256(path)
    folder = (cache_dir or default_gguf_cache_dir()) / digest
    # The folder only ever appears by rename of a complete one, so its config means it is whole.
    if not (folder / "config.json").is_file():
        _dequantize_gguf(path, folder)
    return folder, digest


def _architecture(model: PreTrainedModel) -> str:
    architectures = getattr(model.config, "architectures", None)
    return architectures[0] if architectures else type(model).__name__


def _shared_tokenizer(
    tokenizers: dict[str, PreTrainedTokenizerBase] | None,
    folder: Callable[[], Path],
    load: Callable[[], PreTrainedTokenizerBase],
) -> PreTrainedTokenizerBase:
    if tokenizers is None:
        return load()
    key = tokenizer_files_digest(folder())
    if key is None:  # no tokenizer files of its own (e.g. remote code): nothing to compare
        return load()
    if key not in tokenizers:
        tokenizers[key] = load()
    return tokenizers[key]


def load_model(
    model: str,
    *,
    revision: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    gguf_cache_dir: Path | None = None,
    tokenizers: dict[str, PreTrainedTokenizerBase] | None = None,
    content_hash: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelInfo]:
    """Load ``model`` (folder, .gguf file or hub id at ``revision``) in eval mode on ``device``.

    ``tokenizers``, a dict the caller keeps (a sweep keeps one for all its checkpoints), holds the
    tokenizers already loaded by the digest of their files: a checkpoint whose tokenizer files are
    byte-identical to an earlier one's gets that tokenizer object instead of loading its own.
    ``content_hash``: a local folder's ``folder_content_hash`` when the caller has just computed it
    (a sweep does, for the unit keys), so multi-GB weights are not read twice to hash them.
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    kind = _model_kind(model)
    label = revision_label(model, revision)
    resolved_revision: str | None = None
    known_hash, content_hash = content_hash, None
    if kind == "hub":
        resolved_revision, files = resolve_hub_revision(model, revision)
        # Loading by commit, not by the branch name, pins the weights to the commit we record.
        common = {"revision": resolved_revision, "trust_remote_code": trust_remote_code}
        network = _load_weights(
            model, label, torch_dtype=torch_dtype, use_safetensors=has_safetensors(files), **common
        )
        tokenizer = _shared_tokenizer(
            tokenizers, lambda: hub_tokenizer_folder(model, resolved_revision),
            lambda: _from_pretrained(AutoTokenizer, model, label, **common),
        )
    else:
        if kind == "gguf":
            if revision is not None:
                raise UserError(f"--revision {revision!r} does not apply to the GGUF file {model!r}; drop it")
            folder, content_hash = gguf_folder(Path(model).expanduser(), gguf_cache_dir)
        else:
            if revision is not None:
                raise UserError(f"--revision {revision!r} does not apply to the local folder {model!r}; drop it")
            folder = Path(model).expanduser()
            # a sweep's checkpoint that is broken fails alone, with the same one-line reason eval gives up front
            check_checkpoint_folder(folder, trust_remote_code=trust_remote_code)
            content_hash = known_hash or folder_content_hash(folder)
        files = [p.name for p in folder.iterdir()]
        network = _load_weights(
            str(folder),
            label,
            torch_dtype=torch_dtype,
            use_safetensors=has_safetensors(files),
            trust_remote_code=trust_remote_code,
        )
        tokenizer = _shared_tokenizer(
            tokenizers, lambda: folder,
            lambda: _from_pretrained(AutoTokenizer, str(folder), label, trust_remote_code=trust_remote_code),
        )
    network = network.to(torch_device)
    network.eval()
    info = model_info(network, tokenizer, model=model, revision=revision, resolved_revision=resolved_revision,
                      content_hash=content_hash, source=kind)
    return network, tokenizer, info


def weights_dtype(network: torch.nn.Module) -> str:
    """The dtype a model's results record: its first parameter's (``float32``, ``bfloat16``)."""
    return str(next(network.parameters()).dtype).removeprefix("torch.")


def dtype_name(dtype: str, device: str) -> str:
    """The dtype ``--dtype`` (``auto`` included) resolves to on ``device``, as ``weights_dtype`` spells it."""
    return str(resolve_dtype(dtype, resolve_device(device))).removeprefix("torch.")


def model_info(
    network: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, model: str, revision: str | None,
    resolved_revision: str | None, content_hash: str | None, source: str,
) -> ModelInfo:
    """What a results file records about a loaded model (``load_model``'s, or one handed over in memory)."""
    total, non_embedding = count_parameters(network)
    return ModelInfo(
        model=model,
        revision=revision,
        resolved_revision=resolved_revision,
        content_hash=content_hash,
        source=source,
        params_total=total,
        params_non_embedding=non_embedding,
        dtype=weights_dtype(network),
        device=str(next(network.parameters()).device),
        architecture=_architecture(network),
        max_length=context_length(network, tokenizer),
    )


def load_tokenizer(
    model: str,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    gguf_cache_dir: Path | None = None,
) -> PreTrainedTokenizerBase:
    """The tokenizer ``load_model`` would return, without loading (or dequantizing) weights."""
    kind = _model_kind(model)
    label = revision_label(model, revision)
    if kind == "hub":
        commit, _ = resolve_hub_revision(model, revision)
        return _from_pretrained(AutoTokenizer, model, label, revision=commit, trust_remote_code=trust_remote_code)
    if kind == "gguf":
        path = Path(model).expanduser()
        folder = (gguf_cache_dir or default_gguf_cache_dir()) / file_sha256(path)
        if (folder / "config.json").is_file():
            return _from_pretrained(AutoTokenizer, str(folder), label)
        return _from_pretrained(AutoTokenizer, str(path.parent), label, gguf_file=path.name)
    return _from_pretrained(AutoTokenizer, str(Path(model).expanduser()), label, trust_remote_code=trust_remote_code)
