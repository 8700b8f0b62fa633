"""Log-likelihoods of token continuations, and the windows a long text is scored in.

``score_rows`` is lm-eval's ``_loglikelihood_tokens``: each (context, continuation) row's summed
log-probability and greediness, its model input cut to the last ``max_length`` tokens.  Requests
that feed the model the same window share one forward, each reading its own trailing positions
(lm-eval's one-token-continuation cache, all choices of a single-token multiple-choice item,
generalised to any continuation length); shared prefixes are forwarded once (``shared_prefix``).

A text longer than the model is scored in windows, each a row:
- ``rolling_windows``: lm-eval's ``loglikelihood_rolling`` (``get_rolling_token_windows`` +
  ``make_disjoint_window``): every token is predicted, the first from the prefix token, the first
  of each later window from the ``context_len`` tokens before it.
- ``disjoint_windows``: the pre-training loss's non-overlapping windows of ``window`` tokens, whose
  first token is context only (``harness.engine.loss``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from harness.engine.batching import Footprint
from harness.engine.forward import Segment
from harness.engine.shared_prefix import SharedPrefixExecutor


@dataclass(frozen=True)
class ScoringRow:
    """A log-likelihood request in tokens: what the model actually sees and scores."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]

    @property
    def tokens(self) -> tuple[int, ...]:
        return self.context + self.continuation


def model_window(row: ScoringRow, max_length: int) -> tuple[int, ...]:
    # lm-eval's model input: drop the last token (it predicts nothing we score), keep the last max_length.
    return row.tokens[-(max_length + 1) :][:-1]


