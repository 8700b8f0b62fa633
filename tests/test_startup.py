"""`harness --help`, `tasks` and `prompt` start without the heavy libraries: the parser of every
subcommand is built from light modules, and each command imports what it needs when it runs.
(The times themselves are measured by scripts/startup_time.py, not asserted here.)"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import FIXTURES

HEAVY = ("torch", "transformers", "pandas", "scipy", "matplotlib", "datasets", "lm_eval")


def _modules_after(*argv: str) -> set[str]:
    code = ("import sys, json\nfrom harness.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)), file=sys.stderr)" % (list(argv),))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_help_imports_none_of_the_heavy_libraries():
    loaded = _modules_after("--help")
    assert "harness" in loaded and not loaded & set(HEAVY), loaded & set(HEAVY)
    assert not _modules_after("report", "--help") & set(HEAVY)


def test_tasks_and_prompt_import_no_model_library():
    assert not _modules_after("tasks") & {"torch", "transformers", "scipy", "matplotlib", "lm_eval"}
    loaded = _modules_after("prompt", "--task", "mmlu:anatomy", "--index", "0", "--data-dir", str(FIXTURES / "data"))
    assert not loaded & {"torch", "transformers", "scipy", "matplotlib", "lm_eval"}
