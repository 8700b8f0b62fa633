"""Batch sizes: the "auto" memory estimate and recognising out-of-memory errors to back off from.

The engine runs batches through one loop (``Engine._run_batches``) that halves the batch on
out-of-memory; what it needs to know about memory and errors lives here.
"""

from __future__ import annotations

import gc
import os
from typing import Any

import torch

AUTO_CAP = {"cpu": 64, "cuda": 256}  # largest batch "auto" tries, per device type
MEMORY_FRACTION = 0.5  # of free memory that "auto" plans to fill: the estimate below is rough
_OOM_MESSAGES = ("out of memory", "defaultcpuallocator", "can't allocate memory")


def auto_batch_size(
    model: Any, device: torch.device, seq_len: int, logit_positions: int, with_kv_cache: bool
) -> int:
    """Largest power of two whose estimated activations fit in part of the free memory (capped)."""
    per_sequence = bytes_per_sequence(model.config, seq_len, logit_positions, dtype_bytes(model), with_kv_cache)
    fits = int(free_memory_bytes(device) * MEMORY_FRACTION) // max(per_sequence, 1)
    limit = min(fits, AUTO_CAP.get(device.type, AUTO_CAP["cpu"]))
    size = 1
    while size * 2 <= limit:
        size *= 2
    return size


def bytes_per_sequence(config: Any, seq_len: int, kept_positions: int, dtype_bytes: int, with_kv_cache: bool) -> int:
    """Rough peak activation memory of one sequence in a forward pass (weights excluded)."""
    text_config = _text_config(config)
    hidden = _config_int(text_config, ("hidden_size", "n_embd", "d_model"), 4096)
    heads = _config_int(text_config, ("num_attention_heads", "n_head"), 32)
    layers = _config_int(text_config, ("num_hidden_layers", "n_layer"), 32)
    vocab = _config_int(text_config, ("vocab_size",), 50_000)
    # Logits in model dtype, their float32 copy and its log_softmax.
    logits = kept_positions * vocab * (dtype_bytes + 8)
    # Hidden states, q/k/v and the 4x MLP intermediate live at once within a layer.
    hidden_states = seq_len * hidden * dtype_bytes * 24
    # Attention kernels that materialise the score matrix (eager, CPU math) need heads x seq^2.
    scores = heads * seq_len * seq_len * 4
    kv_cache = 2 * layers * seq_len * hidden * dtype_bytes if with_kv_cache else 0
    return logits + hidden_states + scores + kv_cache


def dtype_bytes(model: Any) -> int:
    parameter = next(model.parameters(), None)
    return parameter.element_size() if parameter is not None else 4


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX (Windows) or the name is unknown
        return 4 * 1024**3


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error).lower() for m in _OOM_MESSAGES)


def release_memory(device_type: str | None) -> None:
    """Free what Python and the CUDA caching allocator still hold (``device_type`` "cuda", "cpu" or None)."""
    gc.collect()
    if device_type == "cuda":
        torch.cuda.empty_cache()


def _text_config(config: Any) -> Any:
    # Multimodal configs nest the language model's settings; the top level may describe an encoder.
    return getattr(config, "text_config", None) or config


def _config_int(config: Any, names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default
