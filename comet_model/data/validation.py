"""Validation downstream sets for benchmarks that bring none (selection protocol, spec section 10).

Every choice (a default, a best grid value, a search) is made on validation metrics, so every
run is evaluated on validation sets as well as on the test sets. The digits world builds proper
ones from held-out training-pool instances. A benchmark without them (a bring-your-own plan, the
synthetic one) gets them carved from its downstream TRAINING sets only, never from test:

- ``ave``: a seeded ``fraction`` of ``ave_train`` rows becomes the validation ``ave_test``; the
  rest trains the validation heads;
- ``avvp``: likewise from ``avvp_train``;
- ``retrieval``: the held-out ``avvp_train`` rows (row i of every modality is one paired item).

The test evaluation is unchanged: its heads still train on the whole training sets.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .types import Benchmark, DownstreamSets, Sequences

__all__ = ["VAL_FRACTION", "carve_validation", "with_validation"]

VAL_FRACTION = 0.2


def _split(seqs: Sequences, fraction: float, generator: torch.Generator) -> tuple[Sequences, ...]:
    n = seqs.num_items
    held = min(n - 1, max(1, round(fraction * n)))
    perm = torch.randperm(n, generator=generator)
    return seqs.subset(perm[held:].sort().values), seqs.subset(perm[:held].sort().values)


def carve_validation(
    sets: DownstreamSets, seed: int, fraction: float = VAL_FRACTION
) -> DownstreamSets | None:
    """Validation sets from ``sets``' training sets (see the module docstring); None when a
    training set has fewer than two items."""
    if min(sets.ave_train.num_items, sets.avvp_train.num_items) < 2:
        return None
    g = torch.Generator().manual_seed(seed + 7)
    ave_fit, ave_held = _split(sets.ave_train, fraction, g)
    avvp_fit, avvp_held = _split(sets.avvp_train, fraction, g)
    return DownstreamSets(ave_fit, ave_held, avvp_fit, avvp_held, retrieval=avvp_held,
                          classes=sets.classes, ave_avvp_shared=sets.ave_avvp_shared)  # fmt: skip


def with_validation(benchmark: Benchmark, seed: int) -> Benchmark:
    """``benchmark`` with validation sets (carved when it has none and has downstream sets)."""
    if benchmark.validation is not None or benchmark.downstream is None:
        return benchmark
    return replace(benchmark, validation=carve_validation(benchmark.downstream, seed))
