"""The checkpoint's pre-training loss on a held-out corpus: mean next-token cross-entropy and
bits per byte over non-overlapping windows of the tokenized corpus.

How the numbers are made (so they can be recomputed by hand):
- The corpus is a list of documents (``read_corpus``); each is tokenized without special tokens and
  the documents are joined with the tokenizer's EOS id (``corpus_token_stream``).
- The first ``max_tokens`` tokens of that stream are cut into non-overlapping windows of ``window``
  tokens (capped by the model's context); a last partial window is kept when it has >= 2 tokens.
- In each window every token but the first is scored from the tokens before it in the same window,
  so ``tokens = min(max_tokens, len(stream)) - windows``, less one more when a single token is left
  over after the last full window (it has no context in its window and is dropped).
- ``bytes`` per window is the UTF-8 length of the decoded window minus that of its first (unscored)
  token alone, decoding with special tokens skipped: the EOS separators are scored but add no bytes,
  and decoding whole spans keeps multi-byte characters split across tokens from counting as U+FFFD.
- ``loss`` = total nats / tokens; ``bits_per_byte`` = total nats / ln 2 / bytes.

The windows are scored by the engine (``Engine.loglikelihood_tokens``: each window's first token as
context, the rest as continuation), with its batching, out-of-memory back-off and token counts.
They are not lm-eval's rolling windows (``Engine.loglikelihood_rolling``), which score every token
and condition each window's first one on the token before it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from harness.engine.batching import check_batch_size
from harness.engine.core import Engine, Meter
from harness.engine.loglikelihood import disjoint_windows
from harness.engine.models import context_length, file_sha256
from harness.errors import UserError, not_utf8, require_finite


@dataclass(frozen=True)
class LossResult:
    loss: float  # mean next-token cross-entropy, nats/token
    bits_per_byte: float  # total nats / ln 2 / UTF-8 bytes of the scored tokens' text
    tokens: int  # tokens scored
    tokens_forwarded: int  # tokens the model's forward ran over (identical windows and shared prefixes once)
    bytes: int
    windows: int
    window: int  # window length used (after the cap by the model's context)
    corpus: str  # path
    corpus_sha256: str  # content hash of the corpus file


def read_corpus(path: Path, label: str = "corpus") -> list[str]:
    """``.txt``: the whole file is one document; ``.jsonl``: the ``text`` field of each non-blank line.
    ``label``: how an error names the file (``--loss-corpus`` when the command line gave it)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such {label} file {str(path)!r}; pass a .txt or .jsonl file")
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise UserError(f"{label} {path} is neither .txt nor .jsonl; convert it to one of them")
    try:
        if suffix == ".txt":
            return [path.read_text(encoding="utf-8")]
        docs = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise UserError(f"{label} {path} line {number} is not JSON; fix the line or remove it") from None
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    fields = f" (it has {', '.join(map(repr, list(record)[:5]))})" if isinstance(record, dict) and record else ""
                    raise UserError(f"{label} {path} line {number} has no string \"text\" field{fields}; "
                                    "write one JSON object with a \"text\" field per line")
                docs.append(record["text"])
        return docs
    except UnicodeDecodeError as error:
        raise not_utf8(f"{label} {path}", error) from None


def corpus_token_stream(
    docs: Iterable[str], tokenizer: PreTrainedTokenizerBase, max_tokens: int | None = None
) -> list[int]:
    """Documents tokenized without special tokens, joined by the EOS id when the tokenizer has one.

    With ``max_tokens``, tokenizing stops once the stream is that long (the result is then cut to it),
    so a large corpus costs only what is scored.
    """
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for index, doc in enumerate(docs):
        if index and eos is not None:
            stream.append(eos)
        # verbose=False: documents longer than the model's context are expected here, windows cut them.
        stream.extend(tokenizer(doc, add_special_tokens=False, verbose=False)["input_ids"])
        if max_tokens is not None and len(stream) >= max_tokens:
            return stream[:max_tokens]
    return stream


def _scored_bytes(window_ids: list[int], tokenizer: PreTrainedTokenizerBase) -> int:
    def text_bytes(ids: list[int]) -> int:
        text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return len(text.encode("utf-8"))

    return text_bytes(window_ids) - text_bytes(window_ids[:1])


def pretraining_loss(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    corpus: Path,
    *,
    window: int = 2048,
    max_tokens: int = 1_000_000,
    batch_size: int | str = "auto",
    progress: bool | Meter = True,
) -> LossResult:
    """Mean next-token loss and bits per byte of ``model`` on ``corpus`` (see the module docstring).

    ``batch_size``: windows per forward, or "auto" (sized from free memory); either way halved on
    out-of-memory, as the engine does for every request.
    """
    corpus = Path(corpus)
    if window < 2 or max_tokens < 2:
        raise UserError(f"window={window}, max_tokens={max_tokens}: both must be >= 2")
    check_batch_size(batch_size)
    docs = read_corpus(corpus)
    window = min(window, context_length(model, tokenizer))
    stream = corpus_token_stream(docs, tokenizer, max_tokens=max_tokens)
    windows = disjoint_windows(stream, window)
    if not windows:
        raise UserError(f"corpus {str(corpus)!r} has fewer than 2 tokens; pass a corpus with text in it")

    engine = Engine(model, tokenizer, batch_size=batch_size, progress=progress)
    scores = engine.loglikelihood_tokens([(w.context, w.continuation) for w in windows], desc="pre-training loss")
    # summed on the host in float64, one float32 sum per window
    total_nats = -math.fsum(logprob for logprob, _ in scores)
    require_finite([total_nats], "pre-training loss")
    total_tokens = sum(len(w.continuation) for w in windows)
    total_bytes = sum(_scored_bytes(list(w.tokens), tokenizer) for w in windows)
    if total_bytes <= 0:
        raise UserError(f"corpus {str(corpus)!r} decodes to no text bytes; pass a corpus of ordinary text")
    return LossResult(
        loss=total_nats / total_tokens,
        bits_per_byte=total_nats / math.log(2) / total_bytes,
        tokens=total_tokens,
        tokens_forwarded=engine.tokens_forwarded,
        bytes=total_bytes,
        windows=len(windows),
        window=window,
        corpus=str(corpus),
        corpus_sha256=file_sha256(corpus),
    )
