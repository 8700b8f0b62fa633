"""Rolling log-likelihood: lm-eval's windows, checked against lm-eval's own functions and HFLM, a
plain transformers forward, other batch sizes and an out-of-memory back-off."""

from __future__ import annotations

import pytest
import torch

from harness.engine import Engine
from harness.engine.loglikelihood import ScoringRow, disjoint_windows, rolling_windows

from conftest import OOM_ERRORS, PROMPTS, fail_above

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    "Q",
    PROMPTS[2],
    PROMPTS[5],  # ~50 tokens: several windows of 16
    PROMPTS[9] + PROMPTS[6],  # ~150 tokens
    "$1,000.00 is a thousand dollars. Café naïve — 42 € über straße.",
    "",  # no tokens: log 1 = 0
]


def make_engine(model_and_tokenizer, **kwargs) -> Engine:
    model, tokenizer = model_and_tokenizer
    return Engine(model, tokenizer, progress=False, **kwargs)


@pytest.mark.parametrize("max_seq_len", [1, 2, 5, 16])
@pytest.mark.parametrize("context_len", [1, 2, 4])
def test_rolling_windows_are_lm_evals(max_seq_len, context_len):
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    if context_len > max_seq_len:
        return
    for n in (0, 1, 4, 5, 6, 16, 17, 33, 40):
        tokens = list(range(100, 100 + n))
        theirs = [
            make_disjoint_window(pair)
            for pair in get_rolling_token_windows(tokens, prefix_token=7, max_seq_len=max_seq_len, context_len=context_len)
        ]
        ours = rolling_windows(tokens, 7, max_seq_len, context_len)
        assert [(list(r.context), list(r.continuation)) for r in ours] == [(list(a), list(b)) for a, b in theirs]
        assert [t for r in ours for t in r.continuation] == tokens  # every token predicted once


def test_disjoint_windows_score_all_but_each_windows_first_token():
    tokens = list(range(10))
    assert disjoint_windows(tokens, 4) == [
        ScoringRow((0,), (1, 2, 3)), ScoringRow((4,), (5, 6, 7)), ScoringRow((8,), (9,))
    ]
    assert disjoint_windows(tokens[:9], 4)[-1] == ScoringRow((4,), (5, 6, 7))  # a lone last token is dropped


@torch.no_grad()
def reference_rolling(model, tokenizer, text: str, max_length: int) -> float:
    """lm-eval's windows written out (context_len 1): the tokens predicted in chunks of max_length,
    each from the max_length tokens before its end (BOS first), so a short last chunk sees more
    than one token of context; one unbatched forward each, float64 log-softmax."""
    tokens = [tokenizer.bos_token_id] + tokenizer.encode(text)  # tokens[i] predicts tokens[i + 1]
    total = 0.0
    for start in range(1, len(tokens), max_length):
        end = min(start + max_length, len(tokens))
        inputs = tokens[max(end - 1 - max_length, 0) : end - 1]
        logprobs = model(torch.tensor([inputs])).logits[0].double().log_softmax(-1)[-(end - start) :]
        total += logprobs[torch.arange(end - start), torch.tensor(tokens[start:end])].sum().item()
    return total


def test_rolling_matches_a_plain_forward_and_lm_eval_hflm(model_and_tokenizer):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = model_and_tokenizer
    engine = make_engine(model_and_tokenizer, batch_size=4, max_length=16)
    results = engine.loglikelihood_rolling(TEXTS)
    assert len(tokenizer.encode(TEXTS[3])) > 3 * 16  # several windows
    for text, result in zip(TEXTS, results):
        assert result.logprob == pytest.approx(reference_rolling(model, tokenizer, text, 16), abs=1e-4), text
        assert result.num_tokens == len(tokenizer.encode(text))
        assert result.num_bytes == len(text.encode("utf-8"))
    assert (results[-1].logprob, results[-1].num_tokens, results[-1].is_greedy) == (0.0, 0, True)

    hflm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, max_length=16)
    theirs = hflm.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, (text,), i) for i, text in enumerate(TEXTS)], disable_tqdm=True
    )
    for logprob, result in zip(theirs, results):
        assert result.logprob == pytest.approx(logprob, abs=1e-4)
    # the model's own window: one window per text here
    full = make_engine(model_and_tokenizer, batch_size=2).loglikelihood_rolling(TEXTS[:4])
    for text, result in zip(TEXTS, full):
        assert result.logprob == pytest.approx(reference_rolling(model, tokenizer, text, 512), abs=1e-4)


def test_rolling_is_batch_size_invariant_and_counts_its_tokens(model_and_tokenizer):
    runs = {}
    for batch_size in (1, 4, "auto"):
        engine = make_engine(model_and_tokenizer, batch_size=batch_size, max_length=16, prefix_cache=False)
        runs[batch_size] = engine.loglikelihood_rolling(TEXTS)
        # a window's input is max_length tokens, or the text and BOS when shorter; identical windows
        # of a repetitive text are forwarded once
        expected = sum(min(n, 16) + 16 * ((n - 1) // 16) for n in (r.num_tokens for r in runs[batch_size]) if n)
        assert engine.tokens_naive == expected
        assert 0 < engine.tokens_forwarded <= engine.tokens_naive
    for a, b, c in zip(runs[1], runs[4], runs["auto"]):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5) and a.logprob == pytest.approx(c.logprob, abs=1e-5)
        assert a.num_tokens == b.num_tokens == c.num_tokens and a.is_greedy == b.is_greedy == c.is_greedy


@pytest.mark.parametrize("make_error", OOM_ERRORS[:2])
@pytest.mark.parametrize("batch_size", [16, "auto"])
def test_rolling_backs_off_on_out_of_memory(model_and_tokenizer, batch_size, make_error):
    baseline = make_engine(model_and_tokenizer, batch_size=1, max_length=16).loglikelihood_rolling(TEXTS)
    engine = make_engine(model_and_tokenizer, batch_size=batch_size, max_length=16)
    attempts = fail_above(engine, 3, make_error)
    results = engine.loglikelihood_rolling(TEXTS)
    for a, b in zip(baseline, results):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5) and a.num_tokens == b.num_tokens
    assert max(attempts) > 3 and engine.last_batch_size <= 3  # the error happened and was survived
