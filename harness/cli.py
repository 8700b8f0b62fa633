"""The ``harness`` command: eval, sweep, loss, tasks, prompt, table, import-lm-eval, export, report."""

from __future__ import annotations

import argparse
import json
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from harness.errors import (
    NonFiniteOutput,
    UserError,
    check_input_dir,
    check_out_dir,
    check_output_file,
    check_whole_number,
    not_utf8,
)


def _batch_size(value: str) -> int | str:
    # lm-eval's auto:N recomputes the largest batch N times as items get shorter; ours backs off on
    # out-of-memory at every batch, which serves the same end
    if value == "auto" or re.fullmatch(r"auto:\d+", value):
        return "auto"
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch size must be an integer or 'auto', got {value!r}") from None
    return size  # its range is checked with the other counts, as a one-line error (errors.check_run_values)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="local checkpoint folder, .gguf file, or hub id")
    parser.add_argument("--revision", help="hub revision (branch, tag or commit), e.g. step33000")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA when supported, else fp32), float32, bfloat16, float16")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the model repo's own code to run (off by default)")


def _add_loss_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loss-corpus", type=Path, help=".txt or .jsonl (field 'text') held-out corpus for the pre-training loss")
    parser.add_argument("--loss-window", type=int, default=2048, help="tokens per window (capped by the model's context)")
    parser.add_argument("--loss-tokens", type=int, default=1_000_000, help="tokens of the corpus to use")


def _add_task_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="local copies of the datasets laid out like shared/data (default: the HF hub / cache)")
    parser.add_argument("--data-revision", help="revision (branch, tag or commit) of the hub datasets, for reproducible data (default: main)")
    parser.add_argument("--num-fewshot", type=int, help="override the task's number of shots")
    parser.add_argument("--prompt", dest="prompt_type", choices=["zeroshot", "fewshot", "cot"], help="override the task's prompt type")
    parser.add_argument("--bigbench-mode", choices=["auto", "gen", "mc"], default="auto", help="BIG-bench tasks with both forms: generative (default) or multiple choice")
    parser.add_argument(
        "--max-new-tokens", type=_max_new_tokens, metavar="N|auto",
        help="cap the tokens generated per item (default: the task's own); auto: from the targets, for tasks that read "
             "the answer at the start of the generation (BIG-bench, TriviaQA), which a model that answers never reaches",
    )
    parser.add_argument("--include-path", type=Path, metavar="DIR",
                        help="a folder of lm-eval task YAMLs, for --tasks lm_eval:<name> (lm-eval's own tasks need none)")
    parser.add_argument("--allow-task-code", action="store_true", default=None,
                        help="let lm_eval: task YAMLs outside lm-eval's package run their !function code (Python from "
                             "the task's folder; off by default)")


def _max_new_tokens(value: str) -> int | str:
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of tokens or auto, got {value!r}") from None


def _task_file(value: str) -> tuple[str, str]:
    name, sep, source = value.partition("=")
    if not sep or not name.strip() or not source.strip():
        raise argparse.ArgumentTypeError(f"expected TASK=PATH.jsonl or TASK=OWNER/NAME, got {value!r}")
    return name.strip(), source.strip()


def _add_task_file_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task-file", dest="task_files", type=_task_file, action="append", default=[], metavar="TASK=SOURCE",
        help="data for a task with no bundled copy (clozet, gsm8k_zh): a local .jsonl or a Hub id OWNER/NAME[:CONFIG]; repeatable",
    )


