"""Data-parallel ``harness eval``: two real processes started by ``accelerate launch`` on the CPU give
the per-item results of one process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.runs.distributed import Ranks, gather_in_order, launched_ranks, my_indices

from conftest import FIXTURES, eval_items

DATA = FIXTURES / "data"
TASKS = "mmlu:abstract_algebra,bigbench:arithmetic/2_digit_addition"


def test_items_are_dealt_round_robin_and_cover_each_once():
    shares = [my_indices(11, Ranks(rank, 3)) for rank in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert my_indices(4, Ranks()) == [0, 1, 2, 3]
    # one process: gathering puts the pairs back in position order
    assert gather_in_order([(2, "c"), (0, "a"), (1, "b")], Ranks()) == ["a", "b", "c"]


def test_ranks_come_from_the_launcher_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert launched_ranks() == Ranks(0, 1)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert launched_ranks() == Ranks(3, 4) and not launched_ranks().is_main
    # under mpirun (accelerate launch --cpu) only Open MPI's variables are set
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    assert launched_ranks() == Ranks(1, 2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _eval_args(model: Path, out: Path) -> list[str]:
    return [
        "eval", "--model", str(model), "--tasks", TASKS, "--data-dir", str(DATA), "--limit", "5",
        "--loss-corpus", str(FIXTURES / "loss_corpus.jsonl"), "--loss-window", "64", "--loss-tokens", "400",
        "--batch-size", "4", "--device", "cpu", "--out", str(out), "--no-progress",
    ]


def _records(out: Path) -> list[dict]:
    return eval_items(out)


_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
        # Open MPI refuses to start as root without these (CI runs as root)
        "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def _env() -> dict[str, str]:
    env = {**os.environ, **_ENV}
    for name in ("WORLD_SIZE", "RANK", "PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def single_process(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one")
    run = subprocess.run([sys.executable, "-m", "harness", *_eval_args(tiny_model_dir, out)],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def _launcher(kind: str, tmp_path: Path) -> list[str]:
    common = ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if kind == "cpu":
        # `accelerate launch --cpu --num_processes 2` starts several CPU processes through mpirun,
        # which it uses only when given a hostfile
        if shutil.which("mpirun") is None and not os.environ.get("HARNESS_REQUIRE_MPI"):
            pytest.skip("mpirun is not installed (Debian: apt-get install openmpi-bin); .ci/run installs it")
        hostfile = tmp_path / "hostfile"
        hostfile.write_text("localhost slots=2\n", encoding="utf-8")
        return ["--cpu", *common, "--mpirun_hostfile", str(hostfile)]
    # torchrun; `--device cpu` keeps both processes on the CPU
    return ["--multi_gpu", *common, "--main_process_port", str(_free_port())]


@pytest.mark.parametrize("kind", ["cpu", "multi_gpu"])
def test_accelerate_launch_two_cpu_processes_gives_the_single_process_items(kind, tiny_model_dir, single_process, tmp_path):
    launch = [sys.executable, "-m", "accelerate.commands.launch", *_launcher(kind, tmp_path),
              "-m", "harness", *_eval_args(tiny_model_dir, tmp_path / "two")]
    parallel = subprocess.run(launch, env=_env(), capture_output=True, text=True, timeout=300)
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    assert parallel.stdout.count("results:") == 1  # only the main process reports

    (two,) = (tmp_path / "two").rglob("results.json")
    (one,) = single_process.rglob("results.json")
    two, one = (json.loads(p.read_text(encoding="utf-8")) for p in (two, one))
    assert two["processes"] == 2 and "processes" not in one
    assert two["loss"]["loss"] == pytest.approx(one["loss"]["loss"], abs=1e-6)
    a, b = _records(single_process), _records(tmp_path / "two")
    assert [(r["task"], r["doc_id"]) for r in a] == [(r["task"], r["doc_id"]) for r in b]
    assert len(a) == 10
    for x, y in zip(a, b):
        if "choice_logprobs" in x:
            assert y["choice_logprobs"] == pytest.approx(x["choice_logprobs"], abs=1e-6)
            assert y["pred"] == x["pred"]
        else:
            assert y["generation"] == x["generation"]
    for task, entry in one["tasks"].items():
        for metric, m in entry["metrics"].items():
            assert two["tasks"][task]["metrics"][metric]["value"] == pytest.approx(m["value"], abs=1e-6)
    # counters are summed over the processes
    assert two["stats"]["mmlu:abstract_algebra"]["tokens_naive"] == one["stats"]["mmlu:abstract_algebra"]["tokens_naive"]


def test_a_sweep_under_accelerate_launch_equals_the_single_process_eval(tiny_model_dir, single_process, tmp_path):
    """The one runner splits a sweep's items over processes as it does an eval's, chunk by chunk (a
    chunk of 3 items: the processes gather after each, and only the main process writes)."""
    out = tmp_path / "sweep"
    args = ["sweep", "--checkpoints", str(tiny_model_dir), *_eval_args(tiny_model_dir, out)[3:], "--save-every", "3"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", *_launcher("multi_gpu", tmp_path), "-m", "harness", *args]
    parallel = subprocess.run(launch, env=_env(), capture_output=True, text=True, timeout=300)
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    summary = json.loads((out / "logs" / "summary-all.json").read_text(encoding="utf-8"))
    assert summary["units_done"] == 3 and summary["items_scored"] == 10 and summary["units_failed"] == 0
    swept = {(r["task"], r["doc_id"]): r for r in eval_items(out)}
    single = {(r["task"], r["doc_id"]): r for r in _records(single_process)}
    assert swept.keys() == single.keys() and len(single) == 10
    for key, record in single.items():
        if "choice_logprobs" in record:
            assert swept[key]["choice_logprobs"] == pytest.approx(record["choice_logprobs"], abs=1e-6)
        else:
            assert swept[key]["generation"] == record["generation"]
    (view,) = out.rglob("results.json")
    assert json.loads(view.read_text(encoding="utf-8"))["processes"] == 2
