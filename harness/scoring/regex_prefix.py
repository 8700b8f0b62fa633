"""Whether a regex's first match in a text is already decided, whatever text is appended.

Generation can stop early only where more tokens cannot change the answer.  When the answer is the
first match of a regex (BIG-bench's ``output_regex``), that holds once Python's matcher, searching
the text generated so far, reaches its first match without ever looking past the end of the text.

Python's ``re`` is a backtracking matcher: ``re.search`` tries start positions left to right and, at
each, the paths of the pattern in priority order (greedy repeats longest first, lazy ones shortest
first, alternatives left to right); the first path that succeeds is the match.  Every step of a
path reads one character, or tests an anchor, at a known position.  So we replay that search on
the prefix with three outcomes per path: it fails, it succeeds, or it needs a character at or past
the end (unknown).  Paths that fail are skipped as ``re`` skips them; the first path that does not
fail decides: if it succeeded, every extension of the prefix runs the identical search up to the
identical match (same span, same groups), so the match is settled; if it is unknown, it is not.

Only a subset of the syntax is replayed: characters and classes (tested with ``re`` itself, so case
folding and Unicode categories are Python's own), groups, alternation, greedy and lazy repeats of
sub-patterns that cannot match empty, and the anchors ``^ $ \\A \\Z`` without MULTILINE.  Anything
else (lookarounds, backreferences, ``\\b``, possessive repeats, repeats of possibly-empty bodies)
answers "not settled", which only means generating to the length limit: never a wrong early stop.
"""

from __future__ import annotations

import functools
import re
from typing import Callable

try:  # Python 3.11+
    import re._constants as _c
    import re._parser as _parser
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _parser  # type: ignore[no-redef]

FAIL, MATCH, UNKNOWN = 0, 1, 2

# A replay costs at most this many steps; past it the answer is "not settled" (safe, never wrong).
MAX_STEPS = 200_000

_CATEGORY_CLASS = {
    _c.CATEGORY_DIGIT: r"\d",
    _c.CATEGORY_NOT_DIGIT: r"\D",
    _c.CATEGORY_SPACE: r"\s",
    _c.CATEGORY_NOT_SPACE: r"\S",
    _c.CATEGORY_WORD: r"\w",
    _c.CATEGORY_NOT_WORD: r"\W",
}
# Flags that only change how one character is tested; they are handed to ``re`` with that test.
_CHARACTER_FLAGS = re.IGNORECASE | re.DOTALL | re.ASCII | re.UNICODE


class _Unsupported(Exception):
    """The pattern uses syntax the replay does not model."""


class _OutOfSteps(Exception):
    pass


def first_match_is_settled(pattern: str, text: str) -> bool:
    """True when ``re.search(pattern, text + more)`` finds the same match (span and groups) as
    ``re.search(pattern, text)`` for every string ``more``; False when that cannot be shown."""
    program = _program(pattern)
    if program is None:
        return False
    try:
        return _Replay(text).search(program) == MATCH
    except (_OutOfSteps, RecursionError):
        return False


@functools.lru_cache(maxsize=256)
def _program(pattern: str) -> tuple | None:
    """The parsed pattern as nested tuples the replay walks, or None when it cannot be replayed."""
    try:
        parsed = _parser.parse(pattern)
        flags = parsed.state.flags
        if flags & (re.MULTILINE | re.LOCALE):
            return None
        return _sequence(parsed, flags)
    except (_Unsupported, re.error):
        return None


def _sequence(nodes, flags: int) -> tuple:
    return tuple(_node(op, av, flags) for op, av in nodes)


def _node(op, av, flags: int) -> tuple:
    if op in (_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN):
        return ("char", _character_test(op, av, flags))
    if op is _c.SUBPATTERN:
        _group, add_flags, del_flags, body = av
        local = (flags | add_flags) & ~del_flags
        if local & re.MULTILINE:
            raise _Unsupported("MULTILINE")
        return ("seq", _sequence(body, local))
    if op is _c.BRANCH:
        return ("branch", tuple(_sequence(alternative, flags) for alternative in av[1]))
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
        low, high, body = av
        if body.getwidth()[0] == 0:
            # re stops an iteration that matched nothing; we do not model that guard
            raise _Unsupported("repeat of a possibly empty body")
        single = len(body) == 1 and body[0][0] in (_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN)
        inner = _node(*body[0], flags)[1] if single else _sequence(body, flags)
        kind = ("greedy" if op is _c.MAX_REPEAT else "lazy") + ("_char" if single else "")
        return (kind, low, None if high is _c.MAXREPEAT else high, inner)
    if op is _c.AT and av in (_c.AT_BEGINNING, _c.AT_BEGINNING_STRING, _c.AT_END, _c.AT_END_STRING):
        return ("at", av)
    raise _Unsupported(str(op))


