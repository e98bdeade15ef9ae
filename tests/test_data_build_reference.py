"""The bank builder's hand-written features against the reference libraries (test-only deps).

The builder keeps its own log-mel, HOG and PCA for a bit-identical bank without build-time
dependencies (see ``comet_model/data/build``); these tests check that they compute what the
well-kept implementations compute: librosa (mel filterbank, power spectrogram), scikit-image
(HOG) and scikit-learn (PCA), each within a stated tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from comet_model.data.build import BuildConfig, hog, pca_fit
from comet_model.data.build.audio import mel_filterbank

librosa = pytest.importorskip("librosa", reason="librosa (a dev dependency) is not installed")
skimage_feature = pytest.importorskip("skimage.feature", reason="scikit-image is not installed")
sk_decomposition = pytest.importorskip("sklearn.decomposition", reason="scikit-learn is missing")


def test_mel_filterbank_equals_librosa_htk_filters() -> None:
    cfg = BuildConfig()
    ours = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin)  # [F, M]
    ref = librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin,
        fmax=cfg.sample_rate / 2, htk=True, norm=None, dtype=np.float64,
    )  # fmt: skip  # [M, F]
    np.testing.assert_allclose(ours, ref.T, rtol=0, atol=1e-9)


def test_power_spectrogram_equals_librosa_stft() -> None:
    """The builder's frames (window ``np.hanning(win)``, zero-padded to n_fft at the end) give
    the power of librosa's STFT with the same window centred in n_fft (a circular shift of each
    frame changes only the phase); the signal is padded so both frame the same samples."""
    cfg = BuildConfig()
    x = np.random.default_rng(0).standard_normal(4000)
    win, hop = cfg.win_length, cfg.hop_length
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop] * np.hanning(win)
    ours = np.abs(np.fft.rfft(frames, n=cfg.n_fft, axis=1)) ** 2  # [frames, F]
    left = (cfg.n_fft - win) // 2
    padded = np.pad(x, (left, cfg.n_fft - win - left))
    ref = np.abs(librosa.stft(padded, n_fft=cfg.n_fft, hop_length=hop, win_length=win,
                              window=np.hanning(win), center=False)) ** 2  # fmt: skip
    assert ref.shape[1] == ours.shape[0]
    np.testing.assert_allclose(ours, ref.T, rtol=1e-9, atol=1e-9 * ours.max())


def _photos(n: int = 12, size: int = 100) -> np.ndarray:
    """Smooth random images with edges of every orientation (not flat, not pure noise)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(-8, 8, 3)
        img = 0.5 + 0.3 * np.sin(a * xx + b * yy + c) + 0.05 * rng.standard_normal((size, size))
        out.append(np.clip(img, 0, 1))
    return np.stack(out)


def test_hog_with_hard_binning_equals_scikit_image() -> None:
    cfg = BuildConfig()
    images = _photos()
    ours = hog(images, cfg.hog_cell, cfg.hog_bins, cfg.hog_block, interpolate=False)
    ref = np.stack([
        skimage_feature.hog(
            img, orientations=cfg.hog_bins, pixels_per_cell=(cfg.hog_cell, cfg.hog_cell),
            cells_per_block=(cfg.hog_block, cfg.hog_block), block_norm="L2-Hys",
        )
        for img in images
    ])  # fmt: skip
    assert ours.shape == ref.shape
    # scikit-image divides cells by their area and uses eps 1e-5 in the block norms; both only
    # move values by far less than this tolerance
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_interpolated_hog_stays_close_to_scikit_image() -> None:
    """Interpolating between orientation bins (the bank's choice) smooths the histograms; on
    these images, whose cells hold nearly one orientation each (the case where the two binnings
    differ most), the features keep a correlation above 0.85 with scikit-image's per image."""
    cfg = BuildConfig()
    images = _photos()
    ours = hog(images, cfg.hog_cell, cfg.hog_bins, cfg.hog_block)
    ref = np.stack([
        skimage_feature.hog(img, orientations=cfg.hog_bins, pixels_per_cell=(10, 10),
                            cells_per_block=(2, 2), block_norm="L2-Hys")
        for img in images
    ])  # fmt: skip
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(ours, ref, strict=True)]
    assert min(corr) > 0.85


@pytest.mark.parametrize("dims", [64, 1500])  # exact (eigh) and randomised (> 1024 dims) paths
def test_pca_matches_scikit_learn(dims: int) -> None:
    rng = np.random.default_rng(2)
    n, k = 600, 16
    spectrum = np.geomspace(30.0, 0.1, dims)
    x = (rng.standard_normal((n, dims)) * spectrum) @ np.linalg.qr(
        rng.standard_normal((dims, dims))
    )[0]
    mean, comps = pca_fit(x, k)
    ref = sk_decomposition.PCA(n_components=k, svd_solver="full").fit(x)
    np.testing.assert_allclose(mean, ref.mean_, atol=1e-12)
    xc = x - mean
    captured = np.sum((xc @ comps) ** 2) / np.sum((xc @ ref.components_.T) ** 2)
    assert captured == pytest.approx(1.0, abs=1e-3)  # explained variance of the optimum
    cos = np.abs(np.sum(comps * ref.components_.T, axis=0))  # leading axes agree up to sign
    assert cos[:8].min() > 0.999
