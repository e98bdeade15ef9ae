"""Text: number words and background words in several surface forms -> hashed character trigrams."""

from __future__ import annotations

import zlib

import numpy as np

from .common import (
    BACKGROUND_WORDS,
    DIGIT_WORDS,
    ORIGIN_BACKGROUND,
    ORIGIN_DIGITS,
    SURFACE_FORMS,
    BuildConfig,
    modality_arrays,
)


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


def build_text(cfg: BuildConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    strings, labels, split = text_items(cfg, rng)
    feats = hashed_trigrams(strings, cfg.text_dim)
    n_words = sum(len(w) for w in DIGIT_WORDS)
    origin = np.r_[
        np.full(n_words * len(SURFACE_FORMS), ORIGIN_DIGITS),
        np.full(len(BACKGROUND_WORDS) * len(SURFACE_FORMS), ORIGIN_BACKGROUND),
    ]
    word_id = np.arange(len(strings)) // len(SURFACE_FORMS)
    arrays = modality_arrays("text", feats, labels, split, origin, np.arange(len(strings)), word_id)
    arrays["text/strings"] = np.asarray(strings)
    return arrays
