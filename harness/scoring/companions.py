"""Continuous companions of exact match for generative items: how close the model came, not only whether it hit.

Exact match on arithmetic or GSM8K jumps; softer measures of the same items often move smoothly long
before.  Beside each generation and its exact match a record keeps:

- ``target_logprob``: log-probability of the gold continuation given the prompt, the prompt exactly
  as the generation saw it (the engine scores it on the prompt's own KV cache); with several
  accepted answers, the most probable one.  ``target_logprob_per_token`` divides it by that
  continuation's token count.  exp(target_logprob) is the probability that sampling produces the
  gold continuation verbatim;
- ``final_answer_logprob`` (families whose gold continuation is reasoning then a final answer,
  GSM8K: " The answer is N." in chain of thought, "#### N" after a worked solution):
  log-probability of the final-answer span given the prompt and the gold reasoning;
- ``token_edit_distance`` and ``char_edit_distance``: Levenshtein distance between the extracted
  answer and the nearest accepted answer, in the model's tokens and in characters.

Which continuation is gold depends on how the prompt's exemplars write their answers: the task
names its rule in its YAML (``gold_continuation:``, harness.scoring.registry; the rules are in
harness.scoring.gold_continuations and read only the item's typed fields).  Everything here is
plain functions over strings and numbers: the token edit distance gets the tokenizer as a callable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from harness.requests import Item, LoglikelihoodResult
from harness.scoring import registry
from harness.scoring.gold_continuations import GoldContinuation, answer_continuation
from harness.spec import TaskSpec

__all__ = [
    "COMPANION_METRICS", "EDIT_DISTANCE_METRICS", "FINAL_ANSWER_METRIC", "LOGPROB_METRICS", "GoldContinuation",
    "answer_continuation", "companion_scores", "edit_distance", "gold_continuation", "metric_names",
]

LOGPROB_METRICS = ("target_logprob", "target_logprob_per_token")
FINAL_ANSWER_METRIC = "final_answer_logprob"
EDIT_DISTANCE_METRICS = ("token_edit_distance", "char_edit_distance")
COMPANION_METRICS = frozenset(LOGPROB_METRICS + (FINAL_ANSWER_METRIC,) + EDIT_DISTANCE_METRICS)


def gold_continuation(spec: TaskSpec, item: Item) -> GoldContinuation:
    """``item``'s gold continuation by the rule ``spec`` names (``gold_continuation:`` in its YAML)."""
    return registry.generation_rules(spec).gold_continuation(item)


def metric_names(gold: GoldContinuation) -> tuple[str, ...]:
    """The companions a record with this gold continuation gets (final_answer_logprob only with a final answer)."""
    final = (FINAL_ANSWER_METRIC,) if gold.final_answer else ()
    return LOGPROB_METRICS + final + EDIT_DISTANCE_METRICS


def edit_distance(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Levenshtein distance (unit-cost insertions, deletions, substitutions) between two sequences."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def companion_scores(
    gold: GoldContinuation,
    results: Sequence[LoglikelihoodResult],
    answer: str,
    targets: Sequence[str],
    tokenize: Callable[[str], Sequence[int]],
) -> tuple[dict[str, float], dict[str, Any]]:
    """Per-item companion metrics, and the raw numbers a record keeps to recompute them.

    ``results``: the engine's log-likelihoods of ``gold.score_requests()``, in order.  ``answer``:
    the extracted answer ("" when nothing could be extracted); ``targets``: the accepted answers.
    """
    expected = len(gold.score_requests())
    if len(results) != expected:
        raise ValueError(f"{len(results)} log-likelihoods for {expected} scored continuations")
    per_target = results[: len(gold.texts)]
    best = max(range(len(per_target)), key=lambda i: (per_target[i].logprob, -i))
    chosen = per_target[best]
    metrics = {
        "target_logprob": chosen.logprob,
        "target_logprob_per_token": chosen.logprob / chosen.num_tokens if chosen.num_tokens else 0.0,
    }
    fields: dict[str, Any] = {
        "target_logprobs": [r.logprob for r in per_target],
        "target_num_tokens": [r.num_tokens for r in per_target],
        "target_is_greedy": [r.is_greedy for r in per_target],
    }
    if gold.final_answer:
        reasoning = results[len(gold.texts)]
        metrics[FINAL_ANSWER_METRIC] = results[0].logprob - reasoning.logprob
        fields["final_answer_num_tokens"] = results[0].num_tokens - reasoning.num_tokens
    stripped = [target.strip() for target in targets]
    answer_tokens = list(tokenize(answer))
    metrics["token_edit_distance"] = float(min(edit_distance(answer_tokens, list(tokenize(t))) for t in stripped))
    metrics["char_edit_distance"] = float(min(edit_distance(answer, t) for t in stripped))
    return metrics, fields
