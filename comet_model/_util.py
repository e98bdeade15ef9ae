"""Small helpers shared across the package: atomic file writes and buffers that resize on load."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

__all__ = [
    "ResizingBuffers",
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
]


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A hidden temporary path beside ``path`` to write (by any writer: h5py, pyarrow, open);
    renamed over ``path`` when the block ends normally, removed when it raises, so readers see
    the old file or the whole new one and an interrupted write leaves no partial file behind.
    Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Write a file through ``write(fh)`` atomically (:func:`atomic_path`), flushed to disk."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of ``text`` in UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


class ResizingBuffers(nn.Module):
    """A module whose own buffers take the saved shapes when a state dict is loaded.

    For state that grows during a run (the codebook gains K2 codes per stage, the PMR teacher
    follows it, EWC keeps one Fisher tensor per protected parameter), a fresh module must be able
    to load a later checkpoint: each own buffer whose saved shape differs is replaced by an empty
    tensor of the saved shape (same dtype and device as before) before the usual copy. With
    ``dynamic_buffers = True`` the module instead becomes the saved set: buffers the checkpoint
    lacks are dropped and missing ones are created (saved dtype, current device).
    """

    dynamic_buffers: bool = False

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        saved = {
            k[len(prefix) :]: v
            for k, v in state_dict.items()
            if k.startswith(prefix) and "." not in k[len(prefix) :] and torch.is_tensor(v)
        }
        if self.dynamic_buffers:
            device = next(iter(self._buffers.values())).device if self._buffers else None
            for key in [k for k in self._buffers if k not in saved]:
                del self._buffers[key]
        for key, value in saved.items():
            cur = self._buffers.get(key)
            if cur is None:
                if self.dynamic_buffers:
                    self._buffers[key] = torch.empty_like(value, device=device or value.device)
            elif cur.shape != value.shape:
                self._buffers[key] = cur.new_empty(value.shape)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
