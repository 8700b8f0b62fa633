"""``harness demo``: the loss threshold end to end, offline, on the CPU.

    train the tiny suite, each size with ``harness.EvalCallback``: at every checkpoint save the tasks
        and the mixture's held-out loss ─► evals/ (one folder per checkpoint, as ``harness eval``)
    ─► ``harness eval`` of every checkpoint (eval_spec/evaluate): into evals/, finding the callback's
        units done (a suite trained by an earlier run gets them here); into evals-docstrings/, the
        docstrings' held-out loss only
    ─► table-mixture.csv, table-docstrings.csv ─► ``harness report`` machinery, once per loss
    ─► report/, report-docstrings/ and a summary

Two losses per checkpoint, because they answer different questions: the mixture's (held-out text
drawn like the training text, 80% of it arithmetic) is the pre-training loss as a lab reports it,
and here it is mostly the task's own loss; the docstrings' (held-out natural language, no arithmetic)
is a general-text loss that does not contain the task, as Du et al.'s loss on an English corpus.

Everything runs through the code users run on real checkpoints: the suite's arithmetic tasks are
BIG-bench task.json files read by the ``bigbench:`` loader, the evaluation in training is the
``EvalCallback`` a user adds to their own Trainer, the checkpoints are then evaluated as ``harness eval
--model <run>/checkpoint-N`` evaluates them (same unit keys, same folders), the losses are the
harness's own held-out loss (``--loss-corpus``), and the training loss from each checkpoint's
trainer_state.json is kept beside them in ``losses.csv``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.analysis.report import Report, build_report, prediction_frame, write_report
from harness.demo.corpus import ADDITION, LOSS_CORPORA, ModelSize, SuiteConfig
from harness.demo.tiny_suite import Log, train_suite
from harness.errors import UserError
from harness.runs.progress import library_bars_off
from harness.table import markdown_table

DEFAULT_OUT = Path("results/demo")
QUICK_OUT = Path("results/demo-quick")

# The full demo's tuning (2 CPU cores, under 10 minutes with the evaluation and the report); why each value:
FULL = SuiteConfig(
    # Non-embedding parameters 25k, 100k, 336k, every size with at least two layers: a one-layer model
    # (13k, hidden 32) never learnt the addition in 1,500 steps (exact match 0.05-0.14), while two layers
    # of the same width depart around step 600 and end near 1.0. Which size departs first depends on the
    # seed (seed 0, two threads: the 100k first, the 25k last), so the sizes' order is not their jumps' order.
    sizes=(ModelSize("25k", 32, 2, 4), ModelSize("100k", 64, 2, 4), ModelSize("330k", 96, 3, 4)),
    tasks=(ADDITION,),
    # 1,500 steps: most sizes depart between steps ~400 and ~1,000 and end near 1.0, but on 6 of the ten runs
    # one size of three is still low at the end (0.05-0.52): the 10-minute budget ends training there
    steps=1500,
    batch_size=16,  # many small steps learn more per token than few large ones at this scale
    # Learning rate 7e-3, cosine decay after 50 warm-up steps, chosen by the pooled verdict of seeds 1-4 (one
    # thread). Before the jump a model has the tens digit and guesses one ones digit (exact match ~0.1), and
    # the threshold shows when that plateau lasts: at 1e-2 the jump came late, on seed 4 in the last five
    # checkpoints (the 100k never), so its pooled curve read "smooth rise"; at 5e-3 it came right after the
    # tens digit's rise, with no flat stretch (seeds 1 and 2 "smooth rise"); at 7e-3 seeds 1-4 read
    # "emerged". At 3e-3 the 25k never learnt (seed 4, 0.09 at the end); a constant 1e-2 after warm-up
    # learnt less than cosine decay (seed 4: no size above 0.25). docs/demo.md has the runs.
    learning_rate=7e-3,
    arithmetic_share=0.8,  # the arithmetic must be most of what the models see to be learnt in minutes
    docstring_chars=300_000,
    # 6 log-spaced checkpoints from step 25 to 300 (the plateau and the continuous companion's early
    # fall, cheaply), then one every 75 steps to 1,500: the departures fall between steps 400 and 1,000,
    # and a threshold verdict needs 3 checkpoints on the plateau side of the kink and 3 departing after
    # it (10 log-spaced checkpoints left the jump between the last two, 971 and 1,500).
    checkpoints=6,
    first_checkpoint=25,
    dense_checkpoints=16,
    dense_from=0.2,
)
# The reduced demo (tests/demo/test_demo.py): the full demo without its largest size, on one thread (the test
# machine is shared). Everything else is the full demo's, so each of its sizes is the full suite's size
# trained with the same seed and thread count (the weights of a size do not depend on the others): its
# curves are two of the full demo's three, and its verdicts those of the same data with one size fewer.
# The previous quick suite (4k, 13k and 150k on operands up to 99) ended every run with the largest
# size's jump between its last two checkpoints and "no emergence" everywhere.
QUICK = dataclasses.replace(FULL, sizes=FULL.sizes[:2], threads=1)
BOOTSTRAP = 1000
SEED = 0  # the report's bootstrap; the suite's seed is ``--seed``
LOSS_SOURCES = tuple(LOSS_CORPORA)  # ("mixture", "docstrings"): the first is evaluated with the tasks
REPORT_DIRS = {"mixture": "report", "docstrings": "report-docstrings"}
# per loss source, the folder of its one-checkpoint results: the tasks and the mixture's loss (what the
# callback writes during training), then the docstrings' loss alone
EVAL_DIRS = {"mixture": "evals", "docstrings": "evals-docstrings"}
LOSS_TOKENS = 10_000_000  # every token of the held-out corpora (at most a few hundred thousand)
MODEL_PREFIX = "tiny-neox-"  # the table's model: tiny-neox-<size>


def suite_config(*, quick: bool = False, seed: int = 0, threads: int | None = None) -> SuiteConfig:
    """FULL or QUICK with the suite's seed (corpus split, initialisation, data order) and training threads."""
    config = QUICK if quick else FULL
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    return dataclasses.replace(config, seed=seed, threads=config.threads if threads is None else threads)