def _add_log_to_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-to", action="append", default=[], metavar="tensorboard:DIR|wandb[:PROJECT]",
        help="also write each checkpoint's train/harness/<task>/<metric> and train/harness/loss series against its step "
             "(TensorBoard event files under DIR/<model>, or a W&B run, offline unless WANDB_MODE says otherwise); repeatable",
    )


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line, as every other error (exit 2): the problem and
    where to read the fix, not the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("eval", help="evaluate one checkpoint on tasks, with its pre-training loss")
    _add_model_args(ev)
    ev.add_argument("--tasks", required=True, help="comma list, e.g. mmlu,ceval,gsm8k,bigbench:modified_arithmetic")
    _add_task_args(ev)
    _add_task_file_arg(ev)
    _add_loss_args(ev)
    ev.add_argument("--limit", type=int, help="first N items of each (sub)task")
    ev.add_argument("--batch-size", type=_batch_size, default="auto")
    ev.add_argument("--add-bos-token", action="store_true", default=None, help="force a BOS token before every prompt")
    ev.add_argument("--no-prefix-cache", action="store_true", help="plain path: every request forwarded whole (the reference for the prefix cache)")
    ev.add_argument("--stats", action="store_true", help="print tokens forwarded vs a naive per-request evaluation, per task")
    ev.add_argument("--out", type=Path, default=Path("results"))
    ev.add_argument("--name", help="the model's name in the table and its results folder <out>/<name>/<checkpoint> "
                    "(default: the hub id, or the run folder of runs/<run>/checkpoint-N)")
    ev.add_argument("--shard", help="i/n: run the i-th of n disjoint parts of the checkpoint's tasks (and loss), as a sweep's shards")
    ev.add_argument("--save-every", type=int, default=256, help="items scored between two flushes of a task's item log (a rerun resumes after them)")
    ev.add_argument("--no-progress", action="store_true")
    _add_log_to_arg(ev)

    _add_sweep_parser(sub)

    loss = sub.add_parser("loss", help="compute only the pre-training loss of a checkpoint on a corpus")
    _add_model_args(loss)
    _add_loss_args(loss)
    loss.add_argument("--batch-size", type=_batch_size, default="auto")
    loss.add_argument("--out", type=Path, help="also keep the loss unit in that results folder, as harness eval does (a later eval with the same corpus reuses it)")

    tasks = sub.add_parser("tasks", help="list tasks: prompt type, shots, split, metrics, random baseline")
    tasks.add_argument("--verbose", action="store_true", help="also print each task's prompt templates")

    prompt = sub.add_parser("prompt", help="print the exact prompt of one item")
    prompt.add_argument("--task", required=True, help="one row, e.g. mmlu:anatomy or bigbench:modified_arithmetic/three_digit_addition_control")
    prompt.add_argument("--index", type=int, default=0, help="the item's doc_id (0-based position in the split file)")
    _add_task_args(prompt)
    _add_task_file_arg(prompt)

    table = sub.add_parser("table", help="tidy table of results: one row per (model, revision, step, task, metric)")
    table.add_argument("path", type=Path, help="a results folder (searched recursively) or results.json")
    table.add_argument("--format", default="csv", choices=["csv", "parquet", "markdown"])
    table.add_argument("--output", type=Path)
    table.add_argument("--tokens-per-step", help="tokens per training step for tokens_seen and compute: a number or 'pythia' (2,097,152); default: each checkpoint's recorded one")
    table.add_argument("--loss-from-task", metavar="TASK:METRIC",
                       help="loss column = ln(that perplexity) at the same checkpoint, a proxy for results without a loss, "
                            "e.g. lambada_openai:perplexity (loss_source says so)")

    from harness.interop import import_lm_eval

    import_parser = sub.add_parser("import-lm-eval", help="import lm-evaluation-harness results JSON files (v0.3 and v0.4) as results")
    import_lm_eval.add_arguments(import_parser)

    from harness.interop import export_lm_eval

    export_parser = sub.add_parser("export", help="results as lm-evaluation-harness results files (one per checkpoint), "
                                                  "which import-lm-eval reads back")
    export_lm_eval.add_arguments(export_parser)

    from harness.analysis.arguments import add_compare_arguments, add_report_arguments

    report_parser = sub.add_parser("report", help="figures, correlation table and emergence threshold of every task, from a results folder")
    add_report_arguments(report_parser)

    compare_parser = sub.add_parser("compare", help="our results beside a reference's (e.g. imported Pythia evals), cell by cell in stderr units")
    add_compare_arguments(compare_parser)

    tiny = sub.add_parser("train-tiny", help="train the demo's tiny GPT-NeoX family on the CPU, offline (HF checkpoints log-spaced early, then evenly spaced)")
    tiny.add_argument("--out", type=Path, help="suite folder (default the demo's folder + /suite, e.g. results/demo/suite)")
    tiny.add_argument("--quick", action="store_true", help="the reduced suite the tests use: the two smaller sizes, one thread")
    demo = sub.add_parser("demo", help="train the tiny family (or reuse it), evaluating each checkpoint as it is saved, and write the report: the loss threshold end to end")
    demo.add_argument("--out", type=Path, help="output folder (default results/demo, results/demo-seed1, ...; results/demo-quick[-seedN] with --quick)")
    demo.add_argument("--quick", action="store_true", help="the demo without its largest size, on one thread (3 min on 2 idle cores, up to 5 shared: docs/demo.md): the full demo's two smaller sizes, same seed, same weights at one thread")
    demo.add_argument("--loss-source", choices=["mixture", "docstrings"], default="mixture",
                      help="whose summary to print: the held-out training mixture's loss (default) or the held-out "
                           "docstrings' (general text, no arithmetic); both reports are written")
    for command in (tiny, demo):
        command.add_argument("--seed", type=int, default=0, help="the suite's seed: corpus split, initialisation, data order (default 0)")
        command.add_argument("--threads", type=int, help="torch threads for training (default 2; 1 with --quick); "
                                                         "the trained weights depend on it, so it is part of the suite's settings")
    return parser


