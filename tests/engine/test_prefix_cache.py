"""Shared prefixes: the plan (hand-built and brute-force checked), and the engine's shared path
against its plain path, plain transformers forwards and a cache-free greedy loop."""

from __future__ import annotations

import random
from os.path import commonprefix

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from harness.engine import Engine
from harness.engine.prefix_cache import Branch, plan_shared_prefixes, supports_prefix_cache
from harness.engine.token_accounting import count_forwarded_tokens, forwarded_tokens
from harness.requests import GenerationRequest, LoglikelihoodRequest

from conftest import OOM_ERRORS, fail_above, reference_greedy, reference_loglikelihood, reference_split

# ---------------------------------------------------------------------- the plan, by hand

H = list(range(100, 120))  # a 20-token "few-shot header"


def leaf(index: int, start: int, sequences) -> Branch:
    return Branch(start, len(sequences[index]), (index,))


def test_a_header_shared_by_every_sequence_is_one_branch():
    sequences = [H + [1, 2, 3], H + [5, 6], H + [4]]
    limits = [len(s) - 1 for s in sequences]
    [header] = plan_shared_prefixes(sequences, limits, min_shared=16)
    # Sorted order of the tails: [1, 2, 3] < [4] < [5, 6].
    assert header == Branch(0, 20, (0, 2, 1), (leaf(0, 20, sequences), leaf(2, 20, sequences), leaf(1, 20, sequences)))


def test_prefixes_nest_header_then_question_then_choices():
    q1, q2 = list(range(200, 218)), list(range(300, 318))  # 18-token questions
    sequences = [H + q1 + [7, 8], H + q1 + [9], H + q2 + [7], [1] * 30]
    limits = [38, 38, 38, 29]  # choices start after the question: logits are read from position 38 on
    plan = plan_shared_prefixes(sequences, limits, min_shared=16)
    assert plan == (
        leaf(3, 0, sequences),  # [1] * 30 sorts first and shares nothing
        Branch(0, 20, (0, 1, 2), (
            Branch(20, 38, (0, 1), (leaf(0, 38, sequences), leaf(1, 38, sequences))),
            leaf(2, 20, sequences),
        )),
    )


def test_limits_cap_a_shared_prefix_and_short_shares_stay_unshared():
    sequences = [H + [1, 2], H + [1, 3], H[:15] + [9, 9]]
    # The first two share 21 tokens, but the second reads logits from position 18 on.
    plan = plan_shared_prefixes(sequences, [21, 18, 16], min_shared=16)
    # (Branches come in sorted token order: token 9 < 115 puts the third sequence first.)
    assert plan == (leaf(2, 0, sequences), Branch(0, 18, (0, 1), (leaf(0, 18, sequences), leaf(1, 18, sequences))))
    # 15 shared tokens are below min_shared: nothing is shared.
    assert plan_shared_prefixes(sequences[1:], [18, 16], min_shared=16) == (leaf(1, 0, sequences[1:]), leaf(0, 0, sequences[1:]))
    # A sequence whose limit is below min_shared never joins a shared prefix (and comes first).
    assert plan_shared_prefixes(sequences[:2], [21, 10], min_shared=16) == (leaf(1, 0, sequences[:2]), leaf(0, 0, sequences[:2]))
    assert plan_shared_prefixes([], [], min_shared=16) == ()


def _walk(branches, parent_end=0):
    for branch in branches:
        assert branch.start == parent_end
        yield branch
        yield from _walk(branch.children, branch.end)


def _leaf_paths(branches, path=()):
    for branch in branches:
        if branch.is_leaf:
            yield branch.members[0], path + (branch,)
        yield from _leaf_paths(branch.children, path + (branch,))


