"""Photos and pixels: sign-language photos (HOG + PCA) for video, MNIST pixels (+ PCA) for image,
Fashion-MNIST items as the background class of both.

HOG and PCA are hand-written rather than taken from scikit-image / scikit-learn so that the bank
is bit-identical across machines and needs no extra dependency at build time. Our HOG also
interpolates between orientation bins (scikit-image's does not) and our PCA fixes component signs
independently of the LAPACK build. ``tests/test_data_build_reference.py`` checks HOG with the
interpolation switched off against ``skimage.feature.hog`` (within 1e-4) and both PCA paths
against ``sklearn.decomposition.PCA`` (explained variance within 1e-3 of the optimum).
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
from .readers import read_idx, read_photos, resize_grey


def hog(
    images: np.ndarray,
    cell: int,
    bins: int,
    block: int,
    batch: int = 256,
    *,
    interpolate: bool = True,
) -> np.ndarray:
    """Histogram of oriented gradients (Dalal & Triggs 2005), vectorised over images.

    Unsigned orientations, linear interpolation between neighbouring bins (``interpolate``; off:
    each gradient counts in its one bin, as ``skimage.feature.hog`` does), ``cell`` x ``cell``
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
        if not interpolate:  # the whole magnitude to the bin holding the orientation
            lo_i = np.floor(ang + 0.5).astype(np.int64) % bins
            frac = np.zeros_like(frac)
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


def fashion_items(raw: Path) -> np.ndarray:
    base = raw / "background" / "fashion_mnist"
    images = read_idx(base / "t10k-images-idx3-ubyte.gz")
    if images.ndim != 3:
        raise DataError(f"{base / 't10k-images-idx3-ubyte.gz'}: expected [n, 28, 28] images")
    return images


def build_video(
    raw: Path,
    cfg: BuildConfig,
    rng: np.random.Generator,
    fashion: np.ndarray,
    fashion_idx: np.ndarray,
) -> dict[str, np.ndarray]:
    base = require(raw / "sign_digits" / "Dataset")
    paths, labels, numbers = [], [], []
    for d in range(10):
        folder = require(base / str(d))
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
    return modality_arrays(
        "video",
        feats,
        np.r_[labels, np.full(len(bg), BACKGROUND_CLASS)],
        all_split,
        np.r_[np.full(len(paths), ORIGIN_DIGITS), np.full(len(bg), ORIGIN_BACKGROUND)],
        np.r_[np.arange(len(paths)), fashion_idx],
        np.r_[participant, np.full(len(bg), -1)],
    )


def build_image(
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
    return modality_arrays(
        "image",
        feats,
        np.r_[labels.astype(np.int64), np.full(len(bg), BACKGROUND_CLASS)],
        all_split,
        np.r_[np.full(len(images), ORIGIN_DIGITS), np.full(len(bg), ORIGIN_BACKGROUND)],
        np.r_[np.arange(len(images)), fashion_idx],
        np.full(len(images) + len(bg), -1),
    )
