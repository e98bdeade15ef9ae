"""Data larger than memory: ``python -m ablations.benchmarks.streaming``.

Writes two synthetic video-text stage files in the importer's layout (float16 VGG19 pool5 maps
``[N, 10, 7*7*512]`` chunked per item, text ``[N, 10, 768]`` with a mask), streamed to disk in
blocks: a big one (``--big-gb``, default 12.5 GB, more than half of a 24 GB machine) and a
small one (``--small-items``). Each is trained on in a fresh child process through
``load_plan(streaming="auto")``, which streams the big file from disk and loads the small one
into memory, with the CMG video front end on these exact input shapes (a smaller model and
batch than the paper's, see ``--cmg-width`` / ``--batch``: at the full shapes a CPU step takes
tens of seconds). The big file is dropped from the page cache first (``posix_fadvise``), so
its batches are read from disk. Printed: file sizes, load (and validation) time, the seconds
of codebook seeding from 1024 items, steps per second (median [min, max] over ``--repeats``
blocks of ``--steps`` steps, each step timed with its batch read), the share of the step
spent reading, peak resident memory of each child, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ITEM_SHAPE = {"video": (10, 7 * 7 * 512), "text": (10, 768)}
PLAN = """seed = 0
val_fraction = 0.01
[[stages]]
name = "video-text"
modalities = ["video", "text"]
train = "{file}"
"""


def write_stage_file(path: Path, items: int, *, seed: int = 0, block: int = 64) -> int:
    """A synthetic video-text stage file of ``items`` items, written ``block`` items at a time
    (bounded memory); returns its size in bytes."""
    import h5py

    rng = np.random.default_rng(seed)
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        sets = {
            m: f.create_dataset(m, shape=(items, *s), dtype="float16", chunks=(1, *s))
            for m, s in ITEM_SHAPE.items()
        }
        mask = np.ones((items, 10), dtype=bool)
        mask[:, 8:] = rng.random((items, 2)) < 0.5  # some padded text tokens
        f.create_dataset("mask_text", data=mask)
        for start in range(0, items, block):
            n = min(block, items - start)
            for m, s in ITEM_SHAPE.items():
                x = rng.random((n, *s), dtype=np.float32)  # pool5 maps are >= 0 (after ReLU)
                sets[m][start : start + n] = x.astype(np.float16)
    os.replace(tmp, path)
    return path.stat().st_size


def drop_page_cache(path: Path) -> None:
    """Evict the file's pages from the page cache, so reads come from disk (Linux)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _config(batch: int, cmg_width: int, threads: int) -> Any:
    from comet_model.config import preset

    return preset("smoke").override(
        {
            "model.video_frontend": "cmg",
            "model.cmg_width": cmg_width,
            "train.batch_size": batch,
            "train.threads": threads,
        }
    )