def _add_sweep_parser(sub) -> None:
    sw = sub.add_parser(
        "sweep", help="evaluate many checkpoints (every step of every model size): resumable, shardable, loss recorded",
        description="Flags left out take the --config file's values (or the defaults); flags given win over the file.",
    )
    sw.add_argument("--config", type=Path, help="sweep.yaml: several models, each with its checkpoints (see docs/sweeping.md)")
    sw.add_argument("--preset", help="a built-in sweep config: pythia-v1 (Pythia v1's published evaluation: 16 models x 27 steps)")
    sw.add_argument("--sizes", help="with --config/--preset: only the models with these size labels or names (comma list)")
    sw.add_argument("--model", help="hub id swept over --revisions (a local folder here means --checkpoints)")
    sw.add_argument("--revisions", help="pythia (the 154 Pythia steps), step1000:143000:1000 (stop included), or a comma list")
    sw.add_argument("--checkpoints", nargs="+", type=Path, help="a folder of checkpoint-N/step-N/global_stepN/iter_N folders, or checkpoint folders")
    sw.add_argument("--name", help="the model's name in the table (default: the hub id or the checkpoints folder)")
    sw.add_argument("--size", help="a size label for the table, e.g. 160m")
    sw.add_argument("--tasks", help="comma list, e.g. mmlu,gsm8k")
    _add_task_args(sw)
    _add_task_file_arg(sw)
    sw.set_defaults(bigbench_mode=None)
    sw.add_argument("--limit", type=int, help="first N items of each (sub)task")
    sw.add_argument("--loss-corpus", type=Path, help="compute each checkpoint's loss on this .txt/.jsonl corpus")
    sw.add_argument("--loss-from", help="trainer-state, trainer-state:eval, or a .csv/.tsv step/loss log (e.g. Pythia's train/lm_loss<TAB>step)")
    sw.add_argument("--loss-window", type=int, default=2048, help="--loss-corpus: tokens per window")
    sw.add_argument("--loss-tokens", type=int, default=1_000_000, help="--loss-corpus: tokens of the corpus to use")
    sw.add_argument("--loss-smoothing", type=int, default=1, help="--loss-from FILE: mean over the logged steps in (step-N, step]")
    sw.add_argument("--tokens-per-step", help="tokens per training step (a number, or 'pythia' = 2,097,152) for tokens_seen and compute")
    sw.add_argument("--dtype", help="auto (default), float32, bfloat16, float16")
    sw.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ...")
    sw.add_argument("--batch-size", type=_batch_size)
    sw.add_argument("--add-bos-token", action="store_true", default=None, help="force a BOS token before every prompt")
    sw.add_argument("--trust-remote-code", action="store_true", default=None)
    sw.add_argument("--no-prefix-cache", action="store_true")
    sw.add_argument("--out", type=Path, help="output folder (default results)")
    sw.add_argument("--shard", help="i/n: run the i-th of n disjoint parts of the units (0-based), e.g. $SLURM_ARRAY_TASK_ID/8")
    sw.add_argument("--save-every", type=int, help="items scored between two flushes of a task's item log (default 256)")
    sw.add_argument("--no-prefetch", action="store_true", help="do not read the next checkpoint while this one is evaluated (halves peak memory)")
    sw.add_argument("--no-progress", action="store_true")
    _add_log_to_arg(sw)


