"""Turning a model's generation into an answer, and deciding whether that answer matches a target.

GSM8K follows lm-evaluation-harness 0.4.13 exactly (``tasks/gsm8k/gsm8k-cot.yaml`` and
``gsm8k.yaml`` filters, ``exact_match_hf_evaluate``); BIG-bench generative tasks follow
BIG-bench 1.0.0 (``models/model_utils.py: postprocess_output``, ``api/task_metrics.py``), with
the one deliberate difference documented on ``bigbench_numeric_match``.  Pure functions over strings: no task
knowledge beyond the function names.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from harness.scoring import regex_prefix

INVALID_ANSWER = "[invalid]"  # lm-eval's RegexFilter fallback when nothing matches

# lm-eval gsm8k_cot "strict-match": the few-shot exemplars end with "The answer is N."
# The final "." is an unescaped regex dot (any character), kept as upstream has it.
GSM8K_COT_STRICT_PATTERN = re.compile(r"The answer is (\-?[0-9\.\,]+).")
# lm-eval gsm8k / gsm8k_cot "flexible-extract": any number-looking run; the last one wins.
GSM8K_FLEXIBLE_PATTERN = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
# lm-eval gsm8k (5-shot, answers in the dataset's "#### N" format) "strict-match".
GSM8K_HASH_PATTERN = re.compile(r"#### (\-?[0-9\.\,]+)")

# gsm8k_cot's metric_list: exact_match with these regexes removed, case ignored.
GSM8K_REGEXES_TO_IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")

# BIG-bench json_task.py: when a task gives neither output_regex nor stop_string, the answer
# is the first run of text up to sentence punctuation or a newline.
BIGBENCH_DEFAULT_OUTPUT_REGEX = r"[^\.\?\!\;\n]+"

# What numeric_equal accepts once "$", "," and a trailing "." are gone.  Stricter than float(),
# which would also take "nan", "inf" and "1_000".
_DECIMAL_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _regex_select(pattern: re.Pattern[str], text: str, group_select: int) -> str:
    """lm-eval's ``RegexFilter`` on one response: pick one ``findall`` result, first non-empty group."""
    matches = pattern.findall(text)
    if not matches:
        return INVALID_ANSWER
    match = matches[group_select]
    if isinstance(match, tuple):
        # Alternation patterns yield one tuple slot per group; only one of them matched.
        non_empty = [group for group in match if group]
        match = non_empty[0] if non_empty else INVALID_ANSWER
    return match.strip()


def gsm8k_strict(text: str) -> str:
    """gsm8k_cot strict-match: the number after the first "The answer is", else "[invalid]"."""
    return _regex_select(GSM8K_COT_STRICT_PATTERN, text, 0)


def gsm8k_flexible(text: str) -> str:
    """gsm8k / gsm8k_cot flexible-extract: the last number-looking run in the text, else "[invalid]"."""
    return _regex_select(GSM8K_FLEXIBLE_PATTERN, text, -1)


def gsm8k_hash_answer(text: str) -> str:
    """gsm8k (5-shot) strict-match: the number after the first "#### ", else "[invalid]"."""
    return _regex_select(GSM8K_HASH_PATTERN, text, 0)


def lm_eval_exact_match(
    prediction: str,
    reference: str,
    regexes_to_ignore: Sequence[str] = GSM8K_REGEXES_TO_IGNORE,
    ignore_case: bool = True,
) -> bool:
    """lm-eval's ``exact_match_hf_evaluate`` for one pair (punctuation and digits kept).

    Each regex is removed from both strings in the given order, then both are lower-cased.
    """
    for regex in regexes_to_ignore:
        prediction = re.sub(regex, "", prediction)
        reference = re.sub(regex, "", reference)
    if ignore_case:
        prediction = prediction.lower()
        reference = reference.lower()
    return prediction == reference


def _parse_number(text: str) -> float | None:
    cleaned = text.strip().replace("$", "").replace(",", "").strip()
    if cleaned.endswith("."):
        cleaned = cleaned[:-1].rstrip()
    if not _DECIMAL_NUMBER.fullmatch(cleaned):
        return None
    return float(cleaned)


def numeric_equal(extracted: str, target: str) -> bool:
    """Our ``exact_match_numeric``: equal as numbers once "$", "," and a trailing "." are removed.

    So "$1,000.00" equals "1000" and "-5" equals "-5.0"; values are compared with
    ``math.isclose(rel_tol=1e-9, abs_tol=1e-9)``.  Anything that is not a plain decimal number
    (including "[invalid]", "nan", "inf") compares unequal.
    """
    extracted_value = _parse_number(extracted)
    target_value = _parse_number(target)
    if extracted_value is None or target_value is None:
        return False
    return math.isclose(extracted_value, target_value, rel_tol=1e-9, abs_tol=1e-9)