def default_out(*, quick: bool = False, seed: int = 0, threads: int | None = None) -> Path:
    """results/demo[-quick][-seedN][-threadsN]: settings that change the weights get their own folder."""
    base = QUICK_OUT if quick else DEFAULT_OUT
    default_threads = (QUICK if quick else FULL).threads
    suffix = (f"-seed{seed}" if seed else "") + (f"-threads{threads}" if threads not in (None, default_threads) else "")
    return base.with_name(base.name + suffix)


@dataclass(frozen=True)
class DemoResult:
    out: Path
    reports: dict[str, Path]  # loss source -> index.html
    tables: dict[str, Path]  # loss source -> table-<source>.csv
    losses: Path  # losses.csv: both held-out losses beside the trainer's
    summaries: dict[str, tuple[str, ...]]  # loss source -> summary lines
    seconds: dict[str, float]
    predictions: dict[str, str]  # loss source -> the prediction test's table (markdown), "" when none
    in_words: dict[str, tuple[str, ...]]  # loss source -> what the run shows and does not (``plain_words``)
    evaluated: dict[str, CheckpointEvals]  # loss source -> what the evaluation after training ran or found done


def task_names(config: SuiteConfig) -> tuple[str, ...]:
    return tuple(f"bigbench:{task.name}" for task in config.tasks)


