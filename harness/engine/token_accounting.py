"""Counting the tokens a model really forwards, with a forward pre-hook on the model itself.

The count is taken at the model's door rather than inside our engine, so the same hook measures any
caller: our engine, and lm-evaluation-harness's ``HFLM`` in ``scripts/bench_vs_lm_eval.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def forwarded_tokens(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | torch.Tensor:
    """Non-padding positions in one call of a causal LM's ``forward(input_ids, attention_mask, ...)``.

    With a 2-D attention mask, its last ``input length`` columns mark the new positions (the columns
    before them cover the KV cache, which is not forwarded again).  Without one, every position
    counts: nothing tells padding apart, and padding is computed anyway (lm-eval's log-likelihood
    batches pass no mask).  A mask's sum is returned as a tensor so that counting never waits
    for the device.
    """
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    if input_ids is None:
        input_ids = kwargs.get("inputs_embeds")
    if input_ids is None:
        return 0
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    length = input_ids.shape[1] if input_ids.dim() > 1 else input_ids.shape[0]
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return mask[:, -length:].sum()
    return input_ids.shape[0] * length if input_ids.dim() > 1 else length


class ForwardedTokenCounter:
    """A forward pre-hook (``register_forward_pre_hook(counter, with_kwargs=True)``) summing ``forwarded_tokens``."""

    def __init__(self) -> None:
        self._host = 0
        self._device: list[torch.Tensor] = []

    def __call__(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        count = forwarded_tokens(args, kwargs)
        if isinstance(count, torch.Tensor):
            self._device.append(count)
        else:
            self._host += count

    @property
    def count(self) -> int:
        """Tokens counted so far (reading it waits for the device once)."""
        if self._device:
            self._host += int(torch.stack([t.to(self._device[0].device) for t in self._device]).sum())
            self._device.clear()
        return self._host


@contextmanager
def count_forwarded_tokens(model: torch.nn.Module) -> Iterator[ForwardedTokenCounter]:
    """Count every forward of ``model`` inside the ``with`` block; the hook is removed on exit, so
    forwards outside it (a test's reference computation, another engine) are never counted."""
    counter = ForwardedTokenCounter()
    handle = model.register_forward_pre_hook(counter, with_kwargs=True)
    try:
        yield counter
    finally:
        handle.remove()
