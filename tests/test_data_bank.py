"""The digits-world feature bank: rebuild, contents, splits, featurisers and probes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from comet_model.data import DataError, load_bank
from comet_model.data.bank import bank_from_arrays, default_bank_path
from comet_model.data.build import (
    BuildConfig,
    bank_bytes,
    hashed_trigrams,
    hog,
    log_mel_chunks,
    pca_fit,
    write_atomic,
)
from comet_model.data.probe import probe_accuracy

RAW = Path(
    os.environ.get(
        "COMET_DIGITS_RAW",
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "digits",
    )
)
BANK = default_bank_path()


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "comet_model.data", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.skipif(
    not RAW.is_dir(), reason=f"raw digits folder not found (set COMET_DIGITS_RAW); looked in {RAW}"
)
def test_rebuild_gives_the_committed_bank_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "bank.npz"
    res = _cli("build", "--raw", str(RAW), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert 2 <= len(res.stderr.strip().splitlines()) <= 10  # a few progress lines
    assert out.read_bytes() == BANK.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["bank.npz"]  # no temp file left


def test_bank_layout_and_size() -> None:
    bank = load_bank()
    assert BANK.stat().st_size <= 15 * 2**20
    assert bank.format_version == 1
    assert bank.background_class == 10 and len(bank.class_names) == 11
    assert set(bank.modalities) == {"video", "audio", "image", "text"}
    for m, pool in bank.modalities.items():
        assert pool.features.dtype == np.float16 and pool.features.ndim == 2
        assert np.isfinite(pool.features.astype(np.float32)).all()
        for split in (0, 1):  # every class, background included, on both sides
            assert set(np.unique(pool.labels[pool.split == split])) == set(range(11)), m
        train = pool.features[pool.split == 0].astype(np.float64)
        np.testing.assert_allclose(train.mean(0), 0.0, atol=0.02)  # train-pool standardisation
        np.testing.assert_allclose(train.std(0), 1.0, atol=0.02)
    assert len(bank["text"].strings) == len(bank["text"])


def test_bank_splits_keep_people_and_sources_apart() -> None:
    bank = load_bank()
    video = bank["video"]
    people = video.origin == 0
    assert not set(video.group[people & (video.split == 0)]) & set(
        video.group[people & (video.split == 1)]
    )
    test_share = len(set(video.group[people & (video.split == 1)])) / len(set(video.group[people]))
    assert 0.15 <= test_share <= 0.25
    audio = bank["audio"]
    bg = audio.origin == 1
    assert not set(audio.group[bg & (audio.split == 0)]) & set(audio.group[bg & (audio.split == 1)])
    assert (audio.labels[bg] == 10).all() and (audio.labels[~bg] < 10).all()
    # FSDD official split: 5 of 50 takes per digit and speaker are test
    assert (audio.split[~bg] == 1).sum() == 300
    image = bank["image"]
    assert (image.split[image.origin == 0] == 0).sum() == 8000
    # video and image background use disjoint Fashion-MNIST items
    assert not set(video.item[video.origin == 1]) & set(image.item[image.origin == 1])
    text = bank["text"]
    for word in np.unique(text.group):  # every word has train and test surface forms
        assert set(text.split[text.group == word]) == {0, 1}


def test_probe_accuracies_on_the_committed_bank() -> None:
    bank = load_bank()
    assert probe_accuracy(bank, "audio") >= 0.90
    assert probe_accuracy(bank, "video") >= 0.75
    assert probe_accuracy(bank, "image") >= 0.88


def test_load_bank_is_cached_and_errors_are_one_line(tmp_path: Path) -> None:
    assert load_bank() is load_bank(BANK)
    with pytest.raises(DataError, match="not found"):
        load_bank(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz") as err:
        load_bank(bad)
    assert "\n" not in str(err.value)


def test_bank_bytes_are_deterministic_and_round_trip(tmp_path: Path) -> None:
    arrays = {
        "a/features": np.arange(6, dtype=np.float16).reshape(3, 2),
        "a/labels": np.array([0, 1, 10]),
        "meta/format_version": np.asarray(1),
        "meta/recipe": np.asarray('{"x": 1}'),
    }
    first = bank_bytes(arrays)
    assert first == bank_bytes(arrays)
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert [i.filename for i in zf.infolist()] == [f"{k}.npy" for k in arrays]
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    path = tmp_path / "sub" / "bank.npz"
    write_atomic(path, first)
    write_atomic(path, first)  # replacing an existing file
    assert sorted(p.name for p in path.parent.iterdir()) == ["bank.npz"]
    with np.load(path) as npz:
        for k, v in arrays.items():
            assert npz[k].shape == v.shape and (npz[k] == v).all()


def test_log_mel_chunks_turn_gain_into_a_constant_shift() -> None:
    rng = np.random.default_rng(0)
    cfg = BuildConfig()
    t = np.arange(4000) / cfg.sample_rate
    x = np.sin(2 * np.pi * 440 * t) * np.hanning(4000) + 0.01 * rng.standard_normal(4000)
    short = rng.standard_normal(300)  # shorter than 8 frames: padded
    a, b = log_mel_chunks([x, short], cfg), log_mel_chunks([0.1 * x, short], cfg)
    assert a.shape == (2, cfg.chunks * cfg.n_mels)
    np.testing.assert_allclose(b[0] - a[0], 2 * np.log(0.1), atol=1e-6)
    np.testing.assert_allclose(a[1], b[1])
    band = a[0].reshape(cfg.chunks, cfg.n_mels).mean(0)
    hz = np.linspace(0, 4000, cfg.n_mels + 2)  # the 440 Hz tone is among the loudest low bands
    assert band.argmax() < np.searchsorted(hz, 1000)


def test_hog_is_normalised_and_sees_orientation() -> None:
    cfg = BuildConfig()
    img = np.zeros((2, 40, 40))
    img[0, :, 20:] = 1.0  # vertical edge -> horizontal gradient
    img[1, 20:, :] = 1.0  # horizontal edge -> vertical gradient
    h = hog(img, cfg.hog_cell, cfg.hog_bins, cfg.hog_block)
    blocks = h.reshape(2, -1, cfg.hog_block**2, cfg.hog_bins)
    assert (h >= 0).all() and (np.linalg.norm(blocks.reshape(2, -1, 36), axis=-1) <= 1 + 1e-6).all()
    per_bin = blocks.sum(axis=(1, 2))
    assert per_bin[0].argmax() in (0, cfg.hog_bins - 1)  # ~0 degrees
    assert per_bin[1].argmax() == cfg.hog_bins // 2  # ~90 degrees


def test_pca_randomised_path_matches_exact_subspace() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 12)) @ rng.standard_normal((12, 80))
    x += 0.01 * rng.standard_normal(x.shape)
    _, exact = pca_fit(x, 10)  # 80 dims: exact eigh
    mean, comps = pca_fit(x, 10, exact_max_dim=0)  # forced randomised path
    np.testing.assert_allclose(mean, x.mean(0))
    np.testing.assert_allclose(comps.T @ comps, np.eye(10), atol=1e-8)
    np.testing.assert_allclose(np.linalg.norm(exact.T @ comps, axis=0), 1.0, atol=1e-6)
    for c in (exact, comps):  # sign convention: largest entry of each component positive
        assert (c[np.abs(c).argmax(0), np.arange(10)] > 0).all()
    np.testing.assert_allclose(comps, exact, atol=1e-6)


def test_hashed_trigrams_are_deterministic_unit_vectors() -> None:
    a = hashed_trigrams(["zero", "Zero.", "nine"], 128)
    assert (a == hashed_trigrams(["zero", "Zero.", "nine"], 128)).all()
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0)
    assert a[0] @ a[1] > a[0] @ a[2]  # shared trigrams -> more similar


def test_cli_build_bad_raw_folder_one_line_and_no_output(tmp_path: Path) -> None:
    out = tmp_path / "bank.npz"
    out.write_bytes(b"old")
    res = _cli("build", "--raw", str(tmp_path / "nowhere"), "--out", str(out), timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nowhere" in lines[0]
    empty = tmp_path / "raw"
    empty.mkdir()
    res = _cli("build", "--raw", str(empty), "--out", str(out), timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not found" in lines[0]
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.npz", "raw"]


def test_bank_from_arrays_rejects_missing_arrays() -> None:
    with pytest.raises(DataError, match="missing array"):
        bank_from_arrays({"meta/format_version": np.asarray(1)})
