"""The one place a task's scoring names are looked up: name (from tasks/*.yaml) → function.

A generative task names three things in its YAML, so scoring never needs to know its family:

- ``extractor``: how the scored answer is read from a generation (and, for some, when decoding may
  stop because more tokens cannot change it);
- ``scorer``: how that answer becomes metric values (harness.scoring.scorers);
- ``gold_continuation``: what the model would have to write to be right, for the continuous
  companions (harness.scoring.gold_continuations).

Each reads only the item's typed fields.  A new generative task adds its entries here and names
them in its YAML.  Multiple-choice and single-continuation tasks need none of the three.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.errors import UserError
from harness.requests import AnswerSettled, Item
from harness.scoring import extraction, gold_continuations, scorers
from harness.scoring.gold_continuations import GoldContinuation
from harness.spec import TaskSpec


@dataclass(frozen=True)
class Extractor:
    """``read(item, generation)``: the answer that is scored.  ``settled(item)``, when given: a value
    that tells the engine once more tokens cannot change ``read``'s answer, so decoding may stop."""

    read: Callable[[Item, str], str]
    settled: Callable[[Item], AnswerSettled] | None = None


@dataclass(frozen=True)
class Scorer:
    """``score(answer, generation, item, row)`` → (extracted answers, metric values) (harness.scoring.scorers).
    ``companion_answer``: which extracted answer the edit distances compare with the targets."""

    score: Callable[[str, str, Item, tuple[str, ...]], scorers.Scores]
    companion_answer: str = "answer"


def bigbench_answer(item: Item) -> extraction.BigbenchAnswer:
    # BIG-bench's one max_length bounds both the tokens generated and the characters kept
    return extraction.BigbenchAnswer(item.max_new_tokens, item.stop_string, item.output_regex)


EXTRACTORS: dict[str, Extractor] = {
    # lm-eval gsm8k_cot strict-match: the number after the first "The answer is"
    "gsm8k_cot_strict": Extractor(lambda item, text: extraction.gsm8k_strict(text)),
    # lm-eval gsm8k (5-shot, worked answers) strict-match: the number after the first "#### "
    "gsm8k_hash_strict": Extractor(lambda item, text: extraction.gsm8k_hash_answer(text)),
    # BIG-bench 1.0.0 postprocess_output with the item's stop_string, output_regex and max length
    "bigbench_postprocess": Extractor(lambda item, text: bigbench_answer(item).read(text), settled=bigbench_answer),
    # lm-eval's remove_whitespace filter (TriviaQA), and NLPCC-KBQA's answer line
    "strip": Extractor(lambda item, text: text.strip()),
}

SCORERS: dict[str, Scorer] = {
    "gsm8k_exact_match": Scorer(scorers.gsm8k_exact_match, companion_answer="flexible"),
    "bigbench_exact_match": Scorer(scorers.bigbench_exact_match),
    "triviaqa_exact_match": Scorer(scorers.triviaqa_exact_match),
    "nlpcc_kbqa_exact_match": Scorer(scorers.nlpcc_kbqa_exact_match),
}

GOLD_CONTINUATIONS: dict[str, Callable[[Item], GoldContinuation]] = {
    "delimited_targets": gold_continuations.delimited_targets,
    "targets": gold_continuations.targets,
    "solution": gold_continuations.solution,
    "gsm8k_worked_solution": gold_continuations.gsm8k_worked_solution,
    "gsm8k_cot_solution": gold_continuations.gsm8k_cot_solution,
}


@dataclass(frozen=True)
class GenerationRules:
    """A generative task's extractor, scorer and gold continuation, resolved from its names."""

    extractor: Extractor
    scorer: Scorer
    gold_continuation: Callable[[Item], GoldContinuation]


def _lookup(table: dict, kind: str, name: str | None, task: str):
    if name in table:
        return table[name]
    known = ", ".join(sorted(table))
    if name is None:
        raise UserError(f"task {task} is generative but names no {kind}; add '{kind}: <name>' to its tasks/*.yaml entry (known: {known})")
    raise UserError(f"task {task}: unknown {kind} {name!r}; known {kind}s: {known}")


def extractor(name: str | None, task: str = "?") -> Extractor:
    return _lookup(EXTRACTORS, "extractor", name, task)


def scorer(name: str | None, task: str = "?") -> Scorer:
    return _lookup(SCORERS, "scorer", name, task)


def gold_continuation(name: str | None, task: str = "?") -> Callable[[Item], GoldContinuation]:
    return _lookup(GOLD_CONTINUATIONS, "gold_continuation", name, task)


def generation_rules(spec: TaskSpec) -> GenerationRules:
    """All three of ``spec``'s names at once, so an unknown one fails as the requests are built
    (the gold continuation is scored with the generation), before any generation is spent."""
    return GenerationRules(
        extractor=extractor(spec.extractor, spec.name),
        scorer=scorer(spec.scorer, spec.name),
        gold_continuation=gold_continuation(spec.gold_continuation, spec.name),
    )
