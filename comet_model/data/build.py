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
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
import time
import wave
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .types import DataError

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


Progress = Callable[[str], None]

RAW_LAYOUT: tuple[str, ...] = (
    "fsdd/recordings",
    "sign_digits/Dataset",
    "mnist/t10k-images-idx3-ubyte.gz",
    "mnist/t10k-labels-idx1-ubyte.gz",
    "background/fashion_mnist/t10k-images-idx3-ubyte.gz",
    "background/sound_icons",
)


def _quiet(_: str) -> None:
    return None


# ---------------------------------------------------------------------------------------------
# raw readers (every failure becomes a one-line DataError naming the file)


def _require(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"{path}: not found")
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono 16-bit PCM WAV -> (float64 samples in [-1, 1], sample rate)."""
    try:
        with wave.open(str(_require(path)), "rb") as w:
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
        with gzip.open(_require(path), "rb") as f:
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


# ---------------------------------------------------------------------------------------------
# audio


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float) -> np.ndarray:
    """Triangular HTK-mel filters [n_fft // 2 + 1, n_mels]."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(
        np.linspace(hz_to_mel(np.array(fmin)), hz_to_mel(np.array(sample_rate / 2)), n_mels + 2)
    )
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    f = fft_freqs[:, None]
    up = (f - lower) / (centre - lower)
    down = (upper - f) / (upper - centre)
    return np.maximum(0.0, np.minimum(up, down))


def resample_half(x: np.ndarray) -> np.ndarray:
    """16 kHz -> 8 kHz: windowed-sinc low-pass at 3.6 kHz, then keep every second sample."""
    taps = np.arange(-32, 33)
    cutoff = 3600.0 / 16000.0  # cycles per sample
    h = 2 * cutoff * np.sinc(2 * cutoff * taps) * np.hamming(len(taps))
    h /= h.sum()
    return np.convolve(x, h, mode="same")[::2]


def log_mel_chunks(recordings: list[np.ndarray], cfg: BuildConfig) -> np.ndarray:
    """Recordings (8 kHz) -> log-mel energies pooled to equal time chunks [n, chunks * n_mels].

    All frames of all recordings go through one FFT and one filterbank product; each recording's
    frames are then averaged per chunk (chunk = frame_index * chunks // n_frames).
    """
    win, hop, chunks = cfg.win_length, cfg.hop_length, cfg.chunks
    frames, owner, n_frames = [], [], []
    for i, x in enumerate(recordings):
        if x.size < win + (chunks - 1) * hop:  # at least `chunks` frames
            x = np.pad(x, (0, win + (chunks - 1) * hop - x.size))
        fr = np.lib.stride_tricks.sliding_window_view(x, win)[::hop]  # (frames, win)
        frames.append(fr)
        owner.append(np.full(len(fr), i))
        n_frames.append(len(fr))
    all_frames = np.concatenate(frames) * np.hanning(win)  # (F, win)
    power = np.abs(np.fft.rfft(all_frames, n=cfg.n_fft, axis=1)) ** 2  # (F, n_fft/2+1)
    mel = power @ mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin)  # (F, n_mels)
    owner_arr = np.concatenate(owner)
    counts = np.asarray(n_frames)
    # floor relative to each recording's loudest frame, so gain changes only shift the log values
    frame_energy = mel.sum(axis=1)
    peak = np.zeros(len(recordings))
    np.maximum.at(peak, owner_arr, frame_energy)
    logmel = np.log(mel + cfg.log_floor * peak[owner_arr, None] / cfg.n_mels + 1e-12)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(owner_arr)) - starts[owner_arr]
    chunk = pos * chunks // counts[owner_arr]
    seg = owner_arr * chunks + chunk  # sorted, every segment non-empty
    seg_start = np.flatnonzero(np.r_[True, np.diff(seg) != 0])
    sums = np.add.reduceat(logmel, seg_start, axis=0)  # (n*chunks, n_mels)
    sizes = np.diff(np.r_[seg_start, len(seg)])
    pooled = sums / sizes[:, None]
    return pooled.reshape(len(recordings), chunks * cfg.n_mels)


