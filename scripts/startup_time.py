"""How long `harness --help`, `harness tasks` and `harness prompt` take to start, as a user feels it:
the median wall time of N fresh processes each (imports included).  Run on an idle machine:

    python scripts/startup_time.py [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "data"
COMMANDS = {
    "harness --help": ["--help"],
    "harness tasks": ["tasks"],
    "harness prompt": ["prompt", "--task", "mmlu:anatomy", "--index", "0", "--data-dir", str(FIXTURES)],
    "lm_eval -h (for reference)": None,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    print("| command | median s | min s | max s |\n|---|---|---|---|")
    for label, argv in COMMANDS.items():
        command = [sys.executable, "-m", "harness", *argv] if argv is not None else [sys.executable, "-m", "lm_eval", "-h"]
        seconds = []
        for _ in range(runs):
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True)
            seconds.append(time.perf_counter() - started)
            if done.returncode not in (0,):
                seconds = []
                break
        if seconds:
            print(f"| {label} | {statistics.median(seconds):.3f} | {min(seconds):.3f} | {max(seconds):.3f} |")
        else:
            print(f"| {label} | failed | | |")


if __name__ == "__main__":
    main()
