"""Performance benchmark: ``python ablations/bench.py [--sections step,trial,...] [--repeats N]``.

Sections (default: all, in this order):

- ``step``: one training step at ``--step-presets`` (default and paper) at 1 thread and at all
  threads: its time (``ablations.benchmarks.step.step_times``), its FLOPs (FlopCounterMode: matmul,
  convolution and attention FLOPs only, forward and backward), the achieved GFLOP/s and the ratio
  to this machine's dense float32 matmul GFLOP/s measured in the same run at the same threads.
- ``trial``: one full continual trial of ``--preset`` on one thread, by stage (expansion,
  training, Fisher, evaluation), each repeat in a fresh subprocess.
- ``sweep``: the same 4-trial sweep (grid ``smoke`` x 2 seeds, 1 CPU and 1 thread per trial)
  through ``ablations/run.py --fresh`` at ``--max-concurrent`` 1 and 2; the speed-up (ideal 2).
- ``memory``: peak resident set size of a trial subprocess and of an import-only one.
- ``scaling``: trial time at 1x, 2x and 4x ``data.train_sequences`` on one thread.
- ``cmg``: one full training step of DCID at the original code's audio-video-text shapes (batch
  80, VGG19 pool5 video maps through the CMG front end, ``ablations.benchmarks.cmg.avt_step_times``)
  in float32 and float64 at all threads, against the original's float64 step (dcid_reference
  5.3: 222.8 s median on this 2-core machine at 2 threads; the original code is not run here).
- ``gpu``: with CUDA only: step time at the paper preset on the GPU and trials per hour of 1, 2
  and 4 trials packed on one GPU (``--gpus-per-trial`` 1, 0.5, 0.25 through the harness).

Every figure is the median of repeated runs with the minimum and maximum and the number of
repeats (per-section defaults, all replaced by ``--repeats``). The load average is printed at
the start and end of each section: on a shared machine compare figures only at a similar load.
Results go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablations.cli_args import positive_int

SECTIONS = ("step", "trial", "sweep", "memory", "scaling", "cmg", "gpu")
REPEATS = {"step": 20, "trial": 3, "sweep": 1, "memory": 1, "scaling": 1, "cmg": 3, "gpu": 20}
ORIGINAL_STEP_S = 222.8  # the original DCID's float64 step, B=80, 2 threads (dcid_reference 5.3)
MATMUL_SIZES = (256, 512, 1024, 2048)  # square float32 matmuls; the best median is the peak
SCALING = (1, 2, 4)  # multiples of data.train_sequences
PACKING = (1, 2, 4)  # trials per GPU
SWEEP_ARGS = ("--grid", "smoke", "--seeds", "2")  # 2 arms x 2 seeds = 4 trials
SWEEP_TRIALS = 4
RUN_PY = Path(__file__).resolve().with_name("run.py")
FLOP_NOTE = (
    "FLOPs: torch.utils.flop_counter.FlopCounterMode over one whole step (forward, CLUB inner "
    "steps, backward); it counts matmul/conv/attention FLOPs only (elementwise ops, norms, "
    "softmax, the codebook EMA and Adam are not counted), so GFLOP/s is a lower bound"
)


class BenchError(RuntimeError):
    """A measurement that could not be taken (one-line message; exit status 1)."""


class _Parser(argparse.ArgumentParser):
    """Bad flags: one line naming the problem, exit status 2 (no usage dump)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see --help)\n")


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
    p = _Parser(
        prog="ablations/bench.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python ablations/bench.py --sections step,trial --repeats 5",
    )
    reps = ", ".join(f"{k} {v}" for k, v in REPEATS.items())
    add = p.add_argument
    # fmt: off
    add("--sections", type=_names(SECTIONS, "section"), default=SECTIONS,
        help=f"comma list of {','.join(SECTIONS)} (default: all)")
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
    # fmt: on
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one trial in a subprocess
    return p


