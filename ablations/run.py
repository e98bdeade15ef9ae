"""Run a COMET sweep with Ray Tune: ``python ablations/run.py --grid experts``.

Each trial is one full continual pipeline (all stages of the stage plan), reported once per
stage. Running the same command again resumes: finished runs are skipped, interrupted runs
continue after their last finished stage. Results are Parquet records under
``STORAGE/NAME/records`` (build tables and figures with ``python reports/build.py``).

Selection protocol: every run is evaluated on validation and test downstream sets. An Optuna
search optimises a validation metric (``val/objective`` by default; a test metric needs
``--select-on-test`` and is marked in the report), then reruns the best configuration over
``--confirm-seeds`` new seeds (sweep ``NAME-confirm``), whose test metrics are what the report
shows for it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from comet_model._cli import (
    OneLineParser,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

EPILOG = """examples:
  python ablations/run.py --grid experts                      # expert-count curve, 3 seeds
  python ablations/run.py --grid ablations --preset smoke     # quick plumbing check
  python ablations/run.py --grid ablations --dry-run          # print every run, start nothing
  python ablations/run.py --search optuna --num-samples 20    # chosen on val, confirmed on test
  python ablations/run.py --grid experts --gpus-per-trial 0.25   # 4 trials per GPU
  RAY_ADDRESS=head:6379 python ablations/run.py --grid methods --storage /shared/results
Run the same command again to resume after Ctrl-C, SIGTERM or a crash; --fresh starts over."""


def _seeds(text: str) -> tuple[int, ...]:
    """``3`` -> seeds 0, 1, 2; ``0,5,7`` -> those seeds."""
    try:
        if "," in text:
            seeds = tuple(int(s) for s in text.split(",") if s.strip())
        else:
            seeds = tuple(range(positive_int(text)))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"expected a count or a comma list, got {text!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must be distinct and non-empty, got {text!r}")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    from search_spaces.grids import GRIDS

    p = OneLineParser(
        prog="ablations/run.py",
        description="Sweep continual COMET pipelines with Ray Tune (one trial per pipeline).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--grid", help=f"named grid: {', '.join(GRIDS)}")
    what.add_argument("--search", choices=["optuna"], help="Optuna search over EWC lambda, K2, PMR")
    p.add_argument("--num-samples", type=positive_int, default=20, help="Optuna trials (20)")
    p.add_argument(
        "--metric",
        default="val/objective",
        help="Optuna: metric to optimise (val/objective: the validation objective)",
    )
    p.add_argument(
        "--select-on-test",
        action="store_true",
        help="Optuna: allow a test metric as --metric (the report marks the search)",
    )
    p.add_argument(
        "--confirm-seeds",
        type=non_negative_int,
        default=5,
        help="Optuna: rerun the best configuration over N new seeds (5; 0: no rerun)",
    )
    p.add_argument("--mode", choices=["max", "min"], default="max")
    p.add_argument("--seeds", type=_seeds, default=(0, 1, 2), help="count or list (3 = 0,1,2)")
    p.add_argument("--preset", choices=["smoke", "default", "paper"], default="default")
    p.add_argument("--plan", type=Path, help="bring-your-own stage plan (TOML/YAML)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for every run (repeatable)",
    )
    p.add_argument("--cpus-per-trial", type=positive_float, default=1.0)
    p.add_argument(
        "--gpus-per-trial",
        type=non_negative_float,
        default=0.0,
        help="fraction of a GPU per trial, e.g. 0.25 (ignored without GPUs)",
    )
    p.add_argument("--max-concurrent", type=positive_int, default=None)
    p.add_argument("--max-failures", type=int, default=0, help="retries of a failed trial (0)")
    p.add_argument("--name", help="experiment name (default: the grid name + preset)")
    p.add_argument("--storage", type=Path, default=Path("results"), help="results root (results/)")
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="existing Ray cluster (host:port, ray://host:port or auto; RAY_ADDRESS)",
    )
    p.add_argument(
        "--fresh", action="store_true", help="delete this sweep's results and start over"
    )
    p.add_argument(
        "--allow-code-change",
        action="store_true",
        help="resume a sweep whose recorded runs came from other code or data (warns)",
    )
    p.add_argument(
        "--no-reuse",
        action="store_true",
        help="train every run, even one another sweep of --storage already finished with the "
        "same config, seed, code and data (by default its records are copied)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print every run (arm, seed, run key, overrides) as JSON lines and stop",
    )
    return p


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _parse_sets(items: list[str], cfg) -> dict[str, object]:
    from comet_model.config import parse_override

    return dict(parse_override(item, cfg) for item in items)


def make_spec(args: argparse.Namespace):
    """The sweep of a command line; raises KeyError, ValueError, ConfigError, DataError or
    SweepError (one line). The stage plan's files are checked by :func:`run_sweep`."""
    from ablations.checks import sweep_dir
    from ablations.sweep import SweepSpec
    from comet_model.config import ExperimentConfig, preset
    from comet_model.data.plan import resolve_stages
    from search_spaces.grids import check_keys, get_grid

    cfg = preset(args.preset)
    flat = cfg.to_flat()
    base = _parse_sets(args.set, cfg)
    if args.plan is not None:
        clash = sorted({"data.source", "data.plan_file"} & set(base))
        if clash:
            raise ValueError(f"--plan: conflicts with --set {clash[0]}")
        base |= {"data.source": "plan", "data.plan_file": str(args.plan.resolve())}
    if args.grid:
        arms = get_grid(args.grid)
        name = f"{args.grid}-{args.preset}" if args.name is None else args.name
    else:
        arms = {"search": {"comet": True}}
        name = f"optuna-{args.preset}" if args.name is None else args.name
        if not args.metric.startswith("val/") and not args.select_on_test:
            raise ValueError(
                f"--metric {args.metric} is not a validation metric: choices are made on "
                "validation metrics (val/...); pass --select-on-test to optimise it anyway"
            )
    sweep_dir(args.storage, name)  # a plain name: STORAGE/NAME is inside the storage
    check_keys(arms, flat)
    swept = sorted({k for overrides in arms.values() for k in overrides} & set(base))
    if swept:
        raise ValueError(f"--set {swept[0]} conflicts with the grid, which sweeps that key")
    for overrides in arms.values():  # every arm must resolve to a valid config
        ExperimentConfig.from_flat({**flat, **base, **overrides})
    merged = {**flat, **base}
    if merged["data.source"] == "plan" and not any("data.stages" in o for o in arms.values()):
        # the plan's stages (or those --set data.stages selects), so the records say what ran
        base["data.stages"] = resolve_stages(merged["data.plan_file"], base.get("data.stages"))
    if args.max_failures < 0:
        raise ValueError("--max-failures must be >= 0")
    return SweepSpec(name=name, preset=args.preset, seeds=args.seeds, arms=arms, base=base,
                     search="optuna" if args.search else "grid", num_samples=args.num_samples,
                     metric=args.metric, mode=args.mode)  # fmt: skip


