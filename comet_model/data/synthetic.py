"""A tiny synthetic benchmark with learnable cross-modal structure, for unit tests of the model.

Each class c (the last one is background) has a latent prototype ``p_c`` [latent]. A step of
class c in modality m is ``(p_c + s * e) @ W_m + n * e'``: the prototype plus instance noise,
through the modality's own random linear map ``W_m`` [latent, dim], plus feature noise. Labels
are runs of 1-4 steps as in the digits world (adjacent runs differ, neighbouring steps are
different instances), so every modality carries the class and neighbouring steps are
correlated. Built in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .digits import find_mediator
from .labels import ave_labels, avvp_labels, retrieval_labels, run_labels
from .types import Benchmark, DataError, DownstreamSets, Sequences, StageData


def _modalities(stages: Sequence[str]) -> list[list[str]]:
    out = []
    for s in stages:
        mods = s.split("-")
        if len(mods) < 2 or len(set(mods)) != len(mods) or not all(mods):
            raise DataError(f"synthetic: stage '{s}' needs at least two distinct modalities")
        out.append(mods)
    return out


def synthetic_benchmark(
    *,
    stages: Sequence[str] = ("a-t", "b-t", "c-t"),
    steps: int = 6,
    train_sequences: int = 64,
    val_sequences: int = 16,
    dim: int | Mapping[str, int] = 8,
    num_classes: int = 4,
    latent: int = 8,
    instance_noise: float = 0.3,
    feature_noise: float = 0.1,
    background_fraction: float = 0.25,
    downstream_sequences: int = 32,
    retrieval_steps: int = 4,
    retrieval_items: int = 16,
    seed: int = 0,
) -> Benchmark:
    """A small :class:`Benchmark` (``num_classes`` includes the background, the last class).

    ``dim`` is one feature dim for every modality or a modality -> dim mapping. Downstream sets
    hold every modality of the stages; ``downstream_sequences`` items for each AVE/AVVP set.
    """
    if num_classes < 2:
        raise DataError("synthetic: num_classes must be >= 2 (events plus background)")
    if isinstance(stages, str):
        stages = (stages,)
    stage_mods = _modalities(stages)
    mods = list(dict.fromkeys(m for s in stage_mods for m in s))
    dims = {m: dim[m] if isinstance(dim, Mapping) else dim for m in mods}
    rng = np.random.default_rng(seed)
    background = num_classes - 1
    events = tuple(range(background))
    protos = rng.standard_normal((num_classes, latent))  # (C, latent)
    maps = {m: rng.standard_normal((latent, dims[m])) / np.sqrt(latent) for m in mods}

    def featurise(labels: np.ndarray, modalities: Sequence[str]) -> Sequences:
        feats = {}
        for m in modalities:
            z = protos[labels] + instance_noise * rng.standard_normal((*labels.shape, latent))
            x = z @ maps[m] + feature_noise * rng.standard_normal((*labels.shape, dims[m]))
            feats[m] = torch.from_numpy(x.astype(np.float32))  # (N, T, d_m)
        return Sequences(features=feats, labels=torch.from_numpy(labels))

    def runs(n: int, t: int = steps) -> np.ndarray:
        return run_labels(n, t, events, background, background_fraction, rng)

    stage_data = []
    mediator = find_mediator(stage_mods)
    for name, sm in zip(stages, stage_mods, strict=True):
        stage_data.append(
            StageData(
                name=name,
                modalities=tuple(sm),
                train=featurise(runs(train_sequences), sm),
                val=featurise(runs(val_sequences), sm),
                mediator=mediator,
            )
        )
    n = downstream_sequences
    down = DownstreamSets(
        ave_train=featurise(ave_labels(n, steps, background, rng, events), mods),
        ave_test=featurise(ave_labels(n, steps, background, rng, events), mods),
        avvp_train=featurise(avvp_labels(n, steps, background, 0.3, rng, events), mods),
        avvp_test=featurise(avvp_labels(n, steps, background, 0.3, rng, events), mods),
        retrieval=featurise(
            retrieval_labels(retrieval_items, retrieval_steps, background, 0.25, rng, events),
            mods,
        ),
    )
    return Benchmark(
        stages=tuple(stage_data),
        downstream=down,
        feature_dims=dims,
        num_classes=num_classes,
        background_class=background,
        class_names=tuple([f"class{c}" for c in events] + ["background"]),
    )
