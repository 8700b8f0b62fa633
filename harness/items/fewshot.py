"""Few-shot samplers: which exemplars each item's prompt shows, as positions in a pool of docs.

Every way this package picks exemplars lives here, so a family only says which sampler and which
pool; the prompts it then renders must match upstream byte for byte (tests/test_tasks_*.py pin them).

- ``first_k``: the first k docs of the pool, optionally leaving the item itself out (lm-eval's
  ``first_n`` sampler; MMLU/C-Eval, C3, NLPCC-KBQA, GSM8K's fixed order, GSM8K-Chinese, BIG-bench);
- ``LmEvalSampler`` / ``lm_eval_random_draw``: lm-evaluation-harness 0.4.13's default
  ``ContextSampler``, one ``random.Random(seed)`` drawing for item after item (GSM8K 5-shot,
  TriviaQA, ARC, HellaSwag, RACE's other articles);
- ``lm_eval_v030_draws``: lm-evaluation-harness 0.3.0's evaluator, which shuffles the evaluated
  docs and then draws for each in that order (MMLU as Pythia ran it).

Positions, not docs, are returned, so items can record which exemplars they show
(``meta["fewshot_doc_ids"]``).  ``random.sample`` and ``random.shuffle`` consume the generator
according to lengths only, so drawing positions reproduces upstream's draws of the documents.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any


def first_k(size: int, k: int, leave_out: Callable[[int], bool] | None = None) -> list[int]:
    """Positions of the first ``k`` docs of a pool of ``size``, in pool order, skipping those
    ``leave_out`` rejects (the item itself, when exemplars come from its own split).  Fewer than
    ``k`` when the pool runs out: the caller says how many shots the pool allows."""
    kept = (i for i in range(size) if leave_out is None or not leave_out(i))
    return list(islice(kept, k))


def lm_eval_random_draw(
    rnd: random.Random, pool: Sequence[dict[str, Any]], n: int, eval_doc: dict[str, Any] | None = None
) -> list[int]:
    """Positions in ``pool`` of the n exemplars lm-eval 0.4.13's default sampler returns for one item.

    When exemplars come from the evaluated split, lm-eval draws n + 1 and drops the item itself
    (then takes the first n), and redraws from the pool without it if duplicates left fewer than n.
    """
    if eval_doc is None:
        return rnd.sample(range(len(pool)), n)
    picked = [i for i in rnd.sample(range(len(pool)), n + 1) if pool[i] != eval_doc][:n]
    if len(picked) < n:
        others = [i for i in range(len(pool)) if pool[i] != eval_doc]
        picked = rnd.sample(others, n)
    return picked


class LmEvalSampler:
    """lm-eval 0.4.13's default ``ContextSampler`` over one pool: ``random.Random(seed)``, one draw
    per item.  Draws advance the one generator item by item, so a caller must draw for items in
    order and stop after ``--limit`` of them (not draw for all and slice) to reproduce lm-eval's
    prompts for those items."""

    def __init__(self, pool: Sequence[dict[str, Any]], seed: int) -> None:
        self.pool = pool
        self.seed = seed
        self._rnd = random.Random(seed)

    def draw(self, k: int, eval_doc: dict[str, Any] | None = None) -> list[int]:
        """The next item's k exemplars; ``eval_doc`` is left out when the pool is the item's own split.
        No shots, no draw: the generator does not move."""
        return lm_eval_random_draw(self._rnd, self.pool, k, eval_doc) if k else []


def lm_eval_v030_draws(docs: list[dict[str, Any]], pool: list[dict[str, Any]], k: int, seed: int) -> dict[int, list[int]]:
    """doc_id -> positions in ``pool`` of its k exemplars, as lm-eval 0.3.0's evaluator draws them.

    0.3.0 shuffles the evaluated docs with ``random.Random(seed)`` and, in that order, asks the
    same generator for ``sample(validation_docs, k + 1)``, drops the evaluated doc if drawn and
    keeps the first k.  Every doc's picks are computed, so ``--limit`` selects items without
    changing their prompts.
    """
    rnd = random.Random()
    rnd.seed(seed)
    order = list(range(len(docs)))
    rnd.shuffle(order)
    picks = {}
    for doc_id in order:
        drawn = rnd.sample(range(len(pool)), k + 1)
        picks[doc_id] = [i for i in drawn if pool[i] != docs[doc_id]][:k]
    return picks
