"""Command line: ``python -m comet_model run`` (console script ``comet``).

Runs the continual pipeline (:func:`comet_model.continual.pipeline.run_continual`) on the configured
benchmark (the digits world by default): the stages in order, an evaluation of the modalities
seen so far after each stage, a checkpoint after each stage in ``OUT`` (running the same command
again resumes after the last completed stage). Prints a per-stage summary and a table of the
headline metrics after each stage on stdout and writes every stage's metrics to
``OUT/metrics.json`` (atomically); progress lines (stage, epoch, losses, elapsed) go to stderr.
``--preset default`` is full COMET on the three default stages; ``--set comet=false`` gives the
plain continual baseline; ``--plan FILE`` runs a bring-your-own stage plan (its stages, or those
``--stages`` selects from it, in that order).

Everything is checked before anything is trained or written: flags, every config value, the
output folder (a writable folder or one that can be created), the stage plan and every file it
names (as ``python -m comet_model.data check`` does). A problem gives one line ``error: ...``
and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from comet_model._cli import OneLineParser, UsageError, check_output_dir, fail
from comet_model._util import atomic_write_text
from comet_model.config import PRESETS, ConfigError, ExperimentConfig, parse_override, preset
from comet_model.data.plan import resolve_stages, stage_count
from comet_model.data.types import DataError

_PROG = "comet"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommand ``run``)."""
    parser = OneLineParser(prog=_PROG, description="COMET / DCID reference implementation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    run = sub.add_parser(
        "run",
        help="run the continual pipeline, evaluate after each stage, write metrics.json",
        description="Train the stages in order (resuming from OUT/checkpoint.pt), evaluate the "
        "modalities seen so far after each stage, print tables, write OUT/metrics.json.",
    )
    run.add_argument("--preset", choices=sorted(PRESETS), default="default",
                     help="base configuration (default: %(default)s)")  # fmt: skip
    run.add_argument("--stages", help="comma-separated stage order, e.g. video-audio or "
                     "video-text,audio-text,image-text (default: the preset's stages); with "
                     "--plan, the plan's stages to train, in this order")  # fmt: skip
    run.add_argument("--plan", metavar="FILE", type=Path,
                     help="bring-your-own stage plan (TOML/YAML; see data/FORMAT.md)")  # fmt: skip
    run.add_argument("--out", required=True,
                     help="output folder (checkpoint.pt, metrics.json)")  # fmt: skip
    run.add_argument("--seed", type=int, help="model seed (config key 'seed')")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override a config key, e.g. model.dim=32 "
                     "(repeatable; tuples as comma lists)")  # fmt: skip
    run.add_argument("--threads", type=int, help="torch threads (config key train.threads)")
    run.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def make_config(args: argparse.Namespace) -> ExperimentConfig:
    """The configuration of a ``run`` command line (raises ConfigError, or DataError for a bad
    plan). With a plan, ``data.stages`` becomes the plan's stages that ``--stages`` (or ``--set
    data.stages``) selects, every one by default: what runs is what the config records."""
    cfg = preset(args.preset)
    flat: dict[str, Any] = {}
    for text in args.overrides:
        key, value = parse_override(text, cfg)
        flat[key] = value
    if args.stages is not None:
        if "data.stages" in flat:
            raise ConfigError("--stages: given twice (also as --set data.stages)")
        flat["data.stages"] = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    if args.plan is not None:
        clash = sorted({"data.source", "data.plan_file"} & set(flat))
        if clash:
            raise ConfigError(f"--plan: conflicts with --set {clash[0]}")
        flat |= {"data.source": "plan", "data.plan_file": str(args.plan.resolve())}
    if args.seed is not None:
        flat["seed"] = args.seed
    if args.threads is not None:
        flat["train.threads"] = args.threads
    cfg = cfg.override(flat)
    if cfg.data.source == "plan":
        stages = resolve_stages(cfg.data.plan_file, flat.get("data.stages"))
        cfg = cfg.override({"data.stages": stages})
    return cfg


