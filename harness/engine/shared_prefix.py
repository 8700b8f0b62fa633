"""The shared-prefix executor: runs whole requests (segments) with their shared token prefixes
forwarded once and their KV caches reused under each request's own tokens.

``harness.engine.prefix_cache`` plans which prefixes to share (pure, from token ids alone); this
module executes the plan through the batching loop.  With sharing off (``prefix_cache=False``, or a
model whose cache cannot be padded and stacked) the same segments run whole, one batch after
another: the plain path, kept as the reference the shared path must agree with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from harness.engine.batching import Batching, Footprint
from harness.engine.forward import ModelForward, Segment, longest_first, output_cache
from harness.engine.prefix_cache import (
    MIN_SHARED_TOKENS,
    Branch,
    CachedPrefix,
    cached_prefix,
    plan_shared_prefixes,
    supports_prefix_cache,
)

_T = TypeVar("_T")


class SharedPrefixExecutor:
    """Runs segments through ``forward`` in ``batching``'s batches, sharing prefixes when ``enabled``."""

    def __init__(self, forward: ModelForward, batching: Batching, *, prefix_cache: bool) -> None:
        self.forward = forward
        self.batching = batching
        # Reusing a cached prefix needs explicit position ids and a KV cache we can pad and stack;
        # other models run the plain path, with the same numbers.
        self.enabled = prefix_cache and forward.takes_position_ids and supports_prefix_cache(forward.model)

    def run(
        self,
        segments: Sequence[Segment],
        reads_from: Sequence[int],
        run_leaves: Callable[[Sequence[Segment]], list[_T]],
        leaves_done: Callable[[Sequence[Segment], list[_T]], None],
        leaf_footprint: Callable[[Segment], Footprint],
    ) -> None:
        """``run_leaves`` over ``segments`` (whole requests, none cached yet, longest first), then
        ``leaves_done`` per batch; ``reads_from[i]`` is the first position of segment i whose
        logits are read, so no shared prefix reaches it."""
        if not self.enabled:
            self.batching.run(segments, run_leaves, footprint=leaf_footprint, done=leaves_done)
            return
        # The plan is a forest: a shared prefix is forwarded in a batch with others, then its children
        # (longer shared prefixes, or requests' own tokens) run on top of its cache.  Children of one
        # batch run before the next batch, so only a few batches' caches are alive at any time.
        plan = plan_shared_prefixes([segment.tokens for segment in segments], reads_from, MIN_SHARED_TOKENS)

        def child(branch: Branch, prefix: CachedPrefix | None) -> Segment:
            whole = segments[branch.members[0]]
            part = whole.tokens[branch.start : branch.end]
            if branch.is_leaf:
                return Segment(part, prefix, whole.reads, whole.copies, branch)
            return Segment(part, prefix, branch=branch)

        def run_level(level: list[Segment]) -> None:
            leaves = sorted((s for s in level if s.branch.is_leaf), key=longest_first)
            shared = sorted((s for s in level if not s.branch.is_leaf), key=longest_first)
            if leaves:
                self.batching.run(leaves, run_leaves, footprint=leaf_footprint, done=leaves_done)
            if shared:

                def descend(batch: Sequence[Segment], prefixes: list[CachedPrefix]) -> None:
                    run_level([child(c, p) for s, p in zip(batch, prefixes) for c in s.branch.children])

                self.batching.run(shared, self._forward_prefixes, footprint=_prefix_footprint, done=descend)

        run_level([child(branch, None) for branch in plan])

    def _forward_prefixes(self, segments: Sequence[Segment]) -> list[CachedPrefix]:
        """Forward shared prefixes (each on top of its own cached prefix, if any) and keep their caches."""
        input_ids, attention_mask, positions, cache = self.forward.segment_batch(segments, left_pad=False)
        kwargs = self.forward.kwargs(positions, cache, self.forward.logits_to_keep(1), use_cache=True)
        cache = output_cache(self.forward.run(input_ids, attention_mask, **kwargs))
        return [
            cached_prefix(cache, attention_mask, b, (s.prefix.length if s.prefix else 0) + len(s.tokens))
            for b, s in enumerate(segments)
        ]


def _prefix_footprint(segment: Segment) -> Footprint:
    return segment.width, 1, True
