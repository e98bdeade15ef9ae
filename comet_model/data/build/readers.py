"""Readers of the raw files (every failure is a one-line DataError naming the file)."""

from __future__ import annotations

import gzip
import wave
from pathlib import Path

import numpy as np

from ..types import DataError
from .common import require


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono 16-bit PCM WAV -> (float64 samples in [-1, 1], sample rate)."""
    try:
        with wave.open(str(require(path)), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise DataError(
                    f"{path}: expected mono 16-bit PCM, got {w.getnchannels()} channels, "
                    f"{8 * w.getsampwidth()} bit"
                )
            rate = w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise DataError(f"{path}: unreadable WAV ({exc})") from None
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    if samples.size == 0:
        raise DataError(f"{path}: empty recording")
    return samples, rate


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip) as a uint8 array of its stored shape."""
    try:
        with gzip.open(require(path), "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: unreadable gzip ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise DataError(f"{path}: IDX size does not match its header {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_photos(paths: list[Path], size: int) -> np.ndarray:
    """JPEG photos -> grey float64 [n, size, size] in [0, 1] (Pillow decode, bilinear resize)."""
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(paths), size, size), dtype=np.float64)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                im = im.convert("L")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(im, dtype=np.float64) / 255.0
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{p}: unreadable image ({exc})") from None
    return out


def resize_grey(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [n, h, w] -> float64 [n, size, size] in [0, 1] (Pillow bilinear, as for photos)."""
    from PIL import Image

    out = np.empty((len(images), size, size), dtype=np.float64)
    for i, img in enumerate(images):
        im = Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(im, dtype=np.float64) / 255.0
    return out
