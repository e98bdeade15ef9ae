"""Training-step time of the presets: ``python -m comet_model.bench``.

Times complete optimisation steps (forward, CLUB inner steps, losses, backward, clip, Adam,
MM-EMA, dead-code reset) on random two-modality batches of the preset's batch size and T, after
a few warm-up steps, and prints median / min / max milliseconds per step. One thread by default,
so numbers compare across machines only as far as single-core speed does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import torch

from comet_model.config import PRESETS, ExperimentConfig, preset
from comet_model.model import CometModel
from comet_model.train import Trainer, loss_weights, train_step

# input widths of a digits-world-like pair (the step time barely depends on them)
DEFAULT_DIMS = {"video": 128, "audio": 320}


def step_times(
    cfg: ExperimentConfig,
    *,
    repeats: int = 20,
    warmup: int = 3,
    dims: dict[str, int] | None = None,
    seed: int = 0,
) -> list[float]:
    """Seconds of ``repeats`` consecutive training steps (after ``warmup`` untimed ones)."""
    dims = dict(DEFAULT_DIMS if dims is None else dims)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = CometModel.from_config(cfg, dims).train()
    trainer = Trainer(model, cfg)
    weights = loss_weights(cfg, model)
    b, t = cfg.train.batch_size, cfg.data.steps
    batches = [
        {m: torch.randn(b, t, d, generator=generator) for m, d in dims.items()} for _ in range(4)
    ]
    with torch.no_grad():  # data-seeded codebook, as in training
        tokens = torch.cat([model.encode(m, x) for m, x in batches[0].items()])
    model.seed_codebook_(tokens, generator)
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        train_step(model, trainer, batches[i % 4], None, cfg, generator=generator, weights=weights)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    """Print step-time statistics for each requested preset."""
    parser = argparse.ArgumentParser(prog="python -m comet_model.bench", description=__doc__)
    parser.add_argument("--presets", default="default,paper", help="comma-separated presets")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per preset")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--comet", action="store_true", help="with the CMoE-Adapter")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown or args.repeats < 1:
        parser.error(f"unknown preset {unknown[0]!r}" if unknown else "--repeats must be >= 1")
    print(f"threads={torch.get_num_threads()} torch={torch.__version__} comet={args.comet}")
    print(f"{'preset':<8} {'batch':>5} {'D':>4} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    for name in names:
        cfg = preset(name).override({"comet": args.comet})
        times = [1000.0 * s for s in step_times(cfg, repeats=args.repeats)]
        print(
            f"{name:<8} {cfg.train.batch_size:>5} {cfg.model.dim:>4} "
            f"{statistics.median(times):>10.1f} {min(times):>8.1f} {max(times):>8.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
