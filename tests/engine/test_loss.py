"""Pre-training loss: cross-checked against a plain per-window forward written out here."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from harness.engine.loss import corpus_token_stream, pretraining_loss, read_corpus
from harness.engine.models import load_model
from harness.errors import UserError

DOCS = [
    "The following are multiple choice questions (with answers) about anatomy.\nQuestion: What is 12 plus 30?",
    "Q: There are 15 trees in the grove. Grove workers will plant trees today. A: 21 - 15 = 6.",
    "In the following lines, the symbol -> represents a simple mathematical operation.\n102 + 435 -> 537",
    "Zebras quietly juxtapose vexing kilowatts; $1,000.00 is a thousand dollars.",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tokenizer, _ = load_model(str(tiny_model_dir), device="cpu")
    return model, tokenizer


def _write_jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": doc, "id": i}) + "\n" for i, doc in enumerate(docs)), encoding="utf-8")
    return path


def _reference(model, tokenizer, docs: list[str], window: int, max_tokens: int) -> tuple[float, int, int, list[list[int]]]:
    """(total nats, scored tokens, windows, the windows): one window at a time, log-softmax in float64."""
    ids: list[int] = []
    for i, doc in enumerate(docs):
        if i:
            ids.append(tokenizer.eos_token_id)
        ids += tokenizer.encode(doc, add_special_tokens=False)
    ids = ids[:max_tokens]
    nats, scored, windows = 0.0, 0, []
    for start in range(0, len(ids), window):
        chunk = ids[start : start + window]
        if len(chunk) < 2:
            continue
        windows.append(chunk)
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([chunk])).logits[0].double(), dim=-1)
        nats -= sum(logprobs[i - 1, chunk[i]].item() for i in range(1, len(chunk)))
        scored += len(chunk) - 1
    return nats, scored, len(windows), windows


def test_loss_and_bits_per_byte_match_an_independent_computation(tiny, tmp_path):
    model, tokenizer = tiny
    docs = DOCS * 6
    corpus = _write_jsonl(tmp_path / "heldout.jsonl", docs)

    result = pretraining_loss(model, tokenizer, corpus, window=64, batch_size=4, progress=False)

    nats, scored, n_windows, windows = _reference(model, tokenizer, docs, window=64, max_tokens=10**9)
    assert (result.tokens, result.windows, result.window) == (scored, n_windows, 64)
    assert n_windows > 8  # several full batches and a partial last window
    assert result.loss == pytest.approx(nats / scored, abs=1e-5)
    # Bytes from the documents themselves: all their text (the EOS separators add none) minus the
    # text of each window's unscored first token.  Byte-level BPE decodes back to exactly the input.
    first_token_bytes = sum(len(tokenizer.decode([w[0]], skip_special_tokens=True).encode()) for w in windows)
    expected_bytes = sum(len(doc.encode("utf-8")) for doc in docs) - first_token_bytes
    assert result.bytes == expected_bytes
    assert result.bits_per_byte == pytest.approx(nats / math.log(2) / expected_bytes, rel=1e-6)
    assert result.corpus == str(corpus)
    assert result.corpus_sha256 == hashlib.sha256(corpus.read_bytes()).hexdigest()
    # A random model over a 400-token vocabulary sits near the uniform loss ln(400).
    assert abs(result.loss - math.log(len(tokenizer))) < 0.5


def test_multibyte_text_counts_its_utf8_bytes(tiny, tmp_path):
    model, tokenizer = tiny
    text = "Café naïve — 42 € über straße."
    corpus = tmp_path / "one.txt"
    corpus.write_text(text, encoding="utf-8")
    result = pretraining_loss(model, tokenizer, corpus, window=512, progress=False)
    first = tokenizer.encode(text, add_special_tokens=False)[0]
    assert result.windows == 1
    assert result.bytes == len(text.encode("utf-8")) - len(tokenizer.decode([first]).encode("utf-8"))
    assert len(text.encode("utf-8")) > len(text)  # the text really has multi-byte characters


def test_max_tokens_truncates_the_stream(tiny, tmp_path):
    model, tokenizer = tiny
    docs = DOCS * 6
    corpus = _write_jsonl(tmp_path / "heldout.jsonl", docs)

    result = pretraining_loss(model, tokenizer, corpus, window=32, max_tokens=100, progress=False)
    nats, scored, n_windows, _ = _reference(model, tokenizer, docs, window=32, max_tokens=100)
    assert (result.windows, result.tokens) == (4, 100 - 4) == (n_windows, scored)  # 32 + 32 + 32 + 4
    assert result.loss == pytest.approx(nats / scored, abs=1e-5)

    # One token left over after two full windows has no context in its window: it is dropped.
    single = pretraining_loss(model, tokenizer, corpus, window=32, max_tokens=65, progress=False)
    assert (single.windows, single.tokens) == (2, 62)


def test_window_is_capped_by_the_model_context(tiny, tmp_path):
    model, tokenizer = tiny
    docs = DOCS * 25  # well over two 512-token windows
    corpus = _write_jsonl(tmp_path / "long.jsonl", docs)
    result = pretraining_loss(model, tokenizer, corpus, window=4096, batch_size=2, progress=False)
    assert result.window == model.config.max_position_embeddings == 512
    nats, scored, n_windows, _ = _reference(model, tokenizer, docs, window=512, max_tokens=10**9)
    assert n_windows >= 3
    assert (result.windows, result.tokens) == (n_windows, scored)
    assert result.loss == pytest.approx(nats / scored, abs=1e-5)


def test_batch_size_does_not_change_the_result(tiny, tmp_path):
    model, tokenizer = tiny
    corpus = _write_jsonl(tmp_path / "heldout.jsonl", DOCS * 6)
    one = pretraining_loss(model, tokenizer, corpus, window=48, batch_size=1, progress=False)
    for batch_size in (4, 8, "auto"):
        other = pretraining_loss(model, tokenizer, corpus, window=48, batch_size=batch_size, progress=False)
        assert (one.tokens, one.bytes, one.windows) == (other.tokens, other.bytes, other.windows)
        assert one.loss == pytest.approx(other.loss, abs=1e-6)
        assert one.bits_per_byte == pytest.approx(other.bits_per_byte, abs=1e-6)
    # the default is "auto"
    assert pretraining_loss(model, tokenizer, corpus, window=48, progress=False).loss == pytest.approx(one.loss, abs=1e-6)
    with pytest.raises(UserError, match="batch size must be a positive integer or 'auto'"):
        pretraining_loss(model, tokenizer, corpus, window=48, batch_size=0, progress=False)


def test_forwarded_tokens_are_the_scored_ones_once(tiny, tmp_path):
    model, tokenizer = tiny
    corpus = _write_jsonl(tmp_path / "heldout.jsonl", DOCS)
    result = pretraining_loss(model, tokenizer, corpus, window=32, progress=False)
    # each window's input is all its tokens but the last: as many positions as it scores
    assert result.tokens_forwarded == result.tokens
    # a corpus repeating itself window for window forwards each distinct window once
    stream = corpus_token_stream(DOCS[:1], tokenizer)[:16]
    twice = tmp_path / "twice.jsonl"
    twice.write_text(json.dumps({"text": tokenizer.decode(stream * 4)}) + "\n", encoding="utf-8")
    repeated = pretraining_loss(model, tokenizer, twice, window=16, progress=False)
    assert corpus_token_stream(read_corpus(twice), tokenizer) == stream * 4  # re-encodes to the same tokens
    assert (repeated.windows, repeated.tokens, repeated.tokens_forwarded) == (4, 60, 15)


@pytest.mark.parametrize("batch_size", [8, "auto"])
def test_out_of_memory_halves_the_batch(tiny, tmp_path, monkeypatch, batch_size):
    from harness.engine.forward import ModelForward

    model, tokenizer = tiny
    corpus = _write_jsonl(tmp_path / "heldout.jsonl", DOCS * 6)
    expected = pretraining_loss(model, tokenizer, corpus, window=32, batch_size=1, progress=False)
    attempts: list[int] = []
    real_run = ModelForward.run

    def run(self, input_ids, attention_mask, **kwargs):
        attempts.append(input_ids.shape[0])
        if input_ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(self, input_ids, attention_mask, **kwargs)

    monkeypatch.setattr(ModelForward, "run", run)
    result = pretraining_loss(model, tokenizer, corpus, window=32, batch_size=batch_size, progress=False)
    assert max(attempts) > 2 and 2 in attempts  # the error happened and a smaller batch ran
    assert result.loss == pytest.approx(expected.loss, abs=1e-6) and result.tokens == expected.tokens


def test_non_finite_loss_raises(tiny, tmp_path, tiny_model_dir):
    from harness.errors import NonFiniteOutput

    model, tokenizer, _ = load_model(str(tiny_model_dir), device="cpu")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".mlp." in name:
                parameter.fill_(float("nan"))
    corpus = _write_jsonl(tmp_path / "heldout.jsonl", DOCS)
    with pytest.raises(NonFiniteOutput, match="non-finite pre-training loss"):
        pretraining_loss(model, tokenizer, corpus, window=32, progress=False)


def test_stream_joins_documents_with_eos_and_no_special_tokens(tiny_model_dir):
    # A tokenizer that prepends EOS to everything it encodes by default, like Llama's BOS.
    raw = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    eos = raw.token_to_id("<|endoftext|>")
    raw.post_processor = TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", eos)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>")
    assert tokenizer("Answer")["input_ids"][0] == eos

    plain = AutoTokenizer.from_pretrained(tiny_model_dir)
    a, b = (plain.encode(text, add_special_tokens=False) for text in ("Answer: 42", "The answer is 6."))
    assert eos not in a + b
    assert corpus_token_stream(["Answer: 42", "The answer is 6."], tokenizer) == a + [eos] + b
    assert corpus_token_stream(["Answer: 42", "The answer is 6."], tokenizer, max_tokens=3) == a[:3]

    tokenizer.eos_token = None  # no EOS: documents simply follow each other
    assert tokenizer.eos_token_id is None
    assert corpus_token_stream(["Answer: 42", "The answer is 6."], tokenizer) == a + b


def test_readers(tmp_path):
    txt = tmp_path / "doc.txt"
    txt.write_text("line one\n\nline two\n", encoding="utf-8")
    assert read_corpus(txt) == ["line one\n\nline two\n"]

    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"text": "first", "meta": 1}\n\n{"text": "sec\\nond"}\n', encoding="utf-8")
    assert read_corpus(jsonl) == ["first", "sec\nond"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text"}\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 2 has no string \"text\" field"):
        read_corpus(bad)
    bad.write_text('{"text": "ok"}\nnot json\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 2 is not JSON"):
        read_corpus(bad)

    parquet = tmp_path / "docs.parquet"
    parquet.write_bytes(b"PAR1")
    with pytest.raises(UserError, match="neither .txt nor .jsonl"):
        read_corpus(parquet)
    with pytest.raises(UserError, match="no such corpus file '.*missing.txt'"):
        read_corpus(tmp_path / "missing.txt")


def test_missing_or_empty_corpus_is_a_user_error(tiny, tmp_path):
    model, tokenizer = tiny
    with pytest.raises(UserError, match="no such corpus file '.*absent.jsonl'"):
        pretraining_loss(model, tokenizer, tmp_path / "absent.jsonl", progress=False)
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(UserError, match="fewer than 2 tokens"):
        pretraining_loss(model, tokenizer, empty, progress=False)
