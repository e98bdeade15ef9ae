"""Tiny CMG/DCID data in CMG's exact containers and names, made in a test (dcid_reference 4).

:func:`make_cmg_layout` writes, under ``root``:

- ``vggsound-avel40k.csv`` (``video_id,category,split``), ``vggsoundCategories2Prompts.csv``,
  ``audio/zip/<id>.zip`` and ``video/zip/<id>.zip`` (one pickled float64 array each);
- ``AVE/`` with ``visual_feature.h5``, ``audio_feature.h5``, ``labels.h5`` (``avadataset``),
  ``train_order.h5``, ``test_order.h5`` (``order``) and ``categories.txt``;
- ``AVVP/`` with ``feature/{audio,video}/zip/<id>.zip`` and ``data/AVVP_Categories.txt``,
  ``data/AVVP_eval_{audio,visual}_checked_combined.csv`` (tab-separated, comma lists).

Features are a class prototype plus noise, so heads can learn something. Defects on purpose
(``DEFECTS``): short audio (padded, not skipped), a missing zip, a corrupt zip, a pickle that
is not an array, and a pickle whose ``__reduce__`` would create ``root/pwned`` if it ran.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

AVE_NAMES = ["Church bell", "Male speech", "Bark", "Cat", "Violin", "Banjo", "Race car", "Clock"]
AVVP_NAMES = ["Speech", "Car", "Dog", "Cat", "Violin_fiddle", "Banjo", "Blender"]
# shared by name: Male speech~Speech, Cat, Violin~Violin_fiddle, Banjo, Race car~Car
SHARED = [(1, 0), (3, 3), (4, 4), (5, 5), (6, 1)]
CATEGORIES = ["playing violin", "dog barking", "cat meowing"]


class Evil:
    """A pickle that would create a file if unpickled with ``pickle.load``."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@dataclass
class Layout:
    root: Path
    pretrain_csv: Path
    prompts: Path
    audio_zips: Path
    video_zips: Path
    ave: Path
    avvp: Path
    ids: list[str]
    defects: dict[str, str]  # clip id -> what is wrong
    grid: tuple[int, int, int]


def _zip(path: Path, payload: bytes, member: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, payload)


def _features(rng: np.random.Generator, cls: int, shape: tuple[int, ...], n_cls: int) -> np.ndarray:
    protos = np.random.default_rng(1000 + len(shape)).standard_normal((n_cls, shape[-1]))
    return protos[cls] + 0.5 * rng.standard_normal(shape)


def _write_clip(
    layout_dirs: tuple[Path, Path],
    clip: str,
    cls: int,
    n_cls: int,
    rng: np.random.Generator,
    grid: tuple[int, int, int],
    audio_rows: int = 10,
) -> None:
    audio_dir, video_dir = layout_dirs
    audio = _features(rng, cls, (audio_rows, 128), n_cls)
    video = np.abs(_features(rng, cls, (10, *grid), n_cls))
    _zip(audio_dir / f"{clip}.zip", pickle.dumps(audio), f"{clip}.pkl")
    _zip(video_dir / f"{clip}.zip", pickle.dumps(video), f"{clip}.pkl")


