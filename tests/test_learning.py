"""End to end: the model learns on the digits world (a wiring bug leaves it at chance).

Slow (a real training run at reduced size); CI runs it. Chance for the 11-way AVE classification
(10 digits + background) is 1/11; the plain DCID baseline must reach 3x chance on the unseen
video->audio pair after one video-audio stage, on both the validation and the test sets.
"""

from __future__ import annotations

import pytest
import torch

from comet_model.config import preset
from comet_model.continual.pipeline import run_continual

pytestmark = pytest.mark.slow

CHANCE = 100.0 / 11


def test_plain_dcid_learns_cross_modal_classification(one_thread: None) -> None:
    cfg = preset("default").override({
        "comet": False, "method": "dcid", "seed": 0, "data.stages": ("video-audio",),
        "data.train_sequences": 1200, "train.epochs": 4, "eval.epochs": 10,
    })  # fmt: skip
    torch.manual_seed(0)
    metrics = run_continual(cfg).metrics
    for key in ("ave/video->audio/acc", "val/ave/video->audio/acc"):
        assert metrics[key] >= 3 * CHANCE, (key, metrics[key])
    # the retrieval mean averages R@1/5/10 both ways: chance (0.2 + 1 + 2) / 3 % on 500 items
    assert metrics["retrieval/video<->audio/mean"] >= 3 * (0.2 + 1 + 2) / 3
