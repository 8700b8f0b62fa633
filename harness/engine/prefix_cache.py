"""Shared prefixes: which token prefixes to forward once, and their KV caches reused across a batch.

Requests of one task mostly begin with the same tokens (a task description and few-shot exemplars,
then for multiple choice the item's question once per choice).  ``plan_shared_prefixes`` finds
those prefixes from the token ids alone, by sorting the sequences and taking longest common
prefixes of neighbours; it knows nothing about tasks.  The engine forwards each shared prefix
once, keeps its keys/values (``CachedPrefix``), and forwards only each sequence's own tokens on
top of them (``stack_prefixes`` lays several cached prefixes side by side as one batch's cache).

A prefix is shared when at least two sequences start with it and it adds at least
``min_shared`` tokens over the prefix already cached above it: a shorter one saves less than the
extra forward call and cache copies cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

MIN_SHARED_TOKENS = 16


@dataclass(frozen=True)
class Branch:
    """Tokens ``[start, end)`` of the sequences ``members``, forwarded once on top of the cache of
    tokens ``[0, start)`` (the parent branch's; nothing when ``start`` is 0).

    A leaf (no ``children``) is one sequence forwarded to its end; a shared prefix has children
    that continue from its ``end``.
    """

    start: int
    end: int
    members: tuple[int, ...]  # indices into the planned sequences
    children: tuple[Branch, ...] = ()

    @property
    def is_leaf(self) -> bool:
        return not self.children


def plan_shared_prefixes(
    sequences: Sequence[Sequence[int]], limits: Sequence[int], min_shared: int = MIN_SHARED_TOKENS
) -> tuple[Branch, ...]:
    """The forest of shared prefixes over distinct ``sequences``; every sequence is one leaf.

    ``limits[i]`` caps how long a cached prefix of sequence i may be: positions whose outputs
    (logits) are read must be forwarded in the sequence's own leaf, never inside a shared prefix.
    """
    if len(sequences) != len(limits):
        raise ValueError("one limit per sequence")
    if min_shared < 1:
        raise ValueError("min_shared must be at least 1")
    order = sorted(range(len(sequences)), key=lambda i: tuple(sequences[i]))
    return _branches(sequences, limits, order, 0, min_shared)


def _branches(
    sequences: Sequence[Sequence[int]], limits: Sequence[int], order: list[int], depth: int, min_shared: int
) -> tuple[Branch, ...]:
    """Branches below a prefix of ``depth`` tokens shared by ``order`` (indices in sorted sequence order)."""
    branches: list[Branch] = []
    eligible: list[int] = []
    for i in order:
        if limits[i] - depth >= min_shared:
            eligible.append(i)
        else:
            branches.append(Branch(depth, len(sequences[i]), (i,)))
    # In sorted order, sequences sharing a prefix are neighbours, and the longest prefix common to a
    # run of them is the smallest common prefix of adjacent pairs.
    run: list[int] = []
    run_common = 0
    for i in eligible:
        if run:
            common = _common_length(sequences[run[-1]], sequences[i])
            if common - depth >= min_shared:
                run.append(i)
                run_common = min(run_common, common)
                continue
            branches.append(_run_branch(sequences, limits, run, run_common, depth, min_shared))
        run, run_common = [i], len(sequences[i])
    if run:
        branches.append(_run_branch(sequences, limits, run, run_common, depth, min_shared))
    return tuple(branches)


def _run_branch(
    sequences: Sequence[Sequence[int]], limits: Sequence[int], run: list[int], common: int, depth: int, min_shared: int
) -> Branch:
    if len(run) == 1:
        return Branch(depth, len(sequences[run[0]]), (run[0],))
    end = min(common, *(limits[i] for i in run))  # >= depth + min_shared: run members are eligible
    return Branch(depth, end, tuple(run), _branches(sequences, limits, run, end, min_shared))


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for k in range(n):
        if a[k] != b[k]:
            return k
    return n


# ---------------------------------------------------------------------- KV caches


@dataclass(frozen=True)
class CachedPrefix:
    """The keys and values of one sequence's forwarded prefix, per layer ``[1, kv_heads, T, head_dim]``.

    ``T`` may exceed ``length``: the batch the prefix was forwarded in padded it, and the padding
    stays inside as masked holes (``mask`` is 0 there) rather than being copied out.
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    mask: torch.Tensor  # [T], 1 at real tokens
    length: int  # real tokens: the position id of the next token

    @property
    def width(self) -> int:
        return int(self.mask.shape[0])


def supports_prefix_cache(model: Any) -> bool:
    """Whether the model's KV cache is a plain ``DynamicCache`` of full-attention layers, the one kind
    we can pad, stack and extend: sliding-window, recurrent or static layers hold state that the
    holes and row copies here would corrupt."""
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return False
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    if getattr(config, "_attn_implementation", "eager") not in ("eager", "sdpa"):
        return False  # kernels that drop padding by index (flash, flex) are not checked with holes
    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # noqa: BLE001 - an older transformers or an unusual config: use the plain path
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def stack_prefixes(prefixes: Sequence[CachedPrefix], config: Any) -> tuple[Any, torch.Tensor]:
    """One batch's ``DynamicCache`` holding ``prefixes[b]`` in row b, right-padded to the widest,
    and its attention mask ``[batch, width]``.

    Rows that share one prefix get a broadcast view of it: the cache's first update concatenates
    new keys onto it, which materialises each row once.
    """
    from transformers import DynamicCache

    first = prefixes[0]
    batch = len(prefixes)
    if all(p is first for p in prefixes):
        keys = [k.expand(batch, -1, -1, -1) for k in first.keys]
        values = [v.expand(batch, -1, -1, -1) for v in first.values]
        mask = first.mask[None, :].expand(batch, -1)
    else:
        width = max(p.width for p in prefixes)
        keys = [_stacked([p.keys[layer] for p in prefixes], width) for layer in range(len(first.keys))]
        values = [_stacked([p.values[layer] for p in prefixes], width) for layer in range(len(first.values))]
        mask = first.mask.new_zeros((batch, width))
        for b, prefix in enumerate(prefixes):
            mask[b, : prefix.width] = prefix.mask
    cache = DynamicCache(config=config)
    for layer, k, v in zip(cache.layers, keys, values):
        layer.update(k[:, :, :0], v[:, :, :0])  # sets the layer's dtype and device, whatever the version
        layer.keys, layer.values = k, v
    return cache, mask


def _stacked(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    first = rows[0]
    out = first.new_zeros((len(rows), first.shape[1], width, first.shape[3]))
    for b, row in enumerate(rows):
        out[b, :, : row.shape[2]] = row[0]
    return out


def cached_prefix(cache: Any, attention_mask: torch.Tensor, row: int, length: int) -> CachedPrefix:
    """Row ``row`` of a batch's cache after a forward, as a prefix of ``length`` real tokens (views, no copy)."""
    return CachedPrefix(
        keys=tuple(layer.keys[row : row + 1] for layer in cache.layers),
        values=tuple(layer.values[row : row + 1] for layer in cache.layers),
        mask=attention_mask[row],
        length=length,
    )


def fork_cache(cache: Any, rows: torch.Tensor, config: Any, *, same_rows: bool = False) -> Any:
    """A new ``DynamicCache`` holding rows ``rows`` of a batch's ``cache`` (repeats allowed), for a
    forward that must not change ``cache`` itself: a generation scores its gold continuation on the
    prompt's cache, then goes on decoding from the unchanged original.

    A forward appends to a ``DynamicLayer`` by concatenation into new tensors, so when the fork
    keeps every row in order (``same_rows``) it shares the original's tensors without copying.
    """
    from transformers import DynamicCache

    fork = DynamicCache(config=config)
    for layer, source in zip(fork.layers, cache.layers):
        keys = source.keys if same_rows else source.keys.index_select(0, rows)
        values = source.values if same_rows else source.values.index_select(0, rows)
        layer.update(keys[:, :, :0], values[:, :, :0])  # sets the layer's dtype and device, whatever the version
        layer.keys, layer.values = keys, values
    return fork
