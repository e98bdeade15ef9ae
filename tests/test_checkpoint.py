"""Checkpoints: save -> load -> continue equals an uninterrupted run; atomic, weights-only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from comet_model.config import ExperimentConfig, preset
from comet_model.continual import checkpoint
from comet_model.continual.stage import prepare_stage
from comet_model.continual.train import Trainer, train_stage
from comet_model.data import synthetic_benchmark
from comet_model.nn.model import CometModel

TINY = {
    "model.dim": 16, "model.heads": 2, "model.ffn": 32, "model.spec_dim": 8,
    "model.club_hidden": 16, "codebook.size": 16, "codebook.dead_code_threshold": 3,
    "train.epochs": 2, "train.batch_size": 16, "model.dropout": 0.1,
}  # fmt: skip


def _cfg() -> ExperimentConfig:
    return preset("smoke").override(TINY)


def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    cfg = _cfg()
    stage = synthetic_benchmark(seed=0).stages[0]

    torch.manual_seed(cfg.seed)
    full = CometModel.from_config(cfg)
    full_rows: list[dict] = []
    gen = torch.Generator().manual_seed(cfg.seed)
    train_stage(full, prepare_stage(full, stage, cfg, generator=gen), cfg, generator=gen,
                on_metrics=full_rows.append)  # fmt: skip

    torch.manual_seed(cfg.seed)
    first = CometModel.from_config(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    path = tmp_path / "ckpt" / "epoch1.pt"

    def save(epoch: int, trainer: Trainer) -> None:
        state = checkpoint.snapshot(first, cfg, trainer=trainer, generator=gen, epoch=epoch + 1)
        checkpoint.save(path, state)

    inputs = prepare_stage(first, stage, cfg, generator=gen)
    train_stage(first, inputs, cfg, generator=gen, stop_epoch=1, on_epoch_end=save)
    torch.manual_seed(12345)  # scramble the global RNG: the checkpoint must restore it

    state = checkpoint.load(path)
    resumed = checkpoint.restore_model(state)
    gen2 = torch.Generator()
    checkpoint.restore_rng(state["rng"], gen2)
    rows: list[dict] = []
    cfg2 = ExperimentConfig.from_flat(state["config"])
    train_stage(resumed, prepare_stage(resumed, stage, cfg2, generator=gen2), cfg2, generator=gen2,
                start_epoch=state["epoch"], optimizer_state=state["trainer"],
                on_metrics=rows.append)  # fmt: skip

    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows] == [
        {k: v for k, v in full_rows[1].items() if k not in drop}
    ]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert [p.name for p in tmp_path.joinpath("ckpt").iterdir()] == ["epoch1.pt"]  # no temp


def test_grown_codebook_and_pseudo_stream_round_trip(tmp_path: Path) -> None:
    cfg = _cfg()
    torch.manual_seed(0)
    model = CometModel.from_config(cfg, {"video": 5, "text": 3})
    model.add_modality_("audio", 4)
    model.add_pseudo_stream_()
    model.codebook.append_codes_(torch.randn(6, 16))
    checkpoint.save(tmp_path / "c.pt", checkpoint.snapshot(model, cfg, stage=2))
    state = checkpoint.load(tmp_path / "c.pt")
    fresh = checkpoint.restore_model(state)
    assert fresh.modalities == ("video", "text", "audio") and fresh.codebook_size == 22
    assert int(fresh.codebook.reset_start) == 16 and state["stage"] == 2
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_load_rejects_foreign_files(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a COMET checkpoint"):
        checkpoint.load(tmp_path / "other.pt")
