"""Facts about the Pythia suite that a sweep needs offline: its published checkpoint steps, its
parameter counts, and the names its models have gone by."""

from __future__ import annotations

import re

# The 154 revisions EleutherAI published for every Pythia model: step0, the log-spaced early steps
# 1, 2, 4, ..., 512, then every 1000 steps up to 143000.
PYTHIA_STEPS: tuple[int, ...] = (0, *(2**i for i in range(10)), *range(1000, 143001, 1000))
PYTHIA_REVISIONS: tuple[str, ...] = tuple(f"step{step}" for step in PYTHIA_STEPS)

# The 27 steps of Pythia v1's published zero-shot evaluations (evals/pythia-v1/<model>/zero-shot/).
PYTHIA_V1_EVAL_STEPS: tuple[int, ...] = (0, *(2**i for i in range(10)), 1000, *range(3000, 143001, 10000))
PYTHIA_V1_EVAL_REVISIONS: tuple[str, ...] = tuple(f"step{step}" for step in PYTHIA_V1_EVAL_STEPS)

# How the published v1 evaluations were run (harness/interop/presets/pythia-v1.yaml follows it).  Their files
# name model "hf-causal", some with use_accelerate=True: lm-evaluation-harness master between
# db1f55ff0 (2023-01-17) and 6179fdf5b (2023-04-23), where that name was huggingface.AutoCausalLM and
# the files of these tasks (and base.py, evaluator.py) are the 0.3.0 release's (lambada.py apart, which
# reads the same OpenAI file from the Hub).  AutoCausalLM's dtype defaults to None, which loads
# ``torch_dtype=config.torch_dtype``; GPT-NeoX's tools/convert_to_hf.py, which made the HF checkpoints,
# builds the model with ``.half()`` before ``save_pretrained``, so that is float16.  The 1B standard run
# (trained in bf16, evaluated as pythia-v1.1-1b-bf16) may instead carry bfloat16: not checkable offline.
PYTHIA_V1_EVAL_LM_EVAL = "0.3.0"  # the release whose task code the evaluations ran
PYTHIA_V1_EVAL_DTYPE = "float16"

# lm-eval 0.3 task names whose prompts differ from our task of the same name (lm-eval 0.4.13's),
# mapped to our replicas of 0.3.0 (tasks/pythia_zeroshot_v0.yaml; hendrycksTest-<s> is mmlu_pythia_v0:<s>).
# The other Pythia tasks (lambada_openai, piqa, winogrande, logiqa, arc_easy, arc_challenge) are
# identical in both versions (tests/items/test_tasks_pythia_v0.py).
LM_EVAL_V03_TASK_NAMES: dict[str, str] = {"sciq": "sciq_pythia_v0", "wsc": "wsc_pythia_v0"}

# Tokens per optimizer step in Pythia's training: 1024 sequences x 2048 tokens.
PYTHIA_TOKENS_PER_STEP = 2_097_152

# Model size -> (total parameters, non-embedding parameters), as in the Pythia paper (Biderman et al.
# 2023, Table 1) and the model cards; 14m (released after the paper) from its config by the same rule.
# GPT-NeoX unties its embeddings, so non-embedding = total - 2 * vocab * d_model, with the vocabulary
# padded to 50304 up to 2.8b, 50432 for 6.9b and 50688 for 12b (tests/interop/test_pythia.py checks every
# entry against that rule and against a transformers model built from each size's config).
PYTHIA_PARAMS: dict[str, tuple[int, int]] = {
    "14m": (14_067_712, 1_189_888),
    "70m": (70_426_624, 18_915_328),
    "160m": (162_322_944, 85_056_000),
    "410m": (405_334_016, 302_311_424),
    "1b": (1_011_781_632, 805_736_448),
    "1.4b": (1_414_647_808, 1_208_602_624),
    "2.8b": (2_775_208_960, 2_517_652_480),
    "6.9b": (6_857_302_016, 6_444_163_072),
    "12b": (11_846_072_320, 11_327_027_200),
}

# pythia-<size>[-<variant>...]: "v1.1-" is the name the published evals give today's models, "-bf16"
# marks the 1b run trained in bf16 (which is EleutherAI/pythia-1b); "-deduped", "-v0" (the first
# release) and "-seedN" (PolyPythias) are different training runs of the same architecture.
_PYTHIA_NAME = re.compile(r"pythia-(?:v1\.1-)?(?P<size>\d+(?:\.\d+)?[mb])(?P<variants>(?:-[a-z0-9]+)*)")
_ALIAS_VARIANTS = {"bf16"}
_RUN_VARIANTS = re.compile(r"deduped|v0|seed\d+")


def _parse_pythia_name(name: str) -> tuple[str, list[str]] | None:
    """(size, variants kept in the canonical name) for an EleutherAI Pythia id, else None."""
    org, _, repo = name.strip().rpartition("/")
    if org and org.lower() != "eleutherai":
        return None
    match = _PYTHIA_NAME.fullmatch(repo.lower())
    if match is None or match["size"] not in PYTHIA_PARAMS:
        return None
    variants = [v for v in match["variants"].split("-") if v]
    if not all(v in _ALIAS_VARIANTS or _RUN_VARIANTS.fullmatch(v) for v in variants):
        return None  # e.g. a fine-tune named pythia-160m-chat: not a Pythia checkpoint
    return match["size"], [v for v in variants if v not in _ALIAS_VARIANTS]


def canonical_pythia_name(name: str) -> str:
    """Today's hub id of a Pythia model: ``EleutherAI/pythia-v1.1-160m`` -> ``EleutherAI/pythia-160m``,
    ``pythia-1b-bf16`` -> ``EleutherAI/pythia-1b``, ``pythia-410m-deduped`` -> ``EleutherAI/pythia-410m-deduped``.
    Any other name comes back unchanged."""
    parsed = _parse_pythia_name(name)
    if parsed is None:
        return name
    size, variants = parsed
    return "EleutherAI/" + "-".join(["pythia", size, *variants])


def pythia_size(model_id: str) -> str | None:
    """The size label (``"160m"``, ``"1.4b"``) of a Pythia model by name, None for others."""
    parsed = _parse_pythia_name(model_id)
    return None if parsed is None else parsed[0]


def pythia_params(model_id: str) -> tuple[int, int] | None:
    """(total, non-embedding) parameters of a Pythia model by name (any alias above), None for others."""
    parsed = _parse_pythia_name(model_id)
    return None if parsed is None else PYTHIA_PARAMS[parsed[0]]
