"""Audio: spoken-digit recordings and background sound crops -> log-mel energies in time chunks.

Hand-written rather than taken from librosa so that the bank is bit-identical across machines
and needs no extra dependency at build time; ``tests/test_data_build_reference.py`` checks the
mel filterbank (within 1e-9 absolute) and the power spectrogram (1e-9 relative) against
librosa.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..types import DataError
from .common import (
    BACKGROUND_CLASS,
    ORIGIN_BACKGROUND,
    ORIGIN_DIGITS,
    BuildConfig,
    modality_arrays,
    require,
)
from .readers import read_wav


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


def build_audio(raw: Path, cfg: BuildConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    rec_dir = require(raw / "fsdd" / "recordings")
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

    icon_dir = require(raw / "background" / "sound_icons")
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
    return modality_arrays(
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