# ---------------------------------------------------------------------------- small helpers


def _num(x: float, sig: int = 3) -> str:
    """``x`` with ``sig`` significant digits (at least), never in exponent notation."""
    if x == 0 or not math.isfinite(x):
        return f"{x:.1f}"
    decimals = min(6, max(0, sig - 1 - math.floor(math.log10(abs(x)))))
    return f"{x:.{decimals}f}"


def _stat(values: Sequence[float]) -> str:
    """``median [min, max]`` of ``values``, 3 significant digits."""
    return f"{_num(statistics.median(values))} [{_num(min(values))}, {_num(max(values))}]"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a plain table, first column left-aligned, the others right-aligned."""
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        line = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        print("  ".join(line).rstrip())


def _load() -> str:
    return "{:.2f} {:.2f} {:.2f} (1/5/15 min)".format(*os.getloadavg())


def _progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@contextmanager
def _section(name: str, title: str) -> Iterator[None]:
    """Section heading with the load average and wall time around it."""
    print(f"\n== {name}: {title} ==")
    print(f"load average at start: {_load()}", flush=True)
    _progress(f"section {name} started")
    t0 = time.perf_counter()
    yield
    took = time.perf_counter() - t0
    print(f"load average at end: {_load()}; section wall {took:.0f} s", flush=True)
    _progress(f"section {name} done in {took:.0f} s")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _all_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _machine(args: argparse.Namespace) -> None:
    import torch

    mem = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        mem = f", {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.1f} GiB RAM"
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
    print("COMET benchmark (ablations/bench.py)")
    print(
        f"machine: {os.cpu_count()} logical cores ({_all_threads()} usable), {_cpu_model()}"
        f"{mem}, {platform.system()} {platform.machine()}; GPU: {cuda}"
    )
    print(
        f"software: python {platform.python_version()}, torch {torch.__version__} "
        f"(default threads {torch.get_num_threads()})"
    )
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    print(
        f"threads: step 1 and {_all_threads()} (all); trial, memory, scaling 1 (fresh "
        f"subprocesses); sweep 1 CPU and 1 thread per trial; started {started}"
    )
    reps = {s: args.repeats or REPEATS[s] for s in args.sections}
    print(
        f"sections: {','.join(args.sections)}; repeats (n): "
        + ", ".join(f"{s} {n}" for s, n in reps.items())
    )
    print(
        "figures: median [min, max] over n repeats; the machine may be shared, so compare "
        "figures only at a similar load average"
    )


def _overrides(items: Sequence[str], preset_name: str) -> dict[str, Any]:
    from comet_model.config import parse_override, preset

    cfg = preset(preset_name)
    flat = dict(parse_override(text, cfg) for text in items)
    cfg.override(flat)  # validate now, not in a subprocess
    return flat


# ---------------------------------------------------------------------------- step section


def _step_fn(cfg: Any, *, device: str = "cpu", seed: int = 0) -> Callable[[], None]:
    """One training step set up as ``ablations.benchmarks.step.step_times`` does, on ``device``."""
    import torch

    from ablations.benchmarks.step import DEFAULT_DIMS
    from comet_model.nn.model import CometModel
    from comet_model.continual.train import Trainer, loss_weights, train_step

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = CometModel.from_config(cfg, dict(DEFAULT_DIMS)).to(device).train()
    trainer = Trainer(model, cfg)
    weights = loss_weights(cfg, model)
    b, t = cfg.train.batch_size, cfg.data.steps
    batches = [
        {m: torch.randn(b, t, d, generator=generator).to(device) for m, d in DEFAULT_DIMS.items()}
        for _ in range(4)
    ]  # 4 x {modality: [B, T, d]}
    with torch.no_grad():
        tokens = torch.cat([model.encode(m, x) for m, x in batches[0].items()])
    model.seed_codebook_(tokens, generator)
    count = [0]

    def step() -> None:
        batch = batches[count[0] % len(batches)]
        train_step(model, trainer, batch, None, cfg, generator=generator, weights=weights)
        count[0] += 1

    return step


def step_flops(cfg: Any, *, device: str = "cpu") -> int:
    """Matmul/conv/attention FLOPs of one training step (forward and backward, one warm-up)."""
    from torch.utils.flop_counter import FlopCounterMode

    step = _step_fn(cfg, device=device)
    step()
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(size: int, repeats: int, *, device: str = "cpu") -> list[float]:
    """GFLOP/s of a dense float32 ``[size, size] @ [size, size]`` (each sample >= ~20 ms)."""
    import torch

    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device)
    b = torch.randn(size, size, generator=g).to(device)
    out = torch.empty(size, size, device=device)
    t0 = time.perf_counter()
    torch.mm(a, b, out=out)  # warm-up, and calibration of the inner loop
    _sync(device)
    inner = max(1, math.ceil(0.02 / max(time.perf_counter() - t0, 1e-6)))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b, out=out)
        _sync(device)
        rates.append(2.0 * size**3 * inner / (time.perf_counter() - t0) / 1e9)
    return rates


def peak_matmul(repeats: int, *, device: str = "cpu") -> tuple[int, list[float]]:
    """The size of ``MATMUL_SIZES`` with the best median GFLOP/s, and its samples."""
    runs = {n: matmul_gflops(n, repeats, device=device) for n in MATMUL_SIZES}
    best = max(runs, key=lambda n: statistics.median(runs[n]))
    return best, runs[best]


def section_step(args: argparse.Namespace, repeats: int) -> None:
    """Step time, achieved GFLOP/s and the ratio to dense matmul, at 1 and all threads."""
    import torch

    from ablations.benchmarks.step import step_times
    from comet_model.config import preset

    before = torch.get_num_threads()
    flops = {name: step_flops(preset(name)) for name in args.step_presets}
    rows = []
    try:
        for threads in sorted({1, _all_threads()}):
            torch.set_num_threads(threads)
            size, mm = peak_matmul(repeats)
            _progress(f"step: {threads} thread(s): matmul {_num(statistics.median(mm))} GFLOP/s")
            for name in args.step_presets:
                cfg = preset(name)
                ms = [1000.0 * s for s in step_times(cfg, repeats=repeats)]
                gflops = flops[name] / 1e9 / (statistics.median(ms) / 1000.0)
                _progress(f"step: {threads} thread(s), {name}: {_num(statistics.median(ms))} ms")
                rows.append([
                    threads, name, f"{cfg.train.batch_size}x{cfg.data.steps}", cfg.model.dim,
                    _stat(ms), _num(flops[name] / 1e9), _num(gflops),
                    f"{_stat(mm)} @{size}", _num(gflops / statistics.median(mm)),
                ])  # fmt: skip
    finally:
        torch.set_num_threads(before)
    print(
        f"one training step (forward, CLUB inner steps, losses, backward, clip, Adam, MM-EMA, "
        f"dead-code reset) on random batches, after 3 warm-up steps; n={repeats} timed steps; "
        f"matmul: float32 torch.mm, sizes {','.join(map(str, MATMUL_SIZES))}, the size with "
        f"the best median, n={repeats} samples"
    )
    _table(("threads", "preset", "BxT", "D", "step ms", "GFLOP/step", "step GFLOP/s",
            "matmul GFLOP/s @size", "step/matmul"), rows)  # fmt: skip
    print(FLOP_NOTE)


def section_cmg(args: argparse.Namespace, repeats: int) -> None:
    """Our DCID step at the original's shapes in float32 and float64 vs the original's step."""
    import torch

    from ablations.benchmarks.cmg import avt_step_times

    threads = torch.get_num_threads()
    rows = []
    for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        _progress(f"cmg: {name}: 1 warm-up + {repeats} steps (minutes each at full size)")
        times = avt_step_times(dtype=dtype, repeats=repeats, warmup=1)
        speedup = ORIGINAL_STEP_S / statistics.median(times)
        rows.append([name, _stat(times), f"{ORIGINAL_STEP_S}", f"{speedup:.2f}x"])
        _progress(f"cmg: {name}: {_num(statistics.median(times))} s")
    print(
        f"one training step of DCID (no COMET) at the original's shapes: B=80, T=10, video "
        f"[80,10,7*7*512] through the CMG front end (width 2048), audio [80,10,128], text "
        f"[80,10,768] (no BiLSTM), D=256, 400 codes, 5 CLUB inner steps; {threads} threads; "
        f"after 1 warm-up step; n={repeats}. Original: float64 only, 2 threads, median of 5 steps "
        f"measured on this machine (dcid_reference 5.3), not rerun here"
    )
    _table(("dtype", "our step s", "original float64 s", "original / ours"), rows)


# ---------------------------------------------------------------------------- trial subprocesses


@dataclass
class TrialRun:
    """One trial in a fresh subprocess."""

    total_s: float  # ablations.benchmarks.step.trial_times: data build + whole pipeline
    stages: list[dict[str, Any]]  # its per-stage summaries ("(data)" first)
    process_s: float  # wall of the whole subprocess (interpreter start and imports included)
    cpu_s: float  # user + system CPU seconds of the subprocess
    peak_rss_mib: float  # peak resident set size of the process (see _peak_rss_mib)


def _subprocess(spec: dict[str, Any]) -> TrialRun:
    """Run ``--worker spec`` in a fresh interpreter with ``spec['threads']`` threads."""
    threads = str(spec.get("threads", 1))
    env = os.environ | {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        except BaseException:  # Ctrl-C: do not leave the trial running
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"trial subprocess failed (exit {proc.returncode}): {last}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return TrialRun(
        total_s=float(result.get("total_s", math.nan)),
        stages=list(result.get("stages", [])),
        process_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=float(result["peak_rss_mib"]),
    )


def _peak_rss_mib() -> float:
    """Peak RSS of this process: VmHWM of /proc/self/status (Linux), else ru_maxrss.

    Not the parent's ``ru_maxrss`` of the child: on Linux that inherits the spawning process's
    peak across fork and exec, so a child of a big parent would report the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0


