"""Command line of the data layer: build the digits bank, import CMG's data, check a plan.

    python -m comet_model.data build [--raw DIR] [--out FILE]
    python -m comet_model.data import-cmg --pretrain-csv CSV ... --out DIR   (see --help)
    python -m comet_model.data check PLAN [--streaming auto|on|off]
    python -m comet_model.data probe [--bank FILE] [--background]

Bad input ends with one line ``error: <file>: <problem>`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from comet_model._cli import OneLineParser, UsageError, check_output_dir, check_output_file

from .types import DataError

EXIT_BAD_INPUT = 2


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cmd_build(args: argparse.Namespace) -> int:
    from .bank import default_bank_path
    from .build import bank_bytes, build_bank, default_raw, write_atomic

    raw = Path(args.raw) if args.raw else default_raw()
    out = Path(args.out) if args.out else default_bank_path()
    if not raw.is_dir():
        raise DataError(f"{raw}: raw data folder not found (pass --raw DIR)")
    check_output_file(out, "--out")  # before the build, not after it
    t0 = time.perf_counter()
    arrays = build_bank(raw, progress=_stderr)
    data = bank_bytes(arrays)
    write_atomic(out, data)
    _stderr(f"wrote {out} ({len(data):,} bytes) in {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .plan import check_plan
    from .tasks import head_tasks

    t0 = time.perf_counter()
    bench = check_plan(args.plan, streaming=args.streaming)
    print(f"{args.plan}: ok, {len(bench.stages)} stage(s), mediator {bench.stages[0].mediator}")
    for st in bench.stages:
        print(
            f"  {st.name}: modalities {list(st.modalities)}, train N={st.train.num_items} "
            f"T={st.train.num_steps}, val N={st.val.num_items}"
        )
    dims = ", ".join(f"{m}={d}" for m, d in bench.feature_dims.items())
    classes = f"; classes: {bench.num_classes}" if bench.num_classes else ""
    print(f"  feature dims: {dims}{classes}")
    if bench.downstream is not None:
        d = bench.downstream
        sizes = ", ".join(f"{s} {getattr(d, s).num_items}" for s in d.names())
        print(f"  downstream: {sizes}")
        tasks = head_tasks(d, bench.num_classes, bench.background_class)
        print("  head tasks: " + ", ".join(f"{t.name} {t.num_classes} classes" for t in tasks))
    for k, v in bench.meta.items():
        print(f"  {k}: {v}")
    storage = "streamed from disk in batches" if bench.streamed else "in memory"
    print(f"  features {storage}; checked in {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from .cmg_import import check_options, import_cmg
    from .import_cli import fresh_start, options_from_args, summary_lines

    opts = options_from_args(args)
    check_options(opts)  # before --fresh deletes anything
    check_output_dir(opts.out, "--out")
    if args.fresh:
        fresh_start(opts)
    t0 = time.perf_counter()
    report = import_cmg(opts, progress=_stderr)
    for line in summary_lines(report):
        print(line)
    print(f"wrote {report.plan} in {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from .bank import load_bank
    from .probe import probe_accuracy

    bank = load_bank(args.bank)
    classes = "11 classes (with background)" if args.background else "digits 0-9"
    print(f"linear probe, held-out accuracy ({classes}):")
    for m in bank.modalities:
        acc = probe_accuracy(bank, m, include_background=args.background, seed=args.seed)
        print(f"  {m:<6} {100 * acc:5.1f} %")
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands build, check, probe)."""
    parser = OneLineParser(
        prog="python -m comet_model.data",
        description="Digits-world feature bank and bring-your-own stage plans.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser
    )
    b = sub.add_parser(
        "build",
        help="featurise the raw recordings into the feature bank",
        description="Featurise the raw digits-world recordings into one deterministic .npz bank.",
    )
    b.add_argument(
        "--raw",
        metavar="DIR",
        help="raw data folder (default: the builder's folder beside the repository, "
        "comet_model.data.build.default_raw)",
    )
    b.add_argument(
        "--out", metavar="FILE", help="bank file to write (default: the package's bank file)"
    )
    b.set_defaults(func=_cmd_build)
    c = sub.add_parser(
        "check",
        help="validate a bring-your-own stage plan and its files",
        description="Load a stage plan (TOML or YAML) and every file it names; print a summary.",
    )
    c.add_argument("plan", metavar="PLAN", help="stage plan file (.toml, .yaml or .yml)")
    c.add_argument(
        "--streaming",
        choices=("auto", "on", "off"),
        default="auto",
        help="check HDF5 features from disk in chunks (on), in memory (off), or as a run "
        "would choose (auto, default)",
    )
    c.set_defaults(func=_cmd_check)
    from .import_cli import add_import_parser

    add_import_parser(sub).set_defaults(func=_cmd_import)
    p = sub.add_parser(
        "probe",
        help="linear-probe accuracy of every modality of a bank",
        description="Train a softmax-regression probe per modality on the bank's train pool and "
        "print its accuracy on the test pool.",
    )
    p.add_argument("--bank", metavar="FILE", help="bank file (default: the package's bank file)")
    p.add_argument("--background", action="store_true", help="include the background class")
    p.add_argument("--seed", type=int, default=0, help="probe seed (default 0)")
    p.set_defaults(func=_cmd_probe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (DataError, UsageError) as exc:
        _stderr(f"error: {exc}")
    except OSError as exc:
        _stderr(f"error: {exc.filename or '-'}: {exc.strerror or exc}")
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
