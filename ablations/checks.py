"""What the sweep driver checks before anything is written or started (before ``ray.init``).

A sweep that cannot run is refused in one line (:class:`SweepError`, exit status 2) with nothing
written under ``--storage``:

- the name is a plain folder name, so ``STORAGE/NAME`` is a folder directly inside the storage
  (``--name ../x`` or an absolute name could otherwise reach, and with ``--fresh`` delete,
  anything);
- the storage is a folder that exists and is writable, or can be created;
- every arm resolves to a valid configuration, and every stage plan an arm uses passes the
  checks of ``python -m comet_model.data check`` for that arm's stage selection and streaming
  mode, so a bad plan stops here, not in every trial;
- ``--fresh`` deletes only a sweep's own folder (one holding ``sweep.json`` or ``records/``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["SweepError", "check_arms", "check_fresh", "check_storage", "sweep_dir"]

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")
MAX_NAME = 128


class SweepError(RuntimeError):
    """A sweep that cannot start (one-line message; the CLI exits 2)."""


def sweep_dir(storage: Path, name: str) -> Path:
    """``storage / name``, resolved, for a plain ``name`` (no path separator, no ``..``, not
    absolute); SweepError otherwise."""
    if (
        not _PLAIN.fullmatch(name)
        or ".." in name
        or len(name) > MAX_NAME
        or Path(name).is_absolute()
    ):
        raise SweepError(
            f"--name {name!r}: must be a plain folder name of letters, digits and . _ + = - "
            f"(no path separator, no '..', at most {MAX_NAME} characters)"
        )
    root = Path(storage).resolve()
    exp_dir = root / name
    if exp_dir.parent != root:  # pragma: no cover - the pattern already excludes this
        raise SweepError(f"--name {name!r}: is not a folder directly inside {root}")
    return exp_dir


def check_storage(storage: Path) -> None:
    """SweepError unless ``storage`` is a writable folder or can be created (none is made)."""
    from comet_model._cli import UsageError, check_output_dir

    try:
        check_output_dir(storage, "--storage")
    except UsageError as exc:
        raise SweepError(str(exc)) from None


def check_fresh(exp_dir: Path) -> None:
    """SweepError unless ``exp_dir`` may be deleted by ``--fresh``: a real folder (not a link)
    holding a sweep (``sweep.json`` or ``records/``), or an empty one."""
    if exp_dir.is_symlink():
        raise SweepError(f"--fresh: {exp_dir} is a symbolic link; not deleting it")
    if not exp_dir.is_dir():
        raise SweepError(f"--fresh: {exp_dir} is a file, not a sweep folder; not deleting it")
    ours = (exp_dir / "sweep.json").is_file() or (exp_dir / "records").is_dir()
    if not ours and any(exp_dir.iterdir()):
        raise SweepError(
            f"--fresh: {exp_dir} holds no sweep (no sweep.json or records/); not deleting it"
        )


def _arm_config(preset_flat: Mapping[str, Any], overrides: Mapping[str, Any], seed: int):
    from ablations.keys import resolve_flat
    from comet_model.config import ExperimentConfig

    return ExperimentConfig.from_flat(resolve_flat(preset_flat, overrides, seed))


def check_arms(
    preset_flat: Mapping[str, Any],
    arms: Mapping[str, Mapping[str, Any]],
    base: Mapping[str, Any],
    seeds: Sequence[int],
) -> None:
    """Every arm's configuration is valid with every seed and every stage plan it uses passes
    ``check`` for its stage selection and streaming mode (each plan and selection checked
    once); SweepError naming the arm, the key or the file."""
    from comet_model.config import ConfigError
    from comet_model.data.plan import check_plan, plan_selection
    from comet_model.data.types import DataError

    try:
        for seed in seeds:
            _arm_config(preset_flat, base, seed)
    except ConfigError as exc:
        raise SweepError(str(exc)) from None
    checked: set[tuple[str, str, tuple[str, ...] | None]] = set()
    for arm, overrides in arms.items():
        where = f"arm {arm!r}: " if len(arms) > 1 else ""
        try:
            cfg = _arm_config(preset_flat, dict(base) | dict(overrides), seeds[0])
            data = cfg.data
            key = (data.plan_file, data.streaming, plan_selection(data.stages))
            if data.source == "plan" and key not in checked:
                check_plan(*key)
                checked.add(key)
        except KeyError as exc:
            raise SweepError(f"{where}{exc.args[0]}") from None
        except ConfigError as exc:
            raise SweepError(f"{where}{exc}") from None
        except DataError as exc:  # name the arm only when it chooses the data
            own = any(k.startswith("data.") for k in overrides)
            raise SweepError(f"{where if own else ''}{exc}") from None