def cmd_eval(args) -> int:
    from harness.runs.evaluate import eval_spec, evaluate
    from harness.runs.loggers import parse_log_to
    from harness.runs.units import Shard, parse_shard
    from harness.table import stats_markdown, summary_markdown

    log_targets = [parse_log_to(text) for text in args.log_to]
    spec = eval_spec(
        args.model, args.tasks, revision=args.revision, loss_corpus=args.loss_corpus, loss_window=args.loss_window,
        loss_tokens=args.loss_tokens, dtype=args.dtype, device=args.device, batch_size=args.batch_size,
        data_dir=args.data_dir, limit=args.limit, num_fewshot=args.num_fewshot, prompt_type=args.prompt_type,
        bigbench_mode=args.bigbench_mode, add_bos_token=args.add_bos_token, prefix_cache=not args.no_prefix_cache,
        trust_remote_code=args.trust_remote_code, out=args.out, progress=not args.no_progress,
        task_files=tuple(args.task_files), data_revision=args.data_revision, save_every=args.save_every,
        shard=parse_shard(args.shard) if args.shard is not None else Shard(), name=args.name,
        max_new_tokens=args.max_new_tokens, include_path=args.include_path, allow_task_code=bool(args.allow_task_code),
    )
    _check_model(args)
    _check_task_inputs(args)
    _check_log_to(log_targets)
    check_out_dir(spec.config.out)
    with _loggers(log_targets, spec.config.out) as loggers:
        outcome = evaluate(spec, log=_log, loggers=loggers)
    if outcome.results is None:
        return 0  # the main process writes and prints the gathered results
    if outcome.results.exists():
        print(summary_markdown(outcome.results))
        if args.stats:
            print(stats_markdown(outcome.results))
    print(f"results: {outcome.results}\nitems:   {outcome.results.parent / 'units'}/<unit key>.items.jsonl")
    return _exit_code(outcome.summary, "interrupted: rerun the same command to resume after the last item scored",
                      "{task}: {error}")


def _log(message: str) -> None:
    print(message, file=sys.stderr)


# ---------------------------------------------------------------------- inputs checked before any work


def _check_model(args) -> None:
    """``--model`` (and ``--revision``) name something loadable: see ``models.check_model_source``."""
    from harness.engine.models import check_model_source

    check_model_source(args.model, args.revision, trust_remote_code=args.trust_remote_code)


def _check_task_inputs(args) -> None:
    """``--data-dir`` is a folder, each local ``--task-file`` a file."""
    if getattr(args, "data_dir", None) is not None:
        check_input_dir(args.data_dir, "--data-dir", "the folder holding the local copies (mmlu/, gsm8k/, bigbench/...)")
    if getattr(args, "include_path", None) is not None:
        check_input_dir(args.include_path, "--include-path", "a folder of lm-eval task YAMLs")
    for task, source in getattr(args, "task_files", None) or ():
        path = Path(source).expanduser()
        if path.is_dir():
            raise UserError(f"--task-file {task}={source} is a folder; pass a .jsonl file or a hub id OWNER/NAME")
        if path.suffix.lower() in (".jsonl", ".json") and not path.is_file():
            raise UserError(f"--task-file {task}={source} does not exist; pass an existing .jsonl file or a hub id OWNER/NAME")


def _check_log_to(targets: list) -> None:
    for target in targets:
        if target.kind == "tensorboard":
            check_out_dir(Path(target.where), f"--log-to tensorboard:{target.where}")


def _check_results_input(path: Path, what: str) -> None:
    """A results folder, or one results ``.json``, where one is expected (``harness table``,
    ``harness compare``); a table file there is named as such; every results file under it is readable."""
    from harness.analysis.points import TABLE_SUFFIXES, check_results_files

    path = Path(path)
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        raise UserError(f"{what} {path} is a table; this command reads results folders (the --out of harness eval, "
                        "sweep or import-lm-eval) or a results.json; `harness report` reads tables")
    if not path.exists():
        raise UserError(f"{what} {path} does not exist; pass a results folder (the --out of harness eval or sweep)")
    if path.is_file() and path.suffix.lower() != ".json":
        raise UserError(f"{what} {path} is not a results folder or a results.json; pass the --out folder of "
                        "harness eval or sweep")
    if not check_results_files(path):
        raise UserError(f"{what} {path} holds no results.json; pass the --out folder of harness eval, sweep or import-lm-eval")


