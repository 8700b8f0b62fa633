"""``harness-lm-eval``: lm-eval's own CLI with ``--model emergence-harness`` registered.

A console script of its own so that, without lm-eval installed, it says so in one line instead of
an import traceback (``harness.interop.lm_eval_model`` needs lm-eval to define its class).
"""

from __future__ import annotations

import importlib.util
import sys

LM_EVAL_REQUIREMENT = "lm-eval>=0.4.13,<0.5"  # pyproject's [lm-eval] extra; tested on 0.4.13
MISSING_LM_EVAL = f"this needs lm-evaluation-harness: pip install -e .[lm-eval]  ({LM_EVAL_REQUIREMENT})"


def main(argv: list[str] | None = None) -> None:
    if importlib.util.find_spec("lm_eval") is None:
        sys.exit(MISSING_LM_EVAL)
    from harness.interop.lm_eval_model import main as run

    run(argv)


if __name__ == "__main__":
    main()