def _worker(text: str) -> int:
    """Subprocess side: one trial (or only the imports) on ``threads`` threads; JSON on stdout."""
    spec = json.loads(text)
    import torch

    torch.set_num_threads(int(spec["threads"]))
    if spec["kind"] == "imports":
        import comet_model.continual.pipeline  # noqa: F401

        print(json.dumps({"peak_rss_mib": _peak_rss_mib()}))
        return 0
    from ablations.benchmarks.step import trial_times
    from comet_model.config import preset

    cfg = preset(spec["preset"]).override({**spec["overrides"], "train.threads": spec["threads"]})
    total, stages = trial_times(cfg)
    result = {"total_s": total, "stages": stages, "peak_rss_mib": _peak_rss_mib()}
    print(json.dumps(result, default=str))
    return 0


def _trials(
    args: argparse.Namespace, repeats: int, extra: dict[str, Any] | None = None, label: str = ""
) -> list[TrialRun]:
    runs = []
    spec = {"kind": "trial", "preset": args.preset, "threads": 1}
    spec["overrides"] = {**_overrides(args.overrides, args.preset), **(extra or {})}
    for i in range(repeats):
        _progress(f"{label}trial {i + 1}/{repeats} (preset {args.preset}, 1 thread) ...")
        runs.append(_subprocess(spec))
        _progress(f"{label}trial {i + 1}/{repeats}: {runs[-1].total_s:.1f} s")
    return runs


