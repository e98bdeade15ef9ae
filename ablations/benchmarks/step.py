"""Timing: ``python -m ablations.benchmarks.step [--section step|trial]``.

- ``step`` (default): complete optimisation steps (forward, CLUB inner steps, losses, backward,
  clip, Adam, MM-EMA, dead-code reset) on random two-modality batches of the preset's batch size
  and T, after a few warm-up steps; median / min / max milliseconds per step.
- ``trial``: one whole continual pipeline of a preset (default: the full three-stage COMET trial
  on the digits world, every evaluation included), with a per-stage breakdown (codebook
  expansion, training, Fisher, evaluation) and the load average before and after (the machine
  may be shared: compare figures only at a similar load).

One thread by default, so numbers compare across machines only as far as single-core speed does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from comet_model.config import PRESETS, ExperimentConfig, preset
from comet_model.nn.model import CometModel
from comet_model.continual.train import Trainer, loss_weights, train_step

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


def trial_times(cfg: ExperimentConfig) -> tuple[float, list[dict[str, Any]]]:
    """Wall seconds of one whole continual pipeline of ``cfg`` and each stage's summary."""
    from comet_model.continual.pipeline import build_benchmark, run_continual

    t0 = time.perf_counter()
    benchmark = build_benchmark(cfg)
    data_s = time.perf_counter() - t0
    result = run_continual(cfg, benchmark=benchmark)
    total = time.perf_counter() - t0
    stages = [{"name": "(data)", "data_s": data_s}]
    stages += [
        {"name": r.name, **r.summary, "objective": r.metrics["objective"]} for r in result.stages
    ]
    return total, stages


def _trial(preset_name: str, overrides: list[str]) -> int:
    from comet_model.config import parse_override

    cfg = preset(preset_name)
    flat = dict(parse_override(text, cfg) for text in overrides)
    cfg = cfg.override({**flat, "train.threads": torch.get_num_threads()})
    load0 = os.getloadavg()
    total, stages = trial_times(cfg)
    load1 = os.getloadavg()
    print(f"threads={torch.get_num_threads()} torch={torch.__version__} preset={preset_name} "
          f"comet={cfg.comet} method={cfg.method} stages={','.join(cfg.data.stages)}")  # fmt: skip
    cols = ("setup_s", "train_s", "fisher_s", "eval_s")
    print(f"{'stage':<12} {'data s':>7} {'expand s':>8} {'train s':>8} {'fisher s':>8} "
          f"{'eval s':>7} {'codes':>6} {'objective':>9}")  # fmt: skip
    for s in stages:
        vals = [s.get(c, 0.0) for c in cols]
        objective = f"{s['objective']:>9.2f}" if "objective" in s else ""
        print(
            f"{s['name']:<12} {s.get('data_s', 0.0):>7.1f} {vals[0]:>8.1f} {vals[1]:>8.1f} "
            f"{vals[2]:>8.1f} {vals[3]:>7.1f} {s.get('codebook_size', ''):>6} {objective}"
        )
    print(f"total {total:.1f} s wall (training and all evaluations); load average "
          f"{load0[0]:.2f} before, {load1[0]:.2f} after (1 min)")  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Print step-time statistics for each requested preset, or time one whole trial."""
    parser = argparse.ArgumentParser(prog="python -m ablations.benchmarks.step", description=__doc__)
    parser.add_argument("--section", choices=("step", "trial"), default="step",
                        help="step times (default) or one whole continual trial")  # fmt: skip
    parser.add_argument(
        "--presets",
        default=None,
        help="comma-separated presets (step: default,paper; trial: default)",
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per preset")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--comet", action=argparse.BooleanOptionalAction, default=True,
                        help="step: with the CMoE-Adapter (--no-comet: plain)")  # fmt: skip
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="trial: override a config key")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    default = "default" if args.section == "trial" else "default,paper"
    names = [p.strip() for p in (args.presets or default).split(",") if p.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown or args.repeats < 1:
        parser.error(f"unknown preset {unknown[0]!r}" if unknown else "--repeats must be >= 1")
    if args.section == "trial":
        if len(names) != 1:
            parser.error("--section trial times one preset")
        return _trial(names[0], args.overrides)
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