def _h5(path: Path, name: str, data: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset(name, data=data)


def _ave(root: Path, rng: np.random.Generator, grid: tuple[int, int, int], n: int) -> Path:
    ave = root / "AVE"
    ave.mkdir()
    c = len(AVE_NAMES)
    labels = np.zeros((n, 10, c + 1))
    labels[:, :, -1] = 1
    classes = rng.integers(0, c, size=n)
    for i, k in enumerate(classes):
        a = int(rng.integers(0, 5))
        labels[i, a : a + 4, k], labels[i, a : a + 4, -1] = 1, 0
    _h5(
        ave / "visual_feature.h5",
        "avadataset",
        np.stack([np.abs(_features(rng, k, (10, *grid), c)) for k in classes]).astype(np.float32),
    )
    _h5(
        ave / "audio_feature.h5",
        "avadataset",
        np.stack([_features(rng, k, (10, 128), c) for k in classes]).astype(np.float32),
    )
    _h5(ave / "labels.h5", "avadataset", labels)
    order = rng.permutation(n)
    _h5(ave / "train_order.h5", "order", np.sort(order[: 2 * n // 3]))
    _h5(ave / "test_order.h5", "order", np.sort(order[2 * n // 3 :]))
    (ave / "categories.txt").write_text("\n".join(AVE_NAMES) + "\n")
    return ave


def _avvp(root: Path, rng: np.random.Generator, grid: tuple[int, int, int], n: int) -> Path:
    avvp = root / "AVVP"
    (avvp / "data").mkdir(parents=True)
    (avvp / "data" / "AVVP_Categories.txt").write_text("\n".join(AVVP_NAMES) + "\n")
    rows = {"audio": [], "visual": []}
    dirs = (avvp / "feature" / "audio" / "zip", avvp / "feature" / "video" / "zip")
    for i in range(n):
        clip = f"yt{i:09d}"  # 11 characters, as YouTube ids
        ev = rng.choice(len(AVVP_NAMES), size=2, replace=False)
        _write_clip(dirs, clip, int(ev[0]), len(AVVP_NAMES), rng, grid)
        rows["audio"].append(f"{clip}_30_40\t0,4\t5,9\t{AVVP_NAMES[ev[0]]},{AVVP_NAMES[ev[1]]}")
        if i % 4:  # every fourth clip has no visual event at all
            rows["visual"].append(f"{clip}_30_40\t2\t8\t{AVVP_NAMES[ev[0]]}")
    for m, lines in rows.items():
        text = "filename\tonset\toffset\tevent_labels\n" + "\n".join(lines) + "\n"
        (avvp / "data" / f"AVVP_eval_{m}_checked_combined.csv").write_text(text)
    return avvp


def make_cmg_layout(
    root: Path,
    *,
    clips: int = 24,
    grid: tuple[int, int, int] = (5, 5, 8),
    ave_clips: int = 18,
    avvp_clips: int = 16,
    seed: int = 0,
) -> Layout:
    """Write the tiny CMG layout under ``root`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    audio_zips, video_zips = root / "audio" / "zip", root / "video" / "zip"
    ids = [f"clip{i:03d}" for i in range(clips)]
    lines = ["video_id,category,split"]
    for i, clip in enumerate(ids):
        cls = i % len(CATEGORIES)
        lines.append(f"{clip},{CATEGORIES[cls]},{('train', 'test', 'val')[i % 3]}")
        rows = 3 if i == 1 else (12 if i == 2 else 10)  # clip001 short audio, clip002 long
        _write_clip((audio_zips, video_zips), clip, cls, len(CATEGORIES), rng, grid, rows)
    (root / "vggsound-avel40k.csv").write_text("\n".join(lines) + "\n")
    prompts = ["label,prompt"] + [f"{c},a video of someone {c} in a room" for c in CATEGORIES]
    (root / "vggsoundCategories2Prompts.csv").write_text("\n".join(prompts) + "\n")
    defects = {ids[1]: "short audio", ids[2]: "long audio"}
    (audio_zips / f"{ids[3]}.zip").unlink()
    (video_zips / f"{ids[3]}.zip").unlink()
    defects[ids[3]] = "missing zip"
    for d in (audio_zips, video_zips):
        (d / f"{ids[4]}.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    defects[ids[4]] = "corrupt zip"
    for d in (audio_zips, video_zips):
        _zip(d / f"{ids[5]}.zip", pickle.dumps({"features": [1, 2, 3]}), f"{ids[5]}.pkl")
    defects[ids[5]] = "not an array"
    for d in (audio_zips, video_zips):
        _zip(d / f"{ids[6]}.zip", pickle.dumps(Evil(root / "pwned")), f"{ids[6]}.pkl")
    defects[ids[6]] = "malicious pickle"
    ave = _ave(root, rng, grid, ave_clips)
    avvp = _avvp(root, rng, grid, avvp_clips)
    return Layout(
        root,
        root / "vggsound-avel40k.csv",
        root / "vggsoundCategories2Prompts.csv",
        audio_zips,
        video_zips,
        ave,
        avvp,
        ids,
        defects,
        grid,
    )


def import_args(layout: Layout, out: Path) -> list[str]:
    """The ``import-cmg`` command line for ``layout`` (without the leading program)."""
    h, w, c = layout.grid
    return [
        "import-cmg",
        "--pretrain-csv",
        str(layout.pretrain_csv),
        "--audio-zips",
        str(layout.audio_zips),
        "--video-zips",
        str(layout.video_zips),
        "--prompts",
        str(layout.prompts),
        "--ave",
        str(layout.ave),
        "--avvp",
        str(layout.avvp),
        "--stages",
        "video-text,audio-text",
        "--out",
        str(out),
        "--video-map",
        f"{h}x{w}x{c}",
        "--text-dim",
        "32",
    ]