def _part(run: TrialRun, key: str, stage: int | None = None) -> float:
    """Seconds of ``key`` in one stage (``stage`` index into the stages) or summed over all."""
    rows = run.stages if stage is None else [run.stages[stage]]
    return sum(float(r.get(key, 0.0)) for r in rows)


def section_trial(args: argparse.Namespace, repeats: int) -> None:
    """Wall time of one whole continual trial on one thread, by stage and by evaluation."""
    runs = _trials(args, repeats)
    names = [r["name"] for r in runs[0].stages]
    print(
        f"one full continual trial (training and every evaluation), preset {args.preset}, "
        f"1 thread, each repeat a fresh subprocess (ablations.benchmarks.step.trial_times); "
        f"n={repeats}"
    )
    rows: list[list[object]] = [["data build", _stat([_part(r, "data_s", 0) for r in runs])]]
    parts = (
        ("setup_s", "codebook expansion"),
        ("train_s", "training"),
        ("fisher_s", "EWC Fisher"),
        ("eval_s", "evaluation"),
    )
    for i, name in enumerate(names[1:], start=1):
        for key, what in parts:
            rows.append([f"stage {i} {name}: {what}", _stat([_part(r, key, i) for r in runs])])
    for key, what in parts:
        rows.append([f"all stages: {what}", _stat([_part(r, key) for r in runs])])
    rows.append(["total (trial_times)", _stat([r.total_s for r in runs])])
    rows.append(["process wall (+ start, imports)", _stat([r.process_s for r in runs])])
    rows.append(["process CPU s / wall s", _stat([r.cpu_s / r.process_s for r in runs])])
    _table(["part", "seconds"], rows)
    print("CPU/wall below 1.00 means the trial waited for a core (other load on the machine)")


