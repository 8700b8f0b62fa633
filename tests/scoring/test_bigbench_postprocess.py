"""BIG-bench's answers as BIG-bench reads them, and when a greedy decode may stop.

BIG-bench 1.0.0 reads a generation with ``bigbench/models/model_utils.py::postprocess_output(text,
max_length, stop_string, output_regex)``: keep ``text[:max_length]``; if ``stop_string`` first
occurs at an index > 0, cut right after it (kept; at index 0 nothing is cut); then, if
``output_regex`` is truthy, ``next(iter(re.findall(output_regex, text)), "")``.  json_task.py
passes ``[^\\.\\?\\!\\;\\n]+`` when a task sets neither field, and exact_str_match is ``response in
targets`` with nothing stripped.

The expected answers below are worked out by hand from those rules; they are the facts CI relies on,
since the package index no longer serves bigbench 1.0.0.  Where BIG-bench's own function happens to
be importable (``bigbench.models.model_utils``, e.g. its 1.0.0 sdist's folder on PYTHONPATH), one
test checks the whole table against it too.
"""

from __future__ import annotations

import random
import re

import pytest

from harness.engine import Engine
from harness.requests import GenerationRequest
from harness.scoring.extraction import (
    BIGBENCH_DEFAULT_OUTPUT_REGEX,
    BigbenchAnswer,
    bigbench_exact_match,
    bigbench_postprocess,
)
from harness.scoring.regex_prefix import first_match_is_settled

# (stop_string, output_regex) of real BIG-bench 1.0.0 tasks, as harness.items.families.bigbench resolves them
DEFAULT = (None, BIGBENCH_DEFAULT_OUTPUT_REGEX)  # most tasks: neither field set
ARITHMETIC = (None, r"[-+]?\d+")  # arithmetic/*, modified_arithmetic, chinese_remainder_theorem
IPA = ("\n", None)  # international_phonetic_alphabet_transliterate
PIG_LATIN = (".", None)  # language_games/pig_latin_*
CHECKMATE = ("#", None)  # checkmate_in_one
UNNATURAL = ("\n", r"[^\n]+")  # unnatural_in_context_learning/*
OPERATORS = ("\n", r"([-+]?\d+)[.]{0,1}$")  # operators
PENGUINS = ("\n", r"[\w]+")  # penguins_in_a_table
QUOTED = (None, r"('.*?')")  # mult_data_wrangling/*, simp_turing_concept/*
LISTS = (None, r"\[(?:\d+, )*(?:\d+)?\]")  # list_functions/*
NO_REGEX = (None, "")  # simple_text_editing: "" is no regex (and no default either)
PHYSICS = (None, r"(?:[0-9]+\.[0-9]+|[0-9]+)\s[a-zA-Z]+(?:\/[a-zA-Z]+)*")  # physics_questions
ELEMENTS = (None, r"(?i)hydrogen|helium|lithium")  # periodic_elements (its alternation, shortened)
DOUBLE_NEWLINE = ("\n\n", None)  # a multi-character stop string

