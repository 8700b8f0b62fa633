"""Generative scorers: an answer read from a generation → per-item metric values.

Each scorer takes the answer the task's extractor read (``answer``), the generation as the engine
returned it (``generation``; GSM8K's flexible match reads it again), the item (its targets) and the
row's metric names (``row``; BIG-bench reports numeric_match or ROUGE only where its task.json
lists them), and returns the extracted answers a record keeps and the metric values.  A task names
its scorer in its YAML (``scorer:``, harness.scoring.registry).  Pure functions over strings.
"""

from __future__ import annotations

from harness.requests import Item
from harness.scoring import extraction, metrics

Scores = tuple[dict[str, str], dict[str, float]]


def gsm8k_exact_match(answer: str, generation: str, item: Item, row: tuple[str, ...]) -> Scores:
    """lm-eval 0.4.13's gsm8k / gsm8k_cot: strict (``answer``, from the task's extractor) and flexible
    (the last number of the generation) exact match, and ours, the flexible answer compared by value."""
    target = item.targets[0]
    flexible = extraction.gsm8k_flexible(generation)
    scores = {
        "exact_match_strict": float(extraction.lm_eval_exact_match(answer, target)),
        "exact_match_flexible": float(extraction.lm_eval_exact_match(flexible, target)),
        # our own: the flexible (last-number) answer compared by value, so "$1,000.00" == "1000"
        "exact_match_numeric": float(extraction.numeric_equal(flexible, target)),
    }
    return {"strict": answer, "flexible": flexible}, scores


def bigbench_exact_match(answer: str, generation: str, item: Item, row: tuple[str, ...]) -> Scores:
    """BIG-bench 1.0.0's exact_str_match of the post-processed answer, plus numeric_match and ROUGE
    when the row reports them."""
    scores = {"exact_match": float(extraction.bigbench_exact_match(answer, item.targets))}
    if "numeric_match" in row:
        scores["numeric_match"] = float(extraction.bigbench_numeric_match(answer, item.targets))
    if any(name in row for name in metrics.ROUGE_METRICS):
        scores.update(metrics.rouge_scores(answer, item.targets))
    return {"answer": answer}, scores


def triviaqa_exact_match(answer: str, generation: str, item: Item, row: tuple[str, ...]) -> Scores:
    """lm-eval 0.4.13's triviaqa: the stripped answer equals an alias, case and punctuation ignored."""
    return {"answer": answer}, {"exact_match": float(extraction.triviaqa_exact_match(answer, item.targets))}


def nlpcc_kbqa_exact_match(answer: str, generation: str, item: Item, row: tuple[str, ...]) -> Scores:
    """The answer (the generation cut at the stop string, stripped) equals a stripped target."""
    return {"answer": answer}, {"exact_match": float(answer in {target.strip() for target in item.targets})}
