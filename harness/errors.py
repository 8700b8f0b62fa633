"""Errors meant for users: the CLI prints their message as one line (problem and fix), no traceback."""


class UserError(Exception):
    """Bad input from the user (unknown task, missing data, bad model path...)."""


class NonFiniteOutput(RuntimeError):
    """The model produced NaN or infinite logits or log-probabilities (diverged or corrupt weights).

    Raised wherever model outputs become numbers (scoring, generation, companions, the loss), so the
    unit fails with this reason: a score that was not measured is never reported, least of all as 0."""


def require_finite(values, what: str) -> None:
    """Raise ``NonFiniteOutput`` naming ``what`` when any of ``values`` is NaN or infinite."""
    import math

    bad = sum(1 for value in values if not math.isfinite(value))
    if bad:
        raise NonFiniteOutput(f"{bad} non-finite {what} (NaN or inf): diverged or corrupt weights; check the checkpoint")


def check_whole_number(flag: str, value, minimum: int, fix: str) -> None:
    """A count the user gave (``--limit``, ``--loss-window``...) must be a whole number >= ``minimum``:
    checked before any model is loaded, so a bad value costs nothing and never runs half-right
    (``--limit -3`` would slice off the last three items)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{flag} {value!r}: must be a whole number >= {minimum}; {fix}")


def check_run_values(
    *, limit=None, num_fewshot=None, batch_size=None, loss_window=None, loss_tokens=None, names: dict | None = None
) -> None:
    """The counts ``harness eval`` and ``harness sweep`` share.  ``names``: how the user wrote each
    (a sweep config says ``limit:``), default the flag."""
    names = {"limit": "--limit", "num_fewshot": "--num-fewshot", "batch_size": "--batch-size",
             "loss_window": "--loss-window", "loss_tokens": "--loss-tokens", **(names or {})}
    check_whole_number(names["limit"], limit, 1, "it is the number of items per task; leave it out to score every item")
    check_whole_number(names["num_fewshot"], num_fewshot, 0, "0 is zero-shot; leave it out for the task's own number of shots")
    if batch_size != "auto":
        check_whole_number(names["batch_size"], batch_size, 1, "pass a positive number of sequences per forward, or auto")
    check_whole_number(names["loss_window"], loss_window, 2, "a window needs a token to predict the next from, e.g. 2048")
    check_whole_number(names["loss_tokens"], loss_tokens, 2, "the corpus tokens to score, e.g. 1000000")
