"""Greedy decoding with a KV cache, stop strings, an early stop on a settled answer, and the
log-likelihood of gold continuations read on the prompt's own cache (lm-eval's ``generate_until``).

A batch of prompts is left-padded and prefilled; right after the prefill, while every prompt is in
the cache, the continuations a request asks to score are forwarded on a fork of that cache, so only
their own tokens are forwarded.  Rows leave the batch as soon as they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from harness.engine.batching import Footprint
from harness.engine.forward import Segment, output_cache
from harness.engine.prefix_cache import fork_cache
from harness.engine.shared_prefix import SharedPrefixExecutor
from harness.engine.tokens import Encoder
from harness.errors import NonFiniteOutput, UserError
from harness.requests import AnswerSettled, GenerationRequest

_SLICEABLE_CACHE_LAYERS = ("DynamicLayer", "DynamicSlidingWindowLayer")

Score = tuple[float, bool]  # (summed log-probability, every token the argmax)


@dataclass(frozen=True)
class DecodeRow:
    """A generation request in tokens, with lm-eval's stop list (EOS string added) and the tokens of
    the continuations to score after its prompt."""

    context: tuple[int, ...]
    max_new_tokens: int
    stops: tuple[str, ...]
    score: tuple[tuple[int, ...], ...] = ()
    until_settled: AnswerSettled | None = None  # GenerationRequest.until_settled


@dataclass(frozen=True)
class Decoded:
    """One decode row's output: its text cut at the stops, tokens generated, and per continuation
    its score read on the prompt's cache (None: scored by a forward of its own)."""

    text: str
    generated: int
    scores: tuple[Score | None, ...]

    def __iter__(self):
        return iter((self.text, self.generated, self.scores))


def decode_row(encoder: Encoder, request: GenerationRequest, max_length: int, pad_id: int) -> DecodeRow:
    """``request`` in tokens, its prompt cut to fit the window as lm-eval cuts it."""
    if max_length < 2:
        raise UserError(f"a model window of {max_length} token leaves no room to generate; raise the max length")
    # lm-eval keeps the last max_length − max_new_tokens prompt tokens. When max_new_tokens fills the
    # whole window (BIG-bench's 256 characters-and-tokens on a 256-token model) that would leave no
    # prompt at all: keep the prompt's last max_length − 1 tokens instead and generate into the room left.
    max_new_tokens = request.max_new_tokens
    if max_new_tokens >= max_length:
        context = encoder.encode(request.context)[-(max_length - 1) :]
        max_new_tokens = max_length - max(len(context), 1)
    else:
        context = encoder.encode(request.context)[-(max_length - max_new_tokens) :]
    # lm-eval adds the EOS string to every request's stops.
    stops = tuple(request.stop)
    if encoder.eos_string and encoder.eos_string not in stops:
        stops += (encoder.eos_string,)
    if not context:  # an empty prompt without BOS: the model needs one token to start from
        context = [encoder.prefix_token_id if encoder.prefix_token_id is not None else pad_id]
    score = tuple(tuple(encoder.continuation_tokens(request.context, c)) for c in request.score)
    for continuation in score:
        if len(continuation) > max_length:
            raise UserError(
                f"a scored continuation of {len(continuation)} tokens does not fit the model window of "
                f"{max_length} tokens; shorten it or raise the max length"
            )
    return DecodeRow(tuple(context), max_new_tokens, stops, score, request.until_settled)


def generation_footprint(segment: Segment) -> Footprint:
    row = segment.reads[0]
    longest = max((len(c) for c in row.score), default=0)
    # scored continuations read logits at each of their tokens, on top of the prompt's cache
    logit_positions = max(1, sum(len(c) for c in row.score))
    return segment.width + max(row.max_new_tokens, longest), logit_positions, True


