"""Tiny bring-your-own stage plans for tests: any number of stages, each a modality plus text.

``write_plan(folder, stages=2)`` writes ``plan.toml``, one ``s<k>.npz`` per stage (modality
``MODALITIES[k]`` and the mediator ``t``) and ``down.npz`` (every modality, labels in [0, 5)),
used for all four AVE / AVVP sets. Seconds to run through the smoke preset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MODALITIES = ("v", "a", "i", "s", "p", "q")
N, T = 24, 4


def stage_names(stages: int) -> list[str]:
    return [f"{MODALITIES[k]}-t" for k in range(stages)]


def write_plan(folder: Path, stages: int = 2, *, downstream: bool = True) -> Path:
    """A valid plan of ``stages`` stages in ``folder``; returns the plan file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    blocks = []
    for k, name in enumerate(stage_names(stages)):
        m = MODALITIES[k]
        x = rng.standard_normal((N, T, 3)).astype(np.float32)
        np.savez(folder / f"s{k}.npz", **{m: x, "t": rng.standard_normal((N, T, 4)).astype("f4")})
        blocks.append(
            f'[[stages]]\nname = "{name}"\nmodalities = ["{m}", "t"]\ntrain = "s{k}.npz"\n'
        )
    down = {m: rng.standard_normal((N, T, 3)).astype(np.float32) for m in MODALITIES[:stages]}
    down["t"] = rng.standard_normal((N, T, 4)).astype(np.float32)
    down["labels"] = rng.integers(0, 5, size=(N, T))
    np.savez(folder / "down.npz", **down)
    text = "\n".join(blocks)
    if downstream:
        text += "\n[downstream]\n" + "".join(
            f'{k} = "down.npz"\n' for k in ("ave_train", "ave_test", "avvp_train", "avvp_test")
        )
    plan = folder / "plan.toml"
    plan.write_text(text)
    return plan


def replace_arrays(path: Path, **arrays: np.ndarray | None) -> None:
    """Rewrite the .npz ``path`` with ``arrays`` set (None: removed)."""
    with np.load(path) as f:
        held = {k: f[k] for k in f.files}
    for k, v in arrays.items():
        if v is None:
            held.pop(k, None)
        else:
            held[k] = v
    np.savez(path, **held)