def section_memory(args: argparse.Namespace, repeats: int) -> None:
    """Peak resident set size of one trial subprocess and of an import-only subprocess."""
    base = [_subprocess({"kind": "imports", "threads": 1}) for _ in range(repeats)]
    runs = _trials(args, repeats)
    print(
        f"peak resident set size of a fresh subprocess, read by that process at its end from "
        f"/proc/self/status VmHWM (the parent's ru_maxrss of a child is not used: on Linux it "
        f"inherits the spawning process's peak); includes the interpreter, torch and the data; "
        f"1 thread; n={repeats}"
    )
    _table(
        ["process", "peak RSS MiB"],
        [
            ["imports only (torch, comet_model.continual.pipeline)", _stat([r.peak_rss_mib for r in base])],
            [f"one trial, preset {args.preset}", _stat([r.peak_rss_mib for r in runs])],
        ],
    )


def section_scaling(args: argparse.Namespace, repeats: int) -> None:
    """Trial time at 1x, 2x and 4x the training sequences, one thread."""
    from comet_model.config import preset

    over = _overrides(args.overrides, args.preset)
    n0 = preset(args.preset).override(over).data.train_sequences
    rows, base = [], None
    for factor in SCALING:
        extra = {"data.train_sequences": n0 * factor}
        runs = _trials(args, repeats, extra, label=f"scaling {factor}x: ")
        total = [r.total_s for r in runs]
        train = [_part(r, "train_s") for r in runs]
        base = base or (statistics.median(total), statistics.median(train))
        rows.append([
            f"{factor}x", n0 * factor, _stat(total), _stat(train),
            _stat([_part(r, "eval_s") for r in runs]), _stat([_part(r, "data_s") for r in runs]),
            f"{statistics.median(total) / base[0]:.2f}",
            f"{statistics.median(train) / base[1]:.2f}",
            _stat([r.cpu_s / r.process_s for r in runs]),
        ])  # fmt: skip
    print(
        f"one trial at multiples of data.train_sequences per stage, preset {args.preset}, "
        f"1 thread, fresh subprocesses; n={repeats}"
    )
    _table(("factor", "sequences", "total s", "training s", "evaluation s", "data s",
            "total/1x", "training/1x", "CPU/wall"), rows)  # fmt: skip
    print("CPU/wall: process CPU s / wall s, below 1.00 = the trial waited for a core")


