"""What a task is and what a user chose to build from it, as frozen data every stage reads: the task
spec (one ``tasks/*.yaml`` entry) and the build options (limit, shots, prompt, data location). They
live here, below every stage, so that items/ (which builds from them) and scoring/ (which scores by
the names they hold) both import downward and never each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# metric names a task spec may list, shared by the families that declare them and the scorers
MULTIPLE_CHOICE_METRICS = ("acc", "acc_norm", "acc_bytes", "correct_choice_prob", "brier_score")
ROUGE_METRICS = ("rouge1", "rouge2", "rougeLsum")


@dataclass(frozen=True)
class TaskSpec:
    """Everything that defines a task's prompts and scoring (hashable into a cache key)."""

    name: str  # CLI name: "mmlu", "gsm8k", "gsm8k:fewshot", "bigbench"
    family: str  # module under harness.items.families that builds its items
    description: str
    output_type: str  # "multiple_choice" | "generate"
    prompt_type: str  # "zeroshot" | "fewshot" | "cot"
    num_fewshot: int
    split: str  # evaluation split
    fewshot_split: str | None
    metrics: tuple[str, ...]
    primary_metric: str
    prompt: str  # name of the prompts/<prompt>.yaml file
    hub_path: str | None = None  # lm-evaluation-harness 0.4.13's dataset_path
    hub_name: str | None = None  # its dataset_name (may hold "{subject}")
    max_new_tokens: int = 0
    has_subtasks: bool = False  # "name:<subtask>" selects one
    # How a generative task is scored, by name (looked up in harness.scoring.registry, so scoring never
    # asks which family built an item): the answer's extractor, the scorer of that answer, and the
    # gold continuation the companions score.  None for multiple-choice and single-continuation tasks.
    extractor: str | None = None
    scorer: str | None = None
    gold_continuation: str | None = None
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class BuildOptions:
    """User choices that change which items are built and how they are prompted."""

    data_dir: Path | None = None  # local copies laid out like ../shared/data; None = the hub
    limit: int | None = None  # per (sub)task
    num_fewshot: int | None = None  # override of the spec's shots
    prompt_type: str | None = None  # override of the spec's prompt type
    bigbench_mode: str = "auto"  # "auto" | "gen" | "mc"
    hub_revision: str | None = None  # dataset revision on the hub
    # (task name, local .jsonl path or hub id) for tasks with no bundled copy (clozet, gsm8k_zh): --task-file
    task_files: tuple[tuple[str, str], ...] = ()
    # cap on the tokens generated per item (evaluation during training): a count, or "auto" (from the
    # targets, where the task reads its answer at the start of the generation); None = the task's own
    max_new_tokens: int | str | None = None
    # lm_eval:<name> tasks (harness.interop.lm_eval_tasks): a folder of the user's lm-eval YAMLs, and
    # whether a YAML's !function may import code from its folder (--include-path, --allow-task-code)
    include_path: Path | None = None
    allow_task_code: bool = False