def score_rows(
    executor: SharedPrefixExecutor, max_length: int, copies: Counter[ScoringRow], advance: Callable[[int, int], Any]
) -> dict[ScoringRow, tuple[float, bool]]:
    """Summed log-probability and greediness of each distinct row (``copies``: requests per row);
    ``advance(requests, tokens)`` follows each batch with the requests it answered and the tokens it scored."""
    windows: dict[tuple[int, ...], list[ScoringRow]] = {}
    for row in sorted(copies, key=lambda r: (-len(r.tokens), r.tokens)):  # lm-eval's Collator order
        if row.continuation:  # an empty one needs no forward: log 1 = 0
            windows.setdefault(model_window(row, max_length), []).append(row)
    segments = [
        Segment(window, None, tuple(members), sum(copies[row] for row in members))
        for window, members in windows.items()
    ]
    scored: list[tuple[Segment, tuple[torch.Tensor, torch.Tensor]]] = []

    def done(batch: Sequence[Segment], outputs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        scored.extend(zip(batch, outputs))
        advance(sum(segment.copies for segment in batch),
                sum(len(row.continuation) for segment in batch for row in segment.reads))

    # A shared prefix stops before a window's first continuation predictor.
    reads_from = [len(s.tokens) - max(len(row.continuation) for row in s.reads) for s in segments]
    executor.run(segments, reads_from, lambda batch: _score_segments(executor, batch), done, _scoring_footprint)
    return _scores_by_row(scored)


def _score_segments(
    executor: SharedPrefixExecutor, segments: Sequence[Segment]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One forward over right-padded segments (on top of their cached prefixes, if any); per
    segment, the summed log-probability and greediness of each row it reads, left on the device."""
    forward = executor.forward
    input_ids, attention_mask, positions, cache = forward.segment_batch(segments, left_pad=False)
    width = input_ids.shape[1]
    # A continuation's predictors are the last len(continuation) positions of its window, and the
    # window's own segment holds them all (shared prefixes stop before the first one).
    entries = [
        (b, len(segment.tokens) - len(row.continuation), row.continuation)
        for b, segment in enumerate(segments)
        for row in segment.reads
    ]
    # Only positions that predict continuation tokens need logits; projecting every position onto
    # the vocabulary would dominate memory (and, for small models, time).
    keep = forward.logits_to_keep(width - min(start for _, start, _ in entries))
    logits = forward.run(input_ids, attention_mask, **forward.kwargs(positions, cache, keep)).logits
    offset = width - logits.shape[1]  # leading positions logits_to_keep left out

    cont_lens = torch.tensor([len(continuation) for *_, continuation in entries])
    longest = int(cont_lens.max())
    steps = torch.arange(longest)[None, :]
    valid = steps < cont_lens[:, None]
    starts = torch.tensor([start - offset for _, start, _ in entries])[:, None]
    index = torch.where(valid, starts + steps, starts)
    batch_rows = torch.tensor([b for b, _, _ in entries])[:, None]
    targets = torch.tensor([list(c) + [0] * (longest - len(c)) for *_, c in entries])
    batch_rows, index, targets, valid = (forward.upload(t) for t in (batch_rows, index, targets, valid))
    # log_softmax in float32 whatever the model dtype: a bf16 normaliser over 50k logits loses digits.
    logprobs = torch.log_softmax(logits[batch_rows, index].float(), dim=-1)  # [entries, longest, vocab]
    token_logprobs = logprobs.gather(-1, targets[:, :, None]).squeeze(-1)
    sums = torch.where(valid, token_logprobs, 0.0).sum(-1)
    greedy = ((logprobs.argmax(-1) == targets) | ~valid).all(-1)
    counts = [len(segment.reads) for segment in segments]
    return list(zip(sums.split(counts), greedy.split(counts)))


def _scoring_footprint(segment: Segment) -> Footprint:
    longest = max(len(row.continuation) for row in segment.reads)
    return segment.width, longest, segment.prefix is not None


def _scores_by_row(
    scored: Sequence[tuple[Segment, tuple[torch.Tensor, torch.Tensor]]],
) -> dict[ScoringRow, tuple[float, bool]]:
    """Device results of every batch, brought to the host in one transfer at the end."""
    if not scored:
        return {}
    sums = torch.cat([s for _, (s, _) in scored]).tolist()
    greedy = torch.cat([g for _, (_, g) in scored]).tolist()
    rows = [row for segment, _ in scored for row in segment.reads]
    return {row: (float(total), bool(is_greedy)) for row, total, is_greedy in zip(rows, sums, greedy)}


# ---------------------------------------------------------------------- windows of a long text


def rolling_windows(
    tokens: Sequence[int], prefix_token: int, max_seq_len: int, context_len: int = 1
) -> list[ScoringRow]:
    """lm-eval's rolling windows (``get_rolling_token_windows`` then ``make_disjoint_window``):
    rows whose continuations, in order, are exactly ``tokens``.

    The first window predicts up to ``max_seq_len`` tokens after ``prefix_token``; each later one
    predicts the next ``max_seq_len - context_len + 1`` tokens, its context the tokens before them
    that fill the model input (``context_len`` 1: at least the previous token).
    """
    if not 1 <= context_len <= max_seq_len:
        raise ValueError(f"context_len must be within 1..{max_seq_len}, got {context_len}")
    tokens = list(tokens)
    if not tokens:
        return []
    pred_len = max_seq_len - context_len + 1
    first = min(max_seq_len, len(tokens))
    rows = [ScoringRow((prefix_token,), tuple(tokens[:first]))]
    predicted = first
    while predicted < len(tokens):
        count = min(len(tokens) - predicted, pred_len)
        end = predicted + count
        # the model input is the max_seq_len tokens before ``end``; all but the predicted ones are context
        window = tokens[max(end - max_seq_len - 1, 0) : end - 1]
        rows.append(ScoringRow(tuple(window[: len(window) - (count - 1)]), tuple(tokens[end - count : end])))
        predicted = end
    return rows


def disjoint_windows(tokens: Sequence[int], window: int) -> list[ScoringRow]:
    """Non-overlapping windows of ``window`` tokens, each its first token as context and the rest
    scored; a last partial window is kept when it has at least 2 tokens."""
    if window < 2:
        raise ValueError(f"a window must hold at least 2 tokens, got {window}")
    chunks = [tuple(tokens[start : start + window]) for start in range(0, len(tokens), window)]
    return [ScoringRow(chunk[:1], chunk[1:]) for chunk in chunks if len(chunk) >= 2]