# (what it shows, generation, max_length, (stop_string, output_regex), BIG-bench's answer)
CASES = [
    ("default: leading space kept", " Paris. It is the capital", 64, DEFAULT, " Paris"),
    ("default: leading newline", "\nParis\nQ: next", 64, DEFAULT, "Paris"),
    ("default: multi-line, blank lines first", "\n\nThe answer\nis 7", 64, DEFAULT, "The answer"),
    ("default: no match", "\n\n", 64, DEFAULT, ""),
    ("default: punctuation only", "...?!;", 64, DEFAULT, ""),
    ("default: semicolon ends it", "yes; no", 64, DEFAULT, "yes"),
    ("default: next shot follows", " 42\nQ: 1 + 1\nA: 2", 64, DEFAULT, " 42"),
    ("default: truncated first", " Paris is", 5, DEFAULT, " Pari"),
    ("arithmetic: number after blank lines", "\n\n680\n\n102 + 3", 64, ARITHMETIC, "680"),
    ("arithmetic: signed", " -12 apples", 64, ARITHMETIC, "-12"),
    ("arithmetic: no number", "abc", 64, ARITHMETIC, ""),
    ("arithmetic: number past max_length", "The sum is 1234", 12, ARITHMETIC, "1"),
    ("stop string later: kept", " ðə kæt\nEnglish: the cat", 64, IPA, " ðə kæt\n"),
    ("stop string at 0: nothing cut", "\nðə kæt\nmore", 64, IPA, "\nðə kæt\nmore"),
    ("stop string absent", "no newline at all", 64, IPA, "no newline at all"),
    ("stop string absent, truncated", "abc\ndef", 3, IPA, "abc"),
    ("stop string past max_length", "abcd\nef", 4, IPA, "abcd"),
    ("period stop: kept", " ellohay orldway. Next one.", 64, PIG_LATIN, " ellohay orldway."),
    ("period stop at 0", ".leading period. then", 64, PIG_LATIN, ".leading period. then"),
    ("checkmate: cut after #", " Qh5#\n1. e4", 64, CHECKMATE, " Qh5#"),
    ("stop then regex", " 2021-01-01\nfoo", 64, UNNATURAL, " 2021-01-01"),
    ("stop at 0 then regex", "\n12/31/1999\n", 64, UNNATURAL, "12/31/1999"),
    ("group with $ before the kept newline", " 42\nmore", 64, OPERATORS, "42"),
    ("group, optional period", " 42.\nmore", 64, OPERATORS, "42"),
    ("group: $ not reached", " 42 is it\nmore", 64, OPERATORS, ""),
    ("group: stop at 0 cuts nothing, so no $", "\n42\nmore", 64, OPERATORS, ""),
    ("group: stop at 0, $ before the final newline", "\n42\n", 64, OPERATORS, "42"),
    ("word class after stop cut", " Bernard\nJames", 64, PENGUINS, "Bernard"),
    ("quoted group: first pair", "'abc' and 'def'", 64, QUOTED, "'abc'"),
    ("quoted group: '.' stops at newlines", "no quote\n'x\ny'", 64, QUOTED, ""),
    ("list: first list", " [1, 2, 3]\n[4]", 64, LISTS, "[1, 2, 3]"),
    ("list: empty list", " [] then [1]", 64, LISTS, "[]"),
    ("empty regex: whole text", " The cat sat.\nQ: next", 64, NO_REGEX, " The cat sat.\nQ: next"),
    ("physics: value and unit", " 9.8 m/s/s and so on", 64, PHYSICS, "9.8 m/s/s"),
    ("case-insensitive alternation", " Helium. Next", 64, ELEMENTS, "Helium"),
    ("multi-character stop string", "a\n\nb\n\nc", 64, DOUBLE_NEWLINE, "a\n\n"),
]

try:  # BIG-bench's own function, when it can be imported (the package needs none of its dependencies for it)
    from bigbench.models.model_utils import postprocess_output as bigbench_postprocess_output
except ImportError:  # pragma: no cover - depends on the environment
    bigbench_postprocess_output = None


@pytest.mark.parametrize("name, generation, max_length, fields, expected", CASES, ids=[c[0] for c in CASES])
def test_answer_is_what_bigbench_postprocess_output_returns(name, generation, max_length, fields, expected):
    stop_string, output_regex = fields
    assert bigbench_postprocess(generation, max_length, stop_string, output_regex) == expected
    assert BigbenchAnswer(max_length, stop_string, output_regex).read(generation) == expected


@pytest.mark.skipif(bigbench_postprocess_output is None,
                    reason="bigbench 1.0.0 is not importable (the index no longer serves it); the table above holds its answers")
def test_table_agrees_with_bigbench_itself():
    # The table was checked against BIG-bench 1.0.0's own function; where it can still be imported, check again.
    got = [bigbench_postprocess_output(generation, max_length, *fields) for _, generation, max_length, fields, _ in CASES]
    assert got == [expected for *_, expected in CASES]


def test_table_covers_the_edge_cases():
    assert len(CASES) >= 20
    assert {fields for *_, fields, _ in CASES} >= {DEFAULT, ARITHMETIC, IPA, UNNATURAL, OPERATORS, QUOTED, NO_REGEX}


def test_exact_match_compares_as_is():
    assert bigbench_exact_match("680", ["681", "680"]) is True
    assert bigbench_exact_match(" Paris", ["Paris"]) is False  # BIG-bench strips nothing
    assert bigbench_exact_match("680", ["680\n"]) is False
    assert bigbench_exact_match("Paris", ["paris"]) is False
    assert bigbench_exact_match("", [""]) is True


def test_edge_arguments():
    assert bigbench_postprocess("abc", 0, None, None) == "abc"  # max_length 0: no truncation
    assert bigbench_postprocess("abc", None, "", "") == "abc"  # empty stop and regex: no-ops
    assert bigbench_postprocess("x = 42", None, None, r"= (\d+)?z?") == "42"  # the group, not the match
    assert bigbench_postprocess("x = z", None, None, r"= (\d+)?z") == ""  # a group that took no part
    assert bigbench_postprocess("abc", None, None, r"(a)(b)(x)") == ""  # no match: no complaint
    with pytest.raises(ValueError, match="2 groups"):
        bigbench_postprocess("ab", None, None, r"(a)(b)")  # BIG-bench's assertion