def background_crops(
    sources: list[np.ndarray], count: int, rng: np.random.Generator, cfg: BuildConfig
) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` background clips: a crop of one source, with a gain, sometimes mixed with a second.

    Returns the clips (8 kHz) and the index of each clip's main source.
    """
    sr = cfg.sample_rate
    lo, hi = cfg.bg_crop_seconds
    clips, main = [], np.empty(count, dtype=np.int64)
    for k in range(count):
        a = int(rng.integers(len(sources)))
        length = int(rng.uniform(lo, hi) * sr)
        clip = _crop(sources[a], length, rng, cfg.bg_rate) * 10 ** (
            rng.uniform(*cfg.bg_gain_db) / 20
        )
        if len(sources) > 1 and rng.random() < cfg.bg_mix_prob:
            b = int((a + 1 + rng.integers(len(sources) - 1)) % len(sources))
            other = _crop(sources[b], length, rng, cfg.bg_rate) * 10 ** (
                rng.uniform(*cfg.bg_gain_db) / 20 - 0.5
            )
            start = int(rng.integers(0, max(1, len(clip) - len(other) + 1)))
            if len(other) > len(clip):
                clip = np.pad(clip, (0, len(other) - len(clip)))
                start = 0
            clip[start : start + len(other)] += other
        clips.append(clip)
        main[k] = a
    return clips, main


def _crop(
    x: np.ndarray, length: int, rng: np.random.Generator, rate: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    r = rng.uniform(*rate)
    if r != 1.0:  # play back at rate r (linear interpolation): shifts pitch and tempo together
        x = np.interp(np.arange(0.0, x.size - 1, r), np.arange(x.size), x)
    if x.size <= length:
        return x.copy()
    start = int(rng.integers(0, x.size - length + 1))
    return x[start : start + length].copy()


# ---------------------------------------------------------------------------------------------
# photos and pixels


def hog(images: np.ndarray, cell: int, bins: int, block: int, batch: int = 256) -> np.ndarray:
    """Histogram of oriented gradients (Dalal & Triggs 2005), vectorised over images.

    Unsigned orientations, linear interpolation between neighbouring bins, ``cell`` x ``cell``
    pixel cells, ``block`` x ``block`` cell blocks with L2-Hys normalisation.
    images: [n, h, w] float -> [n, blocks_y * blocks_x * block^2 * bins].
    """
    n, h, w = images.shape
    cy, cx = h // cell, w // cell
    out = []
    for s in range(0, n, batch):
        img = images[s : s + batch, : cy * cell, : cx * cell]
        gx = np.zeros_like(img)
        gy = np.zeros_like(img)
        gx[:, :, 1:-1] = img[:, :, 2:] - img[:, :, :-2]
        gy[:, 1:-1, :] = img[:, 2:, :] - img[:, :-2, :]
        mag = np.hypot(gx, gy)
        ang = np.mod(np.arctan2(gy, gx), np.pi) * (bins / np.pi) - 0.5  # bin coordinate
        lo = np.floor(ang)
        frac = ang - lo
        lo_i = lo.astype(np.int64) % bins
        hi_i = (lo_i + 1) % bins
        b = len(img)
        hist = np.zeros((b, cy, cx, bins))
        for k in range(bins):
            wk = mag * ((lo_i == k) * (1.0 - frac) + (hi_i == k) * frac)  # (b, h, w)
            hist[..., k] = wk.reshape(b, cy, cell, cx, cell).sum(axis=(2, 4))
        by, bx = cy - block + 1, cx - block + 1
        blocks = np.stack(
            [hist[:, i : i + by, j : j + bx] for i in range(block) for j in range(block)], axis=3
        ).reshape(b, by, bx, -1)
        blocks = blocks / np.sqrt((blocks**2).sum(-1, keepdims=True) + 1e-6)
        blocks = np.minimum(blocks, 0.2)
        blocks = blocks / np.sqrt((blocks**2).sum(-1, keepdims=True) + 1e-6)
        out.append(blocks.reshape(b, -1))
    return np.concatenate(out)


def _orthonormal(y: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the columns of a tall ``y`` (CholeskyQR2 through a small eigh).

    Avoids LAPACK's QR of tall matrices, which is very slow with OpenBLAS threads on a busy
    machine; only small [l, l] decompositions are done here.
    """
    for _ in range(2):
        vals, vecs = np.linalg.eigh(y.T @ y)
        y = y @ (vecs / np.sqrt(np.maximum(vals, 1e-300)))
    return y


def pca_fit(
    x: np.ndarray, dim: int, seed: int = 0, exact_max_dim: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes of ``x`` [n, d] in float64: (mean [d], components [d, dim]), signs fixed.

    Up to ``exact_max_dim`` dims: exact (eigh of the covariance). Wider: randomized range
    finder with power iterations (Halko, Martinsson & Tropp 2011) from a fixed seed, much faster
    than a full eigendecomposition and equally deterministic. Each component's largest-magnitude
    entry is made positive so the result does not depend on the LAPACK build's sign choice.
    """
    mean = x.mean(axis=0)
    xc = x - mean
    if x.shape[1] <= exact_max_dim:
        vals, vecs = np.linalg.eigh(xc.T @ xc)
        comps = vecs[:, np.argsort(vals)[::-1][:dim]]
    else:
        rng = np.random.default_rng(seed)
        q = _orthonormal(rng.standard_normal((x.shape[1], dim + 32)))  # (d, l)
        for _ in range(6):
            q = _orthonormal(xc.T @ _orthonormal(xc @ q))
        vals, vecs = np.linalg.eigh((xc @ q).T @ (xc @ q))  # Rayleigh-Ritz in span(q)
        comps = (q @ vecs[:, np.argsort(vals)[::-1]])[:, :dim]
    sign = np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(comps.shape[1])])
    return mean, comps * sign


# ---------------------------------------------------------------------------------------------
# text


def text_items(
    cfg: BuildConfig, rng: np.random.Generator
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """All (word, surface form) strings with labels and split (a few forms per word are test)."""
    strings, labels, split = [], [], []
    groups = [*DIGIT_WORDS, BACKGROUND_WORDS]
    for label, words in enumerate(groups):
        for word in words:
            test_forms = set(rng.choice(len(SURFACE_FORMS), cfg.text_test_forms, replace=False))
            for f, form in enumerate(SURFACE_FORMS):
                strings.append(form.format(w=word, W=word[:1].upper() + word[1:]))
                labels.append(label)
                split.append(1 if f in test_forms else 0)
    return strings, np.asarray(labels), np.asarray(split)


def hashed_trigrams(strings: list[str], dim: int) -> np.ndarray:
    """Signed hashed character trigrams (CRC-32 of the UTF-8 trigram; words padded with < and >)."""
    out = np.zeros((len(strings), dim))
    for i, s in enumerate(strings):
        padded = f"<{s}>"
        for j in range(len(padded) - 2):
            h = zlib.crc32(padded[j : j + 3].encode("utf-8"))
            out[i, h % dim] += 1.0 if (h >> 31) & 1 else -1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------------------
# the bank


def _standardise(x: np.ndarray, split: np.ndarray) -> np.ndarray:
    train = x[split == 0]
    mean, std = train.mean(axis=0), train.std(axis=0)
    return ((x - mean) / np.maximum(std, 1e-6)).astype(np.float16)


def _modality_arrays(
    name: str,
    feats: np.ndarray,
    labels: np.ndarray,
    split: np.ndarray,
    origin: np.ndarray,
    item: np.ndarray,
    group: np.ndarray,
) -> dict[str, np.ndarray]:
    return {
        f"{name}/features": _standardise(feats, split),
        f"{name}/labels": labels.astype(np.int64),
        f"{name}/split": split.astype(np.int8),
        f"{name}/origin": origin.astype(np.int8),
        f"{name}/item": item.astype(np.int32),
        f"{name}/group": group.astype(np.int32),
    }


def _build_audio(raw: Path, cfg: BuildConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    rec_dir = _require(raw / "fsdd" / "recordings")
    files = sorted(rec_dir.glob("*.wav"))
    if not files:
        raise DataError(f"{rec_dir}: no WAV recordings")
    recs, labels, takes, speakers = [], [], [], []
    speaker_ids: dict[str, int] = {}
    for p in files:
        parts = p.stem.split("_")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            raise DataError(f"{p}: name is not {{digit}}_{{speaker}}_{{take}}.wav")
        x, rate = read_wav(p)
        if rate != cfg.sample_rate:
            raise DataError(f"{p}: sample rate {rate}, expected {cfg.sample_rate}")
        recs.append(x)
        labels.append(int(parts[0]))
        takes.append(int(parts[2]))
        speakers.append(speaker_ids.setdefault(parts[1], len(speaker_ids)))
    split = (np.asarray(takes) < 5).astype(np.int64)  # official FSDD split: takes 0-4 are test

    icon_dir = _require(raw / "background" / "sound_icons")
    icon_files = sorted(icon_dir.glob("*.wav"))
    if len(icon_files) < 2:
        raise DataError(f"{icon_dir}: need at least two WAV files")
    icons = []
    for p in icon_files:
        x, rate = read_wav(p)
        if rate == 2 * cfg.sample_rate:
            x = resample_half(x)
        elif rate != cfg.sample_rate:
            raise DataError(f"{p}: sample rate {rate}, expected {2 * cfg.sample_rate}")
        icons.append(x)
    test_files, train_files = _split_sound_files([p.stem for p in icon_files], rng, cfg)
    bg_clips, bg_group, bg_split = [], [], []
    for files_idx, count, sp in (
        (train_files, cfg.bg_audio_train, 0),
        (test_files, cfg.bg_audio_test, 1),
    ):
        clips, main = background_crops([icons[i] for i in files_idx], count, rng, cfg)
        bg_clips += clips
        bg_group.append(files_idx[main])
        bg_split.append(np.full(count, sp))
    n_bg = len(bg_clips)
    feats = log_mel_chunks(recs + bg_clips, cfg)
    return _modality_arrays(
        "audio",
        feats,
        np.r_[labels, np.full(n_bg, BACKGROUND_CLASS)],
        np.r_[split, np.concatenate(bg_split)],
        np.r_[np.full(len(recs), ORIGIN_DIGITS), np.full(n_bg, ORIGIN_BACKGROUND)],
        np.r_[np.arange(len(recs)), np.arange(n_bg)],
        np.r_[speakers, np.concatenate(bg_group)],
    )


def _split_sound_files(
    stems: list[str], rng: np.random.Generator, cfg: BuildConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Split sound files by family (name before the first '-'): families with several files give
    ``bg_audio_test_fraction`` of their files (at least one) to the test side; single-file
    families stay in train. Test background is thus unseen recordings of known kinds of sound."""
    family = [s.split("-")[0] for s in stems]
    test = []
    for fam in sorted(set(family)):
        members = [i for i, f in enumerate(family) if f == fam]
        if len(members) > 1:
            k = max(1, round(cfg.bg_audio_test_fraction * len(members)))
            test += list(rng.choice(members, k, replace=False))
    test_arr = np.sort(np.asarray(test, dtype=np.int64))
    return test_arr, np.setdiff1d(np.arange(len(stems)), test_arr)


def _fashion(raw: Path) -> np.ndarray:
    base = raw / "background" / "fashion_mnist"
    images = read_idx(base / "t10k-images-idx3-ubyte.gz")
    if images.ndim != 3:
        raise DataError(f"{base / 't10k-images-idx3-ubyte.gz'}: expected [n, 28, 28] images")
    return images


def _build_video(
    raw: Path,
    cfg: BuildConfig,
    rng: np.random.Generator,
    fashion: np.ndarray,
    fashion_idx: np.ndarray,
) -> dict[str, np.ndarray]:
    base = _require(raw / "sign_digits" / "Dataset")
    paths, labels, numbers = [], [], []
    for d in range(10):
        folder = _require(base / str(d))
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() not in (".jpg", ".jpeg"):
                continue
            digits = "".join(ch for ch in p.stem if ch.isdigit())
            if not digits:
                raise DataError(f"{p}: no file number in the name")
            paths.append(p)
            labels.append(d)
            numbers.append(int(digits))
    if not paths:
        raise DataError(f"{base}: no photos")
    numbers_arr = np.asarray(numbers)
    participant = (numbers_arr - numbers_arr.min()) // 10
    people = np.unique(participant)
    n_test = round(cfg.video_test_fraction * len(people))
    test_people = rng.choice(people, n_test, replace=False)
    split = np.isin(participant, test_people).astype(np.int64)

    photos = read_photos(paths, cfg.photo_size)
    n_train_bg = cfg.bg_video_train
    bg = resize_grey(fashion[fashion_idx], cfg.photo_size)
    bg_split = (np.arange(len(fashion_idx)) >= n_train_bg).astype(np.int64)
    images = np.concatenate([photos, bg])
    h = hog(images, cfg.hog_cell, cfg.hog_bins, cfg.hog_block)
    all_split = np.r_[split, bg_split]
    mean, comps = pca_fit(h[all_split == 0], cfg.pca_dim)
    feats = (h - mean) @ comps
    return _modality_arrays(
        "video",
        feats,
        np.r_[labels, np.full(len(bg), BACKGROUND_CLASS)],
        all_split,
        np.r_[np.full(len(paths), ORIGIN_DIGITS), np.full(len(bg), ORIGIN_BACKGROUND)],
        np.r_[np.arange(len(paths)), fashion_idx],
        np.r_[participant, np.full(len(bg), -1)],
    )


def _build_image(
    raw: Path,
    cfg: BuildConfig,
    rng: np.random.Generator,
    fashion: np.ndarray,
    fashion_idx: np.ndarray,
) -> dict[str, np.ndarray]:
    base = raw / "mnist"
    images = read_idx(base / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(base / "t10k-labels-idx1-ubyte.gz")
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{base}: MNIST images and labels do not match")
    if cfg.mnist_train >= len(images):
        raise DataError(
            f"{base}: only {len(images)} MNIST images, need more than {cfg.mnist_train}"
        )
    split = np.ones(len(images), dtype=np.int64)
    split[rng.permutation(len(images))[: cfg.mnist_train]] = 0
    bg = fashion[fashion_idx]
    bg_split = (np.arange(len(fashion_idx)) >= cfg.bg_image_train).astype(np.int64)
    pixels = np.concatenate([images, bg]).reshape(len(images) + len(bg), -1) / 255.0
    all_split = np.r_[split, bg_split]
    mean, comps = pca_fit(pixels[all_split == 0], cfg.pca_dim)
    feats = (pixels - mean) @ comps
    return _modality_arrays(
        "image",
        feats,
        np.r_[labels.astype(np.int64), np.full(len(bg), BACKGROUND_CLASS)],
        all_split,
        np.r_[np.full(len(images), ORIGIN_DIGITS), np.full(len(bg), ORIGIN_BACKGROUND)],
        np.r_[np.arange(len(images)), fashion_idx],
        np.full(len(images) + len(bg), -1),
    )


def _build_text(cfg: BuildConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    strings, labels, split = text_items(cfg, rng)
    feats = hashed_trigrams(strings, cfg.text_dim)
    n_words = sum(len(w) for w in DIGIT_WORDS)
    origin = np.r_[
        np.full(n_words * len(SURFACE_FORMS), ORIGIN_DIGITS),
        np.full(len(BACKGROUND_WORDS) * len(SURFACE_FORMS), ORIGIN_BACKGROUND),
    ]
    word_id = np.arange(len(strings)) // len(SURFACE_FORMS)
    arrays = _modality_arrays(
        "text", feats, labels, split, origin, np.arange(len(strings)), word_id
    )
    arrays["text/strings"] = np.asarray(strings)
    return arrays


def build_bank(
    raw: str | os.PathLike[str], cfg: BuildConfig | None = None, progress: Progress | None = None
) -> dict[str, np.ndarray]:
    """Featurise the raw digits-world folder into the bank's arrays (name -> array, fixed order)."""
    cfg = cfg or BuildConfig()
    say = progress or _quiet
    raw = Path(raw)
    if not raw.is_dir():
        raise DataError(f"{raw}: raw data folder not found")
    for rel in RAW_LAYOUT:
        _require(raw / rel)
    say(f"building the digits bank from {raw}")
    root = np.random.SeedSequence(cfg.seed)
    rng_audio, rng_video, rng_image, rng_text, rng_fashion = (
        np.random.default_rng(s) for s in root.spawn(5)
    )
    t0 = time.perf_counter()
    arrays: dict[str, np.ndarray] = {}
    fashion = _fashion(raw)
    need = cfg.bg_video_train + cfg.bg_video_test + cfg.bg_image_train + cfg.bg_image_test
    if need > len(fashion):
        raise DataError(
            f"{raw / 'background' / 'fashion_mnist'}: {len(fashion)} items, need {need}"
        )
    perm = rng_fashion.permutation(len(fashion))
    n_video = cfg.bg_video_train + cfg.bg_video_test
    video_idx, image_idx = perm[:n_video], perm[n_video:need]

    say("video: sign-language photos -> HOG -> PCA")
    arrays |= _build_video(raw, cfg, rng_video, fashion, video_idx)
    say(f"audio: spoken digits -> log-mel chunks ({time.perf_counter() - t0:.1f} s)")
    arrays |= _build_audio(raw, cfg, rng_audio)
    say(f"image: MNIST -> pixels -> PCA ({time.perf_counter() - t0:.1f} s)")
    arrays |= _build_image(raw, cfg, rng_image, fashion, image_idx)
    say(f"text: number words -> hashed trigrams ({time.perf_counter() - t0:.1f} s)")
    arrays |= _build_text(cfg, rng_text)
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
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
