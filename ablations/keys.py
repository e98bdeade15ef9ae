"""Resolving a sweep arm into a full flat config, and the stable run key that names it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from search_spaces.axes import AXES

#: Flat config keys copied into every results row as grouping axes (results column -> config key).
AXIS_KEYS = {axis.column: axis.key for axis in AXES}


def resolve_flat(
    preset_flat: Mapping[str, object],
    overrides: Mapping[str, object],
    seed: int,
) -> dict[str, object]:
    """The preset's flat config with the arm's overrides and the seed applied (keys checked)."""
    unknown = [k for k in overrides if k not in preset_flat]
    if unknown:
        raise KeyError(f"unknown config key {unknown[0]!r}")
    flat = dict(preset_flat)
    flat.update(overrides)
    flat["seed"] = int(seed)
    return flat


def run_key(flat: Mapping[str, object]) -> str:
    """A stable 16-hex-digit hash of the resolved config (seed included)."""
    canonical = json.dumps(
        {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(flat.items())},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def axes_of(flat: Mapping[str, object], *, variant: str, preset: str) -> dict[str, object]:
    """The grouping axes of one run, for its results rows."""
    axes: dict[str, object] = {"variant": variant, "preset": preset}
    for column, key in AXIS_KEYS.items():
        value = flat.get(key)
        if isinstance(value, (tuple, list)):
            value = ",".join(map(str, value))
        axes[column] = value
    return axes