def measure(
    plan: Path,
    *,
    batch: int,
    steps: int,
    warmup: int,
    cmg_width: int,
    threads: int,
    streaming: str = "auto",
) -> dict[str, Any]:
    """Train on the plan's one stage as ``train_stage`` does; the figures of this process."""
    import torch

    from comet_model.continual.stage import seed_codebook_from_data
    from comet_model.continual.train import Trainer, loss_weights, train_step
    from comet_model.data import load_plan
    from comet_model.nn.model import CometModel

    torch.set_num_threads(threads)
    cfg = _config(batch, cmg_width, threads)
    t0 = time.perf_counter()
    bench = load_plan(plan, streaming=streaming)  # auto: the choice a run would make
    load_s = time.perf_counter() - t0
    stage = bench.stages[0]
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = CometModel.from_config(cfg, dict(bench.feature_dims)).train()
    trainer, weights = Trainer(model, cfg), loss_weights(cfg, model)
    t0 = time.perf_counter()
    seed_codebook_from_data(model, stage, generator)  # 1024 random items, read in chunks
    seed_s = time.perf_counter() - t0
    n = stage.train.num_items
    if (warmup + steps) * batch > n:
        raise SystemExit(f"{plan}: {n} items, fewer than {warmup + steps} batches need")
    perm = torch.randperm(n, generator=generator)
    step_s, read_s = 0.0, 0.0
    for s in range(warmup + steps):
        idx = perm[s * batch : (s + 1) * batch]
        t0 = time.perf_counter()
        feats = {m: stage.train.features[m][idx] for m in stage.modalities}
        masks = {m: k[idx] for m in stage.modalities if (k := stage.train.mask(m)) is not None}
        t1 = time.perf_counter()
        train_step(model, trainer, feats, masks or None, cfg, generator=generator, weights=weights)
        if s >= warmup:
            step_s += time.perf_counter() - t0
            read_s += t1 - t0
    return {
        "streamed": bench.streamed,
        "load_s": load_s,
        "seed_s": seed_s,
        "steps_per_s": steps / step_s,
        "compute_steps_per_s": steps / (step_s - read_s),
        "read_share": read_s / step_s,
        "loadavg": os.getloadavg()[0],
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _child(plan: Path, args: argparse.Namespace, streaming: str = "auto") -> dict[str, Any]:
    flags = {
        "--batch": args.batch,
        "--steps": args.steps,
        "--warmup": args.warmup,
        "--cmg-width": args.cmg_width,
        "--threads": args.threads,
        "--streaming": streaming,
    }
    cmd = [sys.executable, "-m", "ablations.benchmarks.streaming", "--child", str(plan)]
    cmd += [str(x) for kv in flags.items() for x in kv]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {res.stderr.strip().splitlines()[-1:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _stat(values: list[float], fmt: str = ".3f") -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"


def _runs(root: Path, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """``--repeats`` pairs of children, streamed and in memory alternating (so that a change of
    the machine's load hits both alike); the big file is evicted from the page cache first."""
    runs: dict[str, list[dict[str, Any]]] = {"streamed": [], "memory": []}
    for _ in range(args.repeats):
        drop_page_cache(root / "big.h5")
        runs["streamed"].append(_child(root / "big.toml", args, args.stream_big))
        runs["memory"].append(_child(root / "small.toml", args))
    return runs


def streaming_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Write the two files, run the children, print the figures; returns them."""
    root = Path(tempfile.mkdtemp(prefix="comet-streaming-", dir=args.dir))
    load0 = os.getloadavg()
    item_bytes = 2 * sum(int(np.prod(s)) for s in ITEM_SHAPE.values())
    big_items = int(args.big_gb * 1e9 / item_bytes) + 1
    try:
        t0 = time.perf_counter()
        sizes = {
            "big": write_stage_file(root / "big.h5", big_items),
            "small": write_stage_file(root / "small.h5", args.small_items, seed=1),
        }
        write_s = time.perf_counter() - t0
        for name in ("big", "small"):
            (root / f"{name}.toml").write_text(PLAN.format(file=f"{name}.h5"))
        runs = _runs(root, args)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    load1 = os.getloadavg()
    mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(
        f"machine: {os.cpu_count()} CPUs, {_gb(mem_total)} memory; load average (1 min) "
        f"{load0[0]:.2f} before, {load1[0]:.2f} after; at each run's end: "
        + ", ".join(
            f"{r['loadavg']:.2f}" for pair in zip(*runs.values(), strict=True) for r in pair
        )
    )
    print(
        f"files (written in {write_s:.0f} s): streamed {big_items:,} items = {_gb(sizes['big'])} "
        f"of float16 (as float32 in memory: {_gb(2 * sizes['big'])}); in memory "
        f"{args.small_items:,} items = {_gb(sizes['small'])}"
    )
    print(
        f"settings: preset smoke, model.video_frontend=cmg, model.cmg_width={args.cmg_width}, "
        f"batch {args.batch}, {args.threads} threads, video [B, 10, 25088], text [B, 10, 768]; "
        f"{args.steps} timed steps after {args.warmup} warm-up, {args.repeats} runs each, "
        "alternating; median [min, max]"
    )
    for name, rs in runs.items():
        mode = f"streaming={args.stream_big if name == 'streamed' else 'auto'}"
        where = "from disk" if rs[0]["streamed"] else "in memory"
        print(
            f"{name:<9} ({mode}: {where}): steps/s {_stat([r['steps_per_s'] for r in rs])}, "
            f"without the reads {_stat([r['compute_steps_per_s'] for r in rs])}, reads "
            f"{_stat([100 * r['read_share'] for r in rs], '.1f')} % of a step; load "
            f"{_stat([r['load_s'] for r in rs], '.1f')} s, codebook seeding "
            f"{_stat([r['seed_s'] for r in rs], '.1f')} s; peak RSS "
            f"{_gb(max(r['peak_rss'] for r in rs))} (max)"
        )
    pairs = [a["steps_per_s"] / b["steps_per_s"] for a, b in zip(*runs.values(), strict=True)]
    peak = max(r["peak_rss"] for r in runs["streamed"])
    print(
        f"streamed / in memory steps/s: {_stat([100 * p for p in pairs], '.0f')} % per pair "
        f"(target >= 80 %); streamed peak RSS {_gb(peak)} for a {_gb(sizes['big'])} file "
        "(target < 4 GB)"
    )
    return {"runs": runs, "sizes": sizes, "ratios": pairs}


def main_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m ablations.benchmarks.streaming``."""
    p = argparse.ArgumentParser(
        prog="python -m ablations.benchmarks.streaming", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--dir", default=None, help="scratch folder (default: the system temp)")
    p.add_argument("--big-gb", type=float, default=12.5, help="size of the streamed file (GB)")
    p.add_argument("--small-items", type=int, default=1500, help="items of the in-memory file")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="runs of each kind")
    p.add_argument("--cmg-width", type=int, default=256, help="model.cmg_width (paper: 2048)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the scratch files")
    p.add_argument(
        "--stream-big",
        choices=("auto", "on"),
        default="auto",
        help="data.streaming of the big file (on: stream even a small test file)",
    )
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--streaming", default="auto", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with the internal ``--child``, one measurement)."""
    args = main_parser().parse_args(argv)
    if args.child is not None:
        keys = ("batch", "steps", "warmup", "cmg_width", "threads", "streaming")
        print(json.dumps(measure(args.child, **{k: getattr(args, k) for k in keys})))
        return 0
    streaming_benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def section_streaming(args: argparse.Namespace, repeats: int) -> None:
    """Section ``streaming`` of ``ablations/bench.py``: this benchmark at its defaults (a
    12.5 GB streamed file), with ``repeats`` runs of each kind."""
    options = main_parser().parse_args(["--repeats", str(repeats)])
    streaming_benchmark(options)
