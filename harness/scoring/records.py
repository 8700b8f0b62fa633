"""Engine outputs → per-item records → per-row aggregates.

A record keeps everything needed to recompute any metric later without a model (the per-choice
log-likelihoods of every item, the raw generation), plus the per-item metric values.  A generative
item is scored by the extractor and scorer its task names (harness.scoring.registry), never by
asking which family built it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

from harness.requests import AnswerSettled, GenerationResult, Item, LoglikelihoodResult
from harness.scoring import companions, extraction, metrics, registry
from harness.spec import TaskSpec


def prompt_sha256(context: str) -> str:
    return hashlib.sha256(context.encode("utf-8")).hexdigest()


def row_metrics(spec: TaskSpec, items: Sequence[Item]) -> tuple[tuple[str, ...], str]:
    """The metrics a row reports and its primary metric (BIG-bench decides per subtask)."""
    if items and items[0].metrics:
        names, primary = items[0].metrics, items[0].primary_metric
    else:
        names, primary = tuple(spec.metrics), spec.primary_metric
    return names + _companion_names(spec, items, names), primary


def _companion_names(spec: TaskSpec, items: Sequence[Item], names: tuple[str, ...]) -> tuple[str, ...]:
    """A generative row also reports the continuous companions of its exact match (harness.scoring.companions)."""
    if not items or items[0].choices:
        return ()
    return tuple(m for m in companions.metric_names(companions.gold_continuation(spec, items[0])) if m not in names)


def score_multiple_choice(item: Item, results: Sequence[LoglikelihoodResult]) -> dict[str, Any]:
    logprobs = [r.logprob for r in results]
    scores = metrics.multiple_choice_scores(logprobs, item.gold, item.choices)
    if item.choice_texts:
        # lm-eval (0.3.0 and 0.4.13) length-normalises by the choice text without the target
        # delimiter (" " + text is scored, len(text) divides): the family gives those texts.
        texts = item.choice_texts
        scores["acc_norm"] = metrics.acc_norm(logprobs, item.gold, [len(t) for t in texts])
        scores["acc_bytes"] = metrics.acc_bytes(logprobs, item.gold, [len(t.encode("utf-8")) for t in texts])
    return {
        "task": item.task,
        "doc_id": item.doc_id,
        "prompt_sha256": prompt_sha256(item.context),
        "choices": list(item.choices),
        "choice_logprobs": logprobs,
        "choice_num_tokens": [r.num_tokens for r in results],
        "choice_is_greedy": [r.is_greedy for r in results],
        "gold": item.gold,
        "pred": max(range(len(logprobs)), key=lambda j: (logprobs[j], -j)),
        "metrics": scores,
    }


def score_loglikelihood(item: Item, result: LoglikelihoodResult) -> dict[str, Any]:
    """A single-continuation item (LAMBADA): ``acc`` = the continuation is the greedy one.

    The record has the multiple-choice record's shape with one choice, so its log-likelihood stays
    where NaN checks and re-scoring look; perplexity is a row aggregate of ``choice_logprobs[0]``.
    """
    return {
        "task": item.task,
        "doc_id": item.doc_id,
        "prompt_sha256": prompt_sha256(item.context),
        "choices": list(item.choices),
        "choice_logprobs": [result.logprob],
        "choice_num_tokens": [result.num_tokens],
        "choice_is_greedy": [result.is_greedy],
        "metrics": {"acc": float(result.is_greedy)},
    }


def answer_settled(spec: TaskSpec, item: Item) -> AnswerSettled | None:
    """What tells the engine that more tokens cannot change ``item``'s scored answer, if the task's
    extractor has such a rule (BIG-bench's); otherwise decoding runs to its stops and max_new_tokens."""
    settled = registry.generation_rules(spec).extractor.settled
    return settled(item) if settled is not None else None


def score_generation(
    spec: TaskSpec,
    item: Item,
    generation: str | GenerationResult,
    row: tuple[str, ...],
    tokenize: Callable[[str], Sequence[int]] | None = None,
) -> dict[str, Any]:
    """A generative item's record.  Given a ``GenerationResult`` with the log-likelihoods of the
    item's gold continuation (``companions.gold_continuation(...).score_requests()``) and the model's
    ``tokenize``, the record also has the continuous companions (harness.scoring.companions)."""
    result = generation if isinstance(generation, GenerationResult) else GenerationResult(generation)
    rules = registry.generation_rules(spec)
    answer = rules.extractor.read(item, result.text)
    extracted, scores = rules.scorer.score(answer, result.text, item, row)
    record = {
        "task": item.task,
        "doc_id": item.doc_id,
        "prompt_sha256": prompt_sha256(item.context),
        "generation": result.text,
        "extracted": extracted,
        "target": item.targets[0] if len(item.targets) == 1 else list(item.targets),
        "metrics": scores,
    }
    if result.scores:
        if tokenize is None:
            raise ValueError("scoring companions needs the model's tokenize function for the token edit distance")
        answer = extracted.get(rules.scorer.companion_answer, next(iter(extracted.values()), ""))
        answer = "" if answer == extraction.INVALID_ANSWER else answer  # nothing extracted: an empty answer
        gold = rules.gold_continuation(item)
        values, fields = companions.companion_scores(gold, result.scores, answer, item.targets, tokenize)
        scores.update(values)
        record.update(fields)
    return record


def aggregate_row(items: Sequence[Item], records: Sequence[dict[str, Any]], row: tuple[str, ...]) -> dict[str, dict]:
    """Mean ± stderr of every per-item metric, corpus BLEU, and each metric's random baseline."""
    num_choices = [len(item.choices) for item in items]
    # single-continuation rows (LAMBADA) have no choices to guess among: their own baselines
    single_continuation = bool(items) and items[0].is_loglikelihood
    out: dict[str, dict] = {}
    for name in row:
        if name in companions.COMPANION_METRICS and not all(name in r["metrics"] for r in records):
            continue  # generated without the gold continuation's log-likelihoods: no companions
        if name == "bleu":
            responses = [r["extracted"]["answer"] for r in records]
            agg = metrics.aggregate_bleu(responses, [list(item.targets) for item in items])
        elif name == "perplexity":
            agg = metrics.aggregate_perplexity([r["choice_logprobs"][0] for r in records])
        else:
            agg = metrics.aggregate_mean([r["metrics"][name] for r in records])
        if single_continuation:
            baseline = metrics.loglikelihood_random_baseline(name)
        else:
            baseline = metrics.random_baseline(name, num_choices)
        out[name] = _metric_entry(name, agg, baseline)
    return out


def aggregate_group(rows: dict[str, dict[str, dict]], sizes: dict[str, int]) -> dict[str, dict]:
    """A parent row (``mmlu``, ``bigbench:modified_arithmetic``): item-weighted mean of each metric
    shared by all its rows, plus ``<metric>_macro``, the unweighted mean over rows."""
    shared = set.intersection(*(set(r) for r in rows.values())) if rows else set()
    out: dict[str, dict] = {}
    total = sum(sizes.values())
    for name in sorted(shared, key=lambda m: list(next(iter(rows.values()))).index(m)):
        entries = [(rows[r][name], sizes[r]) for r in rows]
        weighted = sum(e["value"] * n for e, n in entries) / total
        # stderr of a weighted mean of independent row means: sqrt(sum (w_i se_i)^2)
        ses = [e["stderr"] for e, _ in entries]
        stderr = None if any(s is None for s in ses) else sum((s * n / total) ** 2 for s, (_, n) in zip(ses, entries)) ** 0.5
        baselines = [e["random_baseline"] for e, _ in entries]
        baseline = None if any(b is None for b in baselines) else sum(b * n for b, (_, n) in zip(baselines, entries)) / total
        out[name] = _metric_entry(name, metrics.Aggregate(weighted, stderr, total), baseline)
        macro = metrics.macro_aggregate([metrics.Aggregate(e["value"], e["stderr"], e["n"]) for e, _ in entries])
        macro_baseline = None if baseline is None else sum(baselines) / len(baselines)
        out[f"{name}_macro"] = _metric_entry(name, macro, macro_baseline)
    return out


def _metric_entry(name: str, agg: "metrics.Aggregate", baseline: float | None) -> dict[str, Any]:
    return {
        "value": agg.value,
        "stderr": agg.stderr,
        "n": agg.n,
        "random_baseline": baseline,
        "higher_is_better": metrics.HIGHER_IS_BETTER[name],
    }
