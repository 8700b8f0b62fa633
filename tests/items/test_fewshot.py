"""Few-shot samplers (harness.items.fewshot): first-k, lm-eval 0.4.13's seeded draw, lm-eval 0.3.0's
shuffled draw, and that no family picks exemplars on its own.  The prompts the families build from
them are pinned by the golden prompt tests (tests/test_tasks_*.py)."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from harness.items import fewshot

ITEMS = Path(__file__).resolve().parents[2] / "harness" / "items"


def test_first_k_takes_the_pool_in_order_and_leaves_the_item_out():
    assert fewshot.first_k(10, 3) == [0, 1, 2]
    assert fewshot.first_k(2, 5) == [0, 1]  # a short pool: the caller reports it
    assert fewshot.first_k(5, 0) == []
    assert fewshot.first_k(10, 3, leave_out=lambda i: i == 1) == [0, 2, 3]
    pool = [{"q": 1}, {"q": 2}, {"q": 1}, {"q": 3}]
    assert fewshot.first_k(len(pool), 2, leave_out=lambda i: pool[i] == {"q": 1}) == [1, 3]


@pytest.mark.parametrize("k", [0, 1, 3])
def test_first_k_other_than_the_item_is_bigbench_s_rule(k):
    # BIG-bench's shots (as this package has always built them): positions 0..k without the item's own
    for position in range(k + 4):
        expected = [j for j in range(k + 1) if j != position][:k]
        assert fewshot.first_k(k + 4, k, leave_out=lambda j: j == position) == expected


def test_the_lm_eval_sampler_is_one_generator_drawing_item_after_item():
    pool = [{"q": i % 5} for i in range(9)]
    sampler, rnd = fewshot.LmEvalSampler(pool, 1234), random.Random(1234)
    for doc in pool[:4]:
        assert sampler.draw(3, eval_doc=doc) == fewshot.lm_eval_random_draw(rnd, pool, 3, eval_doc=doc)
        assert doc not in [pool[i] for i in fewshot.lm_eval_random_draw(random.Random(0), pool, 3, eval_doc=doc)]
    assert sampler.draw(0) == []  # no shots: the generator does not move
    assert sampler.draw(2) == fewshot.lm_eval_random_draw(rnd, pool, 2)


def test_the_lm_eval_sampler_matches_lm_eval():
    samplers = pytest.importorskip("lm_eval.api.samplers")
    pool = [{"q": i % 7} for i in range(12)]  # duplicates: the item can be drawn twice
    ours, theirs = fewshot.LmEvalSampler(pool, 1234), samplers.ContextSampler(list(pool), rnd=1234)
    for doc in pool:
        assert [pool[i] for i in ours.draw(4, eval_doc=doc)] == list(theirs.sample(4, eval_doc=doc))


def test_v030_draws_shuffle_then_sample_k_plus_one():
    docs = [{"q": f"test {i}"} for i in range(6)]
    pool = [{"q": f"val {i}"} for i in range(5)] + [docs[2]]  # one evaluated doc is also in the pool
    picks = fewshot.lm_eval_v030_draws(docs, pool, 2, seed=42)
    assert sorted(picks) == list(range(6)) and all(len(p) == 2 for p in picks.values())
    assert 5 not in picks[2]  # never the evaluated doc itself
    # by hand: one generator, the shuffle first, then one sample of k + 1 per doc in shuffled order
    rnd = random.Random(42)
    order = list(range(6))
    rnd.shuffle(order)
    for doc_id in order:
        drawn = rnd.sample(range(len(pool)), 3)
        assert picks[doc_id] == [i for i in drawn if pool[i] != docs[doc_id]][:2]
    assert fewshot.lm_eval_v030_draws(docs, pool, 2, seed=42) == picks


@pytest.mark.parametrize("path", sorted(ITEMS.rglob("*.py")), ids=lambda p: str(p.relative_to(ITEMS)))
def test_only_the_fewshot_module_draws_at_random(path):
    if path.name == "fewshot.py":
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imports += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert "random" not in imports and "numpy.random" not in imports, f"{path.name}: pick exemplars with harness.items.fewshot"
