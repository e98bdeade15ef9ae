"""The ``import-cmg`` subcommand of ``python -m comet_model.data``: flags, --fresh, summary."""

from __future__ import annotations

import argparse
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from .._cli import positive_int
from .cmg_import import ImportOptions, ImportReport, plan_path, stage_name
from .types import DataError

__all__ = ["add_import_parser", "fresh_start", "options_from_args", "summary_lines"]

EXAMPLE = """example (CMG's layout):
  python -m comet_model.data import-cmg \\
    --pretrain-csv vggsound-avel40k.csv --audio-zips audio/zip --video-zips video/zip \\
    --prompts vggsoundCategories2Prompts.csv --ave AVE_DIR --avvp AVVP_DIR \\
    --stages video-text,audio-text --out OUT_DIR
AVE_DIR holds visual_feature.h5, audio_feature.h5, labels.h5, train_order.h5, test_order.h5
(and optionally categories.txt, the 28 AVE class names in label order, which AVE -> AVVP
needs); AVVP_DIR is CMG's AVVP folder (feature/{audio,video}/zip, data/*.csv, data/*.txt).
Interrupted? Run the same command again: converted files and shards are kept."""


def _path(text: str) -> Path:
    return Path(text).expanduser()


def _stages(text: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(s.split("-")) for s in text.split(",") if s.strip())


def _map(text: str) -> tuple[int, int, int]:
    try:
        h, w, c = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxWxC such as 7x7x512, got {text!r}") from None
    if min(h, w, c) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return h, w, c


def add_import_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``import-cmg`` parser to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "import-cmg",
        help="convert CMG/DCID's released features into HDF5 files and a stage plan",
        description="Convert CMG's VGGSound-AVEL 40K zips, AVE h5 files and AVVP zips and csvs "
        "into HDF5 feature files and a ready stage plan (OUT/plan.toml). Resumable.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--pretrain-csv", type=_path, required=True, help="vggsound-avel40k.csv")
    a("--audio-zips", type=_path, help="folder of <video_id>.zip audio features")
    a("--video-zips", type=_path, help="folder of <video_id>.zip video features")
    a("--prompts", type=_path, help="vggsoundCategories2Prompts.csv (needed with text)")
    a("--ave", type=_path, help="folder of the AVE h5 files")
    a("--avvp", type=_path, help="CMG's AVVP folder (feature/, data/)")
    a(
        "--stages",
        type=_stages,
        default=(("video", "text"), ("audio", "text")),
        help="comma list of stages, modalities joined by '-' (default video-text,audio-text); "
        "one stage of three modalities is DCID's tri-modal pretraining",
    )
    a("--out", type=_path, required=True, help="output folder")
    a(
        "--dtype",
        choices=("float16", "float32"),
        default="float16",
        help="feature dtype on disk (default float16)",
    )
    a("--seed", type=int, default=0, help="seed of the stage and AVVP splits (default 0)")
    a(
        "--text-model",
        type=_path,
        help="local Hugging Face BERT-style model folder for the "
        "prompt tokens (needs transformers; default: the built-in hashed n-gram stand-in)",
    )
    a("--text-dim", type=positive_int, default=768, help="width of the stand-in (default 768)")
    a("--video-map", type=_map, default=(7, 7, 512), help="pool5 map HxWxC (default 7x7x512)")
    a("--avvp-test-fraction", type=float, default=0.5, help="AVVP clips held out (0.5)")
    a("--val-fraction", type=float, default=0.05, help="plan's val share per stage (0.05)")
    a("--ave-categories", type=_path, help="AVE class names (default AVE_DIR/categories.txt)")
    a("--ave-avvp-categories", type=_path, help="CMG's AVE_AVVP_Categories.txt (optional)")
    a("--limit", type=positive_int, help="only the first N pretraining clips (a quick try)")
    a("--fresh", action="store_true", help="delete this import's outputs in OUT first")
    return p


def options_from_args(args: argparse.Namespace) -> ImportOptions:
    """The :class:`ImportOptions` of parsed ``import-cmg`` flags."""
    return ImportOptions(
        out=args.out,
        stages=args.stages,
        pretrain_csv=args.pretrain_csv,
        audio_zips=args.audio_zips,
        video_zips=args.video_zips,
        prompts=args.prompts,
        ave=args.ave,
        avvp=args.avvp,
        dtype=args.dtype,
        seed=args.seed,
        text_model=args.text_model,
        text_dim=args.text_dim,
        video_map=args.video_map,
        avvp_test_fraction=args.avvp_test_fraction,
        val_fraction=args.val_fraction,
        ave_categories=args.ave_categories,
        ave_avvp_categories=args.ave_avvp_categories,
        limit=args.limit,
    )


def fresh_start(opts: ImportOptions) -> None:
    """Delete what an import into ``opts.out`` writes (nothing else in the folder)."""
    out = opts.out
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: --out is not a folder")
    names = [f"stage{i + 1}_{stage_name(st)}.h5" for i, st in enumerate(opts.stages)]
    names += [f"{s}_{p}.h5" for s in ("ave", "avvp") for p in ("train", "test")]
    names += [plan_path(out).name, "skipped.tsv"]
    for name in names:
        (out / name).unlink(missing_ok=True)
        (out / f".{name}.tmp").unlink(missing_ok=True)
    shutil.rmtree(out / ".import", ignore_errors=True)


def summary_lines(report: ImportReport) -> list[str]:
    """One line per file (items, skipped items by reason), the text features, the notes."""
    lines = []
    for r in report.files:
        line = f"{r.path.name}: {r.converted:,} items"
        if r.skipped:
            why = Counter(reason.split(" (")[0] for _, reason in r.skipped)
            parts = ", ".join(f"{n} {reason}" for reason, n in why.most_common())
            line += f", {len(r.skipped)} skipped ({parts})"
        lines.append(line + (" (resumed)" if r.resumed else ""))
    if any(r.skipped for r in report.files):
        lines.append(f"skipped items and reasons: {report.plan.parent / 'skipped.tsv'}")
    lines.append(f"text features: {report.text}")
    return lines + report.notes