def eval_options(config: SuiteConfig, suite_dir: Path, loss_source: str = "mixture") -> dict:
    """The settings every evaluation of one loss source shares, as keyword arguments that
    ``harness.EvalCallback`` and ``harness.runs.evaluate.eval_spec`` both take under these names: the
    callback's evaluation at a save and ``harness eval`` of that checkpoint then make the same unit keys."""
    return {
        "data_dir": suite_dir / "data",
        # the same first N items at every checkpoint (with the tasks; a loss-only pass scores none)
        "limit": config.eval_items if loss_source == LOSS_SOURCES[0] else None,
        # windows as long as the training blocks; every token of the held-out corpus
        "loss_corpus": suite_dir / LOSS_CORPORA[loss_source], "loss_window": config.seq_len, "loss_tokens": LOSS_TOKENS,
        "tokens_per_step": config.batch_size * config.seq_len,
        "batch_size": "auto",
    }


def eval_callbacks(config: SuiteConfig, suite_dir: Path, out: Path, made: list | None = None):
    """``train_suite``'s ``callbacks``: each size's Trainer gets an ``EvalCallback`` that evaluates the
    tasks and the mixture's held-out loss at every checkpoint save, into ``out/evals``, under the
    model name ``tiny-neox-<size>``.  ``made`` collects the callbacks (their evaluation seconds)."""

    def for_size(size: ModelSize) -> list:
        from harness import EvalCallback

        callback = EvalCallback(task_names(config), out / EVAL_DIRS[LOSS_SOURCES[0]], every="save",
                                name=MODEL_PREFIX + size.name, size=size.name, **eval_options(config, suite_dir))
        if made is not None:
            made.append(callback)
        return [callback]

    return for_size


@dataclass
class CheckpointEvals:
    """What the evaluation of every checkpoint after training did, per loss source."""

    checkpoints: int = 0
    units_run: int = 0
    units_done_before: int = 0  # by the callback during training, or by an earlier demo run
    failures: list[str] = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        return (f"{self.checkpoints} checkpoints, {self.units_run} units run, {self.units_done_before} already done"
                + (f", {len(self.failures)} failed" if self.failures else ""))


def evaluate_checkpoints(config: SuiteConfig, manifest: dict, suite_dir: Path, out: Path, log: Log) -> dict[str, CheckpointEvals]:
    """``harness eval`` of every checkpoint of every size, once per loss source: with the tasks and
    the mixture's loss into ``evals/`` (where the callback put them at each save: found done, no model
    loaded), the docstrings' loss alone into ``evals-docstrings/``.  A checkpoint the callback never
    saw (a suite trained by an earlier run) is evaluated here in full."""
    from harness.runs.evaluate import eval_spec, evaluate

    done: dict[str, CheckpointEvals] = {}
    for source in LOSS_SOURCES:
        counts = done[source] = CheckpointEvals()
        tasks = task_names(config) if source == LOSS_SOURCES[0] else ()
        for size in manifest["sizes"]:
            for step in size["checkpoint_steps"]:
                spec = eval_spec(
                    str(suite_dir / "runs" / size["name"] / f"checkpoint-{step}"), tasks,
                    name=MODEL_PREFIX + size["name"], size=size["name"], out=out / EVAL_DIRS[source],
                    device="cpu", dtype="float32", progress=False, **eval_options(config, suite_dir, source),
                )
                # one line per source below, not the runner's lines per checkpoint; failures are kept
                with library_bars_off():  # a "Loading weights" bar per checkpoint otherwise
                    summary = evaluate(spec, log=lambda message: log(message) if message.startswith("FAILED") else None).summary
                counts.checkpoints += 1
                counts.units_run += summary.units_done
                counts.units_done_before += summary.units_skipped
                counts.failures += [f"{f['checkpoint']} {f.get('task') or 'loss'}: {f['error']}" for f in summary.failures]
        log(f"evaluated every checkpoint ({source} loss{' and the tasks' if tasks else ''}, {out / EVAL_DIRS[source]}): "
            f"{counts.describe()}")
        if counts.failures:
            log(f"demo: {len(counts.failures)} {source} units failed ({'; '.join(counts.failures)}); the report leaves them out")
    return done