class GreedyDecoder:
    """Greedy decoding of batches of prompt segments (``decode``), as transformers' greedy search."""

    def __init__(self, executor: SharedPrefixExecutor, tokenizer: Any, max_length: int) -> None:
        self.executor = executor
        self.forward = executor.forward
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.stop_token_ids = stop_token_ids(executor.forward.model, tokenizer)
        # An early stop on a settled answer (GenerationRequest.until_settled) needs the decoded text
        # of more tokens to begin with the text decoded so far.  Byte-level BPE and SentencePiece
        # decoders do, but for an unfinished UTF-8 character at the end (decoded as U+FFFD, dropped
        # before the check); clean_up_tokenization_spaces does not (a later "." or "n't" deletes the
        # space before it), so with it on, decoding runs to the stops and max_new_tokens.
        self.settles_early = not getattr(tokenizer, "clean_up_tokenization_spaces", False)

    def decode(self, segments: Sequence[Segment], on_step: Callable[[int], Any] | None = None) -> list[Decoded]:
        """Greedy decode of a batch of prompts (each the rest of its request's context on top of its
        cached prefix); per prompt, its text cut at the stops, how many tokens were generated and
        the scores of its continuations read on the prompt's cache (None: not scored there).
        ``on_step(n)``: after each step, the tokens it generated (a rate to show while a batch runs)."""
        rows = [segment.reads[0] for segment in segments]
        generated, scores = self._greedy_decode(segments, on_step or (lambda tokens: None))
        return [
            Decoded(self._cut_at_stops(ids, row.stops), len(ids), score)
            for ids, row, score in zip(generated, rows, scores)
        ]

    def _greedy_decode(
        self, segments: Sequence[Segment], on_step: Callable[[int], Any]
    ) -> tuple[list[list[int]], list[tuple[Score | None, ...]]]:
        """Greedy decode with a KV cache over left-padded prompts; the new token ids of each row,
        and the scores of each row's continuations taken on the prompt's cache after the prefill.

        ``live`` lists the rows still in the model's batch; a row leaves it as soon as it hits a
        stop (when the cache can be sliced), so finished rows stop costing compute.
        """
        forward = self.forward
        rows = [segment.reads[0] for segment in segments]
        generated: list[list[int]] = [[] for _ in rows]
        # Left padding puts every row's last prompt token in the last column, whose logits give the
        # first new token of all rows at once.  Positions count real tokens only, so a padded row
        # sees the positions it would see alone (as in transformers' generate).
        input_ids, attention_mask, positions, cache = forward.segment_batch(segments, left_pad=True)
        live = list(range(len(rows)))
        done = [False] * len(rows)
        scores: list[tuple[Score | None, ...]] | None = None
        while True:
            kwargs = forward.kwargs(positions, cache, forward.logits_to_keep(1), use_cache=True)
            output = forward.run(input_ids, attention_mask, **kwargs)
            cache = output_cache(output)
            # A NaN logit still has an argmax: without this check a diverged model "generates" text
            # and scores 0 exact match, a measurement it never made.
            if not bool(output.logits[:, -1, :].isfinite().all()):
                raise NonFiniteOutput("non-finite generation logits (NaN or inf): diverged or corrupt weights; check the checkpoint")
            if scores is None:  # the prefill: every row's prompt is in the cache, nothing generated yet
                scores = self._score_on_prompt_cache(rows, output.logits[:, -1, :], cache, attention_mask, positions)
            # Argmax of float32 logits, as transformers' greedy search takes it.  The host needs the
            # tokens anyway, to match stop strings on decoded text.
            next_tokens = output.logits[:, -1, :].float().argmax(-1).tolist()
            new = 0
            for i, token in zip(live, next_tokens):
                if not done[i]:
                    generated[i].append(token)
                    done[i] = self._finished(generated[i], rows[i])
                    new += 1
            on_step(new)
            keep = [b for b, i in enumerate(live) if not done[i]]
            if not keep:
                return generated, scores
            index = forward.upload(torch.tensor(keep)) if len(keep) < len(live) else None
            if index is not None and select_cache_rows(cache, index):
                live = [live[b] for b in keep]
                attention_mask, positions = attention_mask[index], positions[index]
                next_tokens = [next_tokens[b] for b in keep]
            input_ids = forward.upload(torch.tensor(next_tokens, dtype=torch.long)[:, None])
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(live), 1))], dim=1)
            positions = positions[:, -1:] + 1

    def _score_on_prompt_cache(
        self,
        rows: Sequence[DecodeRow],
        last_logits: torch.Tensor,
        cache: Any,
        attention_mask: torch.Tensor,
        positions: torch.Tensor,
    ) -> list[tuple[Score | None, ...]]:
        """(log-probability, is greedy) of each row's continuations given its prompt, read from the
        prefill's last logits (the first token) and one forward of the continuations on a fork of
        the prompt cache (the rest); None for a continuation left to a forward of its own.

        Continuations of one row that are token prefixes of another (a target and the same target
        without its final answer) are read from the longer one's forward.
        """
        forward = self.forward
        scores: list[list[Score | None]] = [[None] * len(row.score) for row in rows]
        if not self.executor.enabled or cache is None or not any(row.score for row in rows):
            return [tuple(s) for s in scores]
        # (row, continuation index, tokens), only where prompt + continuation fit the model window
        entries = [
            (b, j, c)
            for b, row in enumerate(rows)
            for j, c in enumerate(row.score)
            if c and len(row.context) + len(c) - 1 <= self.max_length
        ]
        if not entries:
            return [tuple(s) for s in scores]
        first_targets = forward.upload(torch.tensor([c[0] for _, _, c in entries]))
        first = torch.log_softmax(last_logits[forward.upload(torch.tensor([b for b, _, _ in entries]))].float(), dim=-1)
        first_logprob = first.gather(-1, first_targets[:, None]).squeeze(-1).tolist()
        first_greedy = (first.argmax(-1) == first_targets).tolist()

        # The longest continuation of a row is forwarded; a shorter one that is its prefix reads it.
        forwards: list[tuple[int, tuple[int, ...]]] = []
        host: dict[int, int] = {}  # entry -> its forward
        for e in sorted(range(len(entries)), key=lambda e: (entries[e][0], -len(entries[e][2]))):
            b, _, c = entries[e]
            found = next((f for f, (fb, t) in enumerate(forwards) if fb == b and t[: len(c)] == c), None)
            if found is None:
                found = len(forwards)
                forwards.append((b, c))
            host[e] = found
        needed = [f for f, (_, t) in enumerate(forwards) if len(t) > 1]
        cumulative: dict[int, tuple[list[float], list[int]]] = {}
        if needed:
            width = max(len(forwards[f][1]) - 1 for f in needed)
            input_ids = torch.full((len(needed), width), forward.pad_id, dtype=torch.long)
            new_mask = torch.zeros((len(needed), width), dtype=torch.long)
            targets = torch.zeros((len(needed), width), dtype=torch.long)
            for k, f in enumerate(needed):
                tokens = forwards[f][1]
                input_ids[k, : len(tokens) - 1] = torch.tensor(tokens[:-1])
                new_mask[k, : len(tokens) - 1] = 1
                targets[k, : len(tokens) - 1] = torch.tensor(tokens[1:])
            batch_rows = [forwards[f][0] for f in needed]
            index = forward.upload(torch.tensor(batch_rows))
            fork = fork_cache(cache, index, forward.config, same_rows=batch_rows == list(range(len(rows))))
            input_ids, new_mask, targets = (forward.upload(t) for t in (input_ids, new_mask, targets))
            mask = torch.cat([attention_mask[index], new_mask.to(attention_mask.dtype)], dim=1)
            steps = positions[index, -1:] + 1 + torch.arange(width, device=positions.device)[None, :]
            kwargs = forward.kwargs(steps, fork, forward.logits_to_keep(width))
            logits = forward.run(input_ids, mask, **kwargs).logits[:, -width:]
            logprobs = torch.log_softmax(logits.float(), dim=-1)  # float32 whatever the model dtype
            token_logprobs = logprobs.gather(-1, targets[:, :, None]).squeeze(-1)
            misses = (logprobs.argmax(-1) != targets).long()
            # running sums: a continuation of n tokens reads its host's (n - 1)-th entry
            sums = token_logprobs.double().cumsum(-1).tolist()
            missed = misses.cumsum(-1).tolist()
            cumulative = {f: (sums[k], missed[k]) for k, f in enumerate(needed)}
        for e, (b, j, c) in enumerate(entries):
            logprob, greedy = first_logprob[e], bool(first_greedy[e])
            if len(c) > 1:
                sums, missed = cumulative[host[e]]
                logprob += sums[len(c) - 2]
                greedy = greedy and missed[len(c) - 2] == 0
            scores[b][j] = (float(logprob), greedy)
        return [tuple(s) for s in scores]

    def _finished(self, ids: list[int], row: DecodeRow) -> bool:
        if len(ids) >= row.max_new_tokens or ids[-1] in self.stop_token_ids:
            return True
        # Stops are matched on decoded text, as lm-eval's stopping criteria and post-processing do.
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if any(stop and stop in text for stop in row.stops):
            return True
        # The answer read from this row's text cannot change: more tokens would cost compute and
        # change nothing that is scored.
        return row.until_settled is not None and self.settles_early and row.until_settled.is_final(settled_prefix(text))

    def _cut_at_stops(self, ids: list[int], stops: tuple[str, ...]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for stop in stops:  # cutting at each stop in turn leaves the text before the earliest one
            if stop:
                text = text.split(stop)[0]
        return text


def settled_prefix(text: str) -> str:
    """The part of a decoded text that more tokens cannot rewrite: all but a trailing U+FFFD, which
    may be the first bytes of a character the next tokens complete."""
    return text.rstrip("\ufffd")


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """EOS ids that end a generation: transformers' generate (which lm-eval calls) stops on the
    generation config's ids, and the tokenizer's EOS string is one of lm-eval's stops anyway."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return ids


def select_cache_rows(cache: Any, index: torch.Tensor) -> bool:
    """Keep only the batch rows in ``index`` of a KV cache, in place; False if it can't be sliced safely.

    Only plain key/value layers are sliced: recurrent, quantised or static layers hold state that
    ``batch_select_indices`` would leave behind (or ignore), silently mixing up rows.
    """
    if type(cache).__name__ != "DynamicCache":
        return False
    layers = getattr(cache, "layers", None)  # transformers < 4.56 has no layer objects
    if layers is not None and any(type(layer).__name__ not in _SLICEABLE_CACHE_LAYERS for layer in layers):
        return False
    cache.batch_select_indices(index)
    return True