@contextmanager
def _loggers(targets: list, out: Path):
    """The --log-to loggers (None when there are none), closed on the way out."""
    from harness.runs.loggers import Loggers

    loggers = Loggers(targets, out) if targets else None
    try:
        yield loggers
    finally:
        if loggers is not None:
            loggers.close()


def _exit_code(summary, interrupted: str, failure: str) -> int:
    """130 when interrupted, 1 when a unit failed (a diverged checkpoint is a failure, not a score of 0), else 0."""
    if summary.interrupted:
        print(interrupted, file=sys.stderr)
        return 130
    if summary.failures:
        print(f"{len(summary.failures)} failed:", file=sys.stderr)
        for entry in summary.failures:
            print("  " + failure.format(**entry), file=sys.stderr)
        return 1
    return 0


def cmd_sweep(args) -> int:
    from harness.runs import sweep
    from harness.runs.loggers import parse_log_to
    from harness.runs.sweep_config import config_from_flags

    log_targets = [parse_log_to(text) for text in args.log_to]
    for path in args.checkpoints or ():
        if path.is_file():
            raise UserError(f"--checkpoints {path} is a file; pass a checkpoint folder (config.json, weights) or a folder of them")
    config = config_from_flags(
        config=args.config, preset=args.preset, sizes=args.sizes, model=args.model, revisions=args.revisions,
        checkpoints=args.checkpoints, name=args.name, size=args.size, tasks=args.tasks,
        tokens_per_step=args.tokens_per_step, shard=args.shard, loss_corpus=args.loss_corpus, loss_from=args.loss_from,
        loss_window=args.loss_window, loss_tokens=args.loss_tokens, loss_smoothing=args.loss_smoothing,
        out=args.out, data_dir=args.data_dir, limit=args.limit, num_fewshot=args.num_fewshot,
        prompt_type=args.prompt_type, bigbench_mode=args.bigbench_mode, dtype=args.dtype, device=args.device,
        batch_size=args.batch_size, add_bos_token=args.add_bos_token, trust_remote_code=args.trust_remote_code,
        prefix_cache=False if args.no_prefix_cache else None, save_every=args.save_every,
        prefetch=False if args.no_prefetch else None, progress=False if args.no_progress else None,
        task_files=tuple(args.task_files) or None, data_revision=args.data_revision, max_new_tokens=args.max_new_tokens,
        include_path=args.include_path, allow_task_code=args.allow_task_code,
    )
    _check_task_inputs(config)
    _check_log_to(log_targets)
    check_out_dir(config.out)
    with _loggers(log_targets, config.out) as loggers:
        summary = sweep.run_sweep(config, log=_log, loggers=loggers)
    print(summary.line())
    print(f"results: {config.out}  (harness table {config.out})")
    return _exit_code(summary, "interrupted: rerun the same command to resume", "{checkpoint} {task}: {error}")


def cmd_loss(args) -> int:
    from harness.errors import check_run_values
    from harness.runs.evaluate import measure_loss
    from harness.runs.loss_sources import check_corpus

    if args.loss_corpus is None:
        raise UserError("harness loss needs --loss-corpus PATH (.txt or .jsonl with a 'text' field)")
    check_run_values(batch_size=args.batch_size, loss_window=args.loss_window, loss_tokens=args.loss_tokens)
    check_corpus(args.loss_corpus)
    _check_model(args)
    if args.out is not None:
        check_out_dir(args.out)
    outcome, loss = measure_loss(
        args.model, out=args.out, log=_log, revision=args.revision, loss_corpus=args.loss_corpus,
        loss_window=args.loss_window, loss_tokens=args.loss_tokens, dtype=args.dtype, device=args.device,
        batch_size=args.batch_size, trust_remote_code=args.trust_remote_code,
    )
    if loss is not None:
        print(f"loss {loss['loss']:.6f} nats/token  bits_per_byte {loss['bits_per_byte']:.6f}  tokens {loss['tokens']}  "
              f"windows {loss['windows']}x{loss['window']}")
    if outcome.results is not None:
        print(f"written: {outcome.results}")
    return _exit_code(outcome.summary, "interrupted", "{task}: {error}")


def cmd_tasks(args) -> int:
    from harness.task_listing import describe_tasks

    print(describe_tasks(verbose=args.verbose))
    return 0


