"""Seeded comparisons of continual pipelines: ``python -m comet_model.experiments compare``.

Runs every (class plan, arm, seed) as one :func:`comet_model.continual.pipeline.run_continual` in its own
folder ``OUT/runs/<plan>/<arm>/seed<k>`` (so an interrupted comparison resumes: finished runs
return at once), in ``--jobs`` worker processes with one torch thread each, then prints a table
per plan and stage: mean and 95 % t-interval of each arm, and each arm's difference from the
first arm paired by seed (its 95 % t-interval; ``*`` marks an interval that excludes 0). The
per-seed values go to ``OUT/per_seed.csv`` and everything to ``OUT/results.json``.

Default arms: ``DCID`` (``comet=false``) and ``DCID+COMET`` (the default preset). Other arms:
``--arm "label:key=value;key=value"`` (repeatable; the first arm is the reference; write
``--arm=-PM:replay.enabled=false`` for a label that starts with "-"). For choosing
settings use ``--split val`` (downstream sets built from held-out training-pool instances,
never the test sequences).

Reported metrics (keys of :mod:`comet_model.continual.pipeline`): V->A / A->V ave acc and avvp f1,
image<->audio retrieval mean, the forgetting of the stage-1 pair's retrieval (video<->text) and
the objective (mean of the unseen-pair metrics).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from comet_model.config import ConfigError, ExperimentConfig, parse_override, preset

__all__ = ["ROWS", "compare", "main", "paired_summary", "t_interval"]

# (label, metric key or an unordered retrieval pair "retrieval/a<->b/mean")
ROWS: tuple[tuple[str, str], ...] = (
    ("V->A ave acc", "ave/video->audio/acc"),
    ("A->V ave acc", "ave/audio->video/acc"),
    ("V->A avvp f1", "avvp/video->audio/f1"),
    ("A->V avvp f1", "avvp/audio->video/f1"),
    ("I<->A retrieval mean", "retrieval/image<->audio/mean"),
    ("V<->T retrieval mean", "retrieval/video<->text/mean"),
    ("forgetting V<->T retrieval", "forgetting/video<->text/retrieval"),
    ("objective (unseen pairs)", "objective"),
)
DEFAULT_ARMS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("DCID", {"comet": False}),
    ("DCID+COMET", {}),
)
# two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_interval(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, half-width of the 95 % t-interval and n of the finite ``values`` (NaN if n < 2)."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    if n < 2:
        return float(x.mean()), math.nan, n
    q = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    return float(x.mean()), float(q * x.std(ddof=1) / math.sqrt(n)), n


def lookup(metrics: Mapping[str, float], key: str) -> float:
    """``metrics[key]``; a retrieval pair ``a<->b`` is found in either order; NaN if absent."""
    if key in metrics:
        return float(metrics[key])
    parts = key.split("/")
    if len(parts) == 3 and "<->" in parts[1]:
        a, b = parts[1].split("<->")
        return float(metrics.get(f"{parts[0]}/{b}<->{a}/{parts[2]}", math.nan))
    return math.nan


def paired_summary(
    runs: Mapping[str, Mapping[int, Sequence[Mapping[str, float]]]],
    arms: Sequence[str],
    stage: int,
    rows: Sequence[tuple[str, str]] = ROWS,
) -> list[dict[str, Any]]:
    """Per row: each arm's (mean, half-width, n) after ``stage`` (1-based) and each later arm's
    difference from ``arms[0]`` over the seeds both have."""
    out = []
    for label, key in rows:
        row: dict[str, Any] = {"label": label, "key": key, "arms": {}, "diff": {}}
        vals = {
            a: {s: lookup(m[stage - 1], key) for s, m in runs.get(a, {}).items() if len(m) >= stage}
            for a in arms
        }
        for a in arms:
            row["arms"][a] = t_interval(list(vals[a].values()))
        ref = vals[arms[0]]
        for a in arms[1:]:
            seeds = sorted(set(ref) & set(vals[a]))
            row["diff"][a] = t_interval([vals[a][s] - ref[s] for s in seeds])
        out.append(row)
    return out


def _fmt(mean: float, half: float) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:6.2f} ± {half:5.2f}" if math.isfinite(half) else f"{mean:6.2f}"


def format_table(summary: list[dict[str, Any]], arms: Sequence[str], title: str) -> str:
    """Text table of :func:`paired_summary`."""
    width = max(len(r["label"]) for r in summary)
    heads = list(arms) + [f"{a} - {arms[0]}" for a in arms[1:]]
    cw = max(16, *(len(h) for h in heads))
    lines = [title, f"{'metric':<{width}}  " + "  ".join(f"{h:>{cw}}" for h in heads)]
    for r in summary:
        cells = [_fmt(*r["arms"][a][:2]) for a in arms]
        for a in arms[1:]:
            mean, half, _ = r["diff"][a]
            mark = "*" if math.isfinite(half) and abs(mean) > half else " "
            cells.append(("+" if mean > 0 else "") + _fmt(mean, half).strip() + mark)
        lines.append(f"{r['label']:<{width}}  " + "  ".join(f"{c:>{cw}}" for c in cells))
    return "\n".join(lines)


def _run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Worker: one pipeline in its own folder (resumes or returns a finished run at once)."""
    import torch

    from comet_model.continual.pipeline import run_continual

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        cfg = ExperimentConfig.from_flat(job["flat"])
        result = run_continual(cfg, out_dir=job["out"])
    except Exception as exc:  # recorded; the comparison goes on without this run
        return job | {"ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    metrics = [r.metrics for r in result.stages]
    return job | {"ok": True, "metrics": metrics, "seconds": time.perf_counter() - t0}


def parse_arm(text: str, base: ExperimentConfig) -> tuple[str, dict[str, Any]]:
    """``"label:key=value;key=value"`` -> (label, typed overrides); raises ConfigError."""
    label, _, rest = text.partition(":")
    if not label.strip():
        raise ConfigError(f"--arm {text!r}: expected 'label:key=value;...'")
    flat = dict(parse_override(item, base) for item in rest.split(";") if item.strip())
    return label.strip(), flat


def compare(
    *,
    out: Path,
    plans: Sequence[str],
    seeds: Sequence[int],
    arms: Sequence[tuple[str, dict[str, Any]]],
    base: ExperimentConfig,
    jobs: int = 2,
    log: Any = sys.stderr,
) -> dict[str, Any]:
    """Run every (plan, arm, seed) and return ``{plan: {arm: {seed: [metrics per stage]}}}``."""
    todo = []
    for plan in plans:
        for label, overrides in arms:
            for seed in seeds:
                cfg = base.override({**overrides, "data.class_plan": plan, "seed": seed})
                folder = out / "runs" / plan / label.replace("/", "_") / f"seed{seed}"
                flat = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.to_flat().items()}
                todo.append({"plan": plan, "arm": label, "seed": seed, "flat": flat,
                             "out": str(folder)})  # fmt: skip
    results: dict[str, Any] = {p: {a: {} for a, _ in arms} for p in plans}
    errors = []
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx) as pool:
        futures = [pool.submit(_run_one, job) for job in todo]
        for k, fut in enumerate(as_completed(futures), 1):
            r = fut.result()
            where = f"plan={r['plan']} arm={r['arm']} seed={r['seed']}"
            if r["ok"]:
                results[r["plan"]][r["arm"]][r["seed"]] = r["metrics"]
                obj = r["metrics"][-1].get("objective", math.nan)
                print(f"[{k}/{len(todo)}] {where}: final objective {obj:.2f} "
                      f"({r['seconds']:.0f} s; {time.perf_counter() - t0:.0f} s elapsed)",
                      file=log, flush=True)  # fmt: skip
            else:
                errors.append(f"{where}: {r['error']}")
                print(f"[{k}/{len(todo)}] {where}: FAILED {r['error']}", file=log, flush=True)
    return {"results": results, "errors": errors}