# ---------------------------------------------------------------------------- sweeps


@dataclass
class SweepRun:
    """One ``ablations/run.py`` command."""

    wall_s: float  # the whole command (Ray start and shutdown included)
    trial_s: list[float]  # wall_s of each complete run in the Parquet runs table


def _sweep(
    preset_name: str,
    overrides: Sequence[str],
    concurrency: int,
    *,
    gpus: float = 0.0,
    cpus: float = 1.0,
) -> SweepRun:
    """Run the 4-trial sweep in fresh temporary storage (and a private Ray temp folder)."""
    from reports.load import load_results

    storage = Path(tempfile.mkdtemp(prefix="comet-bench-"))
    ray_tmp = tempfile.mkdtemp(prefix="rb")  # short: Ray's socket paths have a length limit
    name = f"bench-c{concurrency}"
    cmd = [sys.executable, str(RUN_PY), *SWEEP_ARGS, "--preset", preset_name,
           "--max-concurrent", str(concurrency), "--cpus-per-trial", f"{cpus:g}",
           "--gpus-per-trial", f"{gpus:g}", "--storage", str(storage), "--name", name,
           "--fresh", "--set", "train.threads=1"]  # fmt: skip
    for item in overrides:
        cmd += ["--set", item]
    env = os.environ | {"RAY_TMPDIR": ray_tmp}
    try:
        with open(storage / "sweep.log", "w") as log:
            t0 = time.perf_counter()
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
            wall = time.perf_counter() - t0
        if rc != 0:
            lines = (storage / "sweep.log").read_text().strip().splitlines() or ["no output"]
            raise BenchError(
                f"sweep at --max-concurrent {concurrency} failed (exit {rc}): {lines[-1]}"
            )
        _, runs = load_results(storage / name)
        done = runs[runs["status"] == "complete"]
        if len(done) != SWEEP_TRIALS:
            raise BenchError(f"sweep finished {len(done)} of {SWEEP_TRIALS} trials")
        return SweepRun(wall, [float(x) for x in done["wall_s"]])
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _sweep_rows(runs: dict[Any, list[SweepRun]], label: Callable[[Any], str]) -> list[list[object]]:
    rows = []
    for key, rs in runs.items():
        walls = [r.wall_s for r in rs]
        trials = [t for r in rs for t in r.trial_s]
        rows.append([
            label(key), _stat(walls), _stat(trials), _stat([sum(r.trial_s) for r in rs]),
            _stat([SWEEP_TRIALS * 3600.0 / w for w in walls]),
        ])  # fmt: skip
    return rows


def section_sweep(args: argparse.Namespace, repeats: int) -> None:
    """The same 4-trial sweep at --max-concurrent 1 and 2; the speed-up (ideal 2)."""
    name = args.sweep_preset or args.preset
    runs: dict[int, list[SweepRun]] = {1: [], 2: []}
    for i in range(repeats):
        for c in runs:
            _progress(f"sweep: {SWEEP_TRIALS} trials at --max-concurrent {c} ({i + 1}/{repeats})")
            runs[c].append(_sweep(name, args.overrides, c))
            _progress(f"sweep: --max-concurrent {c}: {runs[c][-1].wall_s:.0f} s")
    print(
        f"ablations/run.py {' '.join(SWEEP_ARGS)} --preset {name} --fresh: {SWEEP_TRIALS} "
        f"trials, 1 CPU and train.threads=1 each, fresh storage; n={repeats} (trial wall s: "
        f"wall_s of the Parquet runs table, n={repeats * SWEEP_TRIALS})"
    )
    _table(
        ["max-concurrent", "command wall s", "trial wall s", "sum of trial s", "trials/hour"],
        _sweep_rows(runs, str),
    )
    w1, w2 = (statistics.median([r.wall_s for r in runs[c]]) for c in (1, 2))
    t1, t2 = (statistics.median([t for r in runs[c] for t in r.trial_s]) for c in (1, 2))
    print(
        f"speed-up wall(1)/wall(2) = {w1 / w2:.2f} (ideal 2.00); per-trial slowdown "
        f"trial(2)/trial(1) = {t2 / t1:.2f} (ideal 1.00)"
    )


