"""``Engine``: the model interface, composed of the engine's parts.

Each method turns requests into token rows (``tokens``), runs them through the shared-prefix
executor in batches (``shared_prefix``, ``batching``) with the scoring or decoding function of its
kind (``loglikelihood``, ``decode``), and returns results in request order.  The engine keeps the
counts of forwarded tokens; everything else is state of its parts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from harness.engine.batching import Batching, check_batch_size
from harness.engine.decode import Decoded, DecodeRow, GreedyDecoder, decode_row, generation_footprint
from harness.engine.forward import ModelForward, Segment
from harness.engine.loglikelihood import ScoringRow, model_window, rolling_windows, score_rows
from harness.engine.models import context_length
from harness.engine.shared_prefix import SharedPrefixExecutor
from harness.engine.token_accounting import count_forwarded_tokens
from harness.engine.tokens import Encoder
from harness.errors import UserError, require_finite
from harness.requests import GenerationRequest, GenerationResult, LoglikelihoodRequest, LoglikelihoodResult

TokenPair = tuple[Sequence[int], Sequence[int]]  # (context ids, continuation ids)


class Meter(Protocol):
    """Where an engine call reports its work (a sweep's progress line): ``start`` with the call's
    requests, then ``advance`` after each batch, and each generation step, with the requests
    answered and the tokens predicted (scored or generated)."""

    def start(self, requests: int) -> None: ...

    def advance(self, requests: int = 0, tokens: int = 0) -> None: ...


class _Bar:
    """The engine's own bar (an engine used alone): requests answered, tokens per second after them."""

    def __init__(self, bar: Any) -> None:
        self.bar, self.tokens, self.drawn = bar, 0, time.monotonic()

    def start(self, requests: int) -> None:
        pass

    def advance(self, requests: int = 0, tokens: int = 0) -> None:
        self.tokens += tokens
        if self.bar.disable:
            return
        elapsed = self.bar.format_dict["elapsed"]
        if self.tokens and elapsed > 0:
            self.bar.set_postfix_str(f"{self.tokens / elapsed:,.1f} tok/s", refresh=False)
        if requests:
            self.bar.update(requests)
        elif time.monotonic() - self.drawn > 0.5:  # a generation step: the rate moves while a batch runs
            self.bar.refresh()
            self.drawn = time.monotonic()


class Engine:
    """Scores and generates with ``model`` (an HF causal LM, already on its device) and ``tokenizer``.

    ``progress``: True draws a bar per call (requests, tokens per second); a ``Meter`` (a sweep's
    line) is told instead; False shows nothing."""

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
        progress: bool | Meter = True,
    ) -> None:
        check_batch_size(batch_size)
        if max_length is not None and max_length < 1:
            raise UserError(f"max length must be a positive number of tokens, got {max_length}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.add_bos_token = add_bos_token
        self.progress = progress
        self.max_length: int = max_length or context_length(model, tokenizer)
        self.prefix_cache = prefix_cache
        # encode_cache: text -> token ids; a sweep passes one dict per tokenizer (see tokenizer_fingerprint)
        self.encoder = Encoder(tokenizer, add_bos_token, encode_cache, on_miss=lambda text: self._encode_uncached(text))
        self.forward = ModelForward(model, tokenizer)
        self.device: torch.device = self.forward.device
        self.batching = Batching(
            model, self.device, batch_size, logits_everywhere=not self.forward.logits_to_keep(1)
        )
        self.executor = SharedPrefixExecutor(self.forward, self.batching, prefix_cache=prefix_cache)
        self.decoder = GreedyDecoder(self.executor, tokenizer, self.max_length)
        # Tokens that went through the model's forward (non-padding positions, counted by a forward
        # pre-hook while the engine runs) and what a naive evaluation would forward: each request
        # alone, its whole (truncated) input; for a generation, its prompt then each new token but the last.
        self.tokens_forwarded = 0
        self.tokens_naive = 0

    @property
    def last_batch_size(self) -> int | None:
        """Size of the last batch that ran (after any out-of-memory back-off)."""
        return self.batching.last_size

    @property
    def shares_prefixes(self) -> bool:
        """Whether shared token prefixes are forwarded once (``prefix_cache`` and a model that allows it)."""
        return self.executor.enabled

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with special tokens exactly as lm-eval's ``HFLM.tok_encode``."""
        return self.encoder.encode(text)

    def tokenize(self, text: str) -> list[int]:
        """The model's tokens of ``text`` alone, no special tokens (what token edit distances count)."""
        return self.encoder.tokenize(text)

    # Two seams tests use: every text the encode cache lacks is tokenized here (a sweep test counts
    # the calls), and the tokens an answer adds after a generation prompt.
    def _encode_uncached(self, text: str) -> list[int]:
        return self.encoder.encode_uncached(text)

    def _continuation_tokens(self, context: str, continuation: str) -> list[int]:
        return self.encoder.continuation_tokens(context, continuation)

    # ------------------------------------------------------------------ log-likelihood

    @torch.inference_mode()
    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], desc: str = "loglikelihood"
    ) -> list[LoglikelihoodResult]:
        """Summed log-probability of each continuation given its context, in request order."""
        rows = [ScoringRow(*map(tuple, self.encoder.encode_pair(r.context, r.continuation))) for r in requests]
        scores = self._score(rows, desc)
        results = [
            LoglikelihoodResult(logprob, len(row.continuation), len(request.continuation.encode("utf-8")), greedy)
            for request, row, (logprob, greedy) in zip(requests, rows, scores)
        ]
        require_finite((r.logprob for r in results), "log-probabilities of scored continuations")
        return results

    @torch.inference_mode()
    def loglikelihood_rolling(
        self, requests: Sequence[str], desc: str = "loglikelihood_rolling", *, context_len: int = 1
    ) -> list[LoglikelihoodResult]:
        """Log-likelihood of each whole text, in request order (lm-eval's ``loglikelihood_rolling``).

        The text's tokens (``encode``) are scored in lm-eval's rolling windows of ``max_length``
        tokens: the first token given the prefix token (BOS, else EOS), each later window given at
        least ``context_len`` tokens before it.  ``is_greedy``: every token is the argmax.
        """
        if self.encoder.prefix_token_id is None:
            raise UserError("the tokenizer has neither a BOS nor an EOS token to condition a text's first token on")
        windows = [
            rolling_windows(self.encode(text), self.encoder.prefix_token_id, self.max_length, context_len)
            for text in requests
        ]
        scores = iter(self._score([row for rows in windows for row in rows], desc))
        results = []
        for text, rows in zip(requests, windows):
            parts = [next(scores) for _ in rows]
            results.append(
                LoglikelihoodResult(
                    logprob=sum(logprob for logprob, _ in parts),
                    num_tokens=sum(len(row.continuation) for row in rows),
                    num_bytes=len(text.encode("utf-8")),
                    is_greedy=all(greedy for _, greedy in parts),
                )
            )
        require_finite((r.logprob for r in results), "log-likelihoods of scored texts")
        return results

    @torch.inference_mode()
    def loglikelihood_tokens(self, pairs: Sequence[TokenPair], desc: str = "loglikelihood") -> list[tuple[float, bool]]:
        """(summed log-probability, is greedy) of each continuation's token ids given its context's,
        in order: ``loglikelihood`` after tokenization (lm-eval's ``_loglikelihood_tokens``).
        Non-finite values are returned as they are; the caller names what diverged."""
        return self._score([ScoringRow(tuple(context), tuple(continuation)) for context, continuation in pairs], desc)

    def _score(self, rows: list[ScoringRow], desc: str) -> list[tuple[float, bool]]:
        for row in rows:
            if len(row.continuation) > self.max_length:
                raise UserError(
                    f"a continuation of {len(row.continuation)} tokens does not fit the model window of "
                    f"{self.max_length} tokens; shorten it or raise the max length"
                )
        self.tokens_naive += sum(len(model_window(row, self.max_length)) for row in rows if row.continuation)
        with self._counting(), self._meter(len(rows), desc) as meter:
            # identical token sequences are scored once and fanned out
            by_row = score_rows(self.executor, self.max_length, Counter(rows), meter.advance)
        return [by_row.get(row, (0.0, True)) for row in rows]

    @contextmanager
    def _meter(self, requests: int, desc: str) -> Iterator[Meter]:
        """``progress``: a meter given (a sweep's line) is told; True draws the engine's own bar."""
        if not isinstance(self.progress, bool):
            self.progress.start(requests)
            yield self.progress
            return
        with tqdm(total=requests, desc=desc, disable=not self.progress) as bar:
            yield _Bar(bar)

    @contextmanager
    def _counting(self) -> Iterator[None]:
        with count_forwarded_tokens(self.model) as counter:
            yield
        self.tokens_forwarded += counter.count

    # ------------------------------------------------------------------ generation

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest], desc: str = "generate") -> list[str]:
        """Greedy continuation of each context, cut before its first stop string, in request order
        (lm-eval's ``generate_until``)."""
        return [result.text for result in self.generate_scored(requests, desc)]

    @torch.inference_mode()
    def generate_scored(self, requests: Sequence[GenerationRequest], desc: str = "generate") -> list[GenerationResult]:
        """``generate``, plus the log-likelihood of each request's ``score`` continuations given its
        prompt (the prompt tokens the generation saw, so a prompt cut to fit is cut for both)."""
        copies = Counter(requests)  # identical requests are decoded once and fanned out
        rows = {r: decode_row(self.encoder, r, self.max_length, self.forward.pad_id) for r in copies}
        order = sorted(copies, key=lambda r: (-len(rows[r].context), r.context))  # lm-eval's order
        segments = [Segment(rows[r].context, None, (rows[r],), copies[r]) for r in order if rows[r].max_new_tokens > 0]
        decoded: dict[DecodeRow, Decoded] = {}
        with self._counting(), self._meter(len(requests), desc) as meter:

            def done(batch: Sequence[Segment], outputs: list[Decoded]) -> None:
                decoded.update((segment.reads[0], output) for segment, output in zip(batch, outputs))
                meter.advance(sum(segment.copies for segment in batch))

            def step(tokens: int) -> None:
                meter.advance(tokens=tokens)

            # A shared prefix stops before a prompt's last token, whose logits give the first new token.
            reads_from = [len(segment.tokens) - 1 for segment in segments]
            self.executor.run(segments, reads_from, partial(self.decoder.decode, on_step=step), done, generation_footprint)
        # Continuations decoding did not score (the model's cache cannot be forked, the window would
        # overflow, nothing to generate): a forward of their own over prompt + continuation.
        rest: Counter[ScoringRow] = Counter()
        for request, count in copies.items():
            row = rows[request]
            on_cache = decoded[row].scores if row in decoded else (None,) * len(row.score)
            for continuation, score in zip(row.score, on_cache):
                if continuation and score is None:
                    rest[ScoringRow(row.context, continuation)] += count
        by_row = {}
        if rest:
            with self._counting():
                by_row = score_rows(self.executor, self.max_length, rest, lambda requests, tokens: None)
        results = []
        for request in requests:
            row = rows[request]
            text, generated, on_cache = decoded.get(row, Decoded("", 0, (None,) * len(row.score)))
            # naive: this request alone, prompt then each new token but the last (nothing reads its successor)
            self.tokens_naive += (len(row.context) + generated - 1) if generated else 0
            scores = []
            for continuation, string, score in zip(row.score, request.score, on_cache):
                if not continuation:
                    score = (0.0, True)  # log 1: nothing to predict
                elif score is None:
                    score = by_row[ScoringRow(row.context, continuation)]
                # naive: a log-likelihood request of its own, prompt and continuation forwarded together
                if continuation:
                    self.tokens_naive += len(model_window(ScoringRow(row.context, continuation), self.max_length))
                scores.append(LoglikelihoodResult(score[0], len(continuation), len(string.encode("utf-8")), score[1]))
            results.append(GenerationResult(text, tuple(scores)))
        require_finite((s.logprob for r in results for s in r.scores), "log-probabilities of gold continuations")
        return results
