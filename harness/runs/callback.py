"""``EvalCallback``: evaluate while an HF ``Trainer`` trains, into the same store ``harness eval``
writes, and into the Trainer's own loggers.

    on_train_begin: items built (data errors before any step), tokens per step, the items chosen
    on_save (every="save") / on_step_end (every=N) / on_train_end (last step, if not yet):
        evaluate_model (training state restored) ─► <out>/<run>/checkpoint-N/results.json
        ─► Trainer.log({"harness/<task>/<metric>": ...}) ─► report_to (TensorBoard, W&B, MLflow...),
           which show them as ``train/harness/...``, the tags ``--log-to`` writes too (``loggers``)
        ─► <out>/logs/callback.jsonl (run name, step, seconds, share of training wall time)

At a save the checkpoint folder is on disk already, so its results are keyed by that folder's
content hash and land where ``harness eval --model <run>/checkpoint-N --out <out>`` and ``harness
sweep --checkpoints <run> --out <out>`` look (``plan.checkpoint_dir``): those commands then find them done.  Evaluations between saves (every=N, the end of training) key the
weights in memory (``units.loaded_model_identity``).
"""

from __future__ import annotations

import inspect
import sys
import time
import weakref
from pathlib import Path
from typing import Any, Sequence

from transformers import TrainerCallback

from harness import store
from harness.errors import UserError, check_run_values, check_whole_number
from harness.items.registry import task_list
from harness.runs.in_process import evaluate_model, tasks_once
from harness.runs.loggers import harness_scalars
from harness.runs.sweep_config import check_api_arguments
from harness.runs.unit_files import now
from harness.spec import BuildOptions

# examples looked at to find a fixed sequence length in the training set
_LENGTH_PROBE = 1000


