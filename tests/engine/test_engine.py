"""The engine against independent computations: a plain transformers forward for log-likelihoods,
a cache-free greedy loop for generations, and lm-evaluation-harness 0.4.13's HFLM itself."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.engine import Engine
from harness.engine.models import context_length
from harness.errors import UserError
from harness.requests import GenerationRequest, LoglikelihoodRequest

from conftest import (
    NON_ASCII,
    OOM_ERRORS,
    PROMPTS,
    fail_above,
    reference_greedy,
    reference_loglikelihood,
    reference_split,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_engine(model_and_tokenizer, **kwargs) -> Engine:
    model, tokenizer = model_and_tokenizer
    return Engine(model, tokenizer, progress=False, **kwargs)


# ---------------------------------------------------------------------- independent references


# ---------------------------------------------------------------------- log-likelihood

LL_REQUESTS = [
    LoglikelihoodRequest("Question: What is 12 plus 30? Answer:", " 42"),
    LoglikelihoodRequest("The answer is ", "42."),  # trailing space moves to the continuation
    LoglikelihoodRequest("The quick brown fox", " jumps over the lazy dog."),  # many tokens
    LoglikelihoodRequest("", "The quick brown fox"),  # empty context: BOS is the context
    LoglikelihoodRequest("A: ", NON_ASCII),
    LoglikelihoodRequest("102 + 435 ->", " 537\n860 + 270 -> 1130"),
]


def test_loglikelihood_matches_plain_forward(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    results = make_engine(model_and_tokenizer, batch_size=4).loglikelihood(LL_REQUESTS)
    for request, result in zip(LL_REQUESTS, results):
        context_ids, continuation_ids = reference_split(tokenizer, request.context, request.continuation)
        logprob, is_greedy = reference_loglikelihood(model, context_ids, continuation_ids)
        assert result.logprob == pytest.approx(logprob, abs=1e-4), request
        assert result.is_greedy == is_greedy
        assert result.num_tokens == len(continuation_ids)
        assert result.num_bytes == len(request.continuation.encode("utf-8"))
    assert results[4].num_bytes == 16
    assert results[2].num_tokens > 1 and results[5].num_tokens > 1


def test_trailing_space_is_scored_with_the_continuation(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    engine = make_engine(model_and_tokenizer, batch_size=1)
    context_ids, continuation_ids = engine.encoder.encode_pair("The answer is ", "42.")
    assert tokenizer.decode(context_ids) == "The answer is"
    assert tokenizer.decode(continuation_ids) == " 42."
    [moved, plain] = engine.loglikelihood(
        [LoglikelihoodRequest("The answer is ", "42."), LoglikelihoodRequest("The answer is", " 42.")]
    )
    assert moved.logprob == plain.logprob and moved.num_tokens == plain.num_tokens
    assert moved.num_bytes == 3 and plain.num_bytes == 4  # bytes of the continuation as requested


def test_empty_context_scores_against_bos(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    engine = make_engine(model_and_tokenizer, batch_size=1)
    assert engine.encoder.encode_pair("", " fox") == ([tokenizer.bos_token_id], tokenizer.encode(" fox"))
    [result] = engine.loglikelihood([LoglikelihoodRequest("", " fox")])
    logprob, _ = reference_loglikelihood(model, [tokenizer.bos_token_id], tokenizer.encode(" fox"))
    assert result.logprob == pytest.approx(logprob, abs=1e-4)


def test_long_context_is_truncated_from_the_left(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    context = "The quick brown fox jumps over the lazy dog. " * 5 + "Answer:"
    continuation = " 42. The answer is 42."
    engine = make_engine(model_and_tokenizer, batch_size=2, max_length=16)
    results = engine.loglikelihood([LoglikelihoodRequest(context, continuation), LL_REQUESTS[0]])
    context_ids, continuation_ids = reference_split(tokenizer, context, continuation)
    assert len(context_ids) + len(continuation_ids) > 17
    truncated, _ = reference_loglikelihood(model, context_ids, continuation_ids, max_length=16)
    full, _ = reference_loglikelihood(model, context_ids, continuation_ids)
    assert results[0].logprob == pytest.approx(truncated, abs=1e-4)
    assert abs(truncated - full) > 1e-3  # the window really changed the number
    assert results[0].num_tokens == len(continuation_ids)


def test_is_greedy_is_true_for_the_models_own_continuation(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    context = "Answer: A"  # a context whose greedy continuation survives decode + re-encode
    greedy_ids = reference_greedy(model, tokenizer, tokenizer.encode(context), 3)
    greedy_text = tokenizer.decode(greedy_ids)
    assert tokenizer.encode(context + greedy_text)[-3:] == greedy_ids  # re-encodes to the same tokens
    engine = make_engine(model_and_tokenizer, batch_size=4)
    own, other = engine.loglikelihood(
        [LoglikelihoodRequest(context, greedy_text), LoglikelihoodRequest(context, " 42")]
    )
    assert own.is_greedy and own.num_tokens == 3
    assert not other.is_greedy


def test_empty_continuation_scores_zero(model_and_tokenizer):
    [result] = make_engine(model_and_tokenizer, batch_size=2).loglikelihood([LoglikelihoodRequest("Answer:", "")])
    assert (result.logprob, result.num_tokens, result.num_bytes, result.is_greedy) == (0.0, 0, 0, True)


def test_loglikelihood_is_batch_size_invariant_and_in_request_order(model_and_tokenizer):
    requests = [LoglikelihoodRequest(p, c) for p in PROMPTS for c in (" 42", " the answer is 6.")]
    one = make_engine(model_and_tokenizer, batch_size=1).loglikelihood(requests)
    sixteen = make_engine(model_and_tokenizer, batch_size=16).loglikelihood(requests)
    for a, b in zip(one, sixteen):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert (a.is_greedy, a.num_tokens) == (b.is_greedy, b.num_tokens)
    # Order: each result is its own request's (the engine sorts by length internally).
    model, tokenizer = model_and_tokenizer
    for index in (0, 11, 23):
        request = requests[index]
        expected, _ = reference_loglikelihood(model, *reference_split(tokenizer, request.context, request.continuation))
        assert sixteen[index].logprob == pytest.approx(expected, abs=1e-4)


def test_identical_requests_are_computed_once(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    requests = LL_REQUESTS[:3]
    engine = make_engine(model_and_tokenizer, batch_size=8)
    results = engine.loglikelihood(requests * 3)
    assert results[:3] == results[3:6] == results[6:]
    # Each distinct request feeds its tokens minus the last one, once.
    expected = sum(len(sum(reference_split(tokenizer, r.context, r.continuation), [])) - 1 for r in requests)
    assert engine.tokens_forwarded == expected


def test_choices_with_the_same_model_input_share_one_forward(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    context = "A. first\nB. second\nC. third\nD. fourth\nAnswer:"
    requests = [LoglikelihoodRequest(context, choice) for choice in (" A", " 42", " 6", " the", " B")]
    # batch 1: sharing can't come from batching
    engine = make_engine(model_and_tokenizer, batch_size=1, prefix_cache=False)
    results = engine.loglikelihood(requests)
    assert [r.num_tokens for r in results] == [1, 1, 1, 1, 2]
    # One forward over the context for the four one-token choices, one over context + " " for " B".
    n = len(tokenizer.encode(context))
    assert engine.tokens_forwarded == n * 2 + 1
    # With shared prefixes the two windows also share the context but its last token (the first
    # position whose logits are read): n - 1 once, then 1 and 2 tokens.
    shared = make_engine(model_and_tokenizer, batch_size=1)
    for a, b in zip(shared.loglikelihood(requests), results):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4) and a.is_greedy == b.is_greedy
    assert shared.tokens_forwarded == (n - 1) + 1 + 2
    for request, result in zip(requests, results):
        expected, is_greedy = reference_loglikelihood(model, *reference_split(tokenizer, context, request.continuation))
        assert result.logprob == pytest.approx(expected, abs=1e-4) and result.is_greedy == is_greedy
    assert len({r.logprob for r in results}) == 5


@torch.no_grad()
def test_log_softmax_runs_in_float32_for_bf16_models(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    request = LL_REQUESTS[2]
    context_ids, continuation_ids = reference_split(tokenizer, request.context, request.continuation)
    tokens = context_ids + continuation_ids
    logits = model(torch.tensor([tokens[:-1]])).logits[0, -len(continuation_ids) :]
    rows = torch.arange(len(continuation_ids))
    in_fp32 = logits.float().log_softmax(-1)[rows, continuation_ids].sum().item()
    in_bf16 = logits.log_softmax(-1)[rows, continuation_ids].float().sum().item()
    [result] = Engine(model, tokenizer, batch_size=1, progress=False).loglikelihood([request])
    assert abs(in_fp32 - in_bf16) > 1e-3  # the dtype of the normaliser is visible at all
    assert result.logprob == pytest.approx(in_fp32, abs=1e-4)


# ---------------------------------------------------------------------- generation


def test_generation_matches_cache_free_greedy_loop(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = [PROMPTS[1], PROMPTS[2], PROMPTS[6]]
    engine = make_engine(model_and_tokenizer, batch_size=8)
    texts = engine.generate([GenerationRequest(p, max_new_tokens=12) for p in prompts])
    for prompt, text in zip(prompts, texts):
        expected = reference_greedy(model, tokenizer, tokenizer.encode(prompt), 12)
        assert text == tokenizer.decode(expected, skip_special_tokens=True)


def test_generation_respects_max_new_tokens_per_request(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    requests = [GenerationRequest(PROMPTS[2], max_new_tokens=n) for n in (1, 5, 9)] + [
        GenerationRequest(PROMPTS[2], max_new_tokens=0)
    ]
    texts = make_engine(model_and_tokenizer, batch_size=4).generate(requests)
    full = reference_greedy(model, tokenizer, tokenizer.encode(PROMPTS[2]), 10)
    # Re-encoding the text can't count its tokens (the random model emits partial UTF-8 bytes),
    # so compare with exactly n reference tokens, which reads differently from n + 1.
    for request, text in zip(requests, texts):
        n = request.max_new_tokens
        assert text == tokenizer.decode(full[:n], skip_special_tokens=True)
        assert text != tokenizer.decode(full[: n + 1], skip_special_tokens=True)
    assert texts[-1] == ""


def test_max_new_tokens_filling_the_window_keeps_the_prompt_and_generates_into_the_room_left(model_and_tokenizer):
    """lm-eval keeps the last max_length − max_new_tokens prompt tokens; a request whose max_new_tokens
    fills the whole window (BIG-bench's 256 on a 256-token model) keeps its prompt instead and stops
    when the window is full, the same text as asking for exactly the room left."""
    model, tokenizer = model_and_tokenizer
    window = 24
    prompt_tokens = len(tokenizer.encode(PROMPTS[2]))
    assert 1 < prompt_tokens < window - 4
    engine = make_engine(model_and_tokenizer, batch_size=2, max_length=window)
    filled, exact = engine.generate([GenerationRequest(PROMPTS[2], max_new_tokens=window),
                                     GenerationRequest(PROMPTS[2], max_new_tokens=window - prompt_tokens)])
    full = reference_greedy(model, tokenizer, tokenizer.encode(PROMPTS[2]), window - prompt_tokens)
    assert filled == exact == tokenizer.decode(full, skip_special_tokens=True)


def test_generation_counts_forwarded_tokens(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    engine = make_engine(model_and_tokenizer, batch_size=1)
    engine.generate([GenerationRequest(PROMPTS[2], max_new_tokens=7)])
    # The prompt once, then each new token but the last (nothing reads its successor).
    assert engine.tokens_forwarded == len(tokenizer.encode(PROMPTS[2])) + 6


def test_generation_is_batch_size_invariant(model_and_tokenizer):
    requests = [GenerationRequest(p, max_new_tokens=16 + 4 * (i % 3)) for i, p in enumerate(PROMPTS)]
    one = make_engine(model_and_tokenizer, batch_size=1).generate(requests)
    sixteen = make_engine(model_and_tokenizer, batch_size=16).generate(requests)
    assert one == sixteen
    assert len(set(one)) > 6  # distinct outputs, so a mix-up between rows would show


def test_generation_cuts_at_the_first_stop_string(model_and_tokenizer):
    engine = make_engine(model_and_tokenizer, batch_size=4)
    prompt = PROMPTS[2]
    unstopped = engine.generate([GenerationRequest(prompt, max_new_tokens=20)])[0]
    forwarded_unstopped = engine.tokens_forwarded
    stop = unstopped[8:11]
    cut = unstopped.index(stop)
    assert 0 < cut < len(unstopped) - len(stop)
    engine.tokens_forwarded = 0
    stopped = engine.generate([GenerationRequest(prompt, stop=(stop,), max_new_tokens=20)])[0]
    assert stopped == unstopped[:cut]
    assert engine.tokens_forwarded < forwarded_unstopped  # decoding stopped, not just the text
    # Among several stops, the earliest occurrence wins whatever the order in the list.
    later = unstopped[cut + len(stop) :][2:5]
    both = engine.generate([GenerationRequest(prompt, stop=(later, stop), max_new_tokens=20)])[0]
    assert both == unstopped[:cut]


def test_generation_stops_at_the_models_eos_id(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    full = reference_greedy(model, tokenizer, tokenizer.encode(PROMPTS[1]), 10)
    eos_at = next(i for i in range(2, 10) if full[i] not in full[:i])
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = full[eos_at]  # as if the model's EOS were that token
    try:
        engine = make_engine(model_and_tokenizer, batch_size=2)
        [text] = engine.generate([GenerationRequest(PROMPTS[1], max_new_tokens=10)])
    finally:
        model.generation_config.eos_token_id = saved
    assert text == tokenizer.decode(full[: eos_at + 1], skip_special_tokens=True)


def test_generation_truncates_the_prompt_from_the_left(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompt = PROMPTS[6]
    engine = make_engine(model_and_tokenizer, batch_size=2, max_length=24)
    [text] = engine.generate([GenerationRequest(prompt, max_new_tokens=8)])
    prompt_ids = tokenizer.encode(prompt)
    assert len(prompt_ids) > 16
    assert text == tokenizer.decode(reference_greedy(model, tokenizer, prompt_ids[-16:], 8), skip_special_tokens=True)
    # max_new_tokens filling the window: the prompt's last 23 tokens are kept and one token fits
    [text] = engine.generate([GenerationRequest(prompt, max_new_tokens=24)])
    assert text == tokenizer.decode(reference_greedy(model, tokenizer, prompt_ids[-23:], 1), skip_special_tokens=True)


# ---------------------------------------------------------------------- out-of-memory back-off


@pytest.mark.parametrize("make_error", OOM_ERRORS)
@pytest.mark.parametrize("batch_size", [16, "auto"])
def test_out_of_memory_halves_the_batch(model_and_tokenizer, batch_size, make_error):
    requests = [LoglikelihoodRequest(PROMPTS[i % 12] + " " * (i // 12), " 42 and 6") for i in range(20)]
    baseline = make_engine(model_and_tokenizer, batch_size=1).loglikelihood(requests)
    engine = make_engine(model_and_tokenizer, batch_size=batch_size, prefix_cache=False)
    attempts = fail_above(engine, 4, make_error)
    results = engine.loglikelihood(requests)
    for a, b in zip(baseline, results):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4) and a.is_greedy == b.is_greedy
    assert engine.last_batch_size is not None and engine.last_batch_size <= 4
    assert max(attempts) > 4  # the error really happened and was survived
    if batch_size == 16:
        assert attempts[:3] == [16, 8, 4]


def test_out_of_memory_during_generation_retries_the_batch(model_and_tokenizer):
    requests = [GenerationRequest(p, max_new_tokens=6) for p in PROMPTS] * 2
    baseline = make_engine(model_and_tokenizer, batch_size=1).generate(requests)
    engine = make_engine(model_and_tokenizer, batch_size=16)
    fail_above(engine, 3, OOM_ERRORS[0])
    assert engine.generate(requests) == baseline  # 12 distinct requests: 12, 6 fail, then 3 fits
    assert engine.last_batch_size == 3


def test_out_of_memory_at_batch_one_and_other_errors_are_raised(model_and_tokenizer):
    engine = make_engine(model_and_tokenizer, batch_size=4)
    fail_above(engine, 0, OOM_ERRORS[1])
    with pytest.raises(UserError, match="out of memory"):
        engine.loglikelihood(LL_REQUESTS)
    engine = make_engine(model_and_tokenizer, batch_size=4)
    fail_above(engine, 0, lambda: ValueError("a bug, not memory"))
    with pytest.raises(ValueError, match="a bug"):
        engine.loglikelihood(LL_REQUESTS)


def test_auto_batch_size_follows_the_memory_estimate(model_and_tokenizer, monkeypatch):
    model, _ = model_and_tokenizer
    config = model.config
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers, config.vocab_size) == (32, 4, 2, 400)
    # One fp32 sequence of 100 tokens scoring 2: logits 2*400*(4+8) + hidden 100*32*4*24 + scores 4*100*100*4.
    per_sequence = 9_600 + 307_200 + 160_000
    # Generating 100 tokens adds a KV cache of 2*2*100*32*4 and keeps one logit position.
    per_generated = 400 * 12 + 307_200 + 160_000 + 51_200
    engine = make_engine(model_and_tokenizer, batch_size="auto")
    for free, expected in [(1, 1), (20 * per_sequence, 8), (200 * per_sequence, 64), (10**12, 64)]:
        monkeypatch.setattr("harness.engine.batching.free_memory_bytes", lambda device, free=free: free)
        assert engine.batching.auto_size(100, 2, False) == expected
    monkeypatch.setattr("harness.engine.batching.free_memory_bytes", lambda device: 2 * 9 * per_generated)
    assert engine.batching.auto_size(100, 1, True) == 8  # 9 fit in half of it: the power of two below
    monkeypatch.setattr("harness.engine.batching.free_memory_bytes", lambda device: 2 * 9 * per_generated - 1)
    assert engine.batching.auto_size(100, 1, True) == 8
    monkeypatch.setattr("harness.engine.batching.free_memory_bytes", lambda device: 2 * 8 * per_generated - 1)
    assert engine.batching.auto_size(100, 1, True) == 4


# ---------------------------------------------------------------------- special tokens and window


def test_add_bos_token_prepends_bos(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    bos = tokenizer.bos_token_id
    plain = make_engine(model_and_tokenizer, batch_size=2)
    with_bos = make_engine(model_and_tokenizer, batch_size=2, add_bos_token=True)
    assert plain.encode("Answer: A") == tokenizer.encode("Answer: A")
    assert plain.encode("Answer: A")[0] != bos
    assert with_bos.encode("Answer: A") == [bos] + tokenizer.encode("Answer: A")
    assert with_bos.encode("<|endoftext|>Answer: A") == [bos] + tokenizer.encode("Answer: A")  # no second BOS
    context, continuation = LL_REQUESTS[0].context, LL_REQUESTS[0].continuation
    [result] = with_bos.loglikelihood([LL_REQUESTS[0]])
    expected, _ = reference_loglikelihood(model, *reference_split(tokenizer, context, continuation, bos=True))
    assert result.logprob == pytest.approx(expected, abs=1e-4)
    unprefixed, _ = reference_loglikelihood(model, *reference_split(tokenizer, context, continuation))
    assert abs(expected - unprefixed) > 1e-3


def test_max_length_resolution(model_and_tokenizer):
    assert make_engine(model_and_tokenizer).max_length == 512  # config.max_position_embeddings
    assert make_engine(model_and_tokenizer, max_length=100).max_length == 100
    unlimited = SimpleNamespace(model_max_length=int(1e30))
    def window(config, tokenizer):
        return context_length(SimpleNamespace(config=config), tokenizer)

    assert window(SimpleNamespace(n_positions=1024, max_position_embeddings=4096), unlimited) == 1024
    assert window(SimpleNamespace(text_config=SimpleNamespace(n_ctx=8192)), unlimited) == 8192
    assert window(SimpleNamespace(), SimpleNamespace(model_max_length=4096)) == 4096
    assert window(SimpleNamespace(), unlimited) == 2048


# ---------------------------------------------------------------------- the reference implementation itself


def test_numbers_equal_lm_eval_hflm(model_and_tokenizer):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = model_and_tokenizer
    hflm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, max_length=32)
    engine = make_engine(model_and_tokenizer, batch_size=4, max_length=32)
    pairs = [(r.context, r.continuation) for r in LL_REQUESTS] + [(PROMPTS[9], " The answer is 42.")]
    theirs = hflm.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)], disable_tqdm=True)
    ours = engine.loglikelihood([LoglikelihoodRequest(*p) for p in pairs])
    for (logprob, is_greedy), result in zip(theirs, ours):
        assert result.logprob == pytest.approx(logprob, abs=1e-4) and result.is_greedy == is_greedy

    unstopped = engine.generate([GenerationRequest(PROMPTS[3], max_new_tokens=12)])[0]
    gens = [(PROMPTS[3], (unstopped[5:8],), 12), (PROMPTS[6], ("\n\n",), 8), (PROMPTS[1], (), 10)]
    theirs = hflm.generate_until(
        [
            Instance("generate_until", {}, (c, {"until": list(s), "max_gen_toks": n, "do_sample": False}), i)
            for i, (c, s, n) in enumerate(gens)
        ],
        disable_tqdm=True,
    )
    assert engine.generate([GenerationRequest(c, s, n) for c, s, n in gens]) == theirs
    assert len(theirs[0]) < len(unstopped)
