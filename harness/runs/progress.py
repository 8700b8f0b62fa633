"""Where a sweep is: one line for the whole run (``harness sweep``, ``harness eval``, ``harness loss``).

    checkpoint 2/3 (pythia-160m/step3000) | units 5/8 | mmlu 96/135 items | 14.2 items/s, 57 tok/s | elapsed 3:05 | ETA 1:52

``progress_line`` formats it from plain counters (``SweepCounts``); ``SweepProgress`` keeps the
counters as the runner and the engine report work, and shows the line: redrawn in place (tqdm) on a
terminal, and on anything else (CI, a log file, a pipe) written as a plain line each time a unit
ends, and at most once a minute while one runs, since a redrawn line in a log file is one line of
carriage returns.  The engine draws no bar of its own in a sweep (it reports to this line), and the
bars of the libraries that load checkpoints are off while the sweep runs (``library_bars_off``):
nested bars are what left stray ``[A`` in the output.

``tok/s`` counts the tokens the model predicted: those scored (a loss window's tokens, a
continuation's) or generated.  The ETA is the elapsed time scaled by the units this run still has
to run (the unit running counts by its share of items done); units found finished cost nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TextIO

HEARTBEAT_SECONDS = 60.0  # off a terminal: a line at least this often while a unit runs
REDRAW_SECONDS = 0.2  # on a terminal: redraws at most this often


@dataclass(frozen=True)
class SweepCounts:
    """The counters of one progress line."""

    checkpoints: int | None  # in the run (None: not known)
    checkpoint: int = 0  # the one being loaded or evaluated, 1-based (0: none yet)
    name: str | None = None  # its name: <model>/<checkpoint folder>
    units_total: int | None = None
    units_done: int = 0  # finished, failed or found finished
    units_failed: int = 0
    doing: str | None = None  # what runs now: a unit's label, "loading", "done"
    unit_items: int | None = None  # items of that unit done (scored now or before)
    unit_items_total: int | None = None
    # the rate's window: the unit running, or the whole run once it ends
    items: int = 0  # items scored
    tokens: int = 0  # tokens predicted (scored or generated)
    seconds: float = 0.0
    token_seconds: float | None = None  # the tokens' window when not the items' (the run's units with tokens)
    elapsed: float = 0.0  # since the run started
    work_done: float = 0.0  # units this run has run, the one running by its share of items
    work_total: float | None = None  # units this run has to run


def eta_seconds(elapsed: float, done: float, total: float | None) -> float | None:
    """Seconds left if the rest goes at the pace so far; None while there is no pace to go by."""
    if total is None:
        return None
    if done >= total:
        return 0.0
    if done <= 0 or elapsed <= 0:
        return None
    return elapsed * (total - done) / done


def clock(seconds: float) -> str:
    """``M:SS``, or ``H:MM:SS`` from an hour on."""
    whole = int(max(seconds, 0.0))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def rate(count: float, seconds: float) -> str:
    """A per-second rate with the digits that mean something: 1,234 / 56.7 / 0.42."""
    value = count / seconds
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _of(done: float, total: int | None) -> str:
    return f"{done}/{total}" if total is not None else f"{done}"


def progress_line(counts: SweepCounts) -> str:
    """The progress line of ``counts`` (pure: the same counters give the same line)."""
    c = counts
    units = f"units {_of(c.units_done, c.units_total)}" + (f" ({c.units_failed} failed)" if c.units_failed else "")
    parts = [f"checkpoint {_of(c.checkpoint, c.checkpoints)}" + (f" ({c.name})" if c.name else ""), units]
    if c.doing:
        items = f" {_of(c.unit_items, c.unit_items_total)} items" if c.unit_items is not None else ""
        parts.append(c.doing + items)
    token_seconds = c.seconds if c.token_seconds is None else c.token_seconds
    rates = [f"{rate(c.items, c.seconds)} items/s"] if c.items and c.seconds > 0 else []
    rates += [f"{rate(c.tokens, token_seconds)} tok/s"] if c.tokens and token_seconds > 0 else []
    if rates:
        parts.append(", ".join(rates))
    eta = eta_seconds(c.elapsed, c.work_done, c.work_total)
    parts += [f"elapsed {clock(c.elapsed)}", f"ETA {clock(eta)}" if eta is not None else "ETA ?"]
    return " | ".join(parts)


@contextmanager
def library_bars_off() -> Iterator[None]:
    """transformers', huggingface_hub's and (when loaded) datasets' progress bars off in the body,
    as they were after: a "Loading weights" bar per checkpoint, drawn from the thread that reads the
    next checkpoint, breaks the sweep's line."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    restore: list[Callable[[], Any]] = []
    if hf_logging.is_progress_bar_enabled():
        hf_logging.disable_progress_bar()
        restore.append(hf_logging.enable_progress_bar)
    if not are_progress_bars_disabled():
        disable_progress_bars()
        restore.append(enable_progress_bars)
    datasets = sys.modules.get("datasets")  # never imported for this: it is slow to import
    if datasets is not None and datasets.is_progress_bar_enabled():
        datasets.disable_progress_bars()
        restore.append(datasets.enable_progress_bars)
    try:
        yield
    finally:
        for undo in restore:
            undo()