class EvalCallback(TrainerCallback):
    """Evaluate ``tasks`` at every checkpoint save (``every="save"``) or every N optimizer steps,
    and at the end of training; rows carry the step, ``tokens_seen`` and the loss.

    ``loss_corpus``: the held-out loss (``loss_source`` corpus); without it the trainer's last
    logged training loss (``loss_source`` trainer).  ``tokens_per_step``: tokens per optimizer step;
    when not given, per-device batch x gradient accumulation x world size x sequence length, the
    length from ``sequence_length`` or from a training set whose examples all have one length.
    ``limit``: the first N items of each (sub)task, the same at every step.  ``tokenizer``: when
    the Trainer has no ``processing_class``.  ``name``: the table's model (default: the run folder's name);
    ``size``: its size label (the report's colour).

    Budgets (``evaluate_model``'s): ``max_new_tokens`` caps the tokens generated per item (a count, or
    ``"auto"``: from the targets, for tasks that read the answer at the start of the generation: an
    untrained model's babble stops early, a model that answers is scored as without the cap).
    ``budget_seconds``: seconds one evaluation may take; ``budget_share``: the share of the wall time
    since training began that all evaluation together may take (a warning is printed when it is
    passed).  A budget that runs out writes the unfinished task units ``partial`` (rows with status
    ``partial``), never finished; the loss is still measured.  None of them set: results as before.
    ``include_path``, ``allow_task_code``: for ``lm_eval:<name>`` tasks, as ``harness eval``'s flags.
    """

    def __init__(
        self,
        tasks: str | Sequence[str],
        out: str | Path,
        *,
        data_dir: str | Path | None = None,
        loss_corpus: str | Path | None = None,
        limit: int | None = None,
        every: str | int = "save",
        tokens_per_step: int | None = None,
        sequence_length: int | None = None,
        tokenizer: Any = None,
        name: str | None = None,
        size: str | None = None,
        batch_size: int | str = "auto",
        loss_window: int = 2048,
        loss_tokens: int = 1_000_000,
        num_fewshot: int | None = None,
        bigbench_mode: str = "auto",
        max_new_tokens: int | str | None = None,
        budget_seconds: float | None = None,
        budget_share: float | None = None,
        include_path: str | Path | None = None,
        allow_task_code: bool = False,
    ) -> None:
        check_api_arguments("EvalCallback", {k: v for k, v in locals().items() if k not in ("self", "tokenizer", "every")})
        check_run_values(limit=limit, num_fewshot=num_fewshot, batch_size=batch_size, loss_window=loss_window,
                         loss_tokens=loss_tokens, names={k: k for k in ("limit", "num_fewshot", "batch_size", "loss_window", "loss_tokens")})
        if every != "save" and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise UserError(f"every={every!r}: pass 'save' (at each checkpoint save) or a number of steps >= 1")
        if max_new_tokens is not None and max_new_tokens != "auto":
            check_whole_number("max_new_tokens", max_new_tokens, 1, "tokens generated per item at most, or 'auto'")
        if budget_seconds is not None and not budget_seconds > 0:
            raise UserError(f"budget_seconds={budget_seconds!r}: pass the seconds one evaluation may take (> 0), or None")
        if budget_share is not None and not 0 < budget_share <= 1:
            raise UserError(f"budget_share={budget_share!r}: pass the share of training time evaluation may take, "
                            "in (0, 1], e.g. 0.1; or None")
        if loss_corpus is not None and not Path(loss_corpus).is_file():
            raise UserError(f"loss_corpus {str(loss_corpus)!r} does not exist; pass a .txt or .jsonl file")
        self.tasks = task_list(tasks)
        if not self.tasks:
            raise UserError("EvalCallback needs at least one task, e.g. tasks=['bigbench:modified_arithmetic']")
        self.out = Path(out)
        self.every = every
        self.tokenizer = tokenizer
        self.name = name
        self.size = size
        self.tokens_per_step = tokens_per_step
        self.sequence_length = sequence_length
        self.options = {
            "data_dir": data_dir, "loss_corpus": loss_corpus, "limit": limit, "batch_size": batch_size,
            "loss_window": loss_window, "loss_tokens": loss_tokens, "num_fewshot": num_fewshot,
            "bigbench_mode": bigbench_mode, "max_new_tokens": max_new_tokens,
            "include_path": Path(include_path) if include_path is not None else None, "allow_task_code": allow_task_code,
        }
        self.budget_seconds = budget_seconds
        self.budget_share = budget_share
        self.evaluated_steps: list[int] = []
        self.eval_seconds = 0.0
        self._train_started: float | None = None
        self._trainer: Any = None
        self._run_tokens_per_step: int | None = None

    # ------------------------------------------------------------------ Trainer events

    def on_train_begin(self, args, state, control, model=None, processing_class=None, train_dataloader=None, **kwargs):
        self._train_started = time.perf_counter()
        trainer = _calling_trainer()
        self._trainer = weakref.ref(trainer) if trainer is not None else None
        if self.tokenizer is None and processing_class is None:
            raise UserError("EvalCallback needs the tokenizer: pass Trainer(processing_class=tokenizer) or EvalCallback(tokenizer=...)")
        opts = BuildOptions(
            data_dir=Path(self.options["data_dir"]) if self.options["data_dir"] is not None else None,
            limit=self.options["limit"], num_fewshot=self.options["num_fewshot"],
            bigbench_mode=self.options["bigbench_mode"], max_new_tokens=self.options["max_new_tokens"],
            include_path=self.options["include_path"], allow_task_code=self.options["allow_task_code"],
        )
        built, _ = tasks_once(self.tasks, opts)  # the items every evaluation of this run scores
        self._run_tokens_per_step, source = self._tokens_per_step(args, train_dataloader)
        if state.is_world_process_zero:
            self._event("start", name=self._run_name(args), tasks=list(self.tasks), limit=self.options["limit"],
                        every=self.every,
                        tokens_per_step=self._run_tokens_per_step, tokens_per_step_source=source,
                        items={row: [item.doc_id for item in items] for b in built.values() for row, items in b.rows.items()})

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.every != "save" and state.global_step % self.every == 0:
            self._evaluate(args, state, model, processing_class, checkpoint_dir=None)

    def on_save(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.every == "save":
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self._evaluate(args, state, model, processing_class, checkpoint_dir=folder if folder.is_dir() else None)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step not in self.evaluated_steps:
            self._evaluate(args, state, model, processing_class, checkpoint_dir=None)

    # ------------------------------------------------------------------ evaluation

    def _time_budget(self, started: float) -> float | None:
        """Seconds this evaluation may take: ``budget_seconds``, and with ``budget_share`` what keeps
        all evaluation so far within that share of the wall time since training began (0 when it is
        spent already: the units are then written partial, and the loss still measured)."""
        allowed = [self.budget_seconds] if self.budget_seconds is not None else []
        if self.budget_share is not None:
            wall = started - (self._train_started or started)
            allowed.append(max(0.0, self.budget_share * wall - self.eval_seconds))
        return min(allowed) if allowed else None

    def _evaluate(self, args, state, model, processing_class, checkpoint_dir: Path | None) -> None:
        started = time.perf_counter()
        budget = self._time_budget(started)
        train_loss, logged_step = (None, None) if self.options["loss_corpus"] is not None else _last_train_loss(state)
        frame = evaluate_model(
            model, self.tokenizer or processing_class, self.tasks, out=self.out, step=state.global_step,
            name=self._run_name(args), size=self.size, checkpoint_dir=checkpoint_dir, train_loss=train_loss,
            train_loss_step=logged_step, tokens_per_step=self._run_tokens_per_step, time_budget=budget, **self.options,
        )
        seconds = time.perf_counter() - started
        self.eval_seconds += seconds
        self.evaluated_steps.append(state.global_step)
        wall = time.perf_counter() - (self._train_started or started)
        share = self.eval_seconds / wall if wall > 0 else None
        partial = sorted(set(frame.loc[frame["status"] == "partial", "task"].dropna())) if len(frame) else []
        if self.budget_share is not None and share is not None and share > self.budget_share and state.is_world_process_zero:
            print(f"warning: EvalCallback: evaluation has taken {share:.1%} of the training time so far (budget_share "
                  f"{self.budget_share:.1%}); rows of {len(partial)} tasks partial at step {state.global_step}", file=sys.stderr)
        timing = {"harness/eval_seconds": seconds, "harness/eval_share_of_train_time": share,
                  "harness/partial_tasks": len(partial) if budget is not None else None}
        logs = {**harness_scalars(frame.to_dict("records")), **{k: v for k, v in timing.items() if v is not None}}
        trainer = self._trainer() if self._trainer is not None else None
        if trainer is not None:
            trainer.log(logs)  # the Trainer's own logging: log_history and every report_to integration
        if state.is_world_process_zero:
            self._event("evaluated", name=self._run_name(args), step=state.global_step,
                        checkpoint=str(checkpoint_dir) if checkpoint_dir else None,
                        seconds=round(seconds, 3), eval_seconds_total=round(self.eval_seconds, 3),
                        train_wall_seconds=round(wall, 3), eval_share_of_train_time=share,
                        time_budget=None if budget is None else round(budget, 3), partial=partial,
                        loss=train_loss, loss_logged_step=logged_step, logged_to_trainer=trainer is not None)

    def _run_name(self, args) -> str:
        """The table's model; also in every log record, since runs (a family's sizes) may share one ``out``.
        By default the run folder's name, resolved as ``harness eval`` and ``harness sweep`` name a
        checkpoint of it (``checkpoints.default_model_name``): the three share one results folder."""
        return self.name or Path(args.output_dir).expanduser().resolve().name

    def _event(self, kind: str, **fields: Any) -> None:
        store.append_jsonl(self.out / "logs" / "callback.jsonl", [{"time": now(), "event": kind, **fields}])

    def _tokens_per_step(self, args, train_dataloader) -> tuple[int | None, str | None]:
        if self.tokens_per_step is not None:
            return int(self.tokens_per_step), "given"
        length, source = self.sequence_length, "sequence_length"
        if length is None:
            length, source = _fixed_length(getattr(train_dataloader, "dataset", None)), "training set"
        if length is None:
            return None, None
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size * length
        return per_step, f"batch {args.per_device_train_batch_size} x accumulation {args.gradient_accumulation_steps} x world {args.world_size} x length {length} ({source})"


def _last_train_loss(state) -> tuple[float | None, int | None]:
    """The training loss the Trainer logged last, at or before this step, and its step."""
    logged = [(e["step"], e["loss"]) for e in state.log_history if "loss" in e and e.get("step", 0) <= state.global_step]
    if not logged:
        return None, None
    step, loss = max(logged, key=lambda pair: pair[0])
    return float(loss), step


def _fixed_length(dataset: Any) -> int | None:
    """The length of every example's ``input_ids`` when the first ``_LENGTH_PROBE`` share one (packed
    pre-training data); None otherwise, or when the dataset cannot be indexed."""
    try:
        count = min(len(dataset), _LENGTH_PROBE)
        lengths = {len(dataset[i]["input_ids"]) for i in range(count)}
    except Exception:  # noqa: BLE001 - an iterable dataset, examples without input_ids: unknown
        return None
    return lengths.pop() if len(lengths) == 1 else None


def _calling_trainer() -> Any:
    """The ``Trainer`` whose callback handler called us, found on the call stack: a ``TrainerCallback``
    is handed the model, optimizer and loaders but not the trainer, whose ``log`` is the one way into
    every ``report_to`` integration."""
    from transformers import Trainer

    frame = inspect.currentframe()
    try:
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, Trainer):
                return candidate
            frame = frame.f_back
        return None
    finally:
        del frame
