"""Data structures shared by the digits world, bring-your-own features and the model.

Every data source (the committed digits-world bank, a user's stage plan with .npz/HDF5 files,
the synthetic generator used by unit tests) produces these structures, and the model, the
training loop, the pipeline and the evaluations consume only these.

Conventions:
- A modality is a free string ("video", "audio", "image", "text", "speech", ...).
- Features are float32 tensors ``[N, T, d_m]``, or row sources that read such rows from disk on
  indexing (:class:`comet_model.data.streaming.H5Rows`: ``x[index]`` gives float32 rows,
  ``x.take(index)`` a row view); all modalities of one ``Sequences`` share N and T, and row i
  of every modality is one paired item.
- ``labels`` are int64 ``[N, T]`` class ids per step (``-1`` where unknown) or bool
  ``[N, T, C]`` multi-hot steps (several events at once, AVVP); ``modality_labels`` override
  them per modality (AVVP annotates audio and visual events separately).
- ``masks`` are bool ``[N, T]`` (True = valid step); ``None`` means every step is valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

FeatureArray = Any  # a float32 Tensor [N, T, d] or a row source such as streaming.H5Rows
MAX_CLASSES = 1 << 16  # largest label space of a task (AVE 29, AVVP 26, ImageNet-21k 21843)


class DataError(ValueError):
    """Bad input data: the message names the file (or source) and the problem in one line."""


@dataclass(frozen=True)
class Sequences:
    """Aligned sequences of one or more modalities that share per-step labels."""

    features: Mapping[str, FeatureArray]  # modality -> float32 [N, T, d_m] (or a row source)
    labels: Tensor | None = None  # int64 [N, T] (-1 = unlabelled step) or bool [N, T, C]
    masks: Mapping[str, Tensor] | None = None  # modality -> bool [N, T]; None = all valid
    modality_labels: Mapping[str, Tensor] | None = None  # modality -> its own labels

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

    def labels_for(self, modality: str) -> Tensor | None:
        """The labels of ``modality``: its own if it has them, else the shared ``labels``."""
        if self.modality_labels is not None and modality in self.modality_labels:
            return self.modality_labels[modality]
        return self.labels

    @property
    def streamed(self) -> bool:
        """Whether some feature array is read from disk on demand."""
        return any(not isinstance(x, Tensor) for x in self.features.values())

    def subset(self, index: Tensor) -> Sequences:
        """Rows ``index`` (a 1-D long tensor) of every array (row views of streamed arrays)."""
        own = self.modality_labels
        return Sequences(
            features={m: _rows(x, index) for m, x in self.features.items()},
            labels=None if self.labels is None else self.labels[index],
            masks=None if self.masks is None else {m: k[index] for m, k in self.masks.items()},
            modality_labels=None if own is None else {m: y[index] for m, y in own.items()},
        )

    def select(self, modalities: tuple[str, ...] | list[str]) -> Sequences:
        """The same items restricted to ``modalities`` (order kept as given)."""
        missing = [m for m in modalities if m not in self.features]
        if missing:
            raise DataError(f"modalities {missing} not in this set (has {list(self.features)})")
        masks = own = None
        if self.masks is not None:
            masks = {m: self.masks[m] for m in modalities if m in self.masks} or None
        if self.modality_labels is not None:
            own = {m: self.modality_labels[m] for m in modalities if m in self.modality_labels}
        return Sequences({m: self.features[m] for m in modalities}, self.labels, masks, own or None)

    def check(self, source: str = "sequences") -> None:
        """Raise :class:`DataError` naming ``source`` if shapes, dtypes or values are bad
        (streamed arrays are scanned from disk in chunks)."""
        from .streaming import check_finite

        if not self.features:
            raise DataError(f"{source}: no modality arrays")
        n = t = None
        for m, x in self.features.items():
            if x.ndim != 3:
                raise DataError(f"{source}: '{m}' has {x.ndim} dims, expected 3 [N, T, d]")
            if isinstance(x, Tensor) and not torch.is_floating_point(x):
                raise DataError(f"{source}: '{m}' has dtype {x.dtype}, expected a float array")
            if x.shape[0] * x.shape[1] * x.shape[2] == 0:
                raise DataError(f"{source}: '{m}' is empty (shape {tuple(x.shape)})")
            check_finite(x, source, m)
            if n is None:
                n, t = x.shape[0], x.shape[1]
            elif x.shape[0] != n:
                raise DataError(f"{source}: '{m}' has N={x.shape[0]}, other modalities N={n}")
            elif x.shape[1] != t:
                raise DataError(f"{source}: '{m}' has T={x.shape[1]}, other modalities T={t}")
        own = [(f"labels of '{m}'", y) for m, y in (self.modality_labels or {}).items()]
        for name, y in [("labels", self.labels), *own]:
            if y is not None and (y.ndim not in (2, 3) or tuple(y.shape[:2]) != (n, t)):
                raise DataError(
                    f"{source}: {name} have shape {tuple(y.shape)}, expected ({n}, {t}) or "
                    f"({n}, {t}, C)"
                )
        for m, k in (self.masks or {}).items():
            if tuple(k.shape) != (n, t):
                raise DataError(
                    f"{source}: mask of '{m}' has shape {tuple(k.shape)}, expected ({n}, {t})"
                )


def _rows(x: FeatureArray, index: Tensor) -> FeatureArray:
    """Rows ``index`` of a tensor (a copy) or a row source (a view, nothing read)."""
    return x[index] if isinstance(x, Tensor) else x.take(index)


@dataclass(frozen=True)
class StageData:
    """One continual stage: paired training data of its modalities (and nothing else)."""

    name: str  # e.g. "video-text"
    modalities: tuple[str, ...]  # e.g. ("video", "text"); at least two
    train: Sequences
    val: Sequences  # held out from the training pools; used for any model choice, never test data
    mediator: str | None = None  # the bridge modality shared by all stages ("text")


@dataclass(frozen=True)
class TaskClasses:
    """The label space of one downstream task (AVE: 28 events + background; AVVP: 25 + 1)."""

    num_classes: int  # classes including background
    background_class: int | None = None  # class id of "no event"
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class DownstreamSets:
    """Evaluation sets. Each holds every modality the source provides, paired by labels.

    - ``ave_*``: one event (class) over a contiguous span, the other steps background.
    - ``avvp_*``: several events per sequence (per-step localisation; may be multi-hot).
    - ``retrieval``: test-pool items at a short T with hard negatives; item i of every
      modality is the match of item i of every other modality. Optional.
    - ``classes``: the label space of "ave" and "avvp" where it is not the benchmark's.
    - ``ave_avvp_shared``: (AVE class, AVVP class) pairs of the classes the two share, for
      AVE -> AVVP; ``None`` = one label space for both (every class shared).
    Training sets come from training pools, test sets only from test pools.
    """

    ave_train: Sequences
    ave_test: Sequences
    avvp_train: Sequences
    avvp_test: Sequences
    retrieval: Sequences | None = None
    classes: Mapping[str, TaskClasses] = field(default_factory=dict)
    ave_avvp_shared: tuple[tuple[int, int], ...] | None = None

    def names(self) -> tuple[str, ...]:
        """The names of the sets present, in field order."""
        sets = ("ave_train", "ave_test", "avvp_train", "avvp_test", "retrieval")
        return tuple(s for s in sets if getattr(self, s) is not None)


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
    meta: Mapping[str, str] = field(default_factory=dict)  # provenance (plan's [meta] table)
    streamed: bool = False  # feature arrays are read from disk in batches
