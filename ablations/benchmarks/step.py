"""Section ``step``: one training step's time, its FLOPs and the ratio to dense matmul.

One set-up serves every step measurement (:func:`make_step`): a model of the configuration on
random batches of its batch size and T, codebook seeded from data tokens as in training, one
complete optimisation step per call (forward, CLUB inner steps, losses, backward, clip, Adam,
MM-EMA, dead-code reset). The CMG and GPU sections use it with their own shapes and devices.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Mapping

from ablations.benchmarks.common import all_threads, num, progress, stat, table

__all__ = [
    "DEFAULT_DIMS",
    "FLOP_NOTE",
    "MATMUL_SIZES",
    "count_flops",
    "make_step",
    "matmul_gflops",
    "peak_matmul",
    "section_step",
    "step_flops",
    "step_times",
    "sync",
]

# input widths of a digits-world-like pair (the step time barely depends on them)
DEFAULT_DIMS = {"video": 128, "audio": 320}
MATMUL_SIZES = (256, 512, 1024, 2048)  # square float32 matmuls; the best median is the peak
FLOP_NOTE = (
    "FLOPs: torch.utils.flop_counter.FlopCounterMode over one whole step (forward, CLUB inner "
    "steps, backward); it counts matmul/conv/attention FLOPs only (elementwise ops, norms, "
    "softmax, the codebook EMA and Adam are not counted), so GFLOP/s is a lower bound"
)


def make_step(
    cfg,
    *,
    dims: Mapping[str, int] | None = None,
    device: str = "cpu",
    dtype=None,
    seed: int = 0,
    batch: int | None = None,
    inputs: Callable | None = None,
) -> Callable[[], None]:
    """One full training step of ``cfg`` per call, on 4 rotating random batches.

    Args:
        dims: modality -> input width (default :data:`DEFAULT_DIMS`).
        dtype: model and input dtype (default float32).
        batch: batch size (default ``cfg.train.batch_size``); T is ``cfg.data.steps``.
        inputs: ``inputs(modality, shape, generator) -> Tensor`` (default ``torch.randn``).
    """
    import torch

    from comet_model.continual.train import Trainer, loss_weights, train_step
    from comet_model.nn.model import CometModel

    dims = dict(DEFAULT_DIMS if dims is None else dims)
    dtype = dtype or torch.float32
    draw = inputs or (lambda m, shape, g: torch.randn(*shape, generator=g))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = CometModel.from_config(cfg, dims).to(device=device, dtype=dtype).train()
    trainer = Trainer(model, cfg)
    weights = loss_weights(cfg, model)
    shape = (batch or cfg.train.batch_size, cfg.data.steps)
    batches = [
        {m: draw(m, (*shape, d), generator).to(device=device, dtype=dtype) for m, d in dims.items()}
        for _ in range(4)
    ]  # 4 x {modality: [B, T, d]}
    with torch.no_grad():  # data-seeded codebook, as in training
        tokens = torch.cat([model.encode(m, x) for m, x in batches[0].items()])
    model.seed_codebook_(tokens, generator)
    count = [0]

    def step() -> None:
        batch = batches[count[0] % len(batches)]
        train_step(model, trainer, batch, None, cfg, generator=generator, weights=weights)
        count[0] += 1

    return step


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_times(
    cfg, *, repeats: int = 20, warmup: int = 3, device: str = "cpu", **kw
) -> list[float]:
    """Seconds of ``repeats`` consecutive steps of :func:`make_step` after ``warmup``."""
    step = make_step(cfg, device=device, **kw)
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def count_flops(step: Callable[[], None]) -> int:
    """Matmul/conv/attention FLOPs of one call of ``step`` (after one uncounted warm-up call)."""
    from torch.utils.flop_counter import FlopCounterMode

    step()
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def step_flops(cfg, *, device: str = "cpu") -> int:
    """Matmul/conv/attention FLOPs of one training step (forward and backward, one warm-up)."""
    return count_flops(make_step(cfg, device=device))


def matmul_gflops(size: int, repeats: int, *, device: str = "cpu") -> list[float]:
    """GFLOP/s of a dense float32 ``[size, size] @ [size, size]`` (each sample >= ~20 ms)."""
    import torch

    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device)
    b = torch.randn(size, size, generator=g).to(device)
    out = torch.empty(size, size, device=device)
    t0 = time.perf_counter()
    torch.mm(a, b, out=out)  # warm-up, and calibration of the inner loop
    sync(device)
    inner = max(1, math.ceil(0.02 / max(time.perf_counter() - t0, 1e-6)))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b, out=out)
        sync(device)
        rates.append(2.0 * size**3 * inner / (time.perf_counter() - t0) / 1e9)
    return rates


def peak_matmul(repeats: int, *, device: str = "cpu") -> tuple[int, list[float]]:
    """The size of ``MATMUL_SIZES`` with the best median GFLOP/s, and its samples."""
    runs = {n: matmul_gflops(n, repeats, device=device) for n in MATMUL_SIZES}
    best = max(runs, key=lambda n: statistics.median(runs[n]))
    return best, runs[best]


def section_step(args: argparse.Namespace, repeats: int) -> None:
    """Step time, achieved GFLOP/s and the ratio to dense matmul, at 1 and all threads, in
    float32 and with bf16 autocast (``train.precision=bf16``)."""
    import torch

    from comet_model.config import preset

    before = torch.get_num_threads()
    flops = {name: step_flops(preset(name)) for name in args.step_presets}
    rows, ratios = [], []
    try:
        for threads in sorted({1, all_threads()}):
            torch.set_num_threads(threads)
            size, mm = peak_matmul(repeats)
            progress(f"step: {threads} thread(s): matmul {num(statistics.median(mm))} GFLOP/s")
            for name in args.step_presets:
                ms = {}
                for precision in ("fp32", "bf16"):
                    cfg = preset(name).override({"train.precision": precision})
                    ms[precision] = [1000.0 * s for s in step_times(cfg, repeats=repeats)]
                    progress(f"step: {threads} thread(s), {name}, {precision}: "
                             f"{num(statistics.median(ms[precision]))} ms")  # fmt: skip
                fp32 = statistics.median(ms["fp32"])
                gflops = flops[name] / 1e9 / (fp32 / 1000.0)
                bf16 = statistics.median(ms["bf16"])
                ratios.append([threads, name, f"{fp32 / bf16:.2f}"])
                rows.append([
                    threads, name, f"{cfg.train.batch_size}x{cfg.data.steps}", cfg.model.dim,
                    stat(ms["fp32"]), stat(ms["bf16"]), num(flops[name] / 1e9), num(gflops),
                    f"{stat(mm)} @{size}", num(gflops / statistics.median(mm)),
                ])  # fmt: skip
    finally:
        torch.set_num_threads(before)
    print(
        f"one training step (forward, CLUB inner steps, losses, backward, clip, Adam, MM-EMA, "
        f"dead-code reset) on random batches, after 3 warm-up steps; n={repeats} timed steps; "
        f"matmul: float32 torch.mm, sizes {','.join(map(str, MATMUL_SIZES))}, the size with "
        f"the best median, n={repeats} samples; GFLOP/s and step/matmul of the float32 step"
    )
    table(("threads", "preset", "BxT", "D", "fp32 step ms", "bf16 step ms", "GFLOP/step",
           "step GFLOP/s", "matmul GFLOP/s @size", "step/matmul"), rows)  # fmt: skip
    table(("threads", "preset", "fp32 / bf16 step time"), ratios)
    print(FLOP_NOTE)