def _progress(row: dict[str, Any], cfg: ExperimentConfig, n: int, t0: float) -> None:
    elapsed = time.perf_counter() - t0
    where = f"[stage {row.get('stage_index', '?')}/{n} {row['stage']}]"
    if row.get("kind") == "eval":
        val, test = (row.get(k, float("nan")) for k in ("val/objective", "objective"))
        print(f"{where} evaluated: objective val {val:.2f} test {test:.2f} | {elapsed:.1f} s",
              file=sys.stderr, flush=True)  # fmt: skip
        return
    losses = " ".join(
        f"{k[5:]} {v:.3f}"
        for k, v in row.items()
        if k.startswith("loss/") and k not in ("loss/total", "loss/club_estimator")
    )
    print(
        f"{where} epoch {row['epoch']}/{cfg.train.epochs} total {row['loss/total']:.3f} | "
        f"{losses} | reset {row['codes_reset']} | {elapsed:.1f} s",
        file=sys.stderr,
        flush=True,
    )


_HEADLINE = ("acc", "f1", "mean")  # ave acc, avvp / ave_avvp f1, retrieval mean


def headline(key: str) -> bool:
    """Whether ``key`` belongs in the printed summary (metrics.json has every key): the test
    metrics, and of the validation ones (``val/``, what choices are made on) the objective."""
    if key.startswith("val/"):
        return key == "val/objective"
    parts = key.split("/")
    if parts[0] in ("objective", "forgetting"):
        return True
    if parts[0] == "usage":
        return len(parts) == 2
    return len(parts) == 3 and parts[2] in _HEADLINE


def format_stages(stages: Sequence[Any]) -> str:
    """Per-stage training summary: epochs, steps, seconds, codebook size, final loss."""
    lines = [
        f"{'stage':<5}  {'name':<16}  {'epochs':>6}  {'steps':>6}  {'train s':>8}  "
        f"{'fisher s':>8}  {'eval s':>7}  {'codes':>5}  {'loss':>8}"
    ]
    for r in stages:
        s = r.summary
        lines.append(
            f"{r.index:<5}  {r.name:<16}  {s.get('epochs', 0):>6}  {s.get('steps', 0):>6}  "
            f"{s.get('train_s', 0.0):>8.1f}  {s.get('fisher_s', 0.0):>8.1f}  "
            f"{s.get('eval_s', 0.0):>7.1f}  {s.get('codebook_size', 0):>5}  "
            f"{s.get('losses', {}).get('total', float('nan')):>8.3f}"
        )
    return "\n".join(lines)


def format_table(stages: Sequence[Any]) -> str:
    """Headline metrics (rows) after each stage (columns); blank where not measured."""
    keys = list(dict.fromkeys(k for r in stages for k in r.metrics if headline(k)))
    if not keys:
        return "(no downstream metrics)"
    width = max(len("metric"), *(len(k) for k in keys))
    cols = [f"S{r.index}" for r in stages]
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{c:>8}" for c in cols)]
    lines.append(f"{'-' * width}  " + "  ".join("-" * 8 for _ in cols))
    for k in keys:
        cells = [f"{r.metrics[k]:>8.2f}" if k in r.metrics else " " * 8 for r in stages]
        lines.append(f"{k:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def cmd_run(args: argparse.Namespace) -> int:
    """Run the continual pipeline of the configuration, print and write the results."""
    from comet_model.continual.pipeline import ResumeError, run_continual

    try:
        cfg = make_config(args)
        check_output_dir(args.out, "--out")
    except (ConfigError, DataError, UsageError) as exc:
        fail(str(exc))
    out = Path(args.out)
    t0 = time.perf_counter()
    n = stage_count(cfg.data.source, cfg.data.plan_file, cfg.data.stages)
    callback = None if args.quiet else (lambda row: _progress(row, cfg, n, t0))
    try:
        result = run_continual(cfg, out_dir=out, on_metrics=callback)
    except (DataError, ConfigError, ResumeError) as exc:
        fail(str(exc))
    except FloatingPointError as exc:  # diverged: one line, status 1
        fail(str(exc), status=1)
    summary = {
        "preset": args.preset,
        "config": cfg.to_flat(),
        "stages": [
            {"index": r.index, "stage": r.name, **r.summary, "metrics": r.metrics}
            for r in result.stages
        ],
        "metrics": result.metrics,
        "seconds": result.seconds,
        "resumed_from": result.resumed_from,
    }
    _write_json(out / "metrics.json", summary)
    print(format_stages(result.stages))
    print()
    print(format_table(result.stages))
    print(f"wrote {out / 'metrics.json'} ({result.seconds:.1f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``comet`` / ``python -m comet_model``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