def cmd_prompt(args) -> int:
    from harness.items.rows import find_item, item_answers
    from harness.spec import BuildOptions

    check_whole_number("--index", args.index, 0, "it is the item's doc_id, its 0-based position in the split file")
    check_whole_number("--num-fewshot", args.num_fewshot, 0, "0 is zero-shot; leave it out for the task's own number of shots")
    if args.max_new_tokens != "auto":
        check_whole_number("--max-new-tokens", args.max_new_tokens, 1, "tokens generated per item at most, or auto")
    _check_task_inputs(args)
    opts = BuildOptions(
        data_dir=args.data_dir, num_fewshot=args.num_fewshot, prompt_type=args.prompt_type,
        bigbench_mode=args.bigbench_mode, task_files=tuple(args.task_files), hub_revision=args.data_revision,
        max_new_tokens=args.max_new_tokens, include_path=args.include_path, allow_task_code=bool(args.allow_task_code),
    )
    if args.task.startswith("lm_eval:"):  # lm-eval builds it: its prompt and its requests' other arguments
        from harness.interop.lm_eval_tasks import doc_answers, find_doc

        doc = find_doc(args.task, args.index, opts)
        context, answers = doc.context, doc_answers(doc)
    else:
        item = find_item(args.task, args.index, opts)
        context, answers = item.context, item_answers(item)
    sys.stdout.write(context + "\n")
    print("-" * 40, file=sys.stderr)
    print(json.dumps(answers, ensure_ascii=False), file=sys.stderr)
    return 0


def cmd_table(args) -> int:
    from harness.runs.sweep_config import parse_tokens_per_step
    from harness.table import render, results_table, with_task_loss

    tokens_per_step = parse_tokens_per_step(args.tokens_per_step)
    _check_results_input(args.path, "harness table:")
    if args.output is not None:
        check_output_file(args.output)
    frame = results_table(args.path, tokens_per_step)
    if args.loss_from_task:
        frame = with_task_loss(frame, args.loss_from_task)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
    text = render(frame, args.format, args.output)
    if text is not None:
        sys.stdout.write(text)
    return 0


def cmd_import_lm_eval(args) -> int:
    from harness.interop import import_lm_eval

    return import_lm_eval.run(args)


def cmd_export(args) -> int:
    from harness.interop import export_lm_eval

    return export_lm_eval.run(args)


def cmd_report(args) -> int:
    from harness.analysis.arguments import check_report_arguments

    check_report_arguments(args)
    check_whole_number("--seed", args.seed, 0, "any whole number >= 0 seeds the bootstraps, e.g. 0")
    if not Path(args.results).exists():
        raise UserError(f"{args.results} does not exist; pass a results folder or a table written by `harness table`")
    check_out_dir(args.out)
    from harness.analysis import report

    return report.run(args)


def cmd_compare(args) -> int:
    from harness.analysis import compare

    _check_results_input(args.ours, "harness compare: OURS")
    _check_results_input(args.reference, "harness compare: REFERENCE")
    ours = Path(args.ours)
    args.out = args.out or (ours.parent if ours.is_file() else ours) / "compare"  # compare.run's default, checked here
    check_out_dir(args.out)
    return compare.run(args)


def cmd_train_tiny(args) -> int:
    from harness.demo.pipeline import default_out, suite_config
    from harness.demo.tiny_suite import train_suite

    settings = _demo_settings(args)
    out = args.out or default_out(**settings) / "suite"
    check_out_dir(out)
    manifest = train_suite(suite_config(**settings), out, log=_log)
    for size in manifest["sizes"]:
        print(f"{size['name']}: {size['params_non_embedding']:,} non-embedding parameters, checkpoints at steps "
              f"{', '.join(map(str, size['checkpoint_steps']))}, final training loss {size['final_train_loss']}")
    print(f"suite: {out}  (runs/<size>/checkpoint-N, loss_corpus.jsonl, data/bigbench/benchmark_tasks/)")
    return 0


