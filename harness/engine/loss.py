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
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from harness.errors import UserError, require_finite
from harness.engine.models import context_length, file_sha256


@dataclass(frozen=True)
class LossResult:
    loss: float  # mean next-token cross-entropy, nats/token
    bits_per_byte: float  # total nats / ln 2 / UTF-8 bytes of the scored tokens' text
    tokens: int  # tokens scored
    bytes: int
    windows: int
    window: int  # window length used (after the cap by the model's context)
    corpus: str  # path
    corpus_sha256: str  # content hash of the corpus file


def read_corpus(path: Path) -> list[str]:
    """``.txt``: the whole file is one document; ``.jsonl``: the ``text`` field of each non-blank line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such corpus file {str(path)!r}; pass a .txt or .jsonl file")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [path.read_text(encoding="utf-8")]
    if suffix == ".jsonl":
        docs = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise UserError(f"{str(path)!r} line {number} is not JSON; fix the line or remove it") from None
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise UserError(f"{str(path)!r} line {number} has no string \"text\" field; add one per line")
                docs.append(record["text"])
        return docs
    raise UserError(f"corpus {str(path)!r} is neither .txt nor .jsonl; convert it to one of them")


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


def _windows(stream: list[int], window: int) -> list[list[int]]:
    chunks = [stream[start : start + window] for start in range(0, len(stream), window)]
    return [chunk for chunk in chunks if len(chunk) >= 2]


def _scored_bytes(window_ids: list[int], tokenizer: PreTrainedTokenizerBase) -> int:
    def text_bytes(ids: list[int]) -> int:
        text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return len(text.encode("utf-8"))

    return text_bytes(window_ids) - text_bytes(window_ids[:1])


def _batches(windows: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    """Equal-length windows together (all but the last are full), so no padding or mask is needed."""
    by_length: dict[int, list[list[int]]] = {}
    for ids in windows:
        by_length.setdefault(len(ids), []).append(ids)
    return [group[i : i + batch_size] for group in by_length.values() for i in range(0, len(group), batch_size)]


def pretraining_loss(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    corpus: Path,
    *,
    window: int = 2048,
    max_tokens: int = 1_000_000,
    batch_size: int = 8,
    progress: bool = True,
) -> LossResult:
    """Mean next-token loss and bits per byte of ``model`` on ``corpus`` (see the module docstring)."""
    corpus = Path(corpus)
    if window < 2 or max_tokens < 2 or batch_size < 1:
        raise UserError(
            f"window={window}, max_tokens={max_tokens}, batch_size={batch_size}: the first two must be >= 2 "
            "and the batch size >= 1"
        )
    docs = read_corpus(corpus)
    window = min(window, context_length(model, tokenizer))
    stream = corpus_token_stream(docs, tokenizer, max_tokens=max_tokens)
    windows = _windows(stream, window)
    if not windows:
        raise UserError(f"corpus {str(corpus)!r} has fewer than 2 tokens; pass a corpus with text in it")

    device = next(model.parameters()).device
    total_nats = 0.0
    total_tokens = 0
    batches = _batches(windows, batch_size)
    with torch.inference_mode():
        for batch in tqdm(batches, desc="pre-training loss", unit="batch", disable=not progress):
            input_ids = torch.tensor(batch, dtype=torch.long, device=device)
            logits = model(input_ids=input_ids, use_cache=False).logits
            # float32 before the softmax: bf16 logits lose ~3 digits of the log-probabilities.
            nats = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                input_ids[:, 1:].reshape(-1),
                reduction="sum",
            )
            total_nats += float(nats.double())
            total_tokens += input_ids.shape[0] * (input_ids.shape[1] - 1)

    require_finite([total_nats], "pre-training loss")
    total_bytes = sum(_scored_bytes(ids, tokenizer) for ids in windows)
    if total_bytes <= 0:
        raise UserError(f"corpus {str(corpus)!r} decodes to no text bytes; pass a corpus of ordinary text")
    return LossResult(
        loss=total_nats / total_tokens,
        bits_per_byte=total_nats / math.log(2) / total_bytes,
        tokens=total_tokens,
        bytes=total_bytes,
        windows=len(windows),
        window=window,
        corpus=str(corpus),
        corpus_sha256=file_sha256(corpus),
    )
