"""In-memory data structures shared by the digits world, bring-your-own features and the model.

Every data source (the committed digits-world bank, a user's stage plan with .npz/HDF5 files,
the synthetic generator used by unit tests) produces these structures, and the model, the
training loop, the pipeline and the evaluations consume only these.

Conventions:
- A modality is a free string ("video", "audio", "image", "text", "speech", ...).
- Features are float32 tensors ``[N, T, d_m]``; all modalities of one ``Sequences`` share N
  and T, and row i of every modality is one paired item (same per-step labels).
- ``labels`` are int64 ``[N, T]`` class ids per step, ``-1`` where unknown.
- ``masks`` are bool ``[N, T]`` (True = valid step); ``None`` means every step is valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor


class DataError(ValueError):
    """Bad input data: the message names the file (or source) and the problem in one line."""


@dataclass(frozen=True)
class Sequences:
    """Aligned sequences of one or more modalities that share per-step labels."""

    features: Mapping[str, Tensor]  # modality -> float32 [N, T, d_m]
    labels: Tensor | None = None  # int64 [N, T]; -1 = unlabelled step
    masks: Mapping[str, Tensor] | None = None  # modality -> bool [N, T]; None = all valid

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.features)

    @property
    def num_items(self) -> int:
        return int(next(iter(self.features.values())).shape[0])

    @property
    def num_steps(self) -> int:
        return int(next(iter(self.features.values())).shape[1])

    def __len__(self) -> int:
        return self.num_items

    def dim(self, modality: str) -> int:
        return int(self.features[modality].shape[-1])

    def mask(self, modality: str) -> Tensor | None:
        if self.masks is None:
            return None
        return self.masks.get(modality)

    def subset(self, index: Tensor) -> Sequences:
        """Rows ``index`` (a 1-D long tensor) of every array."""
        return Sequences(
            features={m: x[index] for m, x in self.features.items()},
            labels=None if self.labels is None else self.labels[index],
            masks=None if self.masks is None else {m: k[index] for m, k in self.masks.items()},
        )

    def select(self, modalities: tuple[str, ...] | list[str]) -> Sequences:
        """The same items restricted to ``modalities`` (order kept as given)."""
        missing = [m for m in modalities if m not in self.features]
        if missing:
            raise DataError(f"modalities {missing} not in this set (has {list(self.features)})")
        masks = None
        if self.masks is not None:
            masks = {m: self.masks[m] for m in modalities if m in self.masks} or None
        return Sequences({m: self.features[m] for m in modalities}, self.labels, masks)

    def check(self, source: str = "sequences") -> None:
        """Raise :class:`DataError` naming ``source`` if shapes, dtypes or values are bad."""
        if not self.features:
            raise DataError(f"{source}: no modality arrays")
        n = t = None
        for m, x in self.features.items():
            if x.ndim != 3:
                raise DataError(f"{source}: '{m}' has {x.ndim} dims, expected 3 [N, T, d]")
            if not torch.is_floating_point(x):
                raise DataError(f"{source}: '{m}' has dtype {x.dtype}, expected a float array")
            if x.numel() == 0:
                raise DataError(f"{source}: '{m}' is empty (shape {tuple(x.shape)})")
            if not bool(torch.isfinite(x).all()):
                raise DataError(f"{source}: '{m}' contains NaN or Inf")
            if n is None:
                n, t = x.shape[0], x.shape[1]
            elif x.shape[0] != n:
                raise DataError(f"{source}: '{m}' has N={x.shape[0]}, other modalities N={n}")
            elif x.shape[1] != t:
                raise DataError(f"{source}: '{m}' has T={x.shape[1]}, other modalities T={t}")
        if self.labels is not None and tuple(self.labels.shape) != (n, t):
            raise DataError(
                f"{source}: labels have shape {tuple(self.labels.shape)}, expected ({n}, {t})"
            )
        for m, k in (self.masks or {}).items():
            if tuple(k.shape) != (n, t):
                raise DataError(
                    f"{source}: mask of '{m}' has shape {tuple(k.shape)}, expected ({n}, {t})"
                )


@dataclass(frozen=True)
class StageData:
    """One continual stage: paired training data of its modalities (and nothing else)."""

    name: str  # e.g. "video-text"
    modalities: tuple[str, ...]  # e.g. ("video", "text"); at least two
    train: Sequences
    val: Sequences  # held out from the training pools; used for any model choice, never test data
    mediator: str | None = None  # the bridge modality shared by all stages ("text")


@dataclass(frozen=True)
class DownstreamSets:
    """Evaluation sets. Each holds every modality the source provides, paired by labels.

    - ``ave_*``: one event (class) over a contiguous span, the other steps background.
    - ``avvp_*``: several events per sequence (per-step localisation).
    - ``retrieval``: test-pool items at a short T with hard negatives; item i of every
      modality is the match of item i of every other modality.
    Training sets come from training pools, test sets only from test pools.
    """

    ave_train: Sequences
    ave_test: Sequences
    avvp_train: Sequences
    avvp_test: Sequences
    retrieval: Sequences


@dataclass(frozen=True)
class Benchmark:
    """A stage plan with its data, the downstream sets and the label space."""

    stages: tuple[StageData, ...]
    downstream: DownstreamSets | None
    feature_dims: Mapping[str, int]  # modality -> d_m
    num_classes: int  # classes including background
    background_class: int | None = None  # class id of "no event" (digits world: 10)
    class_names: tuple[str, ...] = field(default_factory=tuple)
    # validation downstream sets, never built from test data (model selection); None: carved
    # from the downstream training sets when needed (comet_model.data.validation)
    validation: DownstreamSets | None = None