# ---------------------------------------------------------------------------- GPU


def _skip_gpu() -> str | None:
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
    step = _step_fn(cfg, device="cuda")
    for _ in range(3):  # warm-up (cuDNN / cuBLAS selection)
        step()
    _sync("cuda")
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        _sync("cuda")
        ms.append(1000.0 * (time.perf_counter() - t0))
    size, mm = peak_matmul(repeats, device="cuda")
    gflops = flops / 1e9 / (statistics.median(ms) / 1000.0)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    print(
        f"paper preset step on the GPU (synchronised), n={repeats} steps after 3 warm-up; "
        f"matmul: float32 torch.mm (allow_tf32={tf32}), best of sizes "
        f"{','.join(map(str, MATMUL_SIZES))}"
    )
    _table(
        ["preset", "step ms", "GFLOP/step", "step GFLOP/s", "matmul GFLOP/s @size", "step/matmul"],
        [
            [
                "paper",
                _stat(ms),
                _num(flops / 1e9),
                _num(gflops),
                f"{_stat(mm)} @{size}",
                _num(gflops / statistics.median(mm)),
            ]
        ],
    )
    print(FLOP_NOTE + "; cuDNN LSTM kernels are not counted on the GPU")
    name = args.sweep_preset or args.preset
    packs = args.repeats or 1  # whole packed sweeps (the steps use ``repeats``)
    runs: dict[int, list[SweepRun]] = {k: [] for k in PACKING}
    cpus = min(1.0, _all_threads() / max(PACKING))
    for i in range(packs):
        for k in PACKING:
            _progress(f"gpu: {SWEEP_TRIALS} trials, {k} per GPU ({i + 1}/{packs})")
            runs[k].append(_sweep(name, args.overrides, k, gpus=1.0 / k, cpus=cpus))
    print(
        f"ablations/run.py {' '.join(SWEEP_ARGS)} --preset {name} --gpus-per-trial 1/k "
        f"--max-concurrent k --cpus-per-trial {cpus:g}: {SWEEP_TRIALS} trials; n={packs}"
    )
    _table(
        ["trials per GPU", "command wall s", "trial wall s", "sum of trial s", "trials/hour"],
        _sweep_rows(runs, lambda k: f"{k} (gpus {1 / k:g})"),
    )


# ---------------------------------------------------------------------------- main

RUNNERS: dict[str, tuple[Callable[[argparse.Namespace, int], None], str]] = {
    "step": (section_step, "training step time, FLOP rate and dense matmul"),
    "trial": (section_trial, "one full continual trial on one thread"),
    "sweep": (section_sweep, "sweep efficiency at --max-concurrent 1 and 2"),
    "memory": (section_memory, "peak resident memory of one trial"),
    "scaling": (section_scaling, "trial time vs training sequences"),
    "cmg": (section_cmg, "DCID step at the original's audio-video-text shapes"),
    "gpu": (section_gpu, "GPU step time and trials packed per GPU"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections and print their figures (exit 2 on bad flags, 1 on failure)."""
    args = build_parser().parse_args(argv)
    if args.worker:
        return _worker(args.worker)
    from comet_model.config import ConfigError

    try:
        _overrides(args.overrides, args.preset)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _machine(args)
    try:
        for name in args.sections:
            runner, title = RUNNERS[name]
            if name == "gpu" and (why := _skip_gpu()) is not None:
                print(f"\n== gpu: {title} ==\nskipped: {why}")
                continue
            with _section(name, title):
                runner(args, args.repeats or REPEATS[name])
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