@pytest.mark.parametrize("seed", range(6))
def test_plan_forwards_each_distinct_prefix_once(seed):
    """With min_shared 1 and no sequence a prefix of another, the plan forwards exactly the distinct
    prefixes of the sequences (the nodes of their trie), each once; brute force counts them."""
    rng = random.Random(seed)
    sequences = []
    while len(sequences) < 40:
        candidate = [rng.randrange(4) for _ in range(rng.randrange(2, 12))]
        if not any(candidate[: len(s)] == s or s[: len(candidate)] == candidate for s in sequences):
            sequences.append(candidate)
    plan = plan_shared_prefixes(sequences, [len(s) - 1 for s in sequences], min_shared=1)
    distinct_prefixes = {tuple(s[:k]) for s in sequences for k in range(1, len(s) + 1)}
    assert sum(b.end - b.start for b in _walk(plan)) == len(distinct_prefixes)
    paths = dict(_leaf_paths(plan))
    assert sorted(paths) == list(range(len(sequences)))  # every sequence is exactly one leaf


@pytest.mark.parametrize("seed", range(6))
def test_plan_invariants_on_random_sequences(seed):
    rng = random.Random(seed)
    header = [rng.randrange(50) for _ in range(24)]
    sequences, limits = [], []
    for _ in range(60):
        s = (header[: rng.choice([0, 8, 24])] + [rng.randrange(3) for _ in range(rng.randrange(1, 30))])
        sequences.append(s)
        limits.append(rng.randrange(0, len(s)))
    min_shared = 4
    plan = plan_shared_prefixes(sequences, limits, min_shared)
    paths = dict(_leaf_paths(plan))
    assert sorted(paths) == list(range(len(sequences)))
    for branch in _walk(plan):
        members = [sequences[i] for i in branch.members]
        if branch.is_leaf:
            assert branch.end == len(members[0]) > branch.start
            continue
        assert len(members) >= 2 and branch.end - branch.start >= min_shared
        assert all(m[: branch.end] == members[0][: branch.end] for m in members)  # really shared
        assert branch.end <= min(limits[i] for i in branch.members)  # never reaches a read position
    # Any two sequences sharing min_shared tokens before both limits share a forwarded prefix.
    for i in range(len(sequences)):
        for j in range(i + 1, len(sequences)):
            common = min(len(commonprefix([sequences[i], sequences[j]])), limits[i], limits[j])
            if common >= min_shared:
                assert set(paths[i][:-1]) & set(paths[j][:-1]), (i, j)


# ---------------------------------------------------------------------- the engine on a tiny model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


HEADER = "The following are multiple choice questions (with answers) about anatomy.\n\n" + (
    "Question: What is 12 plus 30?\nA. first\nB. second\nC. third\nD. fourth\nAnswer: A\n\n"
)
QUESTIONS = [  # each long enough (>= 16 tokens) to be shared by its choices
    "Question: There are 15 trees in the grove. How many are left?",
    "Question: The quick brown fox jumps over the lazy dog. Which one jumps?",
    "Question: In the following lines, the symbol -> represents what?",
    "Question: 102 + 435 -> 537 and 860 + 270 -> 1130, so 106 + 71 ->",
    "Question: $1,000.00 is a thousand dollars. Is it?",
]
ONE_TOKEN = (" A", " 42", " 6", " the")  # one token each in the tiny vocabulary (" B" is two)
MULTI_TOKEN = (" The answer is 42.", " 21 - 15 = 6.", " first", " the lazy dog")


def engines(model_and_tokenizer, batch_size, **kwargs) -> tuple[Engine, Engine]:
    model, tokenizer = model_and_tokenizer
    plain = Engine(model, tokenizer, batch_size=batch_size, prefix_cache=False, progress=False, **kwargs)
    shared = Engine(model, tokenizer, batch_size=batch_size, prefix_cache=True, progress=False, **kwargs)
    assert shared.shares_prefixes and not plain.shares_prefixes
    return plain, shared


def assert_same_scores(a, b):
    for x, y in zip(a, b, strict=True):
        assert x.logprob == pytest.approx(y.logprob, abs=1e-4)
        assert (x.is_greedy, x.num_tokens, x.num_bytes) == (y.is_greedy, y.num_tokens, y.num_bytes)


def encode(tokenizer, text):
    return tokenizer.encode(text)


