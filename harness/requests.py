"""The values that flow between the stages: an evaluation item, the engine's requests and results.

task → Item (prompt, choices or targets) → LoglikelihoodRequest / GenerationRequest → Engine
→ LoglikelihoodResult / generated text.  All are frozen so they can be hashed and cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score ``continuation`` given ``context`` (lm-evaluation-harness's ``loglikelihood``)."""

    context: str
    continuation: str


@dataclass(frozen=True)
class LoglikelihoodResult:
    logprob: float  # summed log-probability of the continuation tokens, in nats
    num_tokens: int  # continuation tokens scored
    num_bytes: int  # UTF-8 bytes of the continuation string as requested
    is_greedy: bool  # every continuation token is the argmax at its position


class AnswerSettled(Protocol):
    """A hashable value that tells when a generation's answer can no longer change.

    ``is_final(text)`` must be True only if the answer read from ``text + more`` equals the one read
    from ``text`` for every string ``more`` (e.g. ``harness.scoring.extraction.BigbenchAnswer``).
    """

    def is_final(self, text: str) -> bool: ...


@dataclass(frozen=True)
class GenerationRequest:
    """Greedy continuation of ``context`` until any of ``stop`` or ``max_new_tokens``.

    ``score``: continuations whose log-probability given ``context`` (the prompt exactly as the
    generation sees it) is returned beside the text, computed on the prompt's own KV cache.
    ``until_settled``: decoding also ends once this says the answer is settled; the text is
    returned as generated so far, not cut (only ``stop`` strings cut it).
    """

    context: str
    stop: tuple[str, ...] = ()
    max_new_tokens: int = 256
    score: tuple[str, ...] = ()
    until_settled: AnswerSettled | None = None


@dataclass(frozen=True)
class GenerationResult:
    """A generation and, per ``GenerationRequest.score`` continuation in order, its log-likelihood."""

    text: str
    scores: tuple[LoglikelihoodResult, ...] = ()


@dataclass(frozen=True)
class Item:
    """One evaluation item of one task, fully rendered: the exact prompt is ``context``.

    Multiple choice: ``choices`` are the continuations scored after ``context`` and ``gold``
    the index of the correct one.  Generation: ``targets`` are the accepted answers and
    ``stop``/``max_new_tokens`` bound the greedy decode.

    Per-choice contexts (WinoGrande's partial scoring): choice j is scored after ``contexts[j]``;
    ``context`` is then their display form, ``CHOICE_CONTEXTS_SEPARATOR.join(contexts)``, so that
    ``harness prompt`` prints and ``prompt_sha256`` pins every prompt the model sees.
    One continuation (LAMBADA): ``choices`` holds that continuation alone and ``gold`` is None;
    it is scored by its log-likelihood and whether it is the greedy continuation.
    """

    task: str  # the row name, e.g. "mmlu:anatomy" or "bigbench:modified_arithmetic/three_digit_addition_control"
    doc_id: int  # 0-based position of the item in the upstream split file
    context: str
    choices: tuple[str, ...] = ()
    gold: int | None = None
    targets: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    max_new_tokens: int = 0
    contexts: tuple[str, ...] = ()  # one per choice, or () when every choice follows ``context``
    # What scoring reads beyond the prompt and answers.  Typed fields, never ``meta``: the unit key
    # hashes every field but ``meta`` (harness.runs.units.items_sha256), so editing any of these re-runs.
    choice_texts: tuple[str, ...] = ()  # acc_norm/acc_bytes divide by these lengths; () = by ``choices``
    solution: str = ""  # the dataset's worked answer the gold continuation is built from (GSM8K); "" = none
    # BIG-bench (extraction.bigbench_postprocess): the answer is the generation cut after
    # ``stop_string``, then ``output_regex``'s first match; the family resolves BIG-bench's default
    # regex, so None (or "") here means no regex.
    stop_string: str | None = None
    output_regex: str | None = None
    metrics: tuple[str, ...] = ()  # the row's metrics when the family decides them per row (BIG-bench); () = the spec's
    primary_metric: str | None = None  # with ``metrics``
    # Provenance only (few-shot doc ids, subject...): scoring never reads it, so it is not hashed.
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.contexts:
            if len(self.contexts) != len(self.choices):
                raise ValueError(f"{self.task} item {self.doc_id}: {len(self.contexts)} contexts for {len(self.choices)} choices")
            if self.context != CHOICE_CONTEXTS_SEPARATOR.join(self.contexts):
                raise ValueError(f"{self.task} item {self.doc_id}: context must be the display form of its contexts")
        if self.choice_texts and len(self.choice_texts) != len(self.choices):
            raise ValueError(f"{self.task} item {self.doc_id}: {len(self.choice_texts)} choice texts for {len(self.choices)} choices")
        if bool(self.metrics) != (self.primary_metric is not None):
            raise ValueError(f"{self.task} item {self.doc_id}: metrics and primary_metric go together")

    @property
    def is_multiple_choice(self) -> bool:
        return bool(self.choices) and self.gold is not None

    @property
    def is_loglikelihood(self) -> bool:
        """One continuation scored alone (no gold to pick among choices)."""
        return len(self.choices) == 1 and self.gold is None

    @property
    def choice_contexts(self) -> tuple[str, ...]:
        """The context each choice is scored after."""
        return self.contexts or (self.context,) * len(self.choices)

    @property
    def output_type(self) -> str:
        if self.is_multiple_choice:
            return "multiple_choice"
        return "loglikelihood" if self.is_loglikelihood else "generate"


# Between the per-choice contexts in an item's display form (``Item.context``).
CHOICE_CONTEXTS_SEPARATOR = "\n\n"
