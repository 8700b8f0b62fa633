"""Per-item multiple-choice scores and aggregates, against hand-computed values and lm-eval / sacrebleu."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu

from harness.scoring.metrics import (
    HIGHER_IS_BETTER,
    Aggregate,
    acc,
    acc_bytes,
    acc_norm,
    aggregate_bleu,
    aggregate_mean,
    brier_score,
    choice_probabilities,
    correct_choice_prob,
    first_argmax,
    macro_aggregate,
    multiple_choice_scores,
    random_baseline,
)

# --- multiple choice -------------------------------------------------------------------------


def test_four_choice_item_by_hand():
    logprobs = [-1.0, -2.0, -0.5, -3.0]
    # Softmax, shifted by the max (-0.5): exp(-0.5)=0.6065306597, exp(-1.5)=0.2231301601,
    # exp(0)=1, exp(-2.5)=0.0820849986; sum = 1.9117458185.
    # p = [0.3172653257, 0.1167153907, 0.5230820909, 0.0429371927]
    # Brier (gold 0) = (0.3172653257-1)^2 + 0.1167153907^2 + 0.5230820909^2 + 0.0429371927^2
    #                = 0.4661267 + 0.0136224 + 0.2736149 + 0.0018436 = 0.7552076
    scores = multiple_choice_scores(logprobs, 0, ["A", "B", "C", "D"])
    assert scores["acc"] == 0.0  # argmax is choice 2
    assert scores["acc_norm"] == 0.0  # equal lengths: same argmax
    assert scores["acc_bytes"] == 0.0
    assert scores["correct_choice_prob"] == pytest.approx(0.6065306597 / 1.9117458185, abs=1e-9)
    assert scores["correct_choice_prob"] == pytest.approx(0.3172653257, abs=1e-9)
    assert scores["brier_score"] == pytest.approx(0.7552076, abs=1e-7)
    assert set(scores) == {"acc", "acc_norm", "acc_bytes", "correct_choice_prob", "brier_score"}

    # Gold = the argmax choice.
    assert acc(logprobs, 2) == 1.0
    assert correct_choice_prob(logprobs, 2) == pytest.approx(1 / 1.9117458185, abs=1e-9)


def test_acc_norm_flips_answer_when_lengths_differ():
    # Raw: -6.0 < -2.0, so acc picks choice 1.  Per character: -6.0/12 = -0.5 > -2.0/2 = -1.0,
    # so acc_norm picks choice 0.
    logprobs = [-6.0, -2.0]
    choices = ["abcdefghijkl", "ab"]
    scores = multiple_choice_scores(logprobs, 0, choices)
    assert scores["acc"] == 0.0
    assert scores["acc_norm"] == 1.0
    assert scores["acc_bytes"] == 1.0  # ASCII: bytes == characters
    assert acc_norm(logprobs, 1, [12, 2]) == 0.0


def test_acc_bytes_differs_from_acc_norm_for_non_ascii_choices():
    # "日本" is 2 characters but 6 UTF-8 bytes; "abc" is 3 and 3.
    # chars: -2.4/2 = -1.2 < -3.0/3 = -1.0 → choice 1;  bytes: -2.4/6 = -0.4 > -1.0 → choice 0.
    logprobs = [-2.4, -3.0]
    choices = ["日本", "abc"]
    scores = multiple_choice_scores(logprobs, 0, choices)
    assert scores["acc"] == 1.0
    assert scores["acc_norm"] == 0.0
    assert scores["acc_bytes"] == 1.0
    assert acc_bytes(logprobs, 1, [6, 3]) == 0.0


def test_accuracies_match_numpy_argmax_like_lm_eval():
    # lm-eval's process_results: np.argmax(lls), np.argmax(lls / len), np.argmax(lls / bytes).
    rng = np.random.default_rng(0)
    choices = ["yes", "no", "perhaps", "ça dépend", "少し"]
    for _ in range(200):
        lls = rng.normal(-5.0, 3.0, size=len(choices)).round(1)  # rounding makes ties happen
        gold = int(rng.integers(len(choices)))
        chars = np.array([float(len(c)) for c in choices])
        byte_lengths = np.array([float(len(c.encode("utf-8"))) for c in choices])
        scores = multiple_choice_scores(lls.tolist(), gold, choices)
        assert scores["acc"] == float(np.argmax(lls) == gold)
        assert scores["acc_norm"] == float(np.argmax(lls / chars) == gold)
        assert scores["acc_bytes"] == float(np.argmax(lls / byte_lengths) == gold)


def test_ties_go_to_first_index():
    assert first_argmax([-1.0, -1.0, -2.0]) == 0
    assert first_argmax([-3.0, -1.0, -1.0]) == 1
    assert acc([-1.0, -1.0], 0) == 1.0
    assert acc([-1.0, -1.0], 1) == 0.0


def test_softmax_is_stable_for_very_negative_logprobs():
    # Naive exp(-1000) underflows to 0 for every choice; shifted, it is exp(0)=1 and exp(-1)=0.3678794412.
    probabilities = choice_probabilities([-1000.0, -1001.0])
    assert probabilities[0] == pytest.approx(1 / (1 + 0.3678794412), abs=1e-9)
    assert sum(probabilities) == pytest.approx(1.0)
    assert choice_probabilities([-math.inf, -2.0]) == [0.0, 1.0]
    assert brier_score([-1000.0, -math.inf], 0) == 0.0  # all mass on gold: perfect


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="out of range"):
        acc([-1.0, -2.0], 2)
    with pytest.raises(ValueError, match="empty choice"):
        multiple_choice_scores([-1.0, -2.0], 0, ["a", ""])
    with pytest.raises(ValueError, match="2 choices but 3"):
        multiple_choice_scores([-1.0, -2.0, -3.0], 0, ["a", "b"])
    with pytest.raises(ValueError, match="-inf"):
        choice_probabilities([-math.inf, -math.inf])


# --- aggregation -----------------------------------------------------------------------------


def test_aggregate_mean_by_hand_and_against_lm_eval():
    from lm_eval.api.metrics import mean_stderr

    # mean = 3/4 = 0.75; squared deviations 0.0625 + 0.5625 + 0.0625 + 0.0625 = 0.75;
    # sample variance 0.75 / 3 = 0.25, std 0.5; stderr 0.5 / sqrt(4) = 0.25.
    agg = aggregate_mean([1, 0, 1, 1])
    assert agg == Aggregate(value=0.75, stderr=0.25, n=4)
    assert agg.stderr == pytest.approx(mean_stderr([1, 0, 1, 1]), abs=1e-15)

    values = [0.1, 0.7, 0.2, 0.9, 0.35, 0.0]
    assert aggregate_mean(values).stderr == pytest.approx(mean_stderr(values), abs=1e-15)


def test_aggregate_mean_of_one_value_has_no_stderr():
    assert aggregate_mean([0.5]) == Aggregate(value=0.5, stderr=None, n=1)
    with pytest.raises(ValueError):
        aggregate_mean([])


def test_macro_aggregate_by_hand():
    # value (0.5 + 0.8) / 2 = 0.65; stderr sqrt(0.1^2 + 0.2^2) / 2 = sqrt(0.05) / 2 = 0.1118033989
    agg = macro_aggregate([Aggregate(0.5, 0.1, 10), Aggregate(0.8, 0.2, 30)])
    assert agg.value == pytest.approx(0.65)
    assert agg.stderr == pytest.approx(0.1118033989, abs=1e-10)
    assert agg.n == 40
    assert macro_aggregate([Aggregate(0.5, 0.1, 10), Aggregate(1.0, None, 1)]).stderr is None


def test_macro_aggregate_stderr_is_that_of_an_item_weighted_mean():
    # The macro mean is Σ_i w_x x over all items with weight w = 1/(k n_i) for an item of group i,
    # so Var = Σ_i n_i w_i² var_i (var_i: the group's sample variance), computed here from items.
    groups = [[1, 0, 1, 1], [0, 0, 1, 0, 1, 1]]
    k = len(groups)
    variance = sum(len(g) * (1 / (k * len(g))) ** 2 * np.var(g, ddof=1) for g in groups)
    macro = macro_aggregate([aggregate_mean(g) for g in groups])
    assert macro.value == pytest.approx((0.75 + 0.5) / 2)
    assert macro.stderr == pytest.approx(math.sqrt(variance), abs=1e-12)
    assert macro.n == 10


# --- BLEU ------------------------------------------------------------------------------------

PREDICTIONS = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "hello there general kenobi",
    "I like green eggs and ham",
    "it is raining cats and dogs today",
    "the meeting was moved to friday afternoon",
]
REFERENCES = [
    ["the cat is sitting on the mat", "a cat sat on the mat"],
    ["the quick brown fox jumped over the lazy dog"],
    ["hello there general kenobi", "greetings general kenobi", "hi general kenobi"],
    ["I do not like green eggs and ham"],
    ["it is raining heavily today"],
    ["the meeting has been moved to friday afternoon"],
]


def _padded_streams(references_list):
    # BIG-bench bleu_fn: pad with the first reference, then transpose into sacrebleu streams.
    width = max(len(r) for r in references_list)
    padded = [list(r) + [r[0]] * (width - len(r)) for r in references_list]
    return [[r[i] for r in padded] for i in range(width)]


def _sacrebleu_direct(predictions, references_list):
    return sacrebleu.corpus_bleu(
        predictions, _padded_streams(references_list), smooth_method="exp", tokenize="intl", use_effective_order=False
    ).score


def test_bleu_value_equals_sacrebleu_corpus_bleu():
    agg = aggregate_bleu(PREDICTIONS, REFERENCES, n_boot=50)
    assert agg.value == pytest.approx(_sacrebleu_direct(PREDICTIONS, REFERENCES), abs=1e-9)
    assert 0.0 < agg.value < 100.0
    assert agg.n == 6
    perfect = aggregate_bleu(["the cat sat on the mat", "hello world again"], [["the cat sat on the mat"], ["hello world again"]])
    assert perfect.value == pytest.approx(100.0)


def test_bleu_bootstrap_is_deterministic_and_matches_resampled_corpus_bleu():
    first = aggregate_bleu(PREDICTIONS, REFERENCES, n_boot=200, seed=1234)
    second = aggregate_bleu(PREDICTIONS, REFERENCES, n_boot=200, seed=1234)
    assert first == second
    assert first.stderr is not None and first.stderr > 0
    assert aggregate_bleu(PREDICTIONS, REFERENCES, n_boot=200, seed=7).stderr != first.stderr

    # Independent check: rescore every resample with sacrebleu from the raw strings.
    n_boot = 30
    rng = np.random.default_rng(1234)
    scores = []
    for indices in rng.integers(0, len(PREDICTIONS), size=(n_boot, len(PREDICTIONS))):
        scores.append(
            _sacrebleu_direct([PREDICTIONS[i] for i in indices], [REFERENCES[i] for i in indices])
        )
    expected = float(np.std(scores, ddof=1))
    assert aggregate_bleu(PREDICTIONS, REFERENCES, n_boot=n_boot, seed=1234).stderr == pytest.approx(expected, abs=1e-9)


def test_bleu_single_item_has_no_stderr():
    agg = aggregate_bleu(["the cat sat"], [["the cat sat on the mat"]])
    assert agg.stderr is None and agg.n == 1


# --- baselines and directions ----------------------------------------------------------------


def test_random_baselines():
    # Items with 4, 4 and 2 choices: mean of 1/C = (0.25 + 0.25 + 0.5) / 3 = 1/3.
    for metric in ("acc", "acc_norm", "acc_bytes", "correct_choice_prob"):
        assert random_baseline(metric, [4, 4, 2]) == pytest.approx(1 / 3)
    # Brier: mean of (C-1)/C = (0.75 + 0.75 + 0.5) / 3 = 2/3.
    assert random_baseline("brier_score", [4, 4, 2]) == pytest.approx(2 / 3)
    for metric in ("exact_match", "exact_match_strict", "exact_match_flexible", "exact_match_numeric", "numeric_match", "bleu"):
        assert random_baseline(metric, []) == 0.0
    assert random_baseline("perplexity", [4]) is None


def test_uniform_guess_brier_identity():
    # p_j = 1/C for every j: (1 - 1/C)^2 + (C-1) * (1/C)^2 = (C^2 - 2C + 1 + C - 1) / C^2 = (C-1)/C.
    for c in range(2, 8):
        uniform = [-1.7] * c  # equal logprobs → softmax is uniform
        for gold in (0, c - 1):
            assert brier_score(uniform, gold) == pytest.approx((c - 1) / c, abs=1e-12)
            assert correct_choice_prob(uniform, gold) == pytest.approx(1 / c, abs=1e-12)
        assert random_baseline("brier_score", [c]) == pytest.approx((c - 1) / c)
    assert brier_score([-1.0] * 4, 2) == pytest.approx(0.75)  # (1-0.25)^2 + 3 * 0.0625 = 0.5625 + 0.1875


def test_higher_is_better_covers_every_metric():
    assert set(HIGHER_IS_BETTER) == {
        "acc", "acc_norm", "acc_bytes", "acc_macro", "correct_choice_prob", "brier_score",
        "exact_match", "exact_match_strict", "exact_match_flexible", "exact_match_numeric",
        "numeric_match", "bleu", "perplexity", "rouge1", "rouge2", "rougeLsum",
        "target_logprob", "target_logprob_per_token", "final_answer_logprob", "token_edit_distance", "char_edit_distance",
    }  # fmt: skip
    assert [m for m, higher in HIGHER_IS_BETTER.items() if not higher] == [
        "brier_score", "perplexity", "token_edit_distance", "char_edit_distance"
    ]
    # continuous measures with no guessing level: the log-likelihood companions and edit distances
    no_chance_level = {"perplexity", "target_logprob", "target_logprob_per_token", "final_answer_logprob",
                       "token_edit_distance", "char_edit_distance"}
    for metric in HIGHER_IS_BETTER:
        assert (random_baseline(metric, [4]) is None) == (metric in no_chance_level), metric
