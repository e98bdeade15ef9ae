"""The recipe of the digits-world bank: every constant, the build configuration, and the
per-modality array layout shared by the modality builders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..types import DataError

BANK_FORMAT_VERSION = 1
BACKGROUND_CLASS = 10
CLASS_NAMES: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "background",
)
BANK_MODALITIES: tuple[str, ...] = ("video", "audio", "image", "text")
ORIGIN_DIGITS = 0  # row comes from the digit dataset of its modality
ORIGIN_BACKGROUND = 1  # row comes from the background material

# Number words (English, with common variants, plus Spanish, German and French number words) and
# background words; each word appears in several surface forms (case, punctuation).
DIGIT_WORDS: tuple[tuple[str, ...], ...] = (
    ("zero", "oh", "nought", "naught", "nil", "cero", "null", "zéro"),
    ("one", "single", "uno", "eins", "un", "une"),
    ("two", "pair", "couple", "dos", "zwei", "deux"),
    ("three", "trio", "tres", "drei", "trois"),
    ("four", "quartet", "cuatro", "vier", "quatre"),
    ("five", "quintet", "cinco", "fünf", "cinq"),
    ("six", "sextet", "seis", "sechs", "half dozen"),
    ("seven", "septet", "siete", "sieben", "sept"),
    ("eight", "octet", "ocho", "acht", "huit"),
    ("nine", "nonet", "nueve", "neun", "neuf"),
)
BACKGROUND_WORDS: tuple[str, ...] = (
    "nothing",
    "silence",
    "blank",
    "pause",
    "empty",
    "quiet",
    "noise",
    "none here",
    "no sign",
    "nada",
    "nichts",
    "rien",
)
SURFACE_FORMS: tuple[str, ...] = ("{w}", "{W}", "{w}.", "{W}.", "{w}!", "{w}?", "{w},", '"{w}"')


@dataclass(frozen=True)
class BuildConfig:
    """Every number of the feature recipe (stored as JSON in the bank's metadata)."""

    seed: int = 0
    # audio
    sample_rate: int = 8000
    n_fft: int = 256
    win_length: int = 200  # 25 ms
    hop_length: int = 80  # 10 ms
    n_mels: int = 40
    chunks: int = 8
    fmin: float = 20.0
    log_floor: float = 1e-6  # relative to the recording's peak frame power
    bg_audio_train: int = 540
    bg_audio_test: int = 120
    bg_audio_test_fraction: float = 0.25
    bg_crop_seconds: tuple[float, float] = (0.3, 1.0)
    bg_gain_db: tuple[float, float] = (-20.0, 0.0)
    bg_mix_prob: float = 0.5
    bg_rate: tuple[float, float] = (0.7, 1.4)  # playback-rate change (pitch and tempo) per crop
    # video (photos)
    photo_size: int = 100
    hog_cell: int = 10
    hog_bins: int = 9
    hog_block: int = 2
    video_test_fraction: float = 0.2
    bg_video_train: int = 400
    bg_video_test: int = 100
    # image (MNIST)
    mnist_train: int = 8000
    bg_image_train: int = 800
    bg_image_test: int = 200
    # shared
    pca_dim: int = 128
    # text
    text_dim: int = 128
    text_test_forms: int = 2  # surface forms per word kept for the test pool


RAW_LAYOUT: tuple[str, ...] = (
    "fsdd/recordings",
    "sign_digits/Dataset",
    "mnist/t10k-images-idx3-ubyte.gz",
    "mnist/t10k-labels-idx1-ubyte.gz",
    "background/fashion_mnist/t10k-images-idx3-ubyte.gz",
    "background/sound_icons",
)


Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """A progress callback that prints nothing."""
    return None


def require(path: Path) -> Path:
    """``path`` if it exists, else a one-line :class:`DataError`."""
    if not path.exists():
        raise DataError(f"{path}: not found")
    return path


def standardise(x: np.ndarray, split: np.ndarray) -> np.ndarray:
    train = x[split == 0]
    mean, std = train.mean(axis=0), train.std(axis=0)
    return ((x - mean) / np.maximum(std, 1e-6)).astype(np.float16)


def modality_arrays(
    name: str,
    feats: np.ndarray,
    labels: np.ndarray,
    split: np.ndarray,
    origin: np.ndarray,
    item: np.ndarray,
    group: np.ndarray,
) -> dict[str, np.ndarray]:
    return {
        f"{name}/features": standardise(feats, split),
        f"{name}/labels": labels.astype(np.int64),
        f"{name}/split": split.astype(np.int8),
        f"{name}/origin": origin.astype(np.int8),
        f"{name}/item": item.astype(np.int32),
        f"{name}/group": group.astype(np.int32),
    }