class SweepProgress:
    """The counters of a run and its line on ``stream`` (default stderr).

    The runner reports checkpoints, units and chunks of items; the engine, given this object as its
    ``progress``, reports each call and batch (``start``, ``advance``).  Disabled (``--no-progress``,
    a launch's other processes), it counts and shows nothing."""

    def __init__(self, checkpoints: int | None, units_total: int | None, *, enabled: bool = True,
                 stream: TextIO | None = None, terminal: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = terminal if terminal is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.clock = clock
        self.started = clock()
        self.counts = SweepCounts(checkpoints, units_total=units_total,
                                  work_total=float(units_total) if units_total is not None else None)
        self._bar: Any = None
        self._drawn = self.started
        self._units_run = 0  # units this run ran to their end (failed ones too)
        self._unit_started: float | None = None  # the unit running, since when
        self._unit_scored = self._chunk_items = 0  # items scored in the unit running; in its chunk being scored
        self._call_done = self._call_total = 0  # engine requests answered in the call running; in all
        self._run_items = self._run_tokens = 0
        self._run_item_seconds = self._run_token_seconds = 0.0  # of the units that scored items; predicted tokens

    # -------------------------------------------------------------- the runner's reports

    def checkpoint(self, number: int, label: str) -> None:
        """Checkpoint ``number`` (1-based) is being loaded, or waited for."""
        self._update(checkpoint=number, name=label, doing="loading")

    def settled(self, units: int, failed: bool = False) -> None:
        """``units`` are over without running: found finished, or failed with their checkpoint."""
        c = self.counts
        self._update(units_done=c.units_done + units, units_failed=c.units_failed + (units if failed else 0),
                     work_total=None if c.work_total is None else c.work_total - units)

    def unit_started(self, label: str) -> None:
        self._unit_started = self.clock()
        self._unit_scored = self._chunk_items = self._call_done = self._call_total = 0
        self._update(doing=label, unit_items=None, unit_items_total=None, items=0, tokens=0)

    def unit_items(self, done: int, total: int) -> None:
        """The unit running has ``total`` items, ``done`` of them scored by an earlier run."""
        self._update(unit_items=done, unit_items_total=total)

    def chunk_started(self, items: int) -> None:
        self._chunk_items, self._call_done, self._call_total = items, 0, 0

    def chunk_finished(self, items: int) -> None:
        self._unit_scored += items
        self._chunk_items = self._call_done = self._call_total = 0
        self._update(unit_items=(self.counts.unit_items or 0) + items, items=self._unit_scored)

    def unit_finished(self, failed: bool = False) -> None:
        c = self.counts
        seconds = self.clock() - self._unit_started if self._unit_started is not None else 0.0
        self._units_run += 1
        self._unit_started = None
        self._run_items += c.items
        self._run_tokens += c.tokens
        self._run_item_seconds += seconds if c.items else 0.0
        self._run_token_seconds += seconds if c.tokens else 0.0
        self._update(units_done=c.units_done + 1, units_failed=c.units_failed + failed,
                     doing=f"{c.doing} failed" if failed else c.doing)
        self.counts = replace(self.counts, seconds=seconds)
        if self.enabled and not self.terminal:
            self._write(progress_line(self.counts))
        self._update(doing=None, unit_items=None, unit_items_total=None, items=0, tokens=0)

    def interrupted(self) -> None:
        self._update(doing="interrupted")

    # -------------------------------------------------------------- the engine's meter

    def start(self, requests: int) -> None:
        """An engine call of ``requests`` requests begins."""
        self._call_done, self._call_total = 0, requests

    def advance(self, requests: int = 0, tokens: int = 0) -> None:
        """A batch is done: ``requests`` answered, ``tokens`` predicted (scored or generated)."""
        self._call_done += requests
        self._update(tokens=self.counts.tokens + tokens)

    # -------------------------------------------------------------- showing it

    def line(self) -> str:
        return progress_line(self.counts)

    def log_through(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """``log`` printing above the line, which is drawn again under it."""

        def above(message: str) -> None:
            if self._bar is None:
                log(message)
                return
            with self._bar.external_write_mode(file=self.stream):
                log(message)

        return above

    def __enter__(self) -> SweepProgress:
        if self.enabled and self.terminal:
            from tqdm import tqdm

            # the line is the bar: tqdm keeps it at the bottom, trims it to the terminal's width and
            # draws it again under whatever log_through prints
            self._bar = tqdm(total=self.counts.units_total, bar_format="{desc}", file=self.stream,
                             dynamic_ncols=True, leave=True)
            self._draw(force=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        """The last line gives the run's rates: items over the seconds of the units that scored
        items, tokens over those of the units that predicted tokens."""
        c = self.counts
        self.counts = replace(c, doing="interrupted" if c.doing == "interrupted" else "done", unit_items=None,
                              unit_items_total=None,
                              items=self._run_items, tokens=self._run_tokens, seconds=self._run_item_seconds,
                              token_seconds=self._run_token_seconds,
                              elapsed=self.clock() - self.started)
        if self._bar is not None:
            self._draw(force=True)
            self._bar.close()
            self._bar = None

    def _unit_share(self) -> float:
        """How far the unit running is: its items scored, plus the chunk's share by requests answered."""
        c = self.counts
        call = self._call_done / self._call_total if self._call_total else 0.0
        if c.unit_items_total:
            todo = c.unit_items_total - ((c.unit_items or 0) - self._unit_scored)  # less those of an earlier run
            return min((self._unit_scored + self._chunk_items * call) / max(todo, 1), 0.99)
        return min(call, 0.99)  # a loss unit: one engine call

    def _update(self, **changes: Any) -> None:
        now = self.clock()
        running = self._unit_started is not None
        self.counts = replace(self.counts, **changes)
        self.counts = replace(
            self.counts, elapsed=now - self.started, seconds=now - self._unit_started if running else 0.0,
            work_done=self._units_run + (self._unit_share() if running else 0.0),
        )
        if self.enabled:
            self._draw()

    def _draw(self, force: bool = False) -> None:
        now = self.clock()
        if self._bar is not None:
            # always the current line, so that tqdm draws it right under a log line
            self._bar.set_description_str(progress_line(self.counts), refresh=False)
            if force or now - self._drawn >= REDRAW_SECONDS:
                self._bar.refresh()
                self._drawn = now
        elif not self.terminal and self._unit_started is not None and now - self._drawn >= HEARTBEAT_SECONDS:
            self._write(progress_line(self.counts))

    def _write(self, line: str) -> None:
        self._drawn = self.clock()
        print(line, file=self.stream, flush=True)
