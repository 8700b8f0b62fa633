"""Continuous companions of exact match: the engine's gold-continuation log-probabilities against a
plain transformers forward and Engine.loglikelihood, edit distances and ROUGE on known strings, the
GSM8K gold continuation, and the records and aggregates score_items writes."""

from __future__ import annotations

import json

import pytest

from harness.engine import Engine
from harness.items import registry
from harness.items.rows import build_task_rows
from harness.requests import GenerationRequest, Item, LoglikelihoodRequest, LoglikelihoodResult
from harness.runs.score import score_items, split_by_row, task_entries
from harness.scoring import companions
from harness.scoring import records as scoring
from harness.scoring.companions import GoldContinuation, companion_scores, edit_distance
from harness.scoring.metrics import rouge_scores
from harness.spec import BuildOptions

from conftest import FIXTURES, reference_loglikelihood

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEADER = "Q: There are 15 trees in the grove. A: 21 - 15 = 6. The answer is 6.\n\n" * 3
# (prompt, continuations scored after it); the second prompt ends in a space, as BIG-bench's "A: "
REQUESTS = [
    GenerationRequest(HEADER + "Q: What is 12 plus 30?\nA:", ("Q:",), 10,
                      score=(" 12 + 30 = 42. The answer is 42.", " 12 + 30 = 42.", " 42")),
    GenerationRequest(HEADER + "Q: 102 + 435 ->\nA: ", ("\n",), 6, score=("537", "537.0")),
    GenerationRequest("The quick brown", (), 8, score=(" fox jumps over the lazy dog.",)),
    GenerationRequest("Answer:", (), 0, score=(" A",)),  # nothing to generate: scored on its own
    GenerationRequest("12", (), 5, score=("",)),  # an empty continuation: log 1 = 0
]


def make_engine(model_and_tokenizer, **kwargs) -> Engine:
    model, tokenizer = model_and_tokenizer
    return Engine(model, tokenizer, progress=False, **kwargs)


def test_edit_distances_on_known_strings():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("flaw", "lawn") == 2
    assert edit_distance("", "abc") == edit_distance("abc", "") == 3
    assert edit_distance("537", "537") == 0
    assert edit_distance([5, 3, 7], [5, 7]) == 1  # token ids: one deletion
    assert edit_distance(["12", "+", "30"], ["30", "+", "12"]) == 2