def checkpoint_losses(root: Path) -> pd.DataFrame:
    """model, step, loss, loss_bits_per_byte of every checkpoint folder under ``root`` (a loss-only
    folder has no task rows in ``results_table``, so the losses are read from the store directly)."""
    from harness import store

    rows = []
    for folder in store.find_checkpoint_dirs(root):
        results = store.merged_results(folder) or {}
        loss = results.get("loss") or {}
        rows.append({"model": results.get("name"), "step": results.get("step"), "loss": loss.get("loss"),
                     "loss_bits_per_byte": loss.get("bits_per_byte")})
    return pd.DataFrame(rows, columns=["model", "step", "loss", "loss_bits_per_byte"])


def table_with_loss(table: pd.DataFrame, losses: pd.DataFrame, loss_source: str) -> pd.DataFrame:
    """``table`` (``harness.table.results_table``'s columns) with each checkpoint's loss taken from ``losses``
    and ``loss_source`` naming it (``corpus:<source>``)."""
    keyed = losses.set_index(["model", "step"])
    index = pd.MultiIndex.from_arrays([table["model"], table["step"].astype("float64")])
    keyed.index = pd.MultiIndex.from_arrays([keyed.index.get_level_values(0), keyed.index.get_level_values(1).astype("float64")])
    out = table.copy()
    for column in ("loss", "loss_bits_per_byte"):
        out[column] = keyed[column].reindex(index).to_numpy(dtype="float64")
    out["loss_source"] = f"corpus:{loss_source}"
    return out


def losses_frame(tables: dict[str, pd.DataFrame], manifest: dict, suite_dir: Path) -> pd.DataFrame:
    """Per checkpoint: each held-out loss (``<source>_loss``) and the training loss HF Trainer logged."""
    from harness.runs.loss_sources import trainer_state_loss

    columns = {source: f"{source.rstrip('s')}_loss" for source in tables}  # mixture_loss, docstring_loss
    frame = None
    for source, table in tables.items():
        rows = table.drop_duplicates(["size", "step"]).dropna(subset=["step"])[["size", "step", "loss"]]
        rows = rows.assign(step=rows["step"].astype(int)).rename(columns={"loss": columns[source]})
        frame = rows if frame is None else frame.merge(rows, on=["size", "step"], how="outer")
    frame["train_loss"] = [
        trainer_state_loss(suite_dir / "runs" / str(size) / f"checkpoint-{step}", step)["loss"]
        for size, step in zip(frame["size"], frame["step"])
    ]
    order = {s["name"]: i for i, s in enumerate(manifest["sizes"])}
    frame = frame[["size", "step", *columns.values(), "train_loss"]]
    return frame.sort_values(["size", "step"], key=lambda c: c.map(order) if c.name == "size" else c).reset_index(drop=True)


def _size(model: str) -> str:
    return model.removeprefix(MODEL_PREFIX).split(" ")[0]


def _curve_in_words(t) -> str:
    """One curve's status as a reader would say it."""
    from harness.analysis.thresholds import AT_EDGE, EMERGED, FROM_START, INSUFFICIENT, SMOOTH_RISE

    edge = AT_EDGE in t.note
    if t.status == EMERGED:
        return f"a threshold (flat, then rising below η = {t.eta:.2f} [{t.low:.2f}, {t.high:.2f}])"
    if t.status == SMOOTH_RISE and edge:
        return f"a rise that begins at the edge of its checkpoints (departs below {t.departure_loss:.2f}; no verdict on its shape)"
    if t.status == SMOOTH_RISE:
        return f"a rise, but no threshold: a smooth {t.smooth} curve of the loss fits as well (departs below {t.departure_loss:.2f})"
    if t.status == FROM_START:
        return "above its reference from the start, without a rise"
    if t.status == INSUFFICIENT:
        return f"no verdict ({t.note})"
    return f"no rise ({t.note})" if t.note else "no rise"


def has_verdict(t) -> bool:
    """A per-size verdict the data carry (``thresholds.carries_verdict``)."""
    from harness.analysis.thresholds import carries_verdict

    return carries_verdict(t.status, t.note)