def cmd_demo(args) -> int:
    from harness.demo.pipeline import default_out, run_demo

    settings = _demo_settings(args)
    out = args.out or default_out(**settings)
    check_out_dir(out)
    result = run_demo(out, **settings, log=_log)
    source = args.loss_source
    print("\n".join(result.summaries[source]))
    if result.predictions[source]:
        print("\nprediction test (can the target log-probability, fitted before the jump, foresee it?):")
        print(result.predictions[source])
    print("\n" + "\n".join(result.in_words[source]))
    timings = ", ".join(f"{stage} {seconds:.0f}s" for stage, seconds in result.seconds.items())
    other = ", ".join(f"{s}: {path}" for s, path in result.reports.items() if s != source)
    print(f"report: {result.reports[source]}  (against the {source} loss; also {other}; both held-out losses beside "
          f"the trainer's: {result.losses}; {timings})")
    return 0


def _demo_settings(args) -> dict:
    check_whole_number("--seed", args.seed, 0, "the suite's seed, e.g. 0")
    check_whole_number("--threads", args.threads, 1, "torch threads for training, e.g. 2")
    return {"quick": args.quick, "seed": args.seed, "threads": args.threads}


COMMANDS = {
    "eval": cmd_eval, "sweep": cmd_sweep, "loss": cmd_loss, "tasks": cmd_tasks, "prompt": cmd_prompt,
    "table": cmd_table, "import-lm-eval": cmd_import_lm_eval, "export": cmd_export, "report": cmd_report, "compare": cmd_compare,
    "train-tiny": cmd_train_tiny, "demo": cmd_demo,
}


# lm-eval's --model_args keys and the flags they stand for (the rest is refused with our equivalents)
_MODEL_ARGS = {"pretrained": "--model", "revision": "--revision", "dtype": "--dtype", "device": "--device",
               "trust_remote_code": "--trust-remote-code", "batch_size": "--batch-size", "add_bos_token": "--add-bos-token"}
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def lm_eval_spellings(argv: list[str]) -> list[str]:
    """lm-evaluation-harness habits in our flags: ``--num_fewshot`` for ``--num-fewshot`` (any flag),
    and ``--model_args pretrained=X,revision=R,dtype=D,...`` for ``--model X --revision R --dtype D``.
    A ``--model_args`` key with no flag of ours is a one-line error naming the ones that have one."""
    out: list[str] = []
    args = iter(argv)
    for token in args:
        flag, eq, value = token.partition("=")
        if flag.startswith("--") and "_" in flag:
            flag = flag.replace("_", "-")
            token = flag + eq + value
        if flag != "--model-args":
            out.append(token)
            continue
        text = value if eq else next(args, "")
        for pair in filter(None, (p.strip() for p in text.split(","))):
            key, sep, val = pair.partition("=")
            if not sep or key not in _MODEL_ARGS:
                known = ", ".join(f"{k} ({f})" for k, f in _MODEL_ARGS.items())
                raise UserError(f"--model_args {pair!r}: not a key=value this harness maps; it maps {known}; "
                                "pass other settings as our own flags (see harness eval --help)")
            if key in ("trust_remote_code", "add_bos_token"):
                if val.lower() not in _TRUE | _FALSE:
                    raise UserError(f"--model_args {pair!r}: {key} must be True or False")
                out.extend([_MODEL_ARGS[key]] if val.lower() in _TRUE else [])
            else:
                out.extend([_MODEL_ARGS[key], val])
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        argv = lm_eval_spellings(list(sys.argv[1:] if argv is None else argv))
    except UserError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as error:
        print(f"harness {args.command}: error: {error}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as error:  # a text file read somewhere without its own check: still one line, naming it
        print(f"harness {args.command}: error: {not_utf8(_file_being_read(error) or 'a file given', error)}", file=sys.stderr)
        return 2
    except NonFiniteOutput as error:  # `harness loss` of a diverged checkpoint: a failure, not a number
        print(f"harness {args.command}: failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; results already written are kept", file=sys.stderr)
        return 130


def _file_being_read(error: BaseException) -> str | None:
    """The file a reader was decoding when ``error`` was raised: the innermost frame of its traceback
    with a local naming an existing file (``path``, ``file``, ``filename``...)."""
    found = None
    trace = error.__traceback__
    while trace is not None:
        for name in ("path", "file", "filename", "source", "entry"):
            value = trace.tb_frame.f_locals.get(name)
            if isinstance(value, (str, Path)) and str(value) and Path(value).is_file():
                found = str(value)
                break
        trace = trace.tb_next
    return found


if __name__ == "__main__":
    sys.exit(main())
