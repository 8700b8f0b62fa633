"""One forward of the model over a batch of segments, whatever the transformers version.

A ``Segment`` is one batch row: tokens forwarded on top of a cached prefix (or from position 0).
``ModelForward`` pads segments into tensors with explicit position ids, stacks their cached
prefixes into one KV cache, and calls the model with the keyword names this transformers version
accepts (``logits_to_keep`` or ``num_logits_to_keep``, ``cache`` or ``past_key_values``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from harness.engine.prefix_cache import Branch, CachedPrefix, stack_prefixes


@dataclass(frozen=True, eq=False)
class Segment:
    """One batch row: ``tokens`` forwarded on top of ``prefix`` (a cached prefix; None: from position 0).

    ``reads`` are the scoring rows read from its logits or the one decode row it prompts (none for a
    shared prefix, whose cache is what it is forwarded for); ``copies`` the requests it answers.
    """

    tokens: tuple[int, ...]
    prefix: CachedPrefix | None
    reads: tuple[Any, ...] = ()
    copies: int = 0
    branch: Branch | None = None  # its place in the shared-prefix plan

    @property
    def width(self) -> int:
        """Positions the forward attends over: the cached prefix (padded) and the segment's own tokens."""
        return (self.prefix.width if self.prefix is not None else 0) + len(self.tokens)


def longest_first(segment: Segment) -> tuple[int, tuple[int, ...]]:
    # Longest first, as lm-eval orders requests: an out-of-memory error shows on the first batch.
    return -segment.width, segment.tokens


class ModelForward:
    """``model`` (an HF causal LM, already on its device) as the engine calls it."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.config = model.config
        self.device: torch.device = model_device(model)
        self.params = set(inspect.signature(model.forward).parameters)
        # Any id works for padding: padded positions are masked out or never read.
        self.pad_id: int = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
        """The one place the model runs (tests replace it to simulate out-of-memory errors)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    @property
    def takes_position_ids(self) -> bool:
        return "position_ids" in self.params

    def logits_to_keep(self, count: int) -> dict[str, int]:
        """The keyword that keeps only the last ``count`` positions' logits; {} if the model has none."""
        for name in ("logits_to_keep", "num_logits_to_keep"):  # renamed in transformers 4.50
            if name in self.params:
                return {name: count}
        return {}

    def kwargs(
        self, positions: torch.Tensor, cache: Any, extra: dict[str, Any], *, use_cache: bool = False
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {**extra, "use_cache": use_cache or cache is not None}
        if cache is not None:
            # transformers renamed past_key_values to cache (5.2x; the old name goes in 5.40)
            kwargs["cache" if "cache" in self.params else "past_key_values"] = cache
        if self.takes_position_ids:
            kwargs["position_ids"] = positions
        return kwargs

    def upload(self, tensor: torch.Tensor) -> torch.Tensor:
        """Host tensor to the model's device; through pinned memory on CUDA, so the copy doesn't block."""
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def segment_batch(
        self, segments: Sequence[Segment], *, left_pad: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """Input ids, attention mask (over cached prefix + segment), position ids and KV cache (or None)
        of a batch of segments, padded on the left or the right."""
        width = max(len(segment.tokens) for segment in segments)
        input_ids = torch.full((len(segments), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(segments), width), dtype=torch.long)
        for b, segment in enumerate(segments):
            start = width - len(segment.tokens) if left_pad else 0
            input_ids[b, start : start + len(segment.tokens)] = torch.tensor(segment.tokens)
            attention_mask[b, start : start + len(segment.tokens)] = 1
        offsets = torch.tensor([s.prefix.length if s.prefix is not None else 0 for s in segments])
        positions = offsets[:, None] + (attention_mask.cumsum(-1) - 1).clamp(min=0)
        input_ids, attention_mask, positions = (self.upload(t) for t in (input_ids, attention_mask, positions))
        prefixes = [segment.prefix for segment in segments]
        if all(prefix is None for prefix in prefixes):
            return input_ids, attention_mask, positions, None
        if any(prefix is None for prefix in prefixes):
            raise ValueError("a batch mixes segments with and without a cached prefix")
        cache, prefix_mask = stack_prefixes(prefixes, self.config)
        return input_ids, torch.cat([prefix_mask.to(attention_mask.dtype), attention_mask], dim=1), positions, cache


def output_cache(output: Any) -> Any:
    """The KV cache of a forward's output, under its name before or after transformers' rename."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device