def dry_run(spec) -> int:
    """Check ``spec`` as a run would (configs, stage plans) and print every run of it as one
    JSON line (nothing is started or written)."""
    import json

    from ablations.checks import check_arms
    from ablations.sweep import SweepError, planned_runs
    from comet_model.config import preset

    try:
        check_arms(preset(spec.preset).to_flat(), spec.arms, spec.base, spec.seeds)
    except SweepError as exc:
        return _fail(str(exc))
    for run in planned_runs(spec):
        print(json.dumps(run, default=list))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ablations.sweep import Resources, SweepError, run_sweep
    from comet_model.config import ConfigError

    try:
        spec = make_spec(args)
    except KeyError as exc:
        return _fail(str(exc.args[0]))
    except (ConfigError, ValueError, SweepError) as exc:  # DataError is a ValueError
        return _fail(str(exc))
    if args.dry_run:
        return dry_run(spec)
    res = Resources(args.cpus_per_trial, args.gpus_per_trial, args.max_concurrent,
                    args.address or None, args.max_failures, reuse=not args.no_reuse)  # fmt: skip
    from ablations.summary import print_summary

    try:
        outcome = run_sweep(spec, res, args.storage, fresh=args.fresh,
                            allow_code_change=args.allow_code_change)  # fmt: skip
        print_summary(outcome)
        if spec.search == "optuna" and outcome.ok and args.confirm_seeds > 0:
            from ablations.confirm import confirm_spec

            confirm = confirm_spec(spec, outcome.exp_dir, args.confirm_seeds)
            print(f"\nconfirming the best configuration on {args.confirm_seeds} new seeds: "
                  f"sweep {confirm.name}", file=sys.stderr)  # fmt: skip
            outcome = run_sweep(confirm, res, args.storage, fresh=args.fresh,
                                allow_code_change=args.allow_code_change)  # fmt: skip
            print_summary(outcome)
    except SweepError as exc:
        return _fail(str(exc))
    except ConnectionError as exc:
        return _fail(f"cannot connect to Ray: {str(exc).splitlines()[0]}")
    if outcome.interrupted:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
