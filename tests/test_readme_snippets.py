"""The README's runnable snippets run as copied, offline, on the tiny fixtures.

A fenced block is runnable when the line above its opening fence is ``<!-- runnable -->``.  They run
in README order, in one scratch folder that holds the files the snippets name (``data/``: the
fixture data; ``val.jsonl``: a loss corpus), so a later block sees what an earlier one wrote, as a
reader following the README would.  Python blocks run in a fresh interpreter given the names the
README leaves to the reader (``model``, ``tokenizer``, ``train``: a tiny GPT-NeoX and packed
additions); shell blocks run under ``bash -e``, so every command must succeed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES

README = Path(__file__).resolve().parents[1] / "README.md"
MARK = "<!-- runnable -->"

# What the README leaves to the reader's own training script: a model, its tokenizer and a dataset.
PREAMBLE = """
import random, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import build_tiny_gpt_neox
from transformers import AutoModelForCausalLM, AutoTokenizer

folder = build_tiny_gpt_neox(Path("tiny-model"))
tokenizer = AutoTokenizer.from_pretrained(folder)
tokenizer.pad_token = tokenizer.eos_token
model = AutoModelForCausalLM.from_pretrained(folder)
rng = random.Random(0)
text = "".join(f"{{a}} + {{b}} -> {{a + b}}\\n" for a, b in ((rng.randrange(100, 999), rng.randrange(100, 999)) for _ in range(600)))
ids = tokenizer(text)["input_ids"]
train = [{{"input_ids": ids[i * 32:(i + 1) * 32], "labels": ids[i * 32:(i + 1) * 32]}} for i in range(48)]
"""


def runnable_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, code, line number) of every block marked runnable, in README order."""
    lines = text.splitlines()
    blocks = []
    for number, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        fence = re.fullmatch(r"```(\w+)\s*", lines[number + 1])
        assert fence, f"README line {number + 1}: {MARK} must stand right above an opening fence with a language"
        end = lines.index("```", number + 2)
        blocks.append((fence.group(1), "\n".join(lines[number + 2:end]), number + 2))
    return blocks


def test_marked_blocks_are_found():
    blocks = runnable_blocks(README.read_text(encoding="utf-8"))
    assert {language for language, _, _ in blocks} == {"python", "bash"}
    assert any("EvalCallback" in code for _, code, _ in blocks)


def test_runnable_blocks_parse_as_written():
    for language, code, line in runnable_blocks(README.read_text(encoding="utf-8")):
        if language == "python":
            compile(code, f"README.md:{line}", "exec")
        else:
            subprocess.run(["bash", "-n", "-c", code], check=True)


@pytest.mark.slow
def test_readme_snippets_run_as_copied(tmp_path):
    (tmp_path / "data").symlink_to(FIXTURES / "data", target_is_directory=True)
    (tmp_path / "val.jsonl").write_bytes((FIXTURES / "loss_corpus.jsonl").read_bytes())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for language, code, line in runnable_blocks(README.read_text(encoding="utf-8")):
        if language == "python":
            command = [sys.executable, "-c", PREAMBLE.format(tests=str(FIXTURES.parent)) + "\n" + code]
        else:
            command = ["bash", "-e", "-o", "pipefail", "-c", code]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"README.md:{line} ({language}) exited {done.returncode}:\n{output[-6000:]}"
        if "harness sweep" in code:
            # what the README promises after the Trainer example: eval and sweep find the callback's units done
            assert "sweep all: 0 units run, 6 already done, 0 failed" in output, output[-6000:]
            assert len(re.findall(r"eval [\d.]+s; 0 units run, 3 already done", output)) == 3, output[-6000:]  # eval's 1, sweep's 2
