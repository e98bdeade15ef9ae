"""Command line: ``python -m comet_model run`` (console script ``comet``).

Trains the given stages in order on the configured benchmark (the digits world by default),
evaluates the downstream tasks after the last stage on every pair of trained modalities,
prints a summary table on stdout and writes ``OUT/metrics.json``. Progress goes to stderr.
Bad flags and bad ``--set`` keys or values give a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from comet_model.config import PRESETS, ConfigError, ExperimentConfig, parse_override, preset
from comet_model.data.types import DataError

_PROG = "comet"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _fail(message)


def _fail(message: str) -> NoReturn:
    print(f"{_PROG}: error: {message.splitlines()[0] if message else 'failed'}", file=sys.stderr)
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommand ``run``)."""
    parser = _Parser(prog=_PROG, description="COMET / DCID reference implementation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = sub.add_parser(
        "run",
        help="train stages in order, evaluate, write metrics.json",
        description="Train the stages in order, evaluate the downstream tasks after the last "
        "stage on every pair of trained modalities, print a table, write OUT/metrics.json.",
    )
    run.add_argument("--preset", choices=sorted(PRESETS), default="default",
                     help="base configuration (default: %(default)s)")  # fmt: skip
    run.add_argument("--stages", help="comma-separated stage order, e.g. video-audio or "
                     "video-text,audio-text,image-text (default: the preset's stages)")  # fmt: skip
    run.add_argument("--out", required=True, help="output folder (metrics.json)")
    run.add_argument("--seed", type=int, help="model seed (config key 'seed')")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override a config key, e.g. model.dim=32 "
                     "(repeatable; tuples as comma lists)")  # fmt: skip
    run.add_argument("--threads", type=int, help="torch threads (config key train.threads)")
    run.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def make_config(args: argparse.Namespace) -> ExperimentConfig:
    """The configuration of a ``run`` command line (raises ConfigError)."""
    cfg = preset(args.preset)
    flat: dict[str, Any] = {}
    for text in args.overrides:
        key, value = parse_override(text, cfg)
        flat[key] = value
    if args.stages is not None:
        flat["data.stages"] = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    if args.seed is not None:
        flat["seed"] = args.seed
    if args.threads is not None:
        flat["train.threads"] = args.threads
    return cfg.override(flat)


def _progress(row: dict[str, Any], epochs: int, t0: float) -> None:
    elapsed = time.perf_counter() - t0
    if row.get("kind") == "eval":
        print(f"[{row['stage']}] evaluated ({elapsed:.1f} s)", file=sys.stderr, flush=True)
        return
    losses = " ".join(
        f"{k[5:]} {v:.3f}" for k, v in row.items() if k.startswith("loss/") and k != "loss/total"
    )
    print(
        f"[{row['stage']}] epoch {row['epoch']}/{epochs} total {row['loss/total']:.3f} | "
        f"{losses} | reset {row['codes_reset']} | {elapsed:.1f} s",
        file=sys.stderr,
        flush=True,
    )


def format_table(metrics: dict[str, float]) -> str:
    """Two-column table ``metric  value`` (percentages with two decimals)."""
    if not metrics:
        return "(no downstream metrics)"
    width = max(len(k) for k in metrics)
    lines = [f"{'metric':<{width}}  {'value':>8}", f"{'-' * width}  {'-' * 8}"]
    lines += [f"{k:<{width}}  {v:>8.2f}" for k, v in metrics.items()]
    return "\n".join(lines)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the stages of the configuration, evaluate, print and write the results."""
    from comet_model.pipeline import run_stages

    try:
        cfg = make_config(args)
    except ConfigError as exc:
        _fail(str(exc))
    out = Path(args.out)
    t0 = time.perf_counter()
    callback = None if args.quiet else (lambda row: _progress(row, cfg.train.epochs, t0))
    try:
        result = run_stages(cfg, on_metrics=callback)
    except (DataError, ConfigError) as exc:
        _fail(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "preset": args.preset,
        "config": cfg.to_flat(),
        "stages": [
            {
                "stage": s.stage,
                "epochs": s.epochs,
                "steps": s.steps,
                "seconds": s.seconds,
                "codes_reset": s.codes_reset,
                "losses": s.losses,
            }
            for s in result.summaries
        ],  # fmt: skip
        "metrics": result.metrics,
        "seconds": result.seconds,
    }
    _write_json(out / "metrics.json", summary)
    for s in result.summaries:
        print(f"stage {s.stage}: {s.epochs} epochs, {s.steps} steps, {s.seconds:.1f} s, "
              f"final loss {s.losses.get('total', float('nan')):.3f}")  # fmt: skip
    print(format_table(result.metrics))
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
