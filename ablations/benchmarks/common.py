"""Formatting, progress and machine description shared by the benchmark sections."""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "BenchError",
    "all_threads",
    "cpu_model",
    "load_average",
    "num",
    "overrides",
    "peak_rss_mib",
    "print_machine",
    "progress",
    "reset_peak_rss",
    "rss_mib",
    "section",
    "stat",
    "table",
]


class BenchError(RuntimeError):
    """A measurement that could not be taken (one-line message; exit status 1)."""


def _status_mib(key: str) -> float | None:
    """``key`` (``VmHWM``, ``VmRSS``) of /proc/self/status in MiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak RSS of this process since its start or the last :func:`reset_peak_rss`: VmHWM of
    /proc/self/status (Linux), else ru_maxrss.

    Not the parent's ``ru_maxrss`` of a child: on Linux that inherits the spawning process's
    peak across fork and exec, so a child of a big parent would report the parent's size.
    """
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0


def rss_mib() -> float | None:
    """Current resident set size of this process in MiB (None where /proc is missing)."""
    return _status_mib("VmRSS")


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux: ``5`` into
    /proc/self/clear_refs); False where that is not possible (the peak then keeps counting
    from the process start)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_mib("VmHWM") is not None


def num(x: float, sig: int = 3) -> str:
    """``x`` with ``sig`` significant digits (at least), never in exponent notation."""
    if x == 0 or not math.isfinite(x):
        return f"{x:.1f}"
    decimals = min(6, max(0, sig - 1 - math.floor(math.log10(abs(x)))))
    return f"{x:.{decimals}f}"


def stat(values: Sequence[float]) -> str:
    """``median [min, max]`` of ``values``, 3 significant digits."""
    return f"{num(statistics.median(values))} [{num(min(values))}, {num(max(values))}]"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a plain table, first column left-aligned, the others right-aligned."""
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        line = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        print("  ".join(line).rstrip())


def load_average() -> str:
    """The 1/5/15-minute load average, formatted."""
    return "{:.2f} {:.2f} {:.2f} (1/5/15 min)".format(*os.getloadavg())


def progress(text: str) -> None:
    """A timestamped progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@contextmanager
def section(name: str, title: str) -> Iterator[None]:
    """Section heading with the load average and wall time around it."""
    print(f"\n== {name}: {title} ==")
    print(f"load average at start: {load_average()}", flush=True)
    progress(f"section {name} started")
    t0 = time.perf_counter()
    yield
    took = time.perf_counter() - t0
    print(f"load average at end: {load_average()}; section wall {took:.0f} s", flush=True)
    progress(f"section {name} done in {took:.0f} s")


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``, else what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def all_threads() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def print_machine(args: argparse.Namespace, repeats: dict[str, int]) -> None:
    """The header: machine, software, threads, sections and their repeats."""
    import torch

    mem = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        mem = f", {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.1f} GiB RAM"
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
    print("COMET benchmark (ablations/bench.py)")
    print(
        f"machine: {os.cpu_count()} logical cores ({all_threads()} usable), {cpu_model()}"
        f"{mem}, {platform.system()} {platform.machine()}; GPU: {cuda}"
    )
    print(
        f"software: python {platform.python_version()}, torch {torch.__version__} "
        f"(default threads {torch.get_num_threads()})"
    )
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    print(
        f"threads: step 1 and {all_threads()} (all); trial, memory, scaling 1 (fresh "
        f"subprocesses); sweep 1 CPU and 1 thread per trial; started {started}"
    )
    print(
        f"sections: {','.join(args.sections)}; repeats (n): "
        + ", ".join(f"{s} {repeats[s]}" for s in args.sections)
    )
    print(
        "figures: median [min, max] over n repeats; the machine may be shared, so compare "
        "figures only at a similar load average"
    )


def overrides(items: Sequence[str], preset_name: str) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as typed flat keys, validated against the preset now (not in a
    subprocess)."""
    from comet_model.config import parse_override, preset

    cfg = preset(preset_name)
    flat = dict(parse_override(text, cfg) for text in items)
    cfg.override(flat)
    return flat
