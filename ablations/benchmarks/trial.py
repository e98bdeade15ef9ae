"""Sections ``trial``, ``memory`` and ``scaling``: whole continual trials in fresh subprocesses.

- ``trial``: one full continual trial of ``--preset`` on one thread, by stage (expansion,
  training, Fisher, evaluation), each repeat in a fresh subprocess;
- ``memory``: peak resident set size of a trial subprocess and of an import-only one;
- ``scaling``: trial time at 1x, 2x and 4x ``data.train_sequences`` on one thread.

The subprocess is ``python -m ablations.benchmarks.trial SPEC`` (:func:`worker`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from ablations.benchmarks.common import (
    BenchError,
    overrides,
    peak_rss_mib,
    progress,
    stat,
    table,
)

__all__ = ["SCALING", "TrialRun", "section_memory", "section_scaling", "section_trial",
           "trial_times", "worker"]  # fmt: skip

SCALING = (1, 2, 4)  # multiples of data.train_sequences


def trial_times(cfg) -> tuple[float, list[dict[str, Any]]]:
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


@dataclass
class TrialRun:
    """One trial in a fresh subprocess."""

    total_s: float  # trial_times: data build + whole pipeline
    stages: list[dict[str, Any]]  # its per-stage summaries ("(data)" first)
    process_s: float  # wall of the whole subprocess (interpreter start and imports included)
    cpu_s: float  # user + system CPU seconds of the subprocess
    peak_rss_mib: float  # peak resident set size of the process (see common.peak_rss_mib)


def _subprocess(spec: dict[str, Any]) -> TrialRun:
    """Run ``--worker spec`` in a fresh interpreter with ``spec['threads']`` threads."""
    threads = str(spec.get("threads", 1))
    env = os.environ | {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    cmd = [sys.executable, "-m", "ablations.benchmarks.trial", json.dumps(spec)]
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


def worker(text: str) -> int:
    """Subprocess side: one trial (or only the imports) on ``threads`` threads; JSON on stdout."""
    spec = json.loads(text)
    import torch

    torch.set_num_threads(int(spec["threads"]))
    if spec["kind"] == "imports":
        import comet_model.continual.pipeline  # noqa: F401

        print(json.dumps({"peak_rss_mib": peak_rss_mib()}))
        return 0
    from comet_model.config import preset

    cfg = preset(spec["preset"]).override({**spec["overrides"], "train.threads": spec["threads"]})
    total, stages = trial_times(cfg)
    result = {"total_s": total, "stages": stages, "peak_rss_mib": peak_rss_mib()}
    print(json.dumps(result, default=str))
    return 0


def _trials(
    args: argparse.Namespace, repeats: int, extra: dict[str, Any] | None = None, label: str = ""
) -> list[TrialRun]:
    runs = []
    spec = {"kind": "trial", "preset": args.preset, "threads": 1}
    spec["overrides"] = {**overrides(args.overrides, args.preset), **(extra or {})}
    for i in range(repeats):
        progress(f"{label}trial {i + 1}/{repeats} (preset {args.preset}, 1 thread) ...")
        runs.append(_subprocess(spec))
        progress(f"{label}trial {i + 1}/{repeats}: {runs[-1].total_s:.1f} s")
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
        f"1 thread, each repeat a fresh subprocess (trial_times); "
        f"n={repeats}"
    )
    rows: list[list[object]] = [["data build", stat([_part(r, "data_s", 0) for r in runs])]]
    parts = (
        ("setup_s", "codebook expansion"),
        ("train_s", "training"),
        ("fisher_s", "EWC Fisher"),
        ("eval_s", "evaluation"),
    )
    for i, name in enumerate(names[1:], start=1):
        for key, what in parts:
            rows.append([f"stage {i} {name}: {what}", stat([_part(r, key, i) for r in runs])])
    for key, what in parts:
        rows.append([f"all stages: {what}", stat([_part(r, key) for r in runs])])
    rows.append(["total (trial_times)", stat([r.total_s for r in runs])])
    rows.append(["process wall (+ start, imports)", stat([r.process_s for r in runs])])
    rows.append(["process CPU s / wall s", stat([r.cpu_s / r.process_s for r in runs])])
    table(["part", "seconds"], rows)
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
    table(
        ["process", "peak RSS MiB"],
        [
            [
                "imports only (torch, comet_model.continual.pipeline)",
                stat([r.peak_rss_mib for r in base]),
            ],  # noqa: E501
            [f"one trial, preset {args.preset}", stat([r.peak_rss_mib for r in runs])],
        ],
    )


def section_scaling(args: argparse.Namespace, repeats: int) -> None:
    """Trial time at 1x, 2x and 4x the training sequences, one thread."""
    from comet_model.config import preset

    over = overrides(args.overrides, args.preset)
    n0 = preset(args.preset).override(over).data.train_sequences
    rows, base = [], None
    for factor in SCALING:
        extra = {"data.train_sequences": n0 * factor}
        runs = _trials(args, repeats, extra, label=f"scaling {factor}x: ")
        total = [r.total_s for r in runs]
        train = [_part(r, "train_s") for r in runs]
        base = base or (statistics.median(total), statistics.median(train))
        rows.append([
            f"{factor}x", n0 * factor, stat(total), stat(train),
            stat([_part(r, "eval_s") for r in runs]), stat([_part(r, "data_s") for r in runs]),
            f"{statistics.median(total) / base[0]:.2f}",
            f"{statistics.median(train) / base[1]:.2f}",
            stat([r.cpu_s / r.process_s for r in runs]),
        ])  # fmt: skip
    print(
        f"one trial at multiples of data.train_sequences per stage, preset {args.preset}, "
        f"1 thread, fresh subprocesses; n={repeats}"
    )
    table(("factor", "sequences", "total s", "training s", "evaluation s", "data s",
            "total/1x", "training/1x", "CPU/wall"), rows)  # fmt: skip
    print("CPU/wall: process CPU s / wall s, below 1.00 = the trial waited for a core")


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1]))
