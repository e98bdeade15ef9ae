"""Section ``gpu`` (CUDA only): paper-preset step time on the GPU and trials per hour of 1, 2
and 4 trials packed on one GPU (``--gpus-per-trial`` 1, 0.5, 0.25 through the harness)."""

from __future__ import annotations

import argparse
import statistics

from ablations.benchmarks.common import all_threads, num, progress, stat, table
from ablations.benchmarks.step import FLOP_NOTE, MATMUL_SIZES, peak_matmul, step_flops, step_times
from ablations.benchmarks.sweep import (
    SWEEP_ARGS,
    SWEEP_TRIALS,
    SweepRun,
    run_sweep_command,
    sweep_rows,
)

__all__ = ["PACKING", "section_gpu", "skip_reason"]

PACKING = (1, 2, 4)  # trials per GPU


def skip_reason() -> str | None:
    import torch

    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    return "torch.cuda.is_available() is False (no CUDA device visible)"


def section_gpu(args: argparse.Namespace, repeats: int) -> None:
    """Paper-preset step time on the GPU and trials per hour of 1, 2, 4 trials per GPU."""
    import torch

    from comet_model.config import preset

    cfg = preset("paper")
    flops = step_flops(cfg, device="cuda")
    ms = [1000.0 * s for s in step_times(cfg, repeats=repeats, device="cuda")]
    size, mm = peak_matmul(repeats, device="cuda")
    gflops = flops / 1e9 / (statistics.median(ms) / 1000.0)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    print(
        f"paper preset step on the GPU (synchronised), n={repeats} steps after 3 warm-up; "
        f"matmul: float32 torch.mm (allow_tf32={tf32}), best of sizes "
        f"{','.join(map(str, MATMUL_SIZES))}"
    )
    table(
        ["preset", "step ms", "GFLOP/step", "step GFLOP/s", "matmul GFLOP/s @size", "step/matmul"],
        [
            [
                "paper",
                stat(ms),
                num(flops / 1e9),
                num(gflops),
                f"{stat(mm)} @{size}",
                num(gflops / statistics.median(mm)),
            ]
        ],
    )
    print(FLOP_NOTE + "; cuDNN LSTM kernels are not counted on the GPU")
    name = args.sweep_preset or args.preset
    packs = args.repeats or 1  # whole packed sweeps (the steps use ``repeats``)
    runs: dict[int, list[SweepRun]] = {k: [] for k in PACKING}
    cpus = min(1.0, all_threads() / max(PACKING))
    for i in range(packs):
        for k in PACKING:
            progress(f"gpu: {SWEEP_TRIALS} trials, {k} per GPU ({i + 1}/{packs})")
            runs[k].append(run_sweep_command(name, args.overrides, k, gpus=1.0 / k, cpus=cpus))
    print(
        f"ablations/run.py {' '.join(SWEEP_ARGS)} --preset {name} --gpus-per-trial 1/k "
        f"--max-concurrent k --cpus-per-trial {cpus:g}: {SWEEP_TRIALS} trials; n={packs}"
    )
    table(
        ["trials per GPU", "command wall s", "trial wall s", "sum of trial s", "trials/hour"],
        sweep_rows(runs, lambda k: f"{k} (gpus {1 / k:g})"),
    )