def bigbench_postprocess(text: str, max_length: int | None, stop_string: str | None, output_regex: str | None) -> str:
    """The answer BIG-bench 1.0.0 scores from a generation (``models/model_utils.py:
    postprocess_output``), for every input:

    1. keep the first ``max_length`` characters (BIG-bench passes the same ``max_length`` it
       generates tokens with; 0 or None: no cut);
    2. if ``stop_string`` first occurs at a position > 0, cut right *after* it: the stop string is
       kept, and one at position 0 cuts nothing (later occurrences are not looked for);
    3. if ``output_regex`` is set (an empty string is not), the first item of ``re.findall``: the
       whole first match, or its one group ("" when the group did not take part), or "" when
       nothing matches.  A regex with several groups is rejected, as BIG-bench's assertion does.

    No default regex here: json_task.py resolves it when a task sets neither field, and so does
    the BIG-bench item builder (``task_format``).  Nothing is stripped.
    """
    if max_length:
        text = text[:max_length]
    if stop_string:
        index = text.find(stop_string)
        if index > 0:
            text = text[: index + len(stop_string)]
    if output_regex:
        # re.findall's first item is the leftmost match re.search finds: its group when there is one
        match = re.search(output_regex, text)
        if match is None:
            return ""
        if match.re.groups > 1:
            raise ValueError(f"BIG-bench output_regex {output_regex!r} has {match.re.groups} groups; it may have at most one")
        text = (match.group(1) or "") if match.re.groups == 1 else match.group(0)
    return text


@dataclass(frozen=True)
class BigbenchAnswer:
    """How BIG-bench reads a task's answer from a generation, and when generating more is useless.

    ``is_final(text)`` is True only when ``read(text + more) == read(text)`` for every string
    ``more``, so a greedy decode may stop there and score the same answer as one run to
    ``max_length``:

    - ``text`` reaches ``max_length`` characters: the cut in step 1 is fixed;
    - ``stop_string`` occurs at a position > 0 (within the first ``max_length`` characters): the
      first occurrence cannot move, so step 2 leaves a fixed text;
    - otherwise every longer text, after steps 1-2, still begins with ``text`` (a stop string found
      later is cut after, beyond ``text``; one at position 0 cuts nothing), so the answer is fixed
      when ``output_regex``'s first match in ``text`` is already decided whatever follows
      (``harness.scoring.regex_prefix``): for the default regex, a run of characters other than
      ``.?!;`` and newline followed by one of them; for ``[-+]?\\d+``, digits followed by a
      non-digit; for ``('.*?')``, a closing quote.  Without a regex (a ``stop_string`` alone at
      position 0, or ``output_regex`` ""), the answer is the whole text and only the length fixes it.
    """

    max_length: int | None
    stop_string: str | None
    output_regex: str | None

    def read(self, text: str) -> str:
        return bigbench_postprocess(text, self.max_length, self.stop_string, self.output_regex)

    def is_final(self, text: str) -> bool:
        if self.max_length and len(text) >= self.max_length:
            return True
        if self.stop_string and text.find(self.stop_string) > 0:
            return True
        return bool(self.output_regex) and regex_prefix.first_match_is_settled(self.output_regex, text)


def bigbench_exact_match(response: str, targets: Sequence[str]) -> bool:
    """BIG-bench ``exact_str_match`` (``api/task_metrics.py``): the response is one of the targets,
    compared as they are (nothing stripped or lower-cased)."""
    return response in tuple(targets)


def bigbench_numeric_match(response: str, targets: Sequence[str], rel_error: float = 0.1) -> bool:
    """BIG-bench ``numeric_match_with_0_1_relative_error`` against the first target.

    |value − target| / |target| ≤ rel_error, with the absolute error when the target is 0.
    BIG-bench divides by the signed target, which makes every answer "match" a negative target;
    we divide by its absolute value.  Responses or targets that ``float()`` rejects do not match.
    """
    if not targets:
        raise ValueError("bigbench_numeric_match needs at least one target")
    try:
        target_value = float(targets[0])
        value = float(response)
    except ValueError:
        return False
    denominator = abs(target_value) if target_value != 0 else 1.0
    return abs(value - target_value) / denominator <= rel_error


# TriviaQA follows lm-eval 0.4.13's triviaqa (tasks/triviaqa/default.yaml): the remove_whitespace
# filter strips the response, then exact_match (ignore_case, ignore_punctuation) against each alias.
_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)


def triviaqa_normalise(text: str) -> str:
    """lm-eval's exact_match with ignore_case and ignore_punctuation: lower-case, then delete every
    ASCII punctuation character (inner and surrounding spaces are kept, as lm-eval keeps them)."""
    return text.lower().translate(_PUNCTUATION_TABLE)


def triviaqa_exact_match(response: str, aliases: Sequence[str]) -> bool:
    """The stripped response equals any alias once both are normalised (lm-eval counts a hit on any)."""
    answer = triviaqa_normalise(response.strip())
    return any(answer == triviaqa_normalise(alias) for alias in aliases)
