"""RACE reading comprehension with lm-evaluation-harness 0.4.13's ``race`` prompt, every question.

lm-eval makes one doc per article and scores only its last question, with the earlier questions
answered in the prompt.  We score every question the same way: question j of an article is
prompted with the article and questions 0..j-1 answered, so the item of each article's last
question is exactly lm-eval's doc (``meta["last_in_article"]`` marks them).  One row per level
(``race:high``, ``race:middle``), ``doc_id`` = position in the canonical order (files sorted by
name, then questions in file order; see ``harness/items/race_articles.py`` for the Hub's order).
``race_lm_eval`` keeps only each article's last question, lm-eval's own items, so its numbers are
lm-eval's ``race``.

Zero-shot by default.  No train split is at hand, so ``--num-fewshot k`` draws k other articles of
the same level and split for each item, with lm-eval's default sampler (``random.Random(seed)``,
k + 1 drawn and the item's own article dropped); each exemplar is that article's last question,
prompted as above and answered.  Items record the exemplars and ``fewshot_source``.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from harness.errors import UserError
from harness.items import fewshot
from harness.items.race_articles import gold_index, race_articles
from harness.items.registry import TaskSelection, load_prompt, selected_subtasks, with_overrides
from harness.requests import Item
from harness.spec import BuildOptions, TaskSpec


def subtasks(spec: TaskSpec, opts: BuildOptions) -> list[str]:
    """The levels, in the spec's order (high, middle)."""
    return list(spec.options["levels"])


def build_rows(selection: TaskSelection, opts: BuildOptions) -> dict[str, list[Item]]:
    """One row ``race:<level>`` per selected level; items in canonical order."""
    spec = with_overrides(selection.spec, opts)
    levels = selected_subtasks(selection, subtasks(spec, opts), "level")
    prompt = load_prompt(spec.prompt)
    shots = spec.num_fewshot
    rows: dict[str, list[Item]] = {}
    for level in levels:
        row = f"{spec.name}:{level}"
        articles = race_articles(
            level,
            spec.split,
            opts,
            spec.hub_path or "EleutherAI/race",
            spec.hub_name or "{level}",
            tuple(spec.options.get("hub_levels", ("high",))),
        )
        if shots > len(articles) - 1:
            raise UserError(
                f"{row}: {shots} shots asked but only {len(articles) - 1} other articles exist; lower --num-fewshot"
            )
        seed = spec.options.get("fewshot_seed", 1234)
        sampler = fewshot.LmEvalSampler(articles, seed)
        source = f"other articles of {level} {spec.split}, random.Random({seed})" if shots else None
        if spec.options.get("last_question_only"):
            # race_lm_eval: lm-eval's docs exactly, one per article (doc_id = the article's position)
            order = ((position, article, len(article["questions"]) - 1) for position, article in enumerate(articles))
        else:
            order = ((position, article, q) for position, article in enumerate(articles) for q in range(len(article["questions"])))
        items: list[Item] = []
        # One draw per item, in item order, so --limit keeps the first items' exemplars.
        for doc_id, (position, article, question) in enumerate(islice(order, opts.limit)):
            picked = sampler.draw(shots, eval_doc=article)
            meta: dict[str, Any] = {
                "level": level,
                "article": position,
                "file": article["file"],
                "question_index": question,
                "last_in_article": question == len(article["questions"]) - 1,
            }
            if shots:
                meta.update(fewshot_articles=picked, fewshot_source=source)
            context = "".join(exemplar(prompt, articles[i]) for i in picked) + question_prompt(prompt, article, question)
            items.append(
                Item(
                    task=row,
                    doc_id=doc_id,
                    context=context,
                    choices=tuple(prompt["target_delimiter"] + option for option in article["options"][question]),
                    gold=gold_index(article, question),
                    # lm-eval length-normalises by the options without the target delimiter
                    choice_texts=tuple(article["options"][question]),
                    meta=meta,
                )
            )
        rows[row] = items
    return rows


def question_prompt(prompt: dict[str, Any], article: dict[str, Any], question: int) -> str:
    """lm-eval's ``doc_to_text`` for the article with questions[: question + 1]."""
    text = prompt["article"].format_map({"article": article["article"]})
    for earlier in range(question):
        asked = article["questions"][earlier]
        answer = article["options"][earlier][gold_index(article, earlier)]
        if asked.endswith(prompt["cloze_ending"]):
            # lm-eval cuts 5 characters from the 6-character blank "  _  .", keeping one space.
            text += prompt["answered_cloze"].format_map({"stem": asked[:-5], "answer": answer})
        else:
            text += prompt["answered_question"].format_map({"question": asked, "answer": answer})
    return text + prompt["question"].format_map({"question": article["questions"][question]})


def exemplar(prompt: dict[str, Any], article: dict[str, Any]) -> str:
    """Another article's last question, prompted and answered, then the fewshot delimiter."""
    last = len(article["questions"]) - 1
    answer = article["options"][last][gold_index(article, last)]
    return question_prompt(prompt, article, last) + prompt["target_delimiter"] + answer + prompt["fewshot_delimiter"]
