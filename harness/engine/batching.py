"""Batches (lm-eval's ``Collator`` role): rows run through one loop, ``Batching.run``, in batches of a
fixed size or of the "auto" memory estimate, halved on out-of-memory.

Every forward of the engine (log-likelihood windows, shared prefixes, greedy decoding, the
pre-training loss) goes through that loop, so each backs off the same way.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from harness.errors import UserError

AUTO_CAP = {"cpu": 64, "cuda": 256}  # largest batch "auto" tries, per device type
MEMORY_FRACTION = 0.5  # of free memory that "auto" plans to fill: the estimate below is rough
_OOM_MESSAGES = ("out of memory", "defaultcpuallocator", "can't allocate memory")

_R = TypeVar("_R")
_T = TypeVar("_T")

# (sequence length, positions needing logits, uses a KV cache) of a row: what "auto" sizes from
Footprint = tuple[int, int, bool]


def check_batch_size(batch_size: int | str) -> None:
    if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise UserError(f"batch size must be a positive integer or 'auto', got {batch_size!r}")


class Batching:
    """Runs rows in batches of ``size`` (an int, or "auto": estimated per batch from free memory).

    ``logits_everywhere``: the model projects every position onto the vocabulary (no
    ``logits_to_keep``), so "auto" counts logits at every position.  ``last_size`` is the size of
    the last batch that ran (after any out-of-memory back-off).
    """

    def __init__(self, model: Any, device: torch.device, size: int | str, *, logits_everywhere: bool) -> None:
        check_batch_size(size)
        self.model = model
        self.device = device
        self.size = size
        self.logits_everywhere = logits_everywhere
        self.last_size: int | None = None

    def auto_size(self, seq_len: int, logit_positions: int, with_kv_cache: bool) -> int:
        if self.logits_everywhere:
            logit_positions = seq_len
        return auto_batch_size(self.model, self.device, seq_len, logit_positions, with_kv_cache)

    def run(
        self,
        rows: Sequence[_R],
        run: Callable[[Sequence[_R]], list[_T]],
        *,
        footprint: Callable[[_R], Footprint],
        done: Callable[[Sequence[_R], list[_T]], None] | None = None,
    ) -> list[_T]:
        """``run`` over consecutive batches of ``rows`` (longest first), halving the size on out-of-memory.

        ``footprint(row)`` sizes the "auto" batch that starts at ``row``.  ``done(batch, outputs)``
        follows each batch that succeeded, outside the retry: what it runs (a shared prefix's
        children) backs off on its own.
        """
        results: list[_T] = []
        ceiling: int | None = None  # set by an out-of-memory error, for the rest of this call
        while len(results) < len(rows):
            start = len(results)
            size = self.auto_size(*footprint(rows[start])) if self.size == "auto" else int(self.size)
            size = min(size, ceiling or size, len(rows) - start)
            try:
                out: list[_T] | None = run(rows[start : start + size])
            except Exception as error:  # noqa: BLE001 - anything but out-of-memory is re-raised
                if not is_out_of_memory(error):
                    raise
                if size == 1:
                    raise UserError(
                        f"out of memory running one sequence of {footprint(rows[start])[0]} tokens on "
                        f"{self.device}; lower the max length or use a device with more memory"
                    ) from error
                out = None
            if out is None:  # freed outside the except block, which holds the failed batch's frames
                ceiling = size // 2
                release_memory(self.device.type)
                continue
            self.last_size = size
            results.extend(out)
            if done is not None:
                done(rows[start : start + size], out)
        return results


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