@pytest.mark.parametrize("batch_size", [1, 8])
def test_single_token_choices_read_one_forward_on_top_of_the_header(model_and_tokenizer, batch_size):
    model, tokenizer = model_and_tokenizer
    contexts = [HEADER + q + "\nAnswer:" for q in QUESTIONS]
    requests = [LoglikelihoodRequest(c, choice) for c in contexts for choice in ONE_TOKEN]
    plain, shared = engines(model_and_tokenizer, batch_size)
    expected = plain.loglikelihood(requests)
    results = shared.loglikelihood(requests)
    assert_same_scores(expected, results)
    for index in (0, 7, 18):  # and against a plain transformers forward
        logprob, is_greedy = reference_loglikelihood(model, *reference_split(tokenizer, requests[index].context, requests[index].continuation))
        assert results[index].logprob == pytest.approx(logprob, abs=1e-4) and results[index].is_greedy == is_greedy
    assert len({round(r.logprob, 6) for r in results}) > 10  # choices really differ
    # The header (all but the questions) is forwarded once, then each question once for its 4 choices.
    windows = [encode(tokenizer, c) for c in contexts]
    header = len(commonprefix(windows))
    assert header >= len(encode(tokenizer, HEADER)) - 1
    assert shared.tokens_forwarded == header + sum(len(w) - header for w in windows)
    assert plain.tokens_forwarded == sum(len(w) for w in windows)
    assert shared.tokens_naive == plain.tokens_naive == 4 * sum(len(w) for w in windows)


@pytest.mark.parametrize("batch_size", [1, 8])
def test_multi_token_choices_share_their_question(model_and_tokenizer, batch_size):
    model, tokenizer = model_and_tokenizer
    contexts = [HEADER + q + "\nAnswer:" for q in QUESTIONS]
    requests = [LoglikelihoodRequest(c, choice) for c in contexts for choice in MULTI_TOKEN]
    plain, shared = engines(model_and_tokenizer, batch_size)
    results = shared.loglikelihood(requests)
    assert_same_scores(plain.loglikelihood(requests), results)
    for index in (1, 10, 19):
        logprob, is_greedy = reference_loglikelihood(model, *reference_split(tokenizer, requests[index].context, requests[index].continuation))
        assert results[index].logprob == pytest.approx(logprob, abs=1e-4) and results[index].is_greedy == is_greedy
    assert min(r.num_tokens for r in results) > 1
    # Three levels: the header once, each question once but its last token (whose logits predict
    # the choice's first), then per choice that token and the choice's own tokens but its last.
    contexts_ids = [encode(tokenizer, c) for c in contexts]
    header = len(commonprefix(contexts_ids))
    questions = sum(len(c) - 1 - header for c in contexts_ids)
    choices = sum(len(reference_split(tokenizer, r.context, r.continuation)[1]) for r in requests)
    assert shared.tokens_forwarded == header + questions + choices
    assert shared.tokens_forwarded < plain.tokens_forwarded / 4


@pytest.mark.parametrize("batch_size", [1, 8])
def test_generation_prefills_the_header_once(model_and_tokenizer, batch_size):
    model, tokenizer = model_and_tokenizer
    prompts = [HEADER + q + "\nAnswer:" for q in QUESTIONS]
    requests = [GenerationRequest(p, ("\n\n",), 6 + 3 * i) for i, p in enumerate(prompts)]
    requests.append(GenerationRequest(QUESTIONS[0], (), 9))  # shares nothing: runs beside the others
    plain, shared = engines(model_and_tokenizer, batch_size)
    texts = shared.generate(requests)
    assert texts == plain.generate(requests)
    for index in (0, 4, 5):
        request = requests[index]
        ids = reference_greedy(model, tokenizer, encode(tokenizer, request.context), request.max_new_tokens)
        assert texts[index] == tokenizer.decode(ids, skip_special_tokens=True).split("\n\n")[0]
    assert len(set(texts)) > 3
    # Naive: each prompt then each new token but the last; shared: the header once less.
    prompt_ids = [encode(tokenizer, p) for p in prompts]
    header = len(commonprefix(prompt_ids))
    assert plain.tokens_naive == shared.tokens_naive
    assert shared.tokens_forwarded == shared.tokens_naive - header * (len(prompts) - 1)
    if batch_size == 1:
        assert plain.tokens_forwarded == plain.tokens_naive  # the plain path at batch 1 is the naive count