def test_rouge_on_known_strings():
    assert rouge_scores("the cat sat", ["the cat sat"]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeLsum": 100.0}
    scores = rouge_scores("the cat sat", ["a dog", "the cat ran"])  # the best target counts
    # unigrams: 2 of 3 shared both ways; bigrams: "the cat" of 2; longest common subsequence: 2 of 3
    assert scores == pytest.approx({"rouge1": 200 / 3, "rouge2": 50.0, "rougeLsum": 200 / 3})


def test_target_logprob_equals_a_plain_forward_of_the_generation_prompt(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    results = make_engine(model_and_tokenizer, batch_size=4).generate_scored(REQUESTS)
    for request, result in zip(REQUESTS, results):
        prompt = tokenizer.encode(request.context)
        for continuation, score in zip(request.score, result.scores):
            whole = tokenizer.encode(request.context + continuation)
            # the generation's prompt tokens, then the continuation's: merged across the boundary when
            # the prompt's tokens survive (no trailing space), else the continuation tokenized alone
            tokens = whole[len(prompt):] if whole[: len(prompt)] == prompt else tokenizer.encode(continuation)
            assert score.num_tokens == len(tokens)
            assert score.num_bytes == len(continuation.encode("utf-8"))
            if not tokens:
                assert (score.logprob, score.is_greedy) == (0.0, True)
                continue
            logprob, greedy = reference_loglikelihood(model, prompt, tokens)
            assert score.logprob == pytest.approx(logprob, abs=1e-4), continuation
            assert score.is_greedy == greedy
    # the trailing-space prompt: "537" is scored after the " " token the generation was prompted with
    assert results[1].scores[0].num_tokens == len(tokenizer.encode("537"))


def test_target_logprob_equals_engine_loglikelihood_without_trailing_space(model_and_tokenizer):
    engine = make_engine(model_and_tokenizer, batch_size=4)
    scored = engine.generate_scored([REQUESTS[0], REQUESTS[2]])
    for request, result in zip([REQUESTS[0], REQUESTS[2]], scored):
        plain = engine.loglikelihood([LoglikelihoodRequest(request.context, c) for c in request.score])
        assert [s.logprob for s in result.scores] == pytest.approx([p.logprob for p in plain], abs=1e-4)
        assert [s.num_tokens for s in result.scores] == [p.num_tokens for p in plain]


def test_scores_reuse_the_prompt_cache_and_agree_with_the_plain_path(model_and_tokenizer):
    shared = make_engine(model_and_tokenizer, batch_size=8)
    plain = make_engine(model_and_tokenizer, batch_size=8, prefix_cache=False)
    texts_only = make_engine(model_and_tokenizer, batch_size=8)
    a, b = shared.generate_scored(REQUESTS), plain.generate_scored(REQUESTS)
    texts = texts_only.generate([GenerationRequest(r.context, r.stop, r.max_new_tokens) for r in REQUESTS])
    assert [r.text for r in a] == [r.text for r in b] == texts  # scoring never changes a generation
    for x, y in zip(a, b):
        assert [s.logprob for s in x.scores] == pytest.approx([s.logprob for s in y.scores], abs=1e-4)
        assert [s.is_greedy for s in x.scores] == [s.is_greedy for s in y.scores]
    # on the prompt's cache the continuations cost only their own tokens (one forward for a row's
    # continuations that are prefixes of another): beside generating, at most their longest token
    # count per row, plus the prompt of the request with nothing to generate
    extra = shared.tokens_forwarded - texts_only.tokens_forwarded
    longest = [max(len(shared._continuation_tokens(r.context, c)) for c in r.score) for r in REQUESTS]
    assert 0 < extra <= sum(longest[:3]) + len(shared.encode("Answer:")) + longest[3]
    assert plain.tokens_forwarded > shared.tokens_forwarded + 3 * len(shared.encode(HEADER)) // 2
    # naive accounting is the same either way: each continuation as a log-likelihood request of its own
    assert shared.tokens_naive == plain.tokens_naive


def test_scores_are_batch_size_invariant(model_and_tokenizer):
    requests = REQUESTS * 2 + [GenerationRequest(HEADER + f"Q: What is {i} plus 1?\nA:", ("Q:",), 6 + i,
                                                 score=(f" {i} + 1 = {i + 1}. The answer is {i + 1}.",))
                               for i in range(6)]
    one = make_engine(model_and_tokenizer, batch_size=1).generate_scored(requests)
    many = make_engine(model_and_tokenizer, batch_size=16).generate_scored(requests)
    auto = make_engine(model_and_tokenizer, batch_size="auto").generate_scored(requests)
    for other in (many, auto):
        assert [r.text for r in one] == [r.text for r in other]
        for x, y in zip(one, other):
            assert [s.logprob for s in x.scores] == pytest.approx([s.logprob for s in y.scores], abs=1e-4)


def test_final_answer_span_is_scored_given_the_gold_reasoning(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    request = REQUESTS[0]
    [result] = make_engine(model_and_tokenizer, batch_size=2).generate_scored([request])
    whole, reasoning = result.scores[0], result.scores[1]
    context = tokenizer.encode(request.context + request.score[1])
    span = tokenizer.encode(request.context + request.score[0])[len(context):]
    expected, _ = reference_loglikelihood(model, context, span)
    assert whole.logprob - reasoning.logprob == pytest.approx(expected, abs=1e-4)
    assert whole.num_tokens - reasoning.num_tokens == len(span)


def test_companion_scores_by_hand():
    gold = GoldContinuation((" 40 + 2 = 42. The answer is 42.",), final_answer=" The answer is 42.")
    assert gold.score_requests() == (" 40 + 2 = 42. The answer is 42.", " 40 + 2 = 42.")
    assert companions.metric_names(gold) == ("target_logprob", "target_logprob_per_token", "final_answer_logprob",
                                   "token_edit_distance", "char_edit_distance")
    results = [LoglikelihoodResult(-12.0, 16, 31, False), LoglikelihoodResult(-9.5, 10, 13, False)]
    words = lambda text: text.split()  # noqa: E731 - any tokenizer: here words
    metrics, fields = companion_scores(gold, results, "41", ["42"], words)
    assert metrics == {"target_logprob": -12.0, "target_logprob_per_token": -0.75, "final_answer_logprob": -2.5,
                       "token_edit_distance": 1.0, "char_edit_distance": 1.0}
    assert fields == {"target_logprobs": [-12.0], "target_num_tokens": [16], "target_is_greedy": [False],
                      "final_answer_num_tokens": 6}
    # several accepted answers: the most probable continuation, the nearest answer
    gold = GoldContinuation(("537", "537.0"))
    results = [LoglikelihoodResult(-3.0, 2, 3, False), LoglikelihoodResult(-2.0, 4, 5, True)]
    metrics, fields = companion_scores(gold, results, "53", [" 537", "537.0 "], list)
    assert metrics == {"target_logprob": -2.0, "target_logprob_per_token": -0.5,
                       "token_edit_distance": 1.0, "char_edit_distance": 1.0}
    assert fields["target_num_tokens"] == [2, 4]
    with pytest.raises(ValueError, match="2 log-likelihoods for 1 scored continuations"):
        companion_scores(GoldContinuation(("x",)), results, "", ["x"], list)


def test_gold_continuations_of_each_family():
    specs = registry.all_specs()
    doc = json.loads((FIXTURES / "data/gsm8k/test.jsonl").read_text().splitlines()[1])
    item = Item(task="gsm8k", doc_id=1, context="Q: ...\nA:", targets=("3",), solution=doc["answer"])
    assert companions.gold_continuation(specs["gsm8k"], item) == GoldContinuation(
        (" It takes 2/2=1 bolt of white fiber. So the total amount of fabric is 2+1=3 bolts of fabric. The answer is 3.",),
        final_answer=" The answer is 3.",
    )
    assert companions.gold_continuation(specs["gsm8k:fewshot"], item) == GoldContinuation(
        (" It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total amount of fabric is 2+1=<<2+1=3>>3 bolts of fabric\n#### 3",),
        final_answer="#### 3",
    )
    # BIG-bench: the target right after the prompt, as a shot's answer follows its input
    bb = Item(task="bigbench:x", doc_id=0, context="\nQ: 1 + 1\nA: ", targets=("2", "2.0"))
    assert companions.gold_continuation(specs["bigbench"], bb) == GoldContinuation(("2", "2.0"))
    # a family without its own rule: lm-eval's target delimiter, a space unless one is there already
    assert companions.answer_continuation("Answer:", "Paris") == " Paris"
    assert companions.answer_continuation("Answer: ", "Paris") == "Paris"
    assert companions.answer_continuation("Answer:", "\nParis") == "\nParis"


def test_score_items_records_and_aggregates_the_companions(model_and_tokenizer):
    opts = BuildOptions(data_dir=FIXTURES / "data", limit=2)
    built = build_task_rows(registry.resolve(["gsm8k", "bigbench:modified_arithmetic"]), opts)
    engine = make_engine(model_and_tokenizer, batch_size=4)
    for task in built:
        items = [item for items in task.rows.values() for item in items]
        records = score_items(engine, task.spec, items)
        for item, record in zip(items, records):
            gold = companions.gold_continuation(task.spec, item)
            [generated] = engine.generate_scored([GenerationRequest(item.context, item.stop, item.max_new_tokens,
                                                                    score=gold.score_requests(),
                                                                    until_settled=scoring.answer_settled(task.spec, item))])
            assert record["generation"] == generated.text
            assert record["metrics"]["target_logprob"] == pytest.approx(max(s.logprob for s in generated.scores[: len(gold.texts)]), abs=1e-4)
            answer = record["extracted"].get("answer", record["extracted"].get("flexible"))
            answer = "" if answer == "[invalid]" else answer
            assert record["metrics"]["char_edit_distance"] == min(edit_distance(answer, t.strip()) for t in item.targets)
            assert record["metrics"]["token_edit_distance"] == min(
                edit_distance(engine.tokenize(answer), engine.tokenize(t.strip())) for t in item.targets)
        entries = task_entries(task, split_by_row(task, records))
        top = entries[task.selection.label]["metrics"]
        assert {"target_logprob", "target_logprob_per_token", "token_edit_distance", "char_edit_distance"} <= set(top)
        assert ("final_answer_logprob" in top) == (task.spec.family == "gsm8k")
        assert top["target_logprob"]["random_baseline"] is None and top["char_edit_distance"]["higher_is_better"] is False
        values = [r["metrics"]["target_logprob"] for r in records]
        assert top["target_logprob"]["value"] == pytest.approx(sum(values) / len(values))
    # a caller with text only (no scored continuations) gets records without companions, and rows without them
    spec, [item] = built[0].spec, built[0].rows["gsm8k"][:1]
    record = scoring.score_generation(spec, item, "The answer is 18.", scoring.row_metrics(spec, [item])[0])
    assert "target_logprob" not in record["metrics"]
    row = scoring.aggregate_row([item], [record], scoring.row_metrics(spec, [item])[0])
    assert "target_logprob" not in row and "exact_match_strict" in row
