"""Performance benchmark: ``python ablations/bench.py [--sections step,trial,...] [--repeats N]``.

Sections (default: all but ``streaming``, in this order):

- ``step``: one training step at ``--step-presets`` (default and paper) at 1 thread and at all
  threads: its time, its FLOPs (FlopCounterMode: matmul,
  convolution and attention FLOPs only, forward and backward), the achieved GFLOP/s and the ratio
  to this machine's dense float32 matmul GFLOP/s measured in the same run at the same threads.
- ``trial``: one full continual trial of ``--preset`` on one thread, by stage (expansion,
  training, Fisher, evaluation), each repeat in a fresh subprocess.
- ``sweep``: the same 4-trial sweep (grid ``smoke`` x 2 seeds, 1 CPU and 1 thread per trial)
  through ``ablations/run.py --fresh`` at ``--max-concurrent`` 1 and 2; the speed-up (ideal 2).
- ``memory``: peak resident set size of a trial subprocess and of an import-only one.
- ``scaling``: trial time at 1x, 2x and 4x ``data.train_sequences`` on one thread.
- ``throughput``: the same 4-trial sweep at --max-concurrent 2 with this code and with the code
  of ``--baseline`` (a git revision in a temporary worktree), alternating; trials per minute of
  each and the ratio.
- ``study``: the trial count of ``ablations/study.py``, its projected wall time (from a 4-trial
  sweep) and, with ``--study-storage``, the measured wall time of a finished study.
- ``cmg``: one full training step of DCID at the original code's audio-video-text shapes (batch
  80, VGG19 pool5 video maps through the CMG front end)
  in float32 and float64 at all threads, against the original's float64 step (dcid_reference
  5.3: 222.8 s median on this 2-core machine at 2 threads; the original code is not run here).
- ``cmg_modules``: forward + backward of each CMG video module alone at those shapes (float32).
- ``streaming``: a stage file larger than half this machine's memory (12.5 GB of float16 pool5
  maps, written to a scratch folder) read from disk against the in-memory path on a small file:
  steps per second and peak resident memory (``ablations/benchmarks/streaming.py``; not run
  unless named).
- ``gpu``: with CUDA only: step time at the paper preset on the GPU and trials per hour of 1, 2
  and 4 trials packed on one GPU (``--gpus-per-trial`` 1, 0.5, 0.25 through the harness).

Every figure is the median of repeated runs with the minimum and maximum and the number of
repeats (per-section defaults, all replaced by ``--repeats``). The load average is printed at
the start and end of each section: on a shared machine compare figures only at a similar load.
Results go to stdout, progress to stderr. Each section lives in its own module of
``ablations/benchmarks/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ablations.benchmarks import cmg, gpu, step, streaming, sweep, throughput, trial
from ablations.benchmarks.common import BenchError, overrides, print_machine, section
from comet_model._cli import OneLineParser, positive_int

SECTIONS: dict[str, tuple[Callable[[argparse.Namespace, int], None], str, int]] = {
    # name: (runner, title, default repeats)
    "step": (step.section_step, "training step time, FLOP rate and dense matmul", 20),
    "trial": (trial.section_trial, "one full continual trial on one thread", 3),
    "sweep": (sweep.section_sweep, "sweep efficiency at --max-concurrent 1 and 2", 1),
    "memory": (trial.section_memory, "peak resident memory of one trial", 1),
    "scaling": (trial.section_scaling, "trial time vs training sequences", 1),
    "throughput": (throughput.section_throughput, "trials per minute against earlier code", 3),
    "study": (throughput.section_study, "the full study: trials, projected and measured time", 1),
    "cmg": (cmg.section_cmg, "DCID step at the original's audio-video-text shapes", 3),
    "cmg_modules": (cmg.section_cmg_modules, "CMG video modules alone (float32)", 3),
    "gpu": (gpu.section_gpu, "GPU step time and trials packed per GPU", 20),
    "streaming": (streaming.section_streaming, "a stage file larger than half the memory", 3),
}
#: What runs without --sections: all but streaming (it writes a 12.5 GB scratch file).
DEFAULT_SECTIONS = tuple(name for name in SECTIONS if name != "streaming")


def _names(allowed: Sequence[str], what: str) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {bad[0] if bad else text!r}, expected some of {','.join(allowed)}"
            )
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command line (errors: one line, exit status 2)."""
    from comet_model.config import PRESETS

    presets = tuple(PRESETS)
    p = OneLineParser(
        prog="ablations/bench.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python ablations/bench.py --sections step,trial --repeats 5",
    )
    reps = ", ".join(f"{k} {v[2]}" for k, v in SECTIONS.items())
    add = p.add_argument
    # fmt: off
    add("--sections", type=_names(tuple(SECTIONS), "section"), default=DEFAULT_SECTIONS,
        help=f"comma list of {','.join(SECTIONS)} (default: all but streaming)")
    add("--repeats", type=positive_int, default=None,
        help=f"repeats of every figure (default per section: {reps})")
    add("--preset", choices=presets, default="default",
        help="preset of trial, memory, scaling and sweep (default)")
    add("--step-presets", type=_names(presets, "preset"), default=("default", "paper"),
        help="comma list of presets of the step section (default,paper)")
    add("--sweep-preset", choices=presets, default=None,
        help="preset of the sweep and GPU packing trials (default: --preset)")
    add("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key of every trial (repeatable)")
    add("--baseline", default=throughput.BASELINE_REF,
        help=f"git revision the throughput section compares with ({throughput.BASELINE_REF})")
    add("--cmg-float64", action="store_true",
        help="cmg section: also time float64, the original's dtype (minutes a step)")
    add("--study-storage", default="",
        help="study section: the storage of a finished ablations/study.py run (its study.json)")
    # fmt: on
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections and print their figures (exit 2 on bad flags, 1 on failure)."""
    args = build_parser().parse_args(argv)
    from comet_model.config import ConfigError

    try:
        overrides(args.overrides, args.preset)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    repeats = {name: args.repeats or SECTIONS[name][2] for name in args.sections}
    print_machine(args, repeats)
    try:
        for name in args.sections:
            runner, title, _ = SECTIONS[name]
            if name == "gpu" and (why := gpu.skip_reason()) is not None:
                print(f"\n== gpu: {title} ==\nskipped: {why}")
                continue
            with section(name, title):
                runner(args, repeats[name])
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
