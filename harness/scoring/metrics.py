"""Per-item scores and their aggregates: plain functions over log-probabilities and strings.

Multiple choice: from one item's per-choice log-probabilities we return accuracy and its
continuous companions (probability of the gold choice, Brier score) together, as OLMo's
in-loop evals do, so a metric can be recomputed later from the stored log-probabilities.
Accuracy variants follow lm-evaluation-harness 0.4.13 (``api/task.py``: ``acc``, ``acc_norm``
divides by the choice's length in characters, ``acc_bytes`` by its UTF-8 bytes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sacrebleu.metrics import BLEU

from harness.spec import ROUGE_METRICS

# What every multiple-choice row reports, from the same per-choice log-likelihoods.

HIGHER_IS_BETTER: dict[str, bool] = {
    "acc": True,
    "acc_norm": True,
    "acc_bytes": True,
    "acc_macro": True,
    "correct_choice_prob": True,
    "brier_score": False,
    "exact_match": True,
    "exact_match_strict": True,
    "exact_match_flexible": True,
    "exact_match_numeric": True,
    "numeric_match": True,
    "bleu": True,
    "perplexity": False,
    # continuous companions of a generative item's exact match (harness.scoring.companions)
    "target_logprob": True,
    "target_logprob_per_token": True,
    "final_answer_logprob": True,
    "token_edit_distance": False,
    "char_edit_distance": False,
    # BIG-bench's rouge, where a task.json lists it
    "rouge1": True,
    "rouge2": True,
    "rougeLsum": True,
}

# BIG-bench's "rouge" (t5.evaluation.metrics.rouge): F-measures x 100

# What a row of single-continuation items (LAMBADA) can report: ``acc`` (the continuation is the
# greedy one) and ``perplexity`` of the continuations, as lm-evaluation-harness 0.4.13 defines them.
LOGLIKELIHOOD_METRICS = ("acc", "perplexity")

_CHOICE_METRICS = ("acc", "acc_norm", "acc_bytes", "acc_macro", "correct_choice_prob")
_GENERATION_METRICS = (
    "exact_match",
    "exact_match_strict",
    "exact_match_flexible",
    "exact_match_numeric",
    "numeric_match",
    "bleu",
    *ROUGE_METRICS,
)


@dataclass(frozen=True)
class Aggregate:
    value: float
    stderr: float | None  # None when it cannot be estimated (fewer than two items)
    n: int  # items behind the value


def first_argmax(scores: Sequence[float]) -> int:
    """Index of the largest score; ties go to the first index, like ``numpy.argmax``."""
    if not scores:
        raise ValueError("first_argmax of an empty sequence")
    best = 0
    for index, score in enumerate(scores):
        if score > scores[best]:
            best = index
    return best


def _check_gold(choice_logprobs: Sequence[float], gold: int) -> None:
    if not 0 <= gold < len(choice_logprobs):
        raise ValueError(f"gold index {gold} out of range for {len(choice_logprobs)} choices")


def acc(choice_logprobs: Sequence[float], gold: int) -> float:
    _check_gold(choice_logprobs, gold)
    return float(first_argmax(choice_logprobs) == gold)


def _length_normalised_acc(choice_logprobs: Sequence[float], gold: int, lengths: Sequence[int]) -> float:
    _check_gold(choice_logprobs, gold)
    if len(lengths) != len(choice_logprobs):
        raise ValueError(f"{len(lengths)} choice lengths for {len(choice_logprobs)} choices")
    if any(length <= 0 for length in lengths):
        # lm-eval would divide by zero here and numpy's argmax would then pick a nan or -inf.
        raise ValueError("an empty choice cannot be length-normalised")
    return float(first_argmax([lp / length for lp, length in zip(choice_logprobs, lengths)]) == gold)


def acc_norm(choice_logprobs: Sequence[float], gold: int, choice_lengths_chars: Sequence[int]) -> float:
    """Accuracy of the argmax of logprob / len(choice) in characters (lm-eval's ``acc_norm``)."""
    return _length_normalised_acc(choice_logprobs, gold, choice_lengths_chars)


def acc_bytes(choice_logprobs: Sequence[float], gold: int, choice_lengths_bytes: Sequence[int]) -> float:
    """Accuracy of the argmax of logprob / UTF-8 byte length of the choice (lm-eval's ``acc_bytes``)."""
    return _length_normalised_acc(choice_logprobs, gold, choice_lengths_bytes)


def choice_probabilities(choice_logprobs: Sequence[float]) -> list[float]:
    """Softmax over the choices' summed log-probabilities (the model's distribution restricted to them)."""
    if not choice_logprobs:
        raise ValueError("no choices")
    # Subtracting the max keeps exp() in range: summed logprobs of long choices reach -1e3 and below.
    top = max(choice_logprobs)
    if top == -math.inf:
        raise ValueError("every choice has log-probability -inf")
    weights = [math.exp(lp - top) for lp in choice_logprobs]
    total = math.fsum(weights)
    return [weight / total for weight in weights]


def correct_choice_prob(choice_logprobs: Sequence[float], gold: int) -> float:
    _check_gold(choice_logprobs, gold)
    return choice_probabilities(choice_logprobs)[gold]


def brier_score(choice_logprobs: Sequence[float], gold: int) -> float:
    """Σ_j (p_j − y_j)² with p the softmax over choices and y the one-hot gold (0 best, 2 worst)."""
    _check_gold(choice_logprobs, gold)
    probabilities = choice_probabilities(choice_logprobs)
    return math.fsum((p - (1.0 if j == gold else 0.0)) ** 2 for j, p in enumerate(probabilities))


def multiple_choice_scores(choice_logprobs: Sequence[float], gold: int, choices: Sequence[str]) -> dict[str, float]:
    """All five per-item multiple-choice scores from one item's choice log-probabilities."""
    if len(choices) != len(choice_logprobs):
        raise ValueError(f"{len(choices)} choices but {len(choice_logprobs)} log-probabilities")
    return {
        "acc": acc(choice_logprobs, gold),
        "acc_norm": acc_norm(choice_logprobs, gold, [len(choice) for choice in choices]),
        "acc_bytes": acc_bytes(choice_logprobs, gold, [len(choice.encode("utf-8")) for choice in choices]),
        "correct_choice_prob": correct_choice_prob(choice_logprobs, gold),
        "brier_score": brier_score(choice_logprobs, gold),
    }


def _sample_std(values: Sequence[float]) -> float:
    mean = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((x - mean) ** 2 for x in values) / (len(values) - 1))


