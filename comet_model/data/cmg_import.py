"""``import-cmg``: CMG/DCID's released features -> our HDF5 feature files and a ready stage plan.

The pretraining clips of VGGSound-AVEL 40K are split into disjoint, seeded parts of equal size
(up to one clip), one per stage in ``stages``, so no clip is paired in two stages: a continual
plan from one tri-modal source (one stage of three modalities is DCID's own tri-modal
pretraining). Each stage file holds only its stage's modalities, one item per clip:

- ``audio`` ``[10, 128]``: VGGish rows, padded by repeating the last row or cut to 10 (as CMG);
- ``video`` ``[10, 7*7*512]``: VGG19 pool5 maps flattened, channels fastest, for
  ``model.video_frontend=cmg``;
- ``text`` ``[10, d]`` + ``mask_text``: the clip's class prompt as 10 token vectors (a local
  Hugging Face model with ``text_model``, else the built-in stand-in of ``text_tokens``, which
  the plan's ``[meta]`` and so every run's metadata record).

AVE becomes ``ave_train`` / ``ave_test`` (its train and test orders; 28 events + background),
AVVP ``avvp_train`` / ``avvp_test`` (a seeded split of its annotated clips; 25 events +
background, multi-hot, audio and visual events labelled separately as ``labels_audio`` /
``labels_video``), and AVE -> AVVP uses the classes their names share. Files are written with
:func:`comet_model.data.h5_writer.write_items` (resumable, never half-written), the plan last.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._util import atomic_write_text
from . import cmg_sources as src
from .h5_writer import Column, FileReport, ItemFile, Skip, write_items
from .types import DataError

__all__ = ["ImportOptions", "ImportReport", "check_options", "import_cmg", "plan_path"]

MODALITIES = ("video", "audio", "text")
_FORMAT = 1  # bump when the written layout changes (part of every fingerprint)


@dataclass(frozen=True)
class ImportOptions:
    """What to import and how (the flags of ``python -m comet_model.data import-cmg``)."""

    out: Path
    stages: tuple[tuple[str, ...], ...]  # modalities of each stage, e.g. (("video", "text"), ...)
    pretrain_csv: Path
    audio_zips: Path | None = None
    video_zips: Path | None = None
    prompts: Path | None = None
    ave: Path | None = None  # folder of the AVE h5 files
    avvp: Path | None = None  # CMG's AVVP folder (feature/, data/)
    dtype: str = "float16"  # of the feature arrays: "float16" or "float32"
    seed: int = 0  # stage split, AVVP split and the plan's val split
    text_model: Path | None = None  # local Hugging Face model folder; None = built-in stand-in
    text_dim: int = 768  # width of the built-in stand-in
    video_map: tuple[int, int, int] = (7, 7, 512)  # H, W, C of the pool5 maps
    avvp_test_fraction: float = 0.5
    val_fraction: float = 0.05
    ave_categories: Path | None = None  # AVE class names in label order (default: ave/...)
    ave_avvp_categories: Path | None = None  # CMG's AVE_AVVP_Categories.txt (optional)
    limit: int | None = None  # only the first N pretraining clips (a quick try)
    shard_items: int = 256


@dataclass
class ImportReport:
    """What an import wrote: the plan, every file's report, and notes for the user."""

    plan: Path
    files: list[FileReport]
    text: str
    notes: list[str] = field(default_factory=list)


def plan_path(out: Path) -> Path:
    return out / "plan.toml"


def stage_name(mods: tuple[str, ...]) -> str:
    return "-".join(mods)


def check_options(opts: ImportOptions) -> None:
    """Raise :class:`DataError` on a bad flag combination or a missing input folder."""
    used = {m for st in opts.stages for m in st}
    for st in opts.stages:
        if len(st) < 2 or len(set(st)) != len(st) or not set(st) <= set(MODALITIES):
            raise DataError(f"--stages: '{stage_name(st)}' needs 2-3 distinct of {MODALITIES}")
    if not opts.stages:
        raise DataError("--stages: at least one stage")
    need = {
        "video": ("--video-zips", opts.video_zips),
        "audio": ("--audio-zips", opts.audio_zips),
        "text": ("--prompts", opts.prompts),
    }
    for m in sorted(used):
        flag, value = need[m]
        if value is None:
            raise DataError(f"{flag}: needed for the stages' modality '{m}'")
        if m != "text" and not value.is_dir():
            raise DataError(f"{value}: {flag} folder not found")
    if (opts.ave is None) != (opts.avvp is None):
        raise DataError("--ave and --avvp go together (the downstream sets need both)")
    for flag, folder in (("--ave", opts.ave), ("--avvp", opts.avvp)):
        if folder is not None and not folder.is_dir():
            raise DataError(f"{folder}: {flag} folder not found")
    if opts.dtype not in ("float16", "float32"):
        raise DataError(f"--dtype: expected float16 or float32, got {opts.dtype!r}")
    for flag, x in (
        ("--avvp-test-fraction", opts.avvp_test_fraction),
        ("--val-fraction", opts.val_fraction),
    ):
        if not 0 < x < 1:
            raise DataError(f"{flag}: must be in (0, 1), got {x}")


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        h.update(k.encode() + b"\0" + np.ascontiguousarray(arrays[k]).tobytes())
    return h.hexdigest()