def _character_test(op, av, flags: int) -> Callable[[str], bool]:
    """One character's test as a compiled one-character pattern, so ``re`` decides membership."""
    if op is _c.LITERAL:
        source = re.escape(chr(av))
    elif op is _c.NOT_LITERAL:
        source = "[^" + re.escape(chr(av)) + "]"
    elif op is _c.ANY:
        source = "."
    else:
        parts = []
        for item_op, item_av in av:
            if item_op is _c.NEGATE:
                parts.insert(0, "^")
            elif item_op is _c.LITERAL:
                parts.append(re.escape(chr(item_av)))
            elif item_op is _c.RANGE:
                parts.append(re.escape(chr(item_av[0])) + "-" + re.escape(chr(item_av[1])))
            elif item_op is _c.CATEGORY and item_av in _CATEGORY_CLASS:
                parts.append(_CATEGORY_CLASS[item_av])
            else:
                raise _Unsupported(str(item_op))
        source = "[" + "".join(parts) + "]"
    compiled = re.compile(source, flags & _CHARACTER_FLAGS)
    return lambda ch: compiled.fullmatch(ch) is not None


class _Replay:
    """``re.search``'s backtracking order over a text that may go on past its end."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.steps = 0

    def search(self, program: tuple) -> int:
        for start in range(len(self.text) + 1):
            outcome = self.sequence(program, 0, start, lambda pos: MATCH)
            if outcome != FAIL:
                return outcome
        # No match starts within the text; one may start in what follows it.
        return UNKNOWN

    def char(self, test: Callable[[str], bool], pos: int) -> int:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _OutOfSteps
        if pos >= len(self.text):
            return UNKNOWN
        return MATCH if test(self.text[pos]) else FAIL

    def sequence(self, nodes: tuple, index: int, pos: int, then: Callable[[int], int]) -> int:
        if index == len(nodes):
            return then(pos)
        rest = lambda p: self.sequence(nodes, index + 1, p, then)  # noqa: E731
        kind = nodes[index][0]
        if kind == "char":
            outcome = self.char(nodes[index][1], pos)
            return rest(pos + 1) if outcome == MATCH else outcome
        if kind == "seq":
            return self.sequence(nodes[index][1], 0, pos, rest)
        if kind == "branch":
            for alternative in nodes[index][1]:
                outcome = self.sequence(alternative, 0, pos, rest)
                if outcome != FAIL:
                    return outcome
            return FAIL
        if kind == "at":
            outcome = self.anchor(nodes[index][1], pos)
            return rest(pos) if outcome == MATCH else outcome
        _, low, high, body = nodes[index]
        if kind in ("greedy_char", "lazy_char"):
            return self.repeat_char(body, low, high, kind == "greedy_char", pos, rest)
        return self.repeat(body, low, high, kind == "greedy", 0, pos, rest)

    def anchor(self, where, pos: int) -> int:
        n = len(self.text)
        if where in (_c.AT_BEGINNING, _c.AT_BEGINNING_STRING):
            return MATCH if pos == 0 else FAIL
        # "$": the end, or just before a final "\n"; "\Z": the end.  The text may still grow, so
        # only a position the text already runs past is decided.
        if where == _c.AT_END and pos == n - 1 and self.text[pos] == "\n":
            return UNKNOWN
        return UNKNOWN if pos >= n else FAIL

    def repeat_char(self, test, low: int, high: int | None, greedy: bool, pos: int, then) -> int:
        """A repeated single character, tried as ``re`` tries it (longest first when greedy)."""
        if greedy:
            count = 0
            while high is None or count < high:
                outcome = self.char(test, pos + count)
                if outcome == UNKNOWN:
                    return UNKNOWN  # the longest run, tried first, may still grow
                if outcome == FAIL:
                    break
                count += 1
            for taken in range(count, low - 1, -1):
                outcome = then(pos + taken)
                if outcome != FAIL:
                    return outcome
            return FAIL
        taken = 0
        while True:
            if taken >= low:
                outcome = then(pos + taken)
                if outcome != FAIL:
                    return outcome
            if high is not None and taken >= high:
                return FAIL
            outcome = self.char(test, pos + taken)
            if outcome != MATCH:
                return outcome
            taken += 1

    def repeat(self, body: tuple, low: int, high: int | None, greedy: bool, count: int, pos: int, then) -> int:
        """A repeated sub-pattern (never empty, so every iteration moves forward)."""
        more = lambda p: self.repeat(body, low, high, greedy, count + 1, p, then)  # noqa: E731
        may_stop = count >= low
        may_continue = high is None or count < high
        if greedy:
            if may_continue:
                outcome = self.sequence(body, 0, pos, more)
                if outcome != FAIL:
                    return outcome
            return then(pos) if may_stop else FAIL
        if may_stop:
            outcome = then(pos)
            if outcome != FAIL:
                return outcome
        return self.sequence(body, 0, pos, more) if may_continue else FAIL
