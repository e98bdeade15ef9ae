"""What every command line of the project shares (stdlib only): one-line errors and number types.

Used by ``python -m comet_model``, ``python -m comet_model.data``, ``ablations/run.py`` and
``ablations/bench.py``. A bad flag or value prints ``error: <problem> (see --help)`` on one line
and exits with status 2: no usage dump, no traceback. :func:`check_output_dir` and
:func:`check_output_file` refuse an output that cannot be written before anything runs, and
create nothing (``reports/build.py``, which may not import this package, has its own copy).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

__all__ = [
    "OneLineParser",
    "UsageError",
    "check_output_dir",
    "check_output_file",
    "fail",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
]


class UsageError(ValueError):
    """A command-line value that cannot work (one line naming the flag and the problem)."""


def fail(message: str, status: int = 2) -> NoReturn:
    """Print ``error: <first line of message>`` on stderr and exit with ``status``."""
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"error: {first}", file=sys.stderr)
    raise SystemExit(status)


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line naming the problem, exit status 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        fail(f"{message} (see --help)")


def _number(text: str, kind: type, what: str) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(_number(text, int, "an integer"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = int(_number(text, int, "an integer"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A number > 0 (NaN rejected)."""
    value = _number(text, float, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A number >= 0 (NaN rejected)."""
    value = _number(text, float, "a number")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _writable(folder: Path) -> str | None:
    """Why no file can be created in the existing folder ``folder`` (None: one can). Tries an
    unnamed temporary file, so read-only file systems and ACLs count, and nothing is left."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (or become) a folder to write in; None if it can."""
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            return f"{probe} is a broken symbolic link"
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return "is a file, not a folder" if probe == path else f"{probe} is a file, not a folder"
    problem = _writable(probe)
    if problem is not None:
        inside = "" if probe == path else f" (in {probe})"
        return f"cannot write there{inside}: {problem}"
    return None


def check_output_dir(path: str | os.PathLike[str], flag: str) -> None:
    """Raise :class:`UsageError` ``"<flag> <path>: <problem>"`` unless ``path`` is a folder that
    exists and is writable or can be created (its nearest existing ancestor is a writable
    folder). Nothing is created."""
    problem = _folder_problem(Path(path))
    if problem is not None:
        raise UsageError(f"{flag} {path}: {problem}")


def check_output_file(path: str | os.PathLike[str], flag: str) -> None:
    """:func:`check_output_dir` for the folder of an output file, which must not be a folder."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder, expected a file name")
    problem = _folder_problem(path.absolute().parent)
    if problem is not None:
        raise UsageError(f"{flag} {path}: {problem}")
