"""``harness tasks``: what each task is (prompt type, shots, split, metrics, random baseline)."""

from __future__ import annotations

import yaml

from harness.items import registry
from harness.scoring import companions
from harness.spec import TaskSpec


def _baseline_note(spec: TaskSpec) -> str:
    if spec.output_type == "multiple_choice":
        choices = spec.options.get("num_choices")
        return f"acc 1/C = {1 / choices:.3f}, brier (C-1)/C = {(choices - 1) / choices:.3f}" if choices else "acc 1/C per item, brier (C-1)/C"
    if spec.family == "bigbench":
        return "generative: 0; multiple-choice subtasks: 1/C per item"
    if spec.output_type == "loglikelihood":
        return "acc 0 (a guess is almost never the greedy continuation), perplexity none"
    return "0 (exact match)"


def _companion_names(spec: TaskSpec) -> list[str]:
    """The continuous companions a generative task's rows add (harness.scoring.companions; GSM8K's gold
    continuation ends in a final answer, so it adds final_answer_logprob)."""
    names = list(companions.LOGPROB_METRICS)
    if spec.family == "gsm8k":
        names.append(companions.FINAL_ANSWER_METRIC)
    return names + list(companions.EDIT_DISTANCE_METRICS)


METRIC_NOTES = """\
metrics:
  acc, acc_norm (log-likelihood / choice length in characters), exact_match_strict, exact_match_flexible:
      as lm-evaluation-harness 0.4.13 computes them
  acc_bytes (log-likelihood / UTF-8 bytes), correct_choice_prob (softmax of the choice log-likelihoods at
      the gold choice), brier_score (sum over choices of (p - y)^2; lower is better): ours, continuous
      companions of accuracy
  exact_match_numeric: ours; the flexible (last-number) answer and the target compared as numbers
      ("$1,000.00" = "1000"), where lm-evaluation-harness compares strings
  exact_match (BIG-bench): exact_str_match after BIG-bench's post-processing (cut at the stop string,
      first match of output_regex), surrounding whitespace stripped; bleu: sacrebleu corpus BLEU with
      BIG-bench's settings, bootstrap stderr; numeric_match: within 10% relative error
  exact_match (triviaqa): as lm-evaluation-harness 0.4.13; the stripped generation equals any answer
      alias once both are lower-cased and stripped of ASCII punctuation
  race: every question of an article is an item (lm-eval scores only the last; the item log has all)
  acc (single continuation, lambada_openai): the continuation is the model's greedy one; perplexity:
      exp(-mean log-likelihood of the continuations) as lm-evaluation-harness 0.4.13 aggregates it
      (lower is better; stderr by the delta method where lm-eval bootstraps)
  winogrande: each option ends its own context and the same continuation is scored after each
  companions of a generative item's exact match (ours): target_logprob, the log-probability of the gold
      continuation given the prompt (the best of several accepted answers), target_logprob_per_token (/ its
      tokens), final_answer_logprob (GSM8K: "The answer is N." (chain of thought) or "#### N" (gsm8k:fewshot) given the gold reasoning), token_edit_distance
      and char_edit_distance (extracted answer to the nearest target; lower is better); BIG-bench rows whose
      task.json lists rouge add rouge1, rouge2, rougeLsum (F-measure x 100, best target)
  every metric: mean, stderr, n and the random-guess baseline; parent tasks add <metric>_macro
"""


class _PromptDumper(yaml.SafeDumper):
    """Templates with line breaks print on one line, double-quoted with ``\\n`` escapes, so the
    exact prompt text (trailing spaces and blank lines included) is readable."""


_PromptDumper.add_representer(
    str, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style='"' if "\n" in text else None)
)


def describe_tasks(verbose: bool = False) -> str:
    lines = []
    for spec in registry.all_specs().values():
        name = f"{spec.name}[:<subtask>]" if spec.has_subtasks else spec.name
        lines.append(f"{name}")
        lines.append(f"    {spec.description}")
        lines.append(
            f"    type {spec.output_type}, prompt {spec.prompt_type}, {spec.num_fewshot}-shot"
            + (f" from {spec.fewshot_split}" if spec.fewshot_split and spec.num_fewshot else "")
            + f", split {spec.split}"
            + (f", hub {spec.hub_path}" + (f" ({spec.hub_name})" if spec.hub_name else "") if spec.hub_path else "")
        )
        lines.append(f"    metrics {', '.join(spec.metrics)} (primary {spec.primary_metric}); random baseline {_baseline_note(spec)}")
        if spec.output_type == "generate":
            lines.append(f"    answer read by {spec.extractor}, scored by {spec.scorer}, gold continuation {spec.gold_continuation}")
            lines.append(f"    companions {', '.join(_companion_names(spec))}")
        if spec.options.get("user_fields"):
            lines.append(
                f"    no copy bundled: pass --task-file {spec.name}=PATH.jsonl (or =OWNER/NAME on the Hub);"
                f" one row per item: {spec.options['user_fields']}"
            )
        if verbose:
            try:
                prompt = registry.load_prompt(spec.prompt)
            except FileNotFoundError:
                prompt = {}
            if prompt:
                text = yaml.dump(prompt, Dumper=_PromptDumper, allow_unicode=True, sort_keys=False, width=10**6)
                lines.extend("      " + line for line in text.splitlines())
        lines.append("")
    return "\n".join(lines) + "\n" + METRIC_NOTES
