"""What every command line of the project shares (stdlib only): one-line errors and number types.

Used by ``python -m comet_model``, ``python -m comet_model.data``, ``ablations/run.py`` and
``ablations/bench.py``. A bad flag or value prints ``error: <problem> (see --help)`` on one line
and exits with status 2: no usage dump, no traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

__all__ = [
    "OneLineParser",
    "fail",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
]


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
