"""Train the demo's tiny GPT-NeoX family on the CPU, offline: ``harness train-tiny`` as a script.

    python scripts/train_tiny_suite.py                 # results/demo/suite (the full demo's suite)
    python scripts/train_tiny_suite.py --quick --out /tmp/suite

The suite (corpus, tokenizer, sizes, steps, checkpoints) is defined in harness/demo/tiny_suite.py and its
tuned settings in harness/demo/pipeline.py (FULL, QUICK); `harness demo` trains it too, evaluating each checkpoint as it is saved.
"""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-tiny", *sys.argv[1:]]))