def _fingerprint(name: str, columns: tuple[Column, ...], ids: list[str], settings: dict) -> str:
    blob = json.dumps([_FORMAT, name, [asdict(c) for c in columns], ids, settings], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _clips(opts: ImportOptions) -> tuple[list[str], list[str]]:
    """(ids, categories) of the pretraining csv in file order, duplicates dropped."""
    rows = src.read_csv(opts.pretrain_csv, ("video_id", "category"))
    seen: dict[str, str] = {}
    for r in rows:
        if r["video_id"]:
            seen.setdefault(r["video_id"], r["category"])
    ids = list(seen)[: opts.limit]
    if not ids:
        raise DataError(f"{opts.pretrain_csv}: no clips")
    return ids, [seen[i] for i in ids]


def _text(opts: ImportOptions, categories: list[str]) -> tuple[dict[str, tuple], str]:
    """category -> (tokens [10, d], mask [10]) of its prompt, and the text description."""
    from .text_tokens import STAND_IN, hashed_tokens, model_tokens

    assert opts.prompts is not None
    prompts = src.read_prompts(opts.prompts)
    known = sorted({c for c in categories if c in prompts})
    texts = [prompts[c] for c in known]
    if opts.text_model is not None:
        feats, mask, what = model_tokens(texts, opts.text_model, steps=src.STEPS)
    else:
        feats, mask = hashed_tokens(texts, steps=src.STEPS, dim=opts.text_dim)
        what = STAND_IN.format(dim=opts.text_dim)
    return {c: (feats[i], mask[i]) for i, c in enumerate(known)}, what


def _stage_files(
    opts: ImportOptions, ids: list[str], cats: list[str], text_of: dict, text_what: str
) -> list[ItemFile]:
    rng = np.random.default_rng(opts.seed)
    parts = np.array_split(rng.permutation(len(ids)), len(opts.stages))
    w = int(np.prod(opts.video_map))
    text_dim = next(iter(text_of.values()))[0].shape[-1] if text_of else opts.text_dim
    readers = {
        "video": src.zip_reader(opts.video_zips, "video") if opts.video_zips else None,
        "audio": src.zip_reader(opts.audio_zips, "audio") if opts.audio_zips else None,
    }
    files = []
    for s, (mods, part) in enumerate(zip(opts.stages, parts, strict=True)):
        rows = [int(i) for i in np.sort(part)]
        cols = {
            "video": (Column("video", (src.STEPS, w), opts.dtype),),
            "audio": (Column("audio", (src.STEPS, src.AUDIO_DIM), opts.dtype),),
            "text": (
                Column("text", (src.STEPS, text_dim), opts.dtype),
                Column("mask_text", (src.STEPS,), "bool"),
            ),
        }
        columns = tuple(c for m in mods for c in cols[m])

        def read(i: int, rows: list[int] = rows, mods: tuple[str, ...] = mods) -> dict:
            clip, cat = ids[rows[i]], cats[rows[i]]
            out = {}
            if "text" in mods:
                if cat not in text_of:
                    raise Skip(f"no prompt for category '{cat}'")
                out["text"], out["mask_text"] = text_of[cat]
            if "audio" in mods:
                out["audio"] = src.fit_audio(readers["audio"](clip), opts.dtype)  # type: ignore[misc]
            if "video" in mods:
                out["video"] = src.fit_video(readers["video"](clip), opts.video_map, opts.dtype)  # type: ignore[misc]
            return out

        name = f"stage{s + 1}_{stage_name(mods)}.h5"
        stage_ids = [ids[r] for r in rows]
        settings = {
            "dtype": opts.dtype,
            "text": text_what,
            "map": opts.video_map,
            "text_digest": _digest(
                {f"{c}/{j}": a for c, v in text_of.items() for j, a in enumerate(v)}
            ),
        }
        files.append(
            ItemFile(
                opts.out / name,
                columns,
                stage_ids,
                read,
                _fingerprint(name, columns, stage_ids, settings),
                {"source": "CMG VGGSound-AVEL 40K", "text": text_what},
            )
        )
    return files


def _ave_names(opts: ImportOptions, num_classes: int) -> tuple[list[str], bool]:
    """AVE class names in label order (background last) and whether they are real names."""
    assert opts.ave is not None
    path = opts.ave_categories or opts.ave / "categories.txt"
    if opts.ave_categories is None and not path.is_file():
        return [f"ave{c}" for c in range(num_classes - 1)] + ["background"], False
    names = src.read_categories(path)
    if len(names) == num_classes - 1:
        names = [*names, "background"]
    if len(names) != num_classes:
        raise DataError(f"{path}: {len(names)} names, AVE labels have {num_classes - 1} events")
    return names, True


def _ave_files(opts: ImportOptions) -> tuple[list[ItemFile], src.AVESource]:
    assert opts.ave is not None
    ave = src.AVESource(opts.ave, opts.video_map)
    w = int(np.prod(opts.video_map))
    columns = (
        Column("video", (src.STEPS, w), opts.dtype),
        Column("audio", (src.STEPS, src.AUDIO_DIM), opts.dtype),
        Column("labels", (src.STEPS,), "int64"),
    )
    files = []
    for split in ("train", "test"):
        rows = ave.order(split)

        def read(i: int, rows: list[int] = rows) -> dict:
            return ave.item(rows[i], opts.dtype)

        name, ids = f"ave_{split}.h5", [str(r) for r in rows]
        fp = _fingerprint(name, columns, ids, {"dtype": opts.dtype, "map": opts.video_map})
        files.append(ItemFile(opts.out / name, columns, ids, read, fp, {"source": "CMG AVE"}))
    return files, ave


def _avvp_files(opts: ImportOptions) -> tuple[list[ItemFile], list[str]]:
    assert opts.avvp is not None
    data = opts.avvp / "data"
    categories = src.read_categories(data / "AVVP_Categories.txt")
    audio = src.avvp_labels(data / "AVVP_eval_audio_checked_combined.csv", categories)
    visual = src.avvp_labels(data / "AVVP_eval_visual_checked_combined.csv", categories)
    clips = sorted(set(audio) | set(visual))
    if len(clips) < 2:
        raise DataError(f"{data}: fewer than two annotated AVVP clips")
    rng = np.random.default_rng(opts.seed + 1)
    perm = rng.permutation(len(clips))
    k = min(len(clips) - 1, max(1, round(opts.avvp_test_fraction * len(clips))))
    split = {"test": np.sort(perm[:k]), "train": np.sort(perm[k:])}
    none = np.zeros((src.STEPS, len(categories) + 1), dtype=bool)
    none[:, -1] = True  # a clip absent from one csv has no event of that modality
    readers = {m: src.zip_reader(opts.avvp / "feature" / m / "zip", m) for m in ("audio", "video")}
    w, c = int(np.prod(opts.video_map)), len(categories) + 1
    columns = (
        Column("video", (src.STEPS, w), opts.dtype),
        Column("audio", (src.STEPS, src.AUDIO_DIM), opts.dtype),
        Column("labels_video", (src.STEPS, c), "bool"),
        Column("labels_audio", (src.STEPS, c), "bool"),
    )
    files = []
    for part in ("train", "test"):
        ids = [clips[i] for i in split[part]]

        def read(i: int, ids: list[str] = ids) -> dict:
            clip = ids[i]
            return {
                "audio": src.fit_audio(readers["audio"](clip), opts.dtype),
                "video": src.fit_video(readers["video"](clip), opts.video_map, opts.dtype),
                "labels_audio": audio.get(clip, none),
                "labels_video": visual.get(clip, none),
            }

        name = f"avvp_{part}.h5"
        labels = {f"audio/{k}": v for k, v in audio.items()}
        labels |= {f"video/{k}": v for k, v in visual.items()}
        settings = {
            "dtype": opts.dtype,
            "map": opts.video_map,
            "categories": categories,
            "labels": _digest(labels),
        }
        fp = _fingerprint(name, columns, ids, settings)
        files.append(ItemFile(opts.out / name, columns, ids, read, fp, {"source": "CMG AVVP"}))
    return files, categories


def _toml(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _plan_text(
    opts: ImportOptions, stages: list[FileReport], down: dict[str, object], meta: dict[str, str]
) -> str:
    lines = [
        "# written by: python -m comet_model.data import-cmg",
        f"seed = {opts.seed}",
        f"val_fraction = {opts.val_fraction}",
    ]
    if all("text" in st for st in opts.stages):
        lines.append('mediator = "text"')
    lines += ["", "[meta]"] + [f"{k} = {_toml(v)}" for k, v in meta.items()]
    for mods, rep in zip(opts.stages, stages, strict=True):
        lines += [
            "",
            "[[stages]]",
            f"name = {_toml(stage_name(mods))}",
            f"modalities = {_toml(list(mods))}",
            f"train = {_toml(rep.path.name)}",
        ]
    if down:
        lines += ["", "[downstream]"]
        lines += [f"{k} = {_toml(v)}" for k, v in down.items() if isinstance(v, str)]
        for task, table in down.items():
            if isinstance(table, dict):
                lines += ["", f"[downstream.{task}]"]
                lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _downstream(
    opts: ImportOptions, ave: src.AVESource, avvp_names: list[str], notes: list[str]
) -> dict[str, object]:
    """The plan's [downstream] entries: files, label spaces, and the shared AVE/AVVP classes."""
    ave_names, named = _ave_names(opts, ave.num_classes)
    avvp_all = [*avvp_names, "background"]
    down: dict[str, object] = {
        f"{s}_{p}": f"{s}_{p}.h5" for s in ("ave", "avvp") for p in ("train", "test")
    }
    down["ave"] = {
        "num_classes": ave.num_classes,
        "background_class": ave.num_classes - 1,
        "class_names": ave_names,
    }
    down["avvp"] = {
        "num_classes": len(avvp_all),
        "background_class": len(avvp_all) - 1,
        "class_names": avvp_all,
    }
    only = None
    if opts.ave_avvp_categories is not None:
        only = src.read_categories(opts.ave_avvp_categories)
    pairs = src.shared_by_name(ave_names[:-1], avvp_names, only) if named else []
    if pairs:
        down["ave_avvp"] = {"shared": [list(p) for p in pairs]}
        shared = sorted({avvp_names[b] for _, b in pairs})
        notes.append(f"AVE -> AVVP on {len(shared)} shared classes: {', '.join(shared)}")
    else:
        why = "no class names match" if named else "no AVE class names (--ave-categories FILE)"
        notes.append(f"AVE -> AVVP has no shared classes ({why}): its metrics are not computed")
        down["ave_avvp"] = {"shared": []}
    return down


def _skipped_tsv(out: Path, reports: list[FileReport]) -> Path:
    rows = ["file\tid\treason"] + [
        f"{r.path.name}\t{i}\t{why}" for r in reports for i, why in r.skipped
    ]
    path = out / "skipped.tsv"
    atomic_write_text(path, "\n".join(rows) + "\n")
    return path


def import_cmg(opts: ImportOptions, progress: Callable[[str], None] | None = None) -> ImportReport:
    """Convert CMG's containers into ``opts.out`` (resuming a previous run), write the plan."""
    check_options(opts)
    opts.out.mkdir(parents=True, exist_ok=True)
    ids, cats = _clips(opts)
    text_of, text_what = {}, "none (no stage has text)"
    if any("text" in st for st in opts.stages):
        text_of, text_what = _text(opts, cats)
    files = _stage_files(opts, ids, cats, text_of, text_what)
    ave = avvp_names = None
    if opts.ave is not None:
        ave_files, ave = _ave_files(opts)
        avvp_files, avvp_names = _avvp_files(opts)
        files += ave_files + avvp_files
    reports = [write_items(f, shard_items=opts.shard_items, progress=progress) for f in files]
    for r in reports:
        least = 2 if r.path.name.startswith("stage") else 1
        if r.converted < least:
            first = f" (first: {r.skipped[0][0]}: {r.skipped[0][1]})" if r.skipped else ""
            raise DataError(f"{r.path}: {r.converted} item(s) converted{first}")
    notes: list[str] = []
    down = {} if ave is None else _downstream(opts, ave, avvp_names or [], notes)
    meta = {
        "source": "CMG/DCID released features (VGGSound-AVEL 40K, AVE, AVVP), import-cmg",
        "text_features": text_what,
        "feature_dtype": opts.dtype,
        "video": "VGG19 pool5 maps flattened to [10, H*W*C]: run with model.video_frontend=cmg",
    }
    _skipped_tsv(opts.out, reports)
    path = plan_path(opts.out)
    atomic_write_text(path, _plan_text(opts, reports[: len(opts.stages)], down, meta))
    return ImportReport(path, reports, text_what, notes)