def test_mixed_requests_truncation_and_duplicates_match_the_plain_path(model_and_tokenizer):
    contexts = [HEADER + q + "\nAnswer:" for q in QUESTIONS] + ["Q", "The quick brown", HEADER * 3]
    requests = [LoglikelihoodRequest(c, choice) for c in contexts for choice in (" A", " first", "")] * 2
    for max_length in (None, 48):  # 48 tokens: long windows are cut from the left and share nothing
        plain, shared = engines(model_and_tokenizer, 8, max_length=max_length)
        assert_same_scores(plain.loglikelihood(requests), shared.loglikelihood(requests))
        assert shared.tokens_forwarded < plain.tokens_forwarded
    gens = [GenerationRequest(c, (), 5) for c in contexts] + [GenerationRequest(contexts[0], ("x",), 5)]
    plain, shared = engines(model_and_tokenizer, 3, max_length=64)
    assert shared.generate(gens) == plain.generate(gens)


def test_batch_size_invariance_and_auto_on_the_shared_path(model_and_tokenizer):
    requests = [LoglikelihoodRequest(HEADER + q, c) for q in QUESTIONS for c in MULTI_TOKEN[:2] + ONE_TOKEN[:2]]
    model, tokenizer = model_and_tokenizer
    results = [Engine(model, tokenizer, batch_size=b, progress=False).loglikelihood(requests) for b in (1, 3, "auto")]
    assert_same_scores(results[0], results[1])
    assert_same_scores(results[0], results[2])


@pytest.mark.parametrize("make_error", OOM_ERRORS[:2])
def test_out_of_memory_backs_off_for_shared_prefixes_and_their_children(model_and_tokenizer, make_error):
    requests = [LoglikelihoodRequest(HEADER * (1 + i % 2) + q, c) for i, q in enumerate(QUESTIONS) for c in MULTI_TOKEN]
    plain, shared = engines(model_and_tokenizer, 8)
    attempts = fail_above(shared, 2, make_error)
    assert_same_scores(plain.loglikelihood(requests), shared.loglikelihood(requests))
    assert max(attempts) > 2 and shared.last_batch_size <= 2
    gens = [GenerationRequest(HEADER + q, (), 4) for q in QUESTIONS]
    attempts = fail_above(shared, 2, make_error)
    assert shared.generate(gens) == plain.generate(gens)
    assert max(attempts) > 2


def test_models_with_sliding_window_caches_take_the_plain_path(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=8, max_position_embeddings=256,
    )
    torch.manual_seed(0)
    model = MistralForCausalLM(config).eval()
    assert not supports_prefix_cache(model)
    engine = Engine(model, tokenizer, batch_size=4, progress=False)
    assert not engine.shares_prefixes
    config.sliding_window = None
    assert supports_prefix_cache(MistralForCausalLM(config).eval())
    requests = [LoglikelihoodRequest(HEADER + q, " first") for q in QUESTIONS[:2]]
    [a, b] = engine.loglikelihood(requests)
    assert a.logprob != b.logprob


# ---------------------------------------------------------------------- token accounting


def test_forwarded_tokens_counts_non_padding_positions():
    ids = torch.zeros((2, 5), dtype=torch.long)
    assert forwarded_tokens((ids,), {}) == 10  # lm-eval's scoring call: positional ids, no mask
    mask = torch.tensor([[1, 1, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0, 1]])  # 2 cached columns, then 5 new
    assert int(forwarded_tokens((), {"input_ids": ids, "attention_mask": mask})) == 5 + 3
    assert forwarded_tokens((), {"inputs_embeds": torch.zeros((3, 4, 8))}) == 12


def test_the_hook_counts_only_inside_its_block(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids = torch.tensor([encode(tokenizer, "The quick brown fox")])
    with count_forwarded_tokens(model) as counter:
        model(ids)
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    model(ids)
    assert counter.count == 2 * ids.shape[1]
    assert not model._forward_pre_hooks  # removed on exit