# ------------------------------------------------------------------ when decoding may stop

_ALPHABET = "ab1 2.;\n'[],#xQ-"


def _extensions(rng: random.Random, count: int = 40) -> list[str]:
    return [""] + ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 8))) for _ in range(count)]


@pytest.mark.parametrize("name, generation, max_length, fields, expected", CASES, ids=[c[0] for c in CASES])
def test_a_settled_prefix_reads_as_any_continuation_does(name, generation, max_length, fields, expected):
    """Cut the generation anywhere: where ``is_final`` says so, the answer is the full generation's
    and that of any other continuation (BIG-bench's function decides the answers)."""
    answer = BigbenchAnswer(max_length, *fields)
    rng = random.Random(name)
    reference = bigbench_postprocess_output or bigbench_postprocess
    for cut in range(len(generation) + 1):
        prefix = generation[:cut]
        if answer.is_final(prefix):
            assert answer.read(prefix) == expected, (prefix, expected)
            for more in _extensions(rng, 10):
                assert reference(prefix + more, max_length, *fields) == answer.read(prefix), (prefix, more)


CONFIGS = [DEFAULT, ARITHMETIC, IPA, PIG_LATIN, CHECKMATE, UNNATURAL, OPERATORS, PENGUINS, QUOTED, LISTS, NO_REGEX,
           PHYSICS, ELEMENTS, DOUBLE_NEWLINE, ("1", r"[-+]?\d+"), ("ab", r"(a)|b")]


@pytest.mark.parametrize("fields", CONFIGS, ids=[repr(c) for c in CONFIGS])
@pytest.mark.parametrize("max_length", [6, 64])
def test_random_texts_settle_only_where_no_continuation_changes_the_answer(fields, max_length):
    answer = BigbenchAnswer(max_length, *fields)
    reference = bigbench_postprocess_output or bigbench_postprocess
    rng = random.Random(f"{fields}{max_length}")
    for _ in range(300):
        text = "".join(rng.choice(_CHUNKS) for _ in range(rng.randint(0, 6)))
        if answer.is_final(text):
            for more in _extensions(rng, 15):
                assert reference(text + more, max_length, *fields) == answer.read(text), (text, more)


# (stop_string, output_regex), text generated so far, max_length, settled?
SETTLED = [
    (DEFAULT, " 42", 64, False),  # the run may go on
    (DEFAULT, " 42\n", 64, True),  # closed by a newline
    (DEFAULT, " Paris.", 64, True),
    (DEFAULT, "\n", 64, False),  # a leading newline: nothing yet, keep generating
    (DEFAULT, "\n\n...", 64, False),
    (DEFAULT, "abcd", 4, True),  # max_length characters: the cut is fixed
    (ARITHMETIC, " 12", 64, False),
    (ARITHMETIC, " 12 ", 64, True),
    (ARITHMETIC, " -", 64, False),
    (ARITHMETIC, "\n\n", 64, False),
    (IPA, " ðə\n", 64, True),  # stop string past index 0
    (IPA, "\nðə kæt\nmore", 64, False),  # stop string at 0 and no regex: the whole text counts
    (UNNATURAL, "\n12/31", 64, False),
    (UNNATURAL, "\n12/31\n", 64, True),  # stop string again past index 0
    (OPERATORS, " 42", 64, False),
    (OPERATORS, "\n42\n", 64, False),  # "$" before a final newline: more text may follow
    (QUOTED, "x 'ab", 64, False),
    (QUOTED, "x 'ab' ", 64, True),
    (QUOTED, "x 'a\n", 64, False),  # that quote failed, a later one may match
    (LISTS, " [1, 2", 64, False),
    (LISTS, " [1, 2]", 64, True),
    (NO_REGEX, " The cat sat.\n", 64, False),
    (PHYSICS, " 9.8 m/s", 64, False),
    (PHYSICS, " 9.8 m/s.", 64, True),
    (ELEMENTS, " Hel", 64, False),
    (ELEMENTS, " Helium", 64, True),  # nothing after "helium" can change an alternation's match
    (DOUBLE_NEWLINE, "a\n", 64, False),
    (DOUBLE_NEWLINE, "a\n\n", 64, True),
]


@pytest.mark.parametrize("fields, text, max_length, settled", SETTLED)
def test_when_the_answer_is_settled(fields, text, max_length, settled):
    assert BigbenchAnswer(max_length, *fields).is_final(text) is settled


