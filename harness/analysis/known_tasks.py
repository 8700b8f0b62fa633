"""Item counts and chance levels of known multiple-choice tasks, for rows that arrive without them.

Results imported from lm-evaluation-harness (`harness import-lm-eval`, e.g. Pythia's published evals)
carry a value and a standard error but no item count and no random baseline; without them SciQ's
reference could sit below chance and every proportion was treated as a normal with its stderr. The
counts are the evaluated splits' sizes (each one equals p(1 − p)/stderr² + 1 on Pythia's published
rows, tests/analysis/test_report_text.py); the chance level is 1 / choices. Only missing values are filled.
"""

from __future__ import annotations

import pandas as pd

# task (as imported; a "_pythia_v0" suffix is the same task) -> (items in the evaluated split, chance of acc)
KNOWN_TASKS: dict[str, tuple[int | None, float]] = {
    "sciq": (1000, 0.25),  # test split, 4 choices
    "arc_easy": (2376, 0.25),  # test split, 4 choices (a few items have 3 or 5)
    "arc_challenge": (1172, 0.25),  # test split
    "piqa": (1838, 0.5),  # validation split, 2 solutions
    "winogrande": (1267, 0.5),  # xl validation split, 2 options
    "logiqa": (651, 0.25),  # test split
    "wsc": (104, 0.5),  # SuperGLUE WSC validation, yes/no
    "lambada_openai": (5153, 0.0),  # test split; accuracy of the last word, no guessing
    "mmlu": (None, 0.25),  # 57 subjects of different sizes: chance only
    "hendrycksTest": (None, 0.25),
}
CHANCE_METRICS = ("acc", "acc_norm")


def _known(task: str) -> tuple[int | None, float] | None:
    base = str(task).split(":", 1)[0].removesuffix("_pythia_v0")
    for name in (base, base.split("-", 1)[0]):
        if name in KNOWN_TASKS:
            return KNOWN_TASKS[name]
    return None


def fill_known(points: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``points`` with the item count and chance level of known tasks where they are missing
    (accuracy metrics only), and a note per task filled."""
    out = points.copy()
    notes = []
    for task in dict.fromkeys(out["task"]):
        known = _known(task)
        if known is None:
            continue
        items, chance = known
        rows = (out["task"] == task) & out["metric"].isin(CHANCE_METRICS)
        filled = []
        missing_chance = rows & pd.to_numeric(out["random_baseline"], errors="coerce").isna()
        if missing_chance.any():
            out.loc[missing_chance, "random_baseline"] = chance
            filled.append(f"chance {chance:g}")
        if items is not None:
            n = pd.to_numeric(out["n"], errors="coerce")
            missing_n = rows & (n.isna() | (n <= 0))
            if missing_n.any():
                out.loc[missing_n, "n"] = items
                filled.append(f"{items} items")
        if filled:
            notes.append(f"{task}: {' and '.join(filled)}")
    return out, notes
