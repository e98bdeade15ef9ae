"""Build the digits-world feature bank from the raw recordings (spec section 7).

The raw folder holds five real datasets (see ``ATTRIBUTION.md`` beside the bank):

- audio: Free Spoken Digit Dataset recordings (8 kHz WAV) -> log-mel energies (40 bands) pooled
  to 8 time chunks (320 values); official split (takes 0-4 test, 5-49 train);
- video: Sign Language Digits photos (100x100 JPEG) -> grey, 64x64, HOG, PCA-128; split by
  participant (file numbers come in blocks of ten per student; a student is wholly train or test);
- image: MNIST (test set, IDX gzip) -> pixels, PCA-128; seeded split;
- text: number words and their variants -> hashed character trigrams (CRC-32, signed);
- background (class 10), real content: crops of the sound icons (16 kHz, resampled to 8 kHz,
  seeded crop position, gain and an optional second mixed crop; split by source file) for audio,
  Fashion-MNIST items through the photo pipeline (video) or the pixel pipeline (image), with
  disjoint item sets for video and image; background words for text.

PCA and the per-dimension standardisation use train-pool statistics only; features are stored
as float16. The bank is one uncompressed zip of ``.npy`` members written in a fixed order with a
fixed timestamp, so two builds from the same raw files give identical bytes.

One module per part: ``common`` (the recipe's constants and :class:`BuildConfig`), ``readers``
(raw files), ``audio``, ``photos`` (video and image), ``text``; this module assembles the bank.
The feature code (log-mel, HOG, PCA) is hand-written for a bit-identical bank without build-time
dependencies; each module's docstring says how it is checked against the reference libraries.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..._util import atomic_write_bytes
from ..types import DataError
from .audio import build_audio, log_mel_chunks
from .common import (
    BACKGROUND_CLASS,
    BANK_FORMAT_VERSION,
    BANK_MODALITIES,
    CLASS_NAMES,
    RAW_LAYOUT,
    BuildConfig,
    Progress,
    quiet,
    require,
)
from .photos import build_image, build_video, fashion_items, hog, pca_fit
from .text import build_text, hashed_trigrams

__all__ = [
    "BuildConfig",
    "bank_bytes",
    "build_bank",
    "default_raw",
    "hashed_trigrams",
    "hog",
    "log_mel_chunks",
    "pca_fit",
    "write_atomic",
]


def default_raw() -> Path:
    """The raw recordings' folder when ``--raw`` is not given: ``shared/data/digits`` beside the
    repository (the build's only source; nothing else reads it)."""
    return Path(__file__).resolve().parents[4] / "shared" / "data" / "digits"


def build_bank(
    raw: str | os.PathLike[str], cfg: BuildConfig | None = None, progress: Progress | None = None
) -> dict[str, np.ndarray]:
    """Featurise the raw digits-world folder into the bank's arrays (name -> array, fixed order)."""
    cfg = cfg or BuildConfig()
    say = progress or quiet
    raw = Path(raw)
    if not raw.is_dir():
        raise DataError(f"{raw}: raw data folder not found")
    for rel in RAW_LAYOUT:
        require(raw / rel)
    say(f"building the digits bank from {raw}")
    root = np.random.SeedSequence(cfg.seed)
    rng_audio, rng_video, rng_image, rng_text, rng_fashion = (
        np.random.default_rng(s) for s in root.spawn(5)
    )
    t0 = time.perf_counter()
    arrays: dict[str, np.ndarray] = {}
    fashion = fashion_items(raw)
    need = cfg.bg_video_train + cfg.bg_video_test + cfg.bg_image_train + cfg.bg_image_test
    if need > len(fashion):
        raise DataError(
            f"{raw / 'background' / 'fashion_mnist'}: {len(fashion)} items, need {need}"
        )
    perm = rng_fashion.permutation(len(fashion))
    n_video = cfg.bg_video_train + cfg.bg_video_test
    video_idx, image_idx = perm[:n_video], perm[n_video:need]

    say("video: sign-language photos -> HOG -> PCA")
    arrays |= build_video(raw, cfg, rng_video, fashion, video_idx)
    say(f"audio: spoken digits -> log-mel chunks ({time.perf_counter() - t0:.1f} s)")
    arrays |= build_audio(raw, cfg, rng_audio)
    say(f"image: MNIST -> pixels -> PCA ({time.perf_counter() - t0:.1f} s)")
    arrays |= build_image(raw, cfg, rng_image, fashion, image_idx)
    say(f"text: number words -> hashed trigrams ({time.perf_counter() - t0:.1f} s)")
    arrays |= build_text(cfg, rng_text)
    arrays["meta/format_version"] = np.asarray(BANK_FORMAT_VERSION, dtype=np.int64)
    arrays["meta/modalities"] = np.asarray(BANK_MODALITIES)
    arrays["meta/class_names"] = np.asarray(CLASS_NAMES)
    arrays["meta/background_class"] = np.asarray(BACKGROUND_CLASS, dtype=np.int64)
    arrays["meta/recipe"] = np.asarray(json.dumps(asdict(cfg), sort_keys=True))
    return arrays


_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def bank_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Serialise arrays as an uncompressed .npz (zip of .npy) with fixed timestamps and order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(
                member, np.asarray(arr, order="C"), version=(1, 0), allow_pickle=False
            )
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` atomically to ``path``; a failure is a one-line :class:`DataError`."""
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None
