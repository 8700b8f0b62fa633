"""What the model would have to write after the prompt to be right: the gold continuation of a
generative item, whose log-probability the continuous companions record (harness.scoring.companions).

How the gold answer follows the prompt depends on how the prompt's exemplars write their answers,
so a task names its rule in its YAML (``gold_continuation:``, looked up in harness.scoring.registry);
each rule reads only the item's typed fields (``targets``, ``solution``, ``context``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.requests import Item


@dataclass(frozen=True)
class GoldContinuation:
    """What the model would have to write after the prompt to be right.

    ``texts``: one continuation per accepted answer, in the item's target order.  ``final_answer``:
    the end of ``texts[0]`` that states the answer (GSM8K: " The answer is N." after chain-of-thought
    reasoning, "#### N" after a worked solution); its log-probability
    given the rest is recorded too.
    """

    texts: tuple[str, ...]
    final_answer: str = ""

    def __post_init__(self) -> None:
        if not self.texts:
            raise ValueError("a gold continuation needs at least one text")
        if self.final_answer and not self.texts[0].endswith(self.final_answer):
            raise ValueError(f"the final answer {self.final_answer!r} does not end the gold continuation")

    def score_requests(self) -> tuple[str, ...]:
        """The continuations the engine scores: every text, then ``texts[0]`` without its final
        answer (a token prefix of ``texts[0]``, so the engine reads both from one forward)."""
        if self.final_answer:
            return self.texts + (self.texts[0][: -len(self.final_answer)],)
        return self.texts


def answer_continuation(context: str, target: str) -> str:
    """A target as the text after the prompt: lm-evaluation-harness's target delimiter " ", left out
    when the prompt already ends in whitespace (BIG-bench's "A: ") or the target begins with it."""
    if not context or context[-1].isspace() or target[:1].isspace():
        return target
    return " " + target


def delimited_targets(item: Item) -> GoldContinuation:
    """Each target after lm-eval's target delimiter (TriviaQA's "Answer:" then " Paris")."""
    return GoldContinuation(tuple(answer_continuation(item.context, target) for target in item.targets))


def targets(item: Item) -> GoldContinuation:
    """Each target right after the prompt, nothing between: how a BIG-bench shot's answer follows its
    input, and NLPCC-KBQA's answer after "答案：" (lm-eval's " " would be wrong there)."""
    return GoldContinuation(tuple(item.targets))


def solution(item: Item) -> GoldContinuation:
    """The item's own ``solution`` right after the prompt, as it is (GSM8K-Chinese after "答案：": a bare
    number or a worked solution, so no final-answer span is assumed)."""
    return GoldContinuation((item.solution,))


def gsm8k_worked_solution(item: Item) -> GoldContinuation:
    """gsm8k:fewshot (exemplars = the dataset's full answers after "Answer:"): " " + the solution as
    it is, final answer "#### N"."""
    text = item.solution
    return GoldContinuation((" " + text,), final_answer=text[text.rindex("####") :])


# GSM8K's calculator annotations, "48/2 = <<48/2=24>>24": the exemplars of the CoT prompts have none
_CALCULATOR_ANNOTATION = re.compile(r"<<[^>]*>>")


def gsm8k_cot_solution(item: Item) -> GoldContinuation:
    """gsm8k / gsm8k:zeroshot_cot (Wei et al.'s exemplars after "A:", one line each ending "The answer
    is N."): the calculator annotations removed, the reasoning lines joined by spaces (a line without
    final punctuation gets a period, as the exemplars' sentences have), and "#### N" replaced by
    "The answer is N.", which is also the final answer."""
    text = item.solution
    lines = [line.strip() for line in _CALCULATOR_ANNOTATION.sub("", text.split("####")[0]).splitlines()]
    sentences = [line if line[-1] in ".!?" else line + "." for line in lines if line]
    # the item's target is already the answer after "####" (items/families/gsm8k.final_answer, the one rule)
    final = f" The answer is {item.targets[0]}."
    return GoldContinuation(("".join(" " + sentence for sentence in sentences) + final,), final_answer=final)
