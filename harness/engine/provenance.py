"""What produced a results file, beside the checkpoint itself: the harness (version, and commit when
run from a checkout), the libraries that decide the numbers, the device, the dtype, the command line."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from harness import __version__


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.cache  # once per process
def _git_commit() -> tuple[str | None, bool | None]:
    """The commit of the checkout the harness runs from, and whether its tracked files differ from it;
    (None, None) when installed from a wheel (no .git beside the package) or git is missing."""
    root = Path(__file__).resolve().parents[2]  # harness/engine/provenance.py -> the checkout
    if not (root / ".git").exists():
        return None, None
    # GIT_OPTIONAL_LOCKS=0: `git status` must not refresh the index of a checkout someone else works in
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, env=env)
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
            timeout=10, env=env,
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    if head.returncode != 0:
        return None, None
    return head.stdout.strip(), (bool(status.stdout.strip()) if status.returncode == 0 else None)


def device_name(device: str) -> str:
    """The accelerator's marketing name (``NVIDIA H100 80GB HBM3``), or the CPU's."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    if device.startswith("mps"):
        return "Apple MPS"
    return f"cpu ({platform.processor() or platform.machine()})"


def run_provenance(device: str, dtype: str) -> dict[str, Any]:
    """What produced a results file, beside the checkpoint itself: the harness (version, and commit
    when run from a checkout), the libraries that decide the numbers, the device, the dtype, the
    command line.  ``git_dirty``: the checkout had uncommitted changes to tracked files."""
    commit, dirty = _git_commit()
    return {
        "harness_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": sys.version.split()[0],
        **{name: _package_version(name) for name in ("torch", "transformers", "datasets", "accelerate")},
        "device": device,
        "device_name": device_name(device),
        "dtype": dtype,
        "command": " ".join(sys.argv),
    }