def aggregate_mean(values: Sequence[float]) -> Aggregate:
    """Mean with lm-eval's ``mean_stderr``: sample std (ddof=1) / sqrt(n); None below two values."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to aggregate")
    stderr = _sample_std(values) / math.sqrt(n) if n >= 2 else None
    return Aggregate(value=math.fsum(values) / n, stderr=stderr, n=n)


def _bleu_scorer() -> BLEU:
    # BIG-bench scores bleu through t5.evaluation.metrics.bleu: sacrebleu with the "intl"
    # tokenizer, exp smoothing, no effective order, case kept.  lm-eval's bleu uses "13a".
    return BLEU(tokenize="intl", smooth_method="exp", lowercase=False, force=False, effective_order=False)


def _reference_streams(references_list: Sequence[Sequence[str]]) -> list[list[str]]:
    """Items' reference lists as sacrebleu's streams, shorter lists padded with their first
    reference (BIG-bench's ``bleu_fn``; a repeated reference changes no BLEU statistic)."""
    if any(not references for references in references_list):
        raise ValueError("every item needs at least one reference")
    width = max(len(references) for references in references_list)
    padded = [list(references) + [references[0]] * (width - len(references)) for references in references_list]
    return [[references[i] for references in padded] for i in range(width)]


def aggregate_bleu(
    predictions: Sequence[str],
    references_list: Sequence[Sequence[str]],
    n_boot: int = 1000,
    seed: int = 1234,
) -> Aggregate:
    """Corpus BLEU (0–100) of the predictions, with a bootstrap standard error over items.

    The stderr is the sample std of corpus BLEU over ``n_boot`` resamples of the items with
    replacement (lm-eval's ``bootstrap_stderr`` idea), drawn from a fixed ``seed`` so that it
    is reproducible.  Resamples are scored from per-item sufficient statistics, which sum to the
    corpus statistics, instead of re-tokenising the corpus ``n_boot`` times.
    """
    n = len(predictions)
    if n == 0:
        raise ValueError("no predictions to score")
    if len(references_list) != n:
        raise ValueError(f"{n} predictions but {len(references_list)} reference lists")
    scorer = _bleu_scorer()
    streams = _reference_streams(references_list)
    value = scorer.corpus_score(list(predictions), streams).score
    if n < 2 or n_boot < 2:
        return Aggregate(value=value, stderr=None, n=n)

    # Per item: [sys_len, ref_len, correct_1..4, total_1..4].
    item_stats = []
    for i, prediction in enumerate(predictions):
        item = scorer.corpus_score([prediction], [[stream[i]] for stream in streams])
        item_stats.append([item.sys_len, item.ref_len, *item.counts, *item.totals])
    stats = np.asarray(item_stats, dtype=np.int64)
    order = (stats.shape[1] - 2) // 2

    rng = np.random.default_rng(seed)
    resampled_scores = []
    for indices in rng.integers(0, n, size=(n_boot, n)):
        summed = stats[indices].sum(axis=0).tolist()
        score = BLEU.compute_bleu(
            correct=summed[2 : 2 + order],
            total=summed[2 + order :],
            sys_len=summed[0],
            ref_len=summed[1],
            smooth_method="exp",
            effective_order=False,
            max_ngram_order=order,
        ).score
        resampled_scores.append(score)
    return Aggregate(value=value, stderr=_sample_std(resampled_scores), n=n)


def rouge_scores(response: str, targets: Sequence[str]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-Lsum F-measures (0-100) of one response against its best target.

    As t5.evaluation.metrics.rouge, which BIG-bench calls: rouge_score's scorer without stemming,
    " . " turned into a sentence break for rougeLsum; with several targets, each score is the
    maximum over them (BIG-bench's rouge_fn).  The row value is the mean over items.
    """
    from rouge_score import rouge_scorer  # an lm-eval dependency; imported here, as only rouge tasks need it

    if not targets:
        raise ValueError("rouge needs at least one target")
    scorer = rouge_scorer.RougeScorer(rouge_types=list(ROUGE_METRICS))
    prepare = lambda text: text.replace(" . ", " .\n")  # noqa: E731
    best = {name: 0.0 for name in ROUGE_METRICS}
    for target in targets:
        scores = scorer.score(target=prepare(target), prediction=prepare(response))
        for name in ROUGE_METRICS:
            best[name] = max(best[name], 100.0 * scores[name].fmeasure)
    return best


def random_baseline(metric: str, num_choices: Sequence[int]) -> float | None:
    """Expected score of uniform guessing; None for a metric we emit no baseline for.

    Choice metrics average over items, each with ``num_choices[i]`` choices: accuracy and the
    gold probability are 1/C; the Brier score of p_j = 1/C is (1 − 1/C)² + (C − 1)/C² = (C − 1)/C.
    ``acc_macro`` uses the same item mean, exact when every group has the same number of choices.
    Generation metrics score 0 for a guess drawn from nothing.
    """
    if metric in _GENERATION_METRICS:
        return 0.0
    if metric not in _CHOICE_METRICS and metric != "brier_score":
        return None
    if not num_choices:
        raise ValueError(f"random_baseline({metric!r}) needs the number of choices of each item")
    if any(c < 1 for c in num_choices):
        raise ValueError("every item needs at least one choice")
    if metric == "brier_score":
        return math.fsum((c - 1) / c for c in num_choices) / len(num_choices)
    return math.fsum(1 / c for c in num_choices) / len(num_choices)


def loglikelihood_random_baseline(metric: str) -> float | None:
    """Chance level of a single-continuation metric: a guessing model almost never (≈ 1/vocabulary
    per token) makes the target its greedy continuation, so ``acc`` is 0; the perplexity of a
    guess depends on the tokenizer, so it has none."""
    if metric not in LOGLIKELIHOOD_METRICS:
        raise ValueError(f"{metric!r} is not a single-continuation metric ({', '.join(LOGLIKELIHOOD_METRICS)})")
    return 0.0 if metric == "acc" else None


def aggregate_perplexity(logprobs: Sequence[float]) -> Aggregate:
    """exp(−mean log-likelihood) over items (lm-eval's ``perplexity`` aggregation: each item's
    summed continuation log-likelihood counts once, whatever its number of tokens).

    lm-eval bootstraps its stderr; ours is the delta method's exp(−m)·se(m), with se(m) the
    ``aggregate_mean`` stderr of the log-likelihoods: deterministic, and the same for large n.
    """
    mean = aggregate_mean(logprobs)
    try:
        value = math.exp(-mean.value)
    except OverflowError:  # a mean below −709 nats (an untrained model): beyond float range
        value = math.inf
    return Aggregate(value=value, stderr=None if mean.stderr is None else value * mean.stderr, n=mean.n)


def macro_aggregate(aggs: Sequence[Aggregate]) -> Aggregate:
    """Mean of independent group means; stderr = sqrt(Σ se_i²) / k, n = total items.

    The stderr is None when any group's is (a group of one item has no variance estimate).
    """
    if not aggs:
        raise ValueError("no groups to average")
    k = len(aggs)
    value = math.fsum(agg.value for agg in aggs) / k
    if any(agg.stderr is None for agg in aggs):
        stderr = None
    else:
        stderr = math.sqrt(math.fsum(agg.stderr**2 for agg in aggs)) / k  # type: ignore[operator]
    return Aggregate(value=value, stderr=stderr, n=sum(agg.n for agg in aggs))
