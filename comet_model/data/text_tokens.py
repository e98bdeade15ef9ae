"""Token vectors for CMG's class prompts: a local Hugging Face model, or a built-in stand-in.

CMG/DCID feed text as 10 BERT-base token vectors of a class-level prompt (dcid_reference 2.3),
computed with the ``bert-embedding`` package, which no longer installs. Two ways here:

- :func:`model_tokens`: the last hidden layer of a local Hugging Face BERT-style model folder
  (``transformers`` is imported only then; nothing is downloaded), special tokens dropped;
- :func:`hashed_tokens`: the built-in stand-in, no model at all. Each word token (lower-cased
  runs of letters and digits) becomes the signed sum of its hashed character 3-, 4- and
  5-grams (of ``<word>``) in ``dim`` dimensions, L2-normalised (fastText-style subwords with
  the hashing trick; hashes are BLAKE2b, stable across runs and machines). It carries word
  identity and spelling, not meaning, so it is recorded as a stand-in wherever it is used.

Both give ``[P, steps, dim]`` float32 vectors of the first ``steps`` tokens and a ``[P, steps]``
mask (padding, zeros, is masked out instead of fed as zeros as CMG did).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .types import DataError

__all__ = ["STAND_IN", "hashed_tokens", "model_tokens", "words"]

STAND_IN = (
    "built-in stand-in, not a language model: per word token, a signed sum of hashed character "
    "3-5-grams, L2-normalised ({dim} dims); padding masked"
)
_NGRAMS = (3, 4, 5)


def words(prompt: str) -> list[str]:
    """Lower-cased word tokens (runs of letters and digits)."""
    return re.findall(r"[a-z0-9]+", prompt.lower())


def _hashed(word: str, dim: int) -> np.ndarray:
    vec = np.zeros(dim, dtype=np.float64)
    padded = f"<{word}>"
    for n in _NGRAMS:
        for i in range(max(1, len(padded) - n + 1)):
            digest = hashlib.blake2b(padded[i : i + n].encode(), digest_size=8).digest()
            h = int.from_bytes(digest, "little")
            vec[h % dim] += 1.0 if (h >> 63) & 1 else -1.0
    norm = np.linalg.norm(vec)
    return vec / norm if norm > 0 else vec


def hashed_tokens(
    prompts: Sequence[str], *, steps: int = 10, dim: int = 768
) -> tuple[np.ndarray, np.ndarray]:
    """The built-in stand-in: ``[P, steps, dim]`` token vectors and the ``[P, steps]`` mask."""
    feats = np.zeros((len(prompts), steps, dim), dtype=np.float32)
    mask = np.zeros((len(prompts), steps), dtype=bool)
    for p, prompt in enumerate(prompts):
        for t, word in enumerate(words(prompt)[:steps]):
            feats[p, t] = _hashed(word, dim)
            mask[p, t] = True
    return feats, mask


def model_tokens(
    prompts: Sequence[str], folder: str | Path, *, steps: int = 10
) -> tuple[np.ndarray, np.ndarray, str]:
    """Last-layer token vectors of the local Hugging Face model in ``folder`` (special tokens
    dropped), the mask, and a one-line description of the model."""
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        raise DataError(
            "--text-model needs the 'transformers' package, which is not installed "
            "(pip install transformers, or leave out --text-model for the built-in stand-in)"
        ) from None
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: --text-model must be a local model folder")
    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    except (OSError, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"{folder}: not a loadable Hugging Face model ({reason})") from None
    enc = tok(
        list(prompts),
        padding=True,
        truncation=True,
        return_tensors="pt",
        return_special_tokens_mask=True,
    )
    special = enc.pop("special_tokens_mask").bool()
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state.float().numpy()  # (P, L, d)
    keep = (~special & enc["attention_mask"].bool()).numpy()
    feats = np.zeros((len(prompts), steps, hidden.shape[-1]), dtype=np.float32)
    mask = np.zeros((len(prompts), steps), dtype=bool)
    for p in range(len(prompts)):
        rows = hidden[p][keep[p]][:steps]
        feats[p, : len(rows)] = rows
        mask[p, : len(rows)] = True
    kind = getattr(model.config, "model_type", "unknown")
    return feats, mask, f"token vectors of the local Hugging Face model '{folder.name}' ({kind})"
