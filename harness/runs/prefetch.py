"""Run one call in a background thread and collect its result later: a sweep reads the next
checkpoint's weights while the current one is evaluated (reading is I/O and torch releases the GIL)."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Generic, TypeVar

_T = TypeVar("_T")


class BackgroundCall(Generic[_T]):
    """``fn(*args)`` started now in a daemon thread (so Ctrl-C never waits for a half-read checkpoint),
    or run at once in this thread with ``in_thread=False`` (``--no-prefetch``)."""

    def __init__(self, fn: Callable[..., _T], *args: Any, in_thread: bool = True) -> None:
        self._fn, self._args = fn, args
        self._done = threading.Event()
        self._value: _T | None = None
        self._error: BaseException | None = None
        self.seconds = 0.0  # how long the call itself ran
        if in_thread:
            threading.Thread(target=self._run, name="harness-prefetch", daemon=True).start()
        else:
            self._run()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self._value = self._fn(*self._args)
        except BaseException as error:  # noqa: BLE001 - handed to the caller of result()
            self._error = error
        finally:
            self.seconds = time.perf_counter() - started
            self._done.set()

    def result(self) -> _T:
        """Wait for the call; its exception, if it raised, is raised here.  The value is handed over,
        not kept (so a model it holds is freed with the caller's last reference): call this once."""
        # Short waits keep the main thread responsive to Ctrl-C on every platform.
        while not self._done.wait(0.2):
            pass
        if self._error is not None:
            raise self._error
        value, self._value = self._value, None
        return value  # type: ignore[return-value]