# Patterns for the matcher replay: BIG-bench's and some that exercise priority and anchors.
PATTERNS = [
    BIGBENCH_DEFAULT_OUTPUT_REGEX, r"[-+]?\d+", r"('.*?')", r"\[(?:\d+, )*(?:\d+)?\]", r"([-+]?\d+)[.]{0,1}$",
    r"[\w]+", r"[^\n]+", r"a|ab", r"ab|a", r"\d+?x", r"x*b", r"^a", r"a$", r"a\Z", r"(a)|b", r"(?i)AB",
    r"[^a]+", r"a{2,3}", r"(?:ab)+1", r".*?;", r"(?s).*?;", r"a?b?1", r"[a-b]{2}|1",
]


NEVER_SETTLED = {r"([-+]?\d+)[.]{0,1}$", r"a$", r"a\Z"}
_CHUNKS = ["a", "b", "ab", "1", "2", " ", ".", ";", "\n", "'", "[", "]", ", ", "x", "Q", "-"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_settled_first_matches_survive_every_continuation(pattern):
    """Whenever the replay calls a first match settled, re.search on any longer text agrees (span and groups)."""
    rng = random.Random(pattern)
    settled_seen = 0
    for _ in range(600):
        text = "".join(rng.choice(_CHUNKS) for _ in range(rng.randint(0, 6)))
        if not first_match_is_settled(pattern, text):
            continue
        settled_seen += 1
        first = re.search(pattern, text)
        assert first is not None  # "no match yet" is never settled
        for more in _extensions(rng):
            later = re.search(pattern, text + more)
            assert later is not None and (later.span(), later.groups()) == (first.span(), first.groups()), (text, more)
    # the check does not pass by never saying "settled", except where nothing can settle: a match
    # that ends at "$" or "\\Z" ends there only if the text does
    assert (settled_seen > 0) is (pattern not in NEVER_SETTLED)


@pytest.mark.parametrize("pattern", [r"a(?=b)", r"(a)\1", r"\ba", r"(?m)^a", r"(?:a*)*b", r"a++", r"(?>a)"])
def test_syntax_the_replay_does_not_model_is_never_settled(pattern):
    assert first_match_is_settled(pattern, "a b a b ab\n") is False


def test_unsettled_until_the_first_match_closes():
    assert first_match_is_settled(r"\d+", "ab 12") is False
    assert first_match_is_settled(r"\d+", "ab 12 ") is True
    assert first_match_is_settled(r"\d+?", "ab 1") is True  # lazy: one digit is enough
    assert first_match_is_settled(r"a|ab", "a") is True  # the first alternative wins as soon as it matches
    assert first_match_is_settled(r"ab|a", "a") is False  # "ab" has priority and may still come


# ------------------------------------------------------------------ the engine stops there


def test_engine_stops_once_the_answer_is_settled(model_and_tokenizer, one_torch_thread):
    """The tiny model's greedy text is junk (control characters, split UTF-8 as U+FFFD): each request
    stops early at a settled answer, reads as its full generation does, and batch size changes nothing."""
    model, tokenizer = model_and_tokenizer
    prompts = ["The quick brown", "12", "Q", "Answer: A"]
    engine = Engine(model, tokenizer, batch_size=4, progress=False)
    full = engine.generate([GenerationRequest(p, max_new_tokens=24) for p in prompts])
    forwarded_full = engine.tokens_forwarded

    def stop_inside(text: str) -> str:  # two characters of the generation first found past index 0
        windows = (text[i : i + 2] for i in range(4, len(text) - 2))
        return next(w for w in windows if "\ufffd" not in w and text.find(w) > 0)

    answers = [BigbenchAnswer(200, stop_inside(text), None) for text in full] + [BigbenchAnswer(200, *ARITHMETIC)] * len(full)
    requests = [GenerationRequest(p, max_new_tokens=24, until_settled=a) for p, a in zip(prompts * 2, answers)]
    outputs = {}
    for batch_size, prefix_cache in ((1, False), (4, True), (16, True)):
        engine = Engine(model, tokenizer, batch_size=batch_size, prefix_cache=prefix_cache, progress=False)
        outputs[batch_size] = engine.generate(requests)
        if batch_size == 4:
            assert engine.tokens_forwarded < 2 * forwarded_full  # decoding stopped, not only the answer
    assert outputs[1] == outputs[4] == outputs[16]  # batch-size invariant
    shorter = 0
    for text, stopped, answer in zip(full * 2, outputs[4], answers):
        assert text.startswith(stopped)  # not cut: the text of the tokens generated so far
        assert answer.read(stopped) == answer.read(text)
        shorter += len(stopped) < len(text)
    assert shorter >= len(prompts) + 1  # every stop-string request, and some arithmetic one, stopped early
