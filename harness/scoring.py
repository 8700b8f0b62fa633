"""Engine outputs → per-item records → per-row aggregates.

A record keeps everything needed to recompute any metric later without a model (the per-choice
log-likelihoods of every item, the raw generation), plus the per-item metric values.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

from harness import extraction, metrics
from harness.registry import TaskSpec
from harness.requests import Item, LoglikelihoodResult

def prompt_sha256(context: str) -> str:
    return hashlib.sha256(context.encode("utf-8")).hexdigest()


def row_metrics(spec: TaskSpec, items: Sequence[Item]) -> tuple[tuple[str, ...], str]:
    """The metrics a row reports and its primary metric (BIG-bench decides per subtask)."""
    if items and "metrics" in items[0].meta:
        return tuple(items[0].meta["metrics"]), items[0].meta["primary_metric"]
    return spec.metrics, spec.primary_metric


def score_multiple_choice(item: Item, results: Sequence[LoglikelihoodResult]) -> dict[str, Any]:
    logprobs = [r.logprob for r in results]
    scores = metrics.multiple_choice_scores(logprobs, item.gold, item.choices)
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


def _gsm8k_scores(item: Item, generation: str, extract: str) -> tuple[dict[str, str], dict[str, float]]:
    target = item.targets[0]
    strict = extraction.gsm8k_hash_answer(generation) if extract == "hash" else extraction.gsm8k_strict(generation)
    flexible = extraction.gsm8k_flexible(generation)
    extracted = {"strict": strict, "flexible": flexible}
    scores = {
        "exact_match_strict": float(extraction.lm_eval_exact_match(strict, target)),
        "exact_match_flexible": float(extraction.lm_eval_exact_match(flexible, target)),
        # our own: the flexible (last-number) answer compared by value, so "$1,000.00" == "1000"
        "exact_match_numeric": float(extraction.numeric_equal(flexible, target)),
    }
    return extracted, scores


def _bigbench_scores(item: Item, generation: str, row: tuple[str, ...]) -> tuple[dict[str, str], dict[str, float]]:
    response = extraction.bigbench_postprocess(generation, item.meta.get("stop_string"), item.meta.get("output_regex"))
    scores = {"exact_match": float(extraction.bigbench_exact_match(response, item.targets))}
    if "numeric_match" in row:
        scores["numeric_match"] = float(extraction.bigbench_numeric_match(response, item.targets))
    return {"answer": response}, scores


# family -> (spec, item, generation, row metrics) -> (extracted answers, per-item metric values);
# a new generative family adds its scorer here
GENERATION_SCORERS: dict[str, Callable[..., tuple[dict[str, str], dict[str, float]]]] = {
    "gsm8k": lambda spec, item, generation, row: _gsm8k_scores(item, generation, spec.options.get("extract", "cot")),
    "bigbench": lambda spec, item, generation, row: _bigbench_scores(item, generation, row),
}


def score_generation(spec: TaskSpec, item: Item, generation: str, row: tuple[str, ...]) -> dict[str, Any]:
    extracted, scores = GENERATION_SCORERS[spec.family](spec, item, generation, row)
    return {
        "task": item.task,
        "doc_id": item.doc_id,
        "prompt_sha256": prompt_sha256(item.context),
        "generation": generation,
        "extracted": extracted,
        "target": item.targets[0] if len(item.targets) == 1 else list(item.targets),
        "metrics": scores,
    }


def aggregate_row(items: Sequence[Item], records: Sequence[dict[str, Any]], row: tuple[str, ...]) -> dict[str, dict]:
    """Mean ± stderr of every per-item metric, corpus BLEU, and each metric's random baseline."""
    num_choices = [len(item.choices) for item in items]
    out: dict[str, dict] = {}
    for name in row:
        if name == "bleu":
            responses = [r["extracted"]["answer"] for r in records]
            agg = metrics.aggregate_bleu(responses, [list(item.targets) for item in items])
        else:
            agg = metrics.aggregate_mean([r["metrics"][name] for r in records])
        out[name] = _metric_entry(name, agg, metrics.random_baseline(name, num_choices))
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