def _write(out: Path, data: dict[str, Any], arms: Sequence[str], stages: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".results.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=1, default=float) + "\n")
    os.replace(tmp, out / "results.json")
    tmp = out / f".per_seed.csv.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["plan", "arm", "seed", "stage", "metric", "key", "value"])
        for plan, per_arm in data["results"].items():
            for arm in arms:
                for seed, metrics in sorted(per_arm.get(arm, {}).items()):
                    for stage in range(1, min(stages, len(metrics)) + 1):
                        for label, key in ROWS:
                            w.writerow([plan, arm, seed, stage, label, key,
                                        lookup(metrics[stage - 1], key)])  # fmt: skip
    os.replace(tmp, out / "per_seed.csv")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m comet_model.experiments``."""
    parser = argparse.ArgumentParser(
        prog="python -m comet_model.experiments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="run and tabulate seeded paired comparisons")
    c.add_argument("--out", required=True, help="output folder (runs/, results.json, CSV)")
    c.add_argument("--plans", default="full,overlap", help="class plans (default full,overlap)")
    c.add_argument("--seeds", type=int, default=5, help="number of seeds 0..n-1 (default 5)")
    c.add_argument("--preset", default="default", help="base preset (default: default)")
    c.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar="LABEL:K=V;K=V",
        help="an arm (repeatable; first = reference; --arm=-PM:... for a label starting "
        "with '-'). Default: DCID vs DCID+COMET",
    )
    c.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the base config for every arm",
    )
    c.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="downstream sets: test (report) or val (choose settings)",
    )
    c.add_argument("--jobs", type=int, default=2, help="parallel runs, one thread each")
    args = parser.parse_args(argv)
    try:
        base = preset(args.preset)
        flat = dict(parse_override(t, base) for t in args.overrides)
        base = base.override({**flat, "data.downstream_split": args.split, "train.threads": 1})
        arms = [parse_arm(a, base) for a in args.arm] or list(DEFAULT_ARMS)
        for _, overrides in arms:
            base.override(overrides)
    except ConfigError as exc:
        parser.error(str(exc))
    labels = [a for a, _ in arms]
    if len(set(labels)) != len(labels):
        parser.error("arm labels must be distinct")
    plans = [p.strip() for p in args.plans.split(",") if p.strip()]
    out = Path(args.out)
    data = compare(out=out, plans=plans, seeds=range(args.seeds), arms=arms, base=base,
                   jobs=args.jobs)  # fmt: skip
    data["arms"] = {a: o for a, o in arms}
    data["base"] = {k: list(v) if isinstance(v, tuple) else v for k, v in base.to_flat().items()}
    stages = len(base.data.stages)
    tables = {}
    for plan in plans:
        for stage in range(2, stages + 1) if stages >= 2 else [1]:
            summary = paired_summary(data["results"][plan], labels, stage)
            tables[f"{plan}/stage{stage}"] = summary
            title = (
                f"\nplan {plan}, after stage {stage} ({args.seeds} seeds, split {args.split}): "
                "mean ± 95% t-interval; differences paired by seed (* = excludes 0)"
            )
            print(format_table(summary, labels, title))
    data["tables"] = tables
    _write(out, data, labels, stages)
    print(f"\nper-seed values: {out / 'per_seed.csv'}; all: {out / 'results.json'}")
    for e in data["errors"]:
        print(f"failed: {e}", file=sys.stderr)
    return 1 if data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
