"""The inference engine: log-likelihoods and greedy generations from a loaded HF causal LM.

It knows nothing about tasks: requests in (``harness.requests``), numbers and strings out, in
request order.  Tokenization, truncation and scoring replicate lm-evaluation-harness 0.4.13's
``HFLM`` (``tok_encode``, ``_encode_pair``, ``loglikelihood``, ``_loglikelihood_tokens``,
``generate_until``) so that our numbers equal its numbers.  The same code runs on CPU and CUDA.

No token is forwarded twice: requests that feed the model the same window share one forward,
and with ``prefix_cache`` (the default) token prefixes shared by several requests (a few-shot
header, a question scored once per choice) are forwarded once and their KV cache reused under
each request's own tokens (``harness.engine.prefix_cache``).  ``prefix_cache=False`` is the plain path,
one forward per distinct window, kept as the reference the shared path must agree with.

A generation request may also ask for the log-likelihood of continuations (``score``: the gold
answer of a generative item).  On the shared path they are scored on the prompt's own KV cache,
right after the prompt is prefilled for decoding: only the continuation's tokens are forwarded.
"""

from __future__ import annotations

import hashlib
import inspect
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from harness.engine import batching
from harness.errors import NonFiniteOutput, UserError, require_finite
from harness.engine.models import context_length
from harness.engine.prefix_cache import (
    MIN_SHARED_TOKENS,
    Branch,
    CachedPrefix,
    cached_prefix,
    fork_cache,
    plan_shared_prefixes,
    stack_prefixes,
    supports_prefix_cache,
)
from harness.requests import (
    AnswerSettled,
    GenerationRequest,
    GenerationResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
)
from harness.engine.token_accounting import count_forwarded_tokens

_SLICEABLE_CACHE_LAYERS = ("DynamicLayer", "DynamicSlidingWindowLayer")

_R = TypeVar("_R")
_T = TypeVar("_T")