def plain_words(report: Report, loss_source: str = "mixture") -> list[str]:
    """What the run shows and what it does not, in sentences: each size's verdict and the pooled one,
    whether the sizes lie on one curve of loss, the continuous companion beside exact match, the
    prediction test, and the limits of a demo (the printed summary's end and the report's first screen)."""
    lines = []
    for analysis in report.analyses:
        by_size = analysis.by_model
        carried = [m for m, t in by_size.items() if has_verdict(t)]
        lines.append(f"What this run shows ({analysis.task}, {analysis.metric}, against the {loss_source} held-out loss): "
                     f"{len(carried)} of {len(by_size)} sizes have data that carry a verdict. "
                     + " ".join(f"{_size(m)}: {_curve_in_words(t)}." for m, t in by_size.items()))
        if analysis.pooled is not None:
            lines.append(f"All sizes pooled as one curve of loss: {_curve_in_words(analysis.pooled)}.")
        agreement = analysis.agreement
        if agreement is None or agreement.agree is None:
            lines.append("Whether the sizes lie on one curve of loss is not decided here"
                         + (f" ({agreement.note})." if agreement else " (one size)."))
        elif agreement.agree:
            shift = ("" if agreement.shift_high is None else
                     f"; a shift between sizes larger than {max(abs(agreement.shift_low), abs(agreement.shift_high)):.2f} nats is ruled out at 90%")
            lines.append(f"The sizes lie on one curve of loss: the same curve shifted per size fits no better "
                         f"(p = {agreement.p_value:.2g}{shift}), as Du et al. claim for large models.")
        else:
            contrary = f" ({', '.join(map(_size, agreement.contrary))} apart)" if agreement.contrary else ""
            largest = "" if agreement.shift is None else f"; largest shift {agreement.shift:.2f} nats [{agreement.shift_low:.2f}, {agreement.shift_high:.2f}]"
            lines.append(f"The sizes do NOT lie on one curve of loss{contrary}: each reaches the same exact match at a "
                         f"different loss (p = {agreement.p_value:.2g}{largest}).")
        if analysis.companion is not None:
            c = analysis.companion
            if c.emerged:
                meaning = "the answer's probability jumps too, so the jump is not only a product of the metric"
            elif analysis.pooled is not None and analysis.pooled.emerged and has_verdict(c) and c.status == "smooth rise":
                meaning = ("the jump is made by scoring all-or-nothing (Schaeffer et al.'s mirage): what the models "
                           "learn about the answer improves smoothly")
            else:  # a rise from the first checkpoints has no shape verdict: neither reading is supported
                meaning = ("so this run does not decide whether the jump is only the metric's (Schaeffer et al.'s "
                           "mirage); read the two curves side by side in the report's companion figure")
            lines.append(f"Beside exact match, the answer's per-token log-probability (the continuous companion) is "
                         f"{_curve_in_words(c)}: {meaning}.")
        for test in report.predictions:
            if test.task != analysis.task:
                continue
            if test.surrogate_departure is None or test.measured_departure is None:
                lines.append(f"Prediction test ({test.split}): no departure to compare ({test.note or 'none measured or predicted'}).")
            else:
                where = "inside" if test.surrogate_inside else "outside"
                lines.append(f"Prediction test ({test.split}): the answer's log-probability, as the fitted sizes map it to "
                             f"exact match, puts the departure at {test.surrogate_departure:.2f}, {where} the measured "
                             f"{test.measured_departure:.2f} "
                             f"[{test.departure_low:.2f}, {test.departure_high:.2f}] (error {test.surrogate_mae:.3f} against "
                             f"{test.baseline_mae:.3f} for exact match extrapolated linearly): {test.note}.")
    lines.append("What it does not show: anything about large models (three tiny models, one synthetic task); "
                 "that η is a constant of the task (another --seed or thread count moves it: docs/demo.md's table of "
                 "runs); and, on the mixture loss, an ability separate from the loss, since that loss contains the "
                 "task's own answers (the docstrings' loss does not: --loss-source docstrings).")
    return lines