class Engine:
    """Scores and generates with ``model`` (an HF causal LM, already on its device) and ``tokenizer``."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int | str = "auto",
        add_bos_token: bool | None = None,
        max_length: int | None = None,
        prefix_cache: bool = True,
        encode_cache: dict[str, tuple[int, ...]] | None = None,
        progress: bool = True,
    ) -> None:
        if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise UserError(f"batch size must be a positive integer or 'auto', got {batch_size!r}")
        if max_length is not None and max_length < 1:
            raise UserError(f"max length must be a positive number of tokens, got {max_length}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.add_bos_token = add_bos_token
        self.progress = progress
        self.device: torch.device = _model_device(model)
        self.max_length: int = max_length or context_length(model, tokenizer)
        self.prefix_cache = prefix_cache
        # text -> token ids; a sweep passes one dict per tokenizer (see tokenizer_fingerprint), so
        # every prompt is tokenized once for the whole sweep rather than once per checkpoint
        self._encode_cache = {} if encode_cache is None else encode_cache
        # Tokens that went through the model's forward (non-padding positions, counted by a forward
        # pre-hook while the engine runs) and what a naive evaluation would forward: each request
        # alone, its whole (truncated) input; for a generation, its prompt then each new token but the last.
        self.tokens_forwarded = 0
        self.tokens_naive = 0
        self.last_batch_size: int | None = None  # size of the last batch that ran (after any OOM back-off)
        self._forward_params = set(inspect.signature(model.forward).parameters)
        # Reusing a cached prefix needs explicit position ids and a KV cache we can pad and stack;
        # other models run the plain path, with the same numbers.
        self._shares_prefixes = (
            prefix_cache and "position_ids" in self._forward_params and supports_prefix_cache(model)
        )
        self._prefix_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self._prefix_string = (
            tokenizer.decode(self._prefix_token_id) if self._prefix_token_id is not None else None
        )
        # Any id works for padding: padded positions are masked out or never read.
        self._pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
        eos = tokenizer.eos_token_id
        self._eos_string = tokenizer.decode(eos, skip_special_tokens=False) if eos is not None else None
        self._stop_token_ids = _stop_token_ids(model, tokenizer)
        # An early stop on a settled answer (GenerationRequest.until_settled) needs the decoded text
        # of more tokens to begin with the text decoded so far.  Byte-level BPE and SentencePiece
        # decoders do, but for an unfinished UTF-8 character at the end (decoded as U+FFFD, dropped
        # before the check); clean_up_tokenization_spaces does not (a later "." or "n't" deletes the
        # space before it), so with it on, decoding runs to the stops and max_new_tokens.
        self._settles_early = not getattr(tokenizer, "clean_up_tokenization_spaces", False)

    # ------------------------------------------------------------------ encoding

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with special tokens exactly as lm-eval's ``HFLM.tok_encode``."""
        ids = self._encode_cache.get(text)
        if ids is None:
            ids = self._encode_cache[text] = tuple(self._encode_uncached(text))
        return list(ids)  # a copy: callers may change theirs, never the cached one

    def tokenize(self, text: str) -> list[int]:
        """The model's tokens of ``text`` alone, no special tokens (what token edit distances count)."""
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _encode_uncached(self, text: str) -> list[int]:
        # A prompt that already begins with the BOS string must not get a second BOS.
        if self._prefix_string and text.startswith(self._prefix_string):
            return self.tokenizer.encode(text, add_special_tokens=False)
        if self.add_bos_token is None:
            return self.tokenizer.encode(text)
        ids = self.tokenizer.encode(text, add_special_tokens=self.add_bos_token)
        # lm-eval also passes add_bos_token to the tokenizer's constructor, which makes tokenizers
        # without a BOS template add one; ours was loaded elsewhere, so add it here when missing.
        bos = self.tokenizer.bos_token_id
        if self.add_bos_token and bos is not None and ids[:1] != [bos]:
            ids = [bos] + ids
        return ids

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's context/continuation split (``LM.loglikelihood`` + ``_encode_pair``)."""
        if context == "":
            # No context: condition on the prefix token (BOS, else EOS), as lm-eval does.
            continuation_enc = self.tokenizer.encode(continuation, add_special_tokens=False)
            if self._prefix_token_id is None:
                raise UserError("the tokenizer has neither a BOS nor an EOS token to score an empty context against")
            if continuation_enc[:1] == [self._prefix_token_id]:
                return continuation_enc[:1], continuation_enc[1:]
            return [self._prefix_token_id], continuation_enc
        # Trailing whitespace belongs to the continuation: BPE vocabularies attach a space to the
        # word after it (" 42"), so "Answer: " + "42" must be scored as "Answer:" + " 42".
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        # Encoding the whole string keeps merges across the boundary as the model would see them.
        whole_enc = self.encode(context + continuation)
        context_enc = self.encode(context)
        if not context_enc:  # whitespace-only context and no BOS: lm-eval asserts; score it as empty
            return self._encode_pair("", continuation)
        return context_enc, whole_enc[len(context_enc) :]

    # ------------------------------------------------------------------ log-likelihood

    @torch.inference_mode()
    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], desc: str = "loglikelihood"
    ) -> list[LoglikelihoodResult]:
        """Summed log-probability of each continuation given its context, in request order."""
        rows = [_ScoringRow(*map(tuple, self._encode_pair(r.context, r.continuation))) for r in requests]
        for row in rows:
            if len(row.continuation) > self.max_length:
                raise UserError(
                    f"a continuation of {len(row.continuation)} tokens does not fit the model window of "
                    f"{self.max_length} tokens; shorten it or raise the max length"
                )
        self.tokens_naive += sum(len(self._window(row)) for row in rows if row.continuation)
        with self._progress(len(requests), desc) as bar:
            # identical token sequences are scored once and fanned out
            by_row = self._score_rows(Counter(rows), bar.update)
        results = []
        for request, row in zip(requests, rows):
            logprob, is_greedy = by_row.get(row, (0.0, True))
            results.append(
                LoglikelihoodResult(
                    logprob=logprob,
                    num_tokens=len(row.continuation),
                    num_bytes=len(request.continuation.encode("utf-8")),
                    is_greedy=is_greedy,
                )
            )
        require_finite((r.logprob for r in results), "log-probabilities of scored continuations")
        return results

    def _score_rows(
        self, copies: Counter[_ScoringRow], advance: Callable[[int], Any]
    ) -> dict[_ScoringRow, tuple[float, bool]]:
        """Summed log-probability and greediness of each distinct row (``copies``: requests per row);
        ``advance(n)`` follows each batch with the requests it answered."""
        # Requests that feed the model the same tokens share one forward, each reading its own
        # trailing positions: lm-eval's one-token-continuation cache (all choices of a
        # single-token multiple-choice item), generalised to any continuation length.
        windows: dict[tuple[int, ...], list[_ScoringRow]] = {}
        for row in sorted(copies, key=lambda r: (-len(r.tokens), r.tokens)):  # lm-eval's Collator order
            if row.continuation:  # an empty one needs no forward: log 1 = 0
                windows.setdefault(self._window(row), []).append(row)
        segments = [
            _Segment(window, None, tuple(members), sum(copies[row] for row in members))
            for window, members in windows.items()
        ]
        scored: list[tuple[_Segment, tuple[torch.Tensor, torch.Tensor]]] = []
        with count_forwarded_tokens(self.model) as counter:

            def done(batch: Sequence[_Segment], outputs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
                scored.extend(zip(batch, outputs))
                advance(sum(segment.copies for segment in batch))

            if self._shares_prefixes:
                # A shared prefix stops before a window's first continuation predictor.
                reads_from = [len(s.tokens) - max(len(row.continuation) for row in s.reads) for s in segments]
                self._run_shared(segments, reads_from, self._score_segments, done, self._scoring_footprint)
            else:
                self._run_batches(segments, self._score_segments, footprint=self._scoring_footprint, done=done)
        self.tokens_forwarded += counter.count
        return _scores_by_row(scored)

    def _window(self, row: _ScoringRow) -> tuple[int, ...]:
        # lm-eval's model input: drop the last token (it predicts nothing we score), keep the last max_length.
        return row.tokens[-(self.max_length + 1) :][:-1]

    def _score_segments(self, segments: Sequence[_Segment]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One forward over right-padded segments (on top of their cached prefixes, if any); per
        segment, the summed log-probability and greediness of each row it reads, left on the device."""
        input_ids, attention_mask, positions, cache = self._segment_batch(segments, left_pad=False)
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
        kwargs = self._model_kwargs(positions, cache, self._logits_to_keep(width - min(start for _, start, _ in entries)))
        logits = self._forward(input_ids, attention_mask, **kwargs).logits
        offset = width - logits.shape[1]  # leading positions logits_to_keep left out

        cont_lens = torch.tensor([len(continuation) for *_, continuation in entries])
        longest = int(cont_lens.max())
        steps = torch.arange(longest)[None, :]
        valid = steps < cont_lens[:, None]
        starts = torch.tensor([start - offset for _, start, _ in entries])[:, None]
        index = torch.where(valid, starts + steps, starts)
        batch_rows = torch.tensor([b for b, _, _ in entries])[:, None]
        targets = torch.tensor([list(c) + [0] * (longest - len(c)) for *_, c in entries])
        batch_rows, index, targets, valid = (self._upload(t) for t in (batch_rows, index, targets, valid))
        # log_softmax in float32 whatever the model dtype: a bf16 normaliser over 50k logits loses digits.
        logprobs = torch.log_softmax(logits[batch_rows, index].float(), dim=-1)  # [entries, longest, vocab]
        token_logprobs = logprobs.gather(-1, targets[:, :, None]).squeeze(-1)
        sums = torch.where(valid, token_logprobs, 0.0).sum(-1)
        greedy = ((logprobs.argmax(-1) == targets) | ~valid).all(-1)
        counts = [len(segment.reads) for segment in segments]
        return list(zip(sums.split(counts), greedy.split(counts)))

    def _scoring_footprint(self, segment: _Segment) -> tuple[int, int, bool]:
        prefix = segment.prefix.width if segment.prefix is not None else 0
        longest = max(len(row.continuation) for row in segment.reads)
        return prefix + len(segment.tokens), longest, segment.prefix is not None

    def _logits_to_keep(self, count: int) -> dict[str, int]:
        for name in ("logits_to_keep", "num_logits_to_keep"):  # renamed in transformers 4.50
            if name in self._forward_params:
                return {name: count}
        return {}

    # ------------------------------------------------------------------ generation

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest], desc: str = "generate") -> list[str]:
        """Greedy continuation of each context, cut before its first stop string, in request order."""
        return [result.text for result in self.generate_scored(requests, desc)]

    @torch.inference_mode()
    def generate_scored(self, requests: Sequence[GenerationRequest], desc: str = "generate") -> list[GenerationResult]:
        """``generate``, plus the log-likelihood of each request's ``score`` continuations given its
        prompt (the prompt tokens the generation saw, so a prompt cut to fit is cut for both)."""
        copies = Counter(requests)  # identical requests are decoded once and fanned out
        rows = {request: self._decode_row(request) for request in copies}
        order = sorted(copies, key=lambda r: (-len(rows[r].context), r.context))  # lm-eval's order
        segments = [_Segment(rows[r].context, None, (rows[r],), copies[r]) for r in order if rows[r].max_new_tokens > 0]
        decoded: dict[_DecodeRow, _Decoded] = {}
        with count_forwarded_tokens(self.model) as counter, self._progress(len(requests), desc) as bar:

            def done(batch: Sequence[_Segment], outputs: list[_Decoded]) -> None:
                decoded.update((segment.reads[0], output) for segment, output in zip(batch, outputs))
                bar.update(sum(segment.copies for segment in batch))

            if self._shares_prefixes:
                # A shared prefix stops before a prompt's last token, whose logits give the first new token.
                reads_from = [len(segment.tokens) - 1 for segment in segments]
                self._run_shared(segments, reads_from, self._generate_segments, done, self._generation_footprint)
            else:
                self._run_batches(segments, self._generate_segments, footprint=self._generation_footprint, done=done)
        self.tokens_forwarded += counter.count
        # Continuations decoding did not score (the model's cache cannot be forked, the window would
        # overflow, nothing to generate): a forward of their own over prompt + continuation.
        rest: Counter[_ScoringRow] = Counter()
        for request, count in copies.items():
            row = rows[request]
            on_cache = decoded[row].scores if row in decoded else (None,) * len(row.score)
            for continuation, score in zip(row.score, on_cache):
                if continuation and score is None:
                    rest[_ScoringRow(row.context, continuation)] += count
        by_row = self._score_rows(rest, lambda n: None) if rest else {}
        results = []
        for request in requests:
            row = rows[request]
            text, generated, on_cache = decoded.get(row, _Decoded("", 0, (None,) * len(row.score)))
            # naive: this request alone, prompt then each new token but the last (nothing reads its successor)
            self.tokens_naive += (len(row.context) + generated - 1) if generated else 0
            scores = []
            for continuation, string, score in zip(row.score, request.score, on_cache):
                if not continuation:
                    score = (0.0, True)  # log 1: nothing to predict
                elif score is None:
                    score = by_row[_ScoringRow(row.context, continuation)]
                # naive: a log-likelihood request of its own, prompt and continuation forwarded together
                self.tokens_naive += len(self._window(_ScoringRow(row.context, continuation))) if continuation else 0
                scores.append(LoglikelihoodResult(score[0], len(continuation), len(string.encode("utf-8")), score[1]))
            results.append(GenerationResult(text, tuple(scores)))
        require_finite((s.logprob for r in results for s in r.scores), "log-probabilities of gold continuations")
        return results

    def _decode_row(self, request: GenerationRequest) -> _DecodeRow:
        if self.max_length < 2:
            raise UserError(f"a model window of {self.max_length} token leaves no room to generate; raise the max length")
        # lm-eval keeps the last max_length − max_new_tokens prompt tokens. When max_new_tokens fills the
        # whole window (BIG-bench's 256 characters-and-tokens on a 256-token model) that would leave no
        # prompt at all: keep the prompt's last max_length − 1 tokens instead and generate into the room left.
        max_new_tokens = request.max_new_tokens
        if max_new_tokens >= self.max_length:
            context = self.encode(request.context)[-(self.max_length - 1):]
            max_new_tokens = self.max_length - max(len(context), 1)
        else:
            context = self.encode(request.context)[-(self.max_length - max_new_tokens):]
        # lm-eval adds the EOS string to every request's stops.
        stops = tuple(request.stop)
        if self._eos_string and self._eos_string not in stops:
            stops += (self._eos_string,)
        if not context:  # an empty prompt without BOS: the model needs one token to start from
            context = [self._prefix_token_id if self._prefix_token_id is not None else self._pad_id]
        score = tuple(tuple(self._continuation_tokens(request.context, c)) for c in request.score)
        for continuation in score:
            if len(continuation) > self.max_length:
                raise UserError(
                    f"a scored continuation of {len(continuation)} tokens does not fit the model window of "
                    f"{self.max_length} tokens; shorten it or raise the max length"
                )
        return _DecodeRow(tuple(context), max_new_tokens, stops, score, request.until_settled)

    def _continuation_tokens(self, context: str, continuation: str) -> list[int]:
        """The tokens that, appended to the generation prompt ``encode(context)``, spell ``continuation``.

        Unlike ``_encode_pair`` the context keeps its trailing whitespace: the generation was prompted
        with it, so the answer's probability must be conditioned on it too.  Where the whole text
        tokenizes with the prompt's tokens as a prefix, merges across the boundary are kept as the
        model would see them; otherwise (the prompt ends in a space the answer's first token would
        absorb) the continuation is tokenized on its own.
        """
        context_enc = self.encode(context) if context else []
        if context_enc:
            whole = self.encode(context + continuation)
            if whole[: len(context_enc)] == context_enc:
                return whole[len(context_enc) :]
        return self.tokenizer.encode(continuation, add_special_tokens=False)

    def _generation_footprint(self, segment: _Segment) -> tuple[int, int, bool]:
        prefix = segment.prefix.width if segment.prefix is not None else 0
        row = segment.reads[0]
        longest = max((len(c) for c in row.score), default=0)
        # scored continuations read logits at each of their tokens, on top of the prompt's cache
        logit_positions = max(1, sum(len(c) for c in row.score))
        return prefix + len(segment.tokens) + max(row.max_new_tokens, longest), logit_positions, True

    def _generate_segments(self, segments: Sequence[_Segment]) -> list[_Decoded]:
        """Greedy decode of a batch of prompts (each the rest of its request's context on top of its
        cached prefix); per prompt, its text cut at the stops, how many tokens were generated and
        the scores of its continuations read on the prompt's cache (None: not scored there)."""
        rows = [segment.reads[0] for segment in segments]
        generated, scores = self._greedy_decode(segments)
        return [
            _Decoded(self._cut_at_stops(ids, row.stops), len(ids), score)
            for ids, row, score in zip(generated, rows, scores)
        ]

    def _greedy_decode(
        self, segments: Sequence[_Segment]
    ) -> tuple[list[list[int]], list[tuple[tuple[float, bool] | None, ...]]]:
        """Greedy decode with a KV cache over left-padded prompts; the new token ids of each row,
        and the scores of each row's continuations taken on the prompt's cache after the prefill.

        ``live`` lists the rows still in the model's batch; a row leaves it as soon as it hits a
        stop (when the cache can be sliced), so finished rows stop costing compute.
        """
        rows = [segment.reads[0] for segment in segments]
        generated: list[list[int]] = [[] for _ in rows]
        # Left padding puts every row's last prompt token in the last column, whose logits give the
        # first new token of all rows at once.  Positions count real tokens only, so a padded row
        # sees the positions it would see alone (as in transformers' generate).
        input_ids, attention_mask, positions, cache = self._segment_batch(segments, left_pad=True)
        live = list(range(len(rows)))
        done = [False] * len(rows)
        scores: list[tuple[tuple[float, bool] | None, ...]] | None = None
        while True:
            kwargs = self._model_kwargs(positions, cache, self._logits_to_keep(1), use_cache=True)
            output = self._forward(input_ids, attention_mask, **kwargs)
            cache = _output_cache(output)
            # A NaN logit still has an argmax: without this check a diverged model "generates" text
            # and scores 0 exact match, a measurement it never made.
            if not bool(output.logits[:, -1, :].isfinite().all()):
                raise NonFiniteOutput("non-finite generation logits (NaN or inf): diverged or corrupt weights; check the checkpoint")
            if scores is None:  # the prefill: every row's prompt is in the cache, nothing generated yet
                scores = self._score_on_prompt_cache(rows, output.logits[:, -1, :], cache, attention_mask, positions)
            # Argmax of float32 logits, as transformers' greedy search takes it.  The host needs the
            # tokens anyway, to match stop strings on decoded text.
            next_tokens = output.logits[:, -1, :].float().argmax(-1).tolist()
            for i, token in zip(live, next_tokens):
                if not done[i]:
                    generated[i].append(token)
                    done[i] = self._finished(generated[i], rows[i])
            keep = [b for b, i in enumerate(live) if not done[i]]
            if not keep:
                return generated, scores
            index = self._upload(torch.tensor(keep)) if len(keep) < len(live) else None
            if index is not None and _select_cache_rows(cache, index):
                live = [live[b] for b in keep]
                attention_mask, positions = attention_mask[index], positions[index]
                next_tokens = [next_tokens[b] for b in keep]
            input_ids = self._upload(torch.tensor(next_tokens, dtype=torch.long)[:, None])
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(live), 1))], dim=1)
            positions = positions[:, -1:] + 1

    def _score_on_prompt_cache(
        self,
        rows: Sequence[_DecodeRow],
        last_logits: torch.Tensor,
        cache: Any,
        attention_mask: torch.Tensor,
        positions: torch.Tensor,
    ) -> list[tuple[tuple[float, bool] | None, ...]]:
        """(log-probability, is greedy) of each row's continuations given its prompt, read from the
        prefill's last logits (the first token) and one forward of the continuations on a fork of
        the prompt cache (the rest); None for a continuation left to a forward of its own.

        Continuations of one row that are token prefixes of another (a target and the same target
        without its final answer) are read from the longer one's forward.
        """
        scores: list[list[tuple[float, bool] | None]] = [[None] * len(row.score) for row in rows]
        if not self._shares_prefixes or cache is None or not any(row.score for row in rows):
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
        first_targets = self._upload(torch.tensor([c[0] for _, _, c in entries]))
        first = torch.log_softmax(last_logits[self._upload(torch.tensor([b for b, _, _ in entries]))].float(), dim=-1)
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
            input_ids = torch.full((len(needed), width), self._pad_id, dtype=torch.long)
            new_mask = torch.zeros((len(needed), width), dtype=torch.long)
            targets = torch.zeros((len(needed), width), dtype=torch.long)
            for k, f in enumerate(needed):
                tokens = forwards[f][1]
                input_ids[k, : len(tokens) - 1] = torch.tensor(tokens[:-1])
                new_mask[k, : len(tokens) - 1] = 1
                targets[k, : len(tokens) - 1] = torch.tensor(tokens[1:])
            batch_rows = [forwards[f][0] for f in needed]
            index = self._upload(torch.tensor(batch_rows))
            fork = fork_cache(cache, index, self.model.config, same_rows=batch_rows == list(range(len(rows))))
            input_ids, new_mask, targets = (self._upload(t) for t in (input_ids, new_mask, targets))
            mask = torch.cat([attention_mask[index], new_mask.to(attention_mask.dtype)], dim=1)
            steps = positions[index, -1:] + 1 + torch.arange(width, device=positions.device)[None, :]
            kwargs = self._model_kwargs(steps, fork, self._logits_to_keep(width))
            logits = self._forward(input_ids, mask, **kwargs).logits[:, -width:]
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

    def _finished(self, ids: list[int], row: _DecodeRow) -> bool:
        if len(ids) >= row.max_new_tokens or ids[-1] in self._stop_token_ids:
            return True
        # Stops are matched on decoded text, as lm-eval's stopping criteria and post-processing do.
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if any(stop and stop in text for stop in row.stops):
            return True
        # The answer read from this row's text cannot change: more tokens would cost compute and
        # change nothing that is scored.
        return (
            row.until_settled is not None
            and self._settles_early
            and row.until_settled.is_final(_settled_prefix(text))
        )

    def _cut_at_stops(self, ids: list[int], stops: tuple[str, ...]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for stop in stops:  # cutting at each stop in turn leaves the text before the earliest one
            if stop:
                text = text.split(stop)[0]
        return text

    # ------------------------------------------------------------------ shared prefixes

    def _run_shared(
        self,
        segments: Sequence[_Segment],
        reads_from: Sequence[int],
        run_leaves: Callable[[Sequence[_Segment]], list[_T]],
        leaves_done: Callable[[Sequence[_Segment], list[_T]], None],
        leaf_footprint: Callable[[_Segment], tuple[int, int, bool]],
    ) -> None:
        """Run ``segments`` (whole requests, none cached yet) with their shared prefixes forwarded once;
        ``reads_from[i]`` is the first position of segment i whose logits are read.

        The plan is a forest: a shared prefix is forwarded in a batch with others, then its children
        (longer shared prefixes, or requests' own tokens) run on top of its cache.  Children of one
        batch run before the next batch, so only a few batches' caches are alive at any time.
        """
        plan = plan_shared_prefixes([segment.tokens for segment in segments], reads_from, MIN_SHARED_TOKENS)

        def child(branch: Branch, prefix: CachedPrefix | None) -> _Segment:
            whole = segments[branch.members[0]]
            part = whole.tokens[branch.start : branch.end]
            if branch.is_leaf:
                return _Segment(part, prefix, whole.reads, whole.copies, branch)
            return _Segment(part, prefix, branch=branch)

        def run_level(level: list[_Segment]) -> None:
            leaves = sorted((s for s in level if s.branch.is_leaf), key=_longest_first)
            shared = sorted((s for s in level if not s.branch.is_leaf), key=_longest_first)
            if leaves:
                self._run_batches(leaves, run_leaves, footprint=leaf_footprint, done=leaves_done)
            if shared:

                def descend(batch: Sequence[_Segment], prefixes: list[CachedPrefix]) -> None:
                    run_level([child(c, p) for s, p in zip(batch, prefixes) for c in s.branch.children])

                self._run_batches(shared, self._forward_prefixes, footprint=_prefix_footprint, done=descend)

        run_level([child(branch, None) for branch in plan])

    def _forward_prefixes(self, segments: Sequence[_Segment]) -> list[CachedPrefix]:
        """Forward shared prefixes (each on top of its own cached prefix, if any) and keep their caches."""
        input_ids, attention_mask, positions, cache = self._segment_batch(segments, left_pad=False)
        kwargs = self._model_kwargs(positions, cache, self._logits_to_keep(1), use_cache=True)
        cache = _output_cache(self._forward(input_ids, attention_mask, **kwargs))
        return [
            cached_prefix(cache, attention_mask, b, (s.prefix.length if s.prefix else 0) + len(s.tokens))
            for b, s in enumerate(segments)
        ]

    def _segment_batch(
        self, segments: Sequence[_Segment], *, left_pad: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """Input ids, attention mask (over cached prefix + segment), position ids and KV cache (or None)
        of a batch of segments, padded on the left or the right."""
        width = max(len(segment.tokens) for segment in segments)
        input_ids = torch.full((len(segments), width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(segments), width), dtype=torch.long)
        for b, segment in enumerate(segments):
            start = width - len(segment.tokens) if left_pad else 0
            input_ids[b, start : start + len(segment.tokens)] = torch.tensor(segment.tokens)
            attention_mask[b, start : start + len(segment.tokens)] = 1
        offsets = torch.tensor([s.prefix.length if s.prefix is not None else 0 for s in segments])
        positions = offsets[:, None] + (attention_mask.cumsum(-1) - 1).clamp(min=0)
        input_ids, attention_mask, positions = (self._upload(t) for t in (input_ids, attention_mask, positions))
        prefixes = [segment.prefix for segment in segments]
        if all(prefix is None for prefix in prefixes):
            return input_ids, attention_mask, positions, None
        if any(prefix is None for prefix in prefixes):
            raise ValueError("a batch mixes segments with and without a cached prefix")
        cache, prefix_mask = stack_prefixes(prefixes, self.model.config)
        return input_ids, torch.cat([prefix_mask.to(attention_mask.dtype), attention_mask], dim=1), positions, cache

    def _model_kwargs(
        self, positions: torch.Tensor, cache: Any, extra: dict[str, Any], *, use_cache: bool = False
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {**extra, "use_cache": use_cache or cache is not None}
        if cache is not None:
            # transformers renamed past_key_values to cache (5.2x; the old name goes in 5.40)
            kwargs["cache" if "cache" in self._forward_params else "past_key_values"] = cache
        if "position_ids" in self._forward_params:
            kwargs["position_ids"] = positions
        return kwargs

    # ------------------------------------------------------------------ batching

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
        """The one place the model runs (tests replace it to simulate out-of-memory errors)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def _upload(self, tensor: torch.Tensor) -> torch.Tensor:
        """Host tensor to the model's device; through pinned memory on CUDA, so the copy doesn't block."""
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _progress(self, total: int, desc: str) -> tqdm:
        return tqdm(total=total, desc=desc, disable=not self.progress)

    def _run_batches(
        self,
        rows: Sequence[_R],
        run: Callable[[Sequence[_R]], list[_T]],
        *,
        footprint: Callable[[_R], tuple[int, int, bool]],
        done: Callable[[Sequence[_R], list[_T]], None] | None = None,
    ) -> list[_T]:
        """``run`` over consecutive batches of ``rows`` (longest first), halving the size on out-of-memory.

        ``footprint(row)`` is (sequence length, positions needing logits, uses a KV cache) for the
        "auto" estimate.  ``done(batch, outputs)`` follows each batch that succeeded, outside the
        retry: what it runs (a shared prefix's children) backs off on its own.
        """
        results: list[_T] = []
        ceiling: int | None = None  # set by an out-of-memory error, for the rest of this call
        while len(results) < len(rows):
            start = len(results)
            if self.batch_size == "auto":
                size = self._auto_batch_size(*footprint(rows[start]))
            else:
                size = int(self.batch_size)
            size = min(size, ceiling or size, len(rows) - start)
            try:
                out: list[_T] | None = run(rows[start : start + size])
            except Exception as error:  # noqa: BLE001 - anything but out-of-memory is re-raised
                if not batching.is_out_of_memory(error):
                    raise
                if size == 1:
                    raise UserError(
                        f"out of memory running one sequence of {footprint(rows[start])[0]} tokens on "
                        f"{self.device}; lower the max length or use a device with more memory"
                    ) from error
                out = None
            if out is None:  # freed outside the except block, which holds the failed batch's frames
                ceiling = size // 2
                batching.release_memory(self.device.type)
                continue
            self.last_batch_size = size
            results.extend(out)
            if done is not None:
                done(rows[start : start + size], out)
        return results

    def _auto_batch_size(self, seq_len: int, logit_positions: int, with_kv_cache: bool) -> int:
        if not self._logits_to_keep(1):  # the model computes logits at every position
            logit_positions = seq_len
        return batching.auto_batch_size(self.model, self.device, seq_len, logit_positions, with_kv_cache)


@dataclass(frozen=True)
class _ScoringRow:
    """A log-likelihood request in tokens: what the model actually sees and scores."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]

    @property
    def tokens(self) -> tuple[int, ...]:
        return self.context + self.continuation


@dataclass(frozen=True)
class _DecodeRow:
    """A generation request in tokens, with lm-eval's stop list (EOS string added) and the tokens of
    the continuations to score after its prompt."""

    context: tuple[int, ...]
    max_new_tokens: int
    stops: tuple[str, ...]
    score: tuple[tuple[int, ...], ...] = ()
    until_settled: AnswerSettled | None = None  # GenerationRequest.until_settled


@dataclass(frozen=True)
class _Decoded:
    """One decode row's output: its text cut at the stops, tokens generated, and per continuation
    its (log-probability, is greedy) read on the prompt's cache (None: scored by a forward of its own)."""

    text: str
    generated: int
    scores: tuple[tuple[float, bool] | None, ...]

    def __iter__(self):
        return iter((self.text, self.generated, self.scores))


@dataclass(frozen=True, eq=False)
class _Segment:
    """One batch row: ``tokens`` forwarded on top of ``prefix`` (a cached prefix; None: from position 0).

    ``reads`` are the scoring rows read from its logits or the one decode row it prompts (none for a
    shared prefix, whose cache is what it is forwarded for); ``copies`` the requests it answers.
    """

    tokens: tuple[int, ...]
    prefix: CachedPrefix | None
    reads: tuple[Any, ...] = ()
    copies: int = 0
    branch: Branch | None = None  # its place in the shared-prefix plan


def _longest_first(segment: _Segment) -> tuple[int, tuple[int, ...]]:
    # Longest first, as lm-eval orders requests: an out-of-memory error shows on the first batch.
    return -((segment.prefix.width if segment.prefix is not None else 0) + len(segment.tokens)), segment.tokens


def _prefix_footprint(segment: _Segment) -> tuple[int, int, bool]:
    return (segment.prefix.width if segment.prefix is not None else 0) + len(segment.tokens), 1, True


def _scores_by_row(
    scored: Sequence[tuple[_Segment, tuple[torch.Tensor, torch.Tensor]]],
) -> dict[_ScoringRow, tuple[float, bool]]:
    """Device results of every batch, brought to the host in one transfer at the end."""
    if not scored:
        return {}
    sums = torch.cat([s for _, (s, _) in scored]).tolist()
    greedy = torch.cat([g for _, (_, g) in scored]).tolist()
    rows = [row for segment, _ in scored for row in segment.reads]
    return {row: (float(total), bool(is_greedy)) for row, total, is_greedy in zip(rows, sums, greedy)}


# ---------------------------------------------------------------------- model facts


def _settled_prefix(text: str) -> str:
    """The part of a decoded text that more tokens cannot rewrite: all but a trailing U+FFFD, which
    may be the first bytes of a character the next tokens complete."""
    return text.rstrip("\ufffd")


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def _stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """EOS ids that end a generation: transformers' generate (which lm-eval calls) stops on the
    generation config's ids, and the tokenizer's EOS string is one of lm-eval's stops anyway."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return ids


def _select_cache_rows(cache: Any, index: torch.Tensor) -> bool:
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


def tokenizer_fingerprint(tokenizer: Any, add_bos_token: bool | None) -> str | None:
    """A digest of everything that decides ``Engine.encode``'s output (the fast tokenizer's full
    serialisation and the BOS setting), so checkpoints with the same tokenizer can share encodings;
    None when the tokenizer cannot be serialised (then nothing is shared)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    digest = hashlib.sha256(backend.to_str().encode("utf-8"))
    digest.update(repr((add_bos_token, tokenizer.bos_token_id, tokenizer.eos_token_id)).encode("utf-8"))
    return digest.hexdigest()


def _output_cache(output: Any) -> Any:
    """The KV cache of a forward's output, under its name before or after transformers' rename."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