def summary_lines(report: Report, loss_source: str = "mixture") -> list[str]:
    """Per task: each size's verdict on the held-out loss, then the pooled one, whether the sizes agree and
    the continuous companion's pooled verdict (the mirage column)."""
    lines = []
    for analysis in report.analyses:
        sizes = "; ".join(f"{model.removeprefix(MODEL_PREFIX)}: {t.describe()}" for model, t in analysis.by_model.items())
        lines.append(f"{analysis.task} [{analysis.metric}] per size ({loss_source} held-out loss, nats/token): {sizes}")
        if analysis.pooled is not None:
            lines.append(f"  pooled: {analysis.pooled.describe()}")
        agreement = analysis.agreement
        if agreement is None or agreement.agree is None:
            lines.append("  sizes: undetermined" + (f" ({agreement.note})" if agreement else " (one size)"))
        else:
            p_value = "" if agreement.p_value is None else f"p = {agreement.p_value:.3g}; "
            lines.append(f"  sizes: {'agree' if agreement.agree else 'DISAGREE'} ({p_value}{agreement.note})")
        if analysis.companion is not None:
            lines.append(f"  companion ({analysis.companion_metric}, pooled): {analysis.companion.describe()}")
    return lines


def run_demo(out: Path, *, quick: bool = False, seed: int = 0, threads: int | None = None, log: Log = print) -> DemoResult:
    from harness.table import results_table

    out = Path(out)
    config = suite_config(quick=quick, seed=seed, threads=threads)
    seconds: dict[str, float] = {}
    started = time.monotonic()
    suite_dir = out / "suite"
    callbacks: list = []  # the sizes trained now, each evaluated at its saves
    manifest = train_suite(config, suite_dir, log, callbacks=eval_callbacks(config, suite_dir, out, callbacks))
    in_training = sum(callback.eval_seconds for callback in callbacks)
    seconds["train"] = time.monotonic() - started - in_training
    if callbacks:
        seconds["eval in training"] = in_training
        saves = sum(len(callback.evaluated_steps) for callback in callbacks)
        log(f"evaluated {saves} checkpoints as they were saved ({len(callbacks)} sizes, EvalCallback): {in_training:.0f}s; "
            f"log: {out / EVAL_DIRS[LOSS_SOURCES[0]] / 'logs' / 'callback.jsonl'}")

    started = time.monotonic()
    evaluated = evaluate_checkpoints(config, manifest, suite_dir, out, log)
    seconds["eval after training"] = time.monotonic() - started

    started = time.monotonic()
    items_root = out / EVAL_DIRS[LOSS_SOURCES[0]]  # the task results and per-item records (the prediction test's)
    scored = results_table(items_root)
    tables, table_paths, reports, summaries, predictions, in_words = {}, {}, {}, {}, {}, {}
    for source in LOSS_SOURCES:
        tables[source] = table_with_loss(scored, checkpoint_losses(out / EVAL_DIRS[source]), source)
        table_paths[source] = out / f"table-{source}.csv"
        tables[source].to_csv(table_paths[source], index=False)
        report = build_report(tables[source], source=str(table_paths[source]), resamples=BOOTSTRAP, seed=SEED,
                              items_root=items_root)
        in_words[source] = tuple(plain_words(report, source))
        # the report's first screen (its summary's notes) opens with the run's argument in words
        write_report(dataclasses.replace(report, notes=(*in_words[source], *report.notes)), out / REPORT_DIRS[source])
        reports[source] = out / REPORT_DIRS[source] / "index.html"
        summaries[source] = tuple(summary_lines(report, source))
        predictions[source] = markdown_table(prediction_frame(report)) if report.predictions else ""
    losses_path = out / "losses.csv"
    losses_frame(tables, manifest, suite_dir).to_csv(losses_path, index=False)
    seconds["report"] = time.monotonic() - started
    return DemoResult(out, reports, table_paths, losses_path, summaries, seconds, predictions, in_words, evaluated)
