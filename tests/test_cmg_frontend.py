"""The CMG video front end as an option of the video modality (``model.video_frontend=cmg``)."""

from __future__ import annotations

import math

import pytest
import torch

from ablations.benchmarks.cmg import avt_step_times
from comet_model.config import ConfigError, ExperimentConfig, preset
from comet_model.continual.train import Trainer, loss_weights, train_step
from comet_model.nn.encoders import CMGDecoder, CMGSemanticEncoder, CMGSpecific
from comet_model.nn.losses import weighted_total
from comet_model.nn.model import CometModel

G, C, W = 5, 16, 8  # map side, map channels, specific width (tiny)
DIMS = {"video": G * G * C, "audio": 7}


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one torch thread (conftest.one_thread)."""


def _cfg(**flat: object) -> ExperimentConfig:
    base = {"model.dim": 16, "model.heads": 2, "model.ffn": 32, "model.spec_dim": 8,
            "model.club_hidden": 16, "codebook.size": 16, "model.dropout": 0.0,
            "comet": False, "model.video_frontend": "cmg", "model.cmg_grid": G,
            "model.cmg_channels": C, "model.cmg_width": W}  # fmt: skip
    return preset("smoke").override({**base, **flat})


def _batch(seed: int = 0, n: int = 6, t: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "video": torch.rand(n, t, DIMS["video"], generator=g),
        "audio": torch.randn(n, t, DIMS["audio"], generator=g),
    }


def _model(cfg: ExperimentConfig, dtype: torch.dtype = torch.float32) -> CometModel:
    torch.manual_seed(0)
    return CometModel.from_config(cfg, DIMS).to(dtype)


def test_video_gets_the_cmg_modules_and_other_modalities_do_not() -> None:
    model = _model(_cfg())
    enc = model.encoders
    assert isinstance(enc.semantic["video"], CMGSemanticEncoder)
    assert isinstance(enc.specific["video"], CMGSpecific)
    assert isinstance(enc.decoder["video"], CMGDecoder)
    assert not isinstance(enc.semantic["audio"], CMGSemanticEncoder)
    # CLUB of video sees the pooled projection (map channels wide), audio the linear features
    assert model.club["video"].y_dim == C
    assert model.club["audio"].y_dim == 8
    linear = _model(_cfg(**{"model.video_frontend": "linear"}))
    assert not isinstance(linear.encoders.semantic["video"], CMGSemanticEncoder)


def test_wrong_feature_width_is_a_one_line_error() -> None:
    model = CometModel.from_config(_cfg(), {"audio": 7})
    with pytest.raises(ValueError, match=r"'video'.*5x5x16.*400 features, got 99"):
        model.add_modality_("video", 99)


def test_invalid_grid_rejected_by_config() -> None:
    with pytest.raises(ConfigError, match="model.cmg_grid"):
        _cfg(**{"model.cmg_grid": 3})


def test_every_parameter_gets_a_gradient_and_club_none() -> None:
    model = _model(_cfg())
    feats = model.features(_batch())
    assert feats.decoder_inputs["video"].shape == (6, 3, G - 4, G - 4, W)
    assert feats.specific["video"].shape == (6, 3, C)
    out = model.compute_losses(feats, generator=torch.Generator().manual_seed(0))
    weighted_total(out.losses, {k: 1.0 for k in out.losses}).backward()
    for name, p in model.named_parameters():
        if name.startswith("club."):
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert {n.split(".")[2] for n, _ in model.named_parameters() if ".video." in n} >= {"video"}


def test_reconstruction_compares_the_flattened_map() -> None:
    model = _model(_cfg()).eval()
    batch = _batch()
    feats = model.features(batch)
    recon = model.encoders.decode("video", feats.codebook.quantized["video"],
                                  feats.decoder_inputs["video"])  # fmt: skip
    assert recon.shape == batch["video"].shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_training_steps_lower_the_loss_in_both_dtypes(dtype: torch.dtype) -> None:
    cfg = _cfg(**{"club.inner_steps": 2, "train.lr": 3e-3})
    model = _model(cfg, dtype)
    trainer = Trainer(model, cfg)
    weights = loss_weights(cfg, model)
    batch = {m: x.to(dtype) for m, x in _batch().items()}
    g = torch.Generator().manual_seed(0)
    model.train()
    first = last = None
    for _ in range(30):
        losses, _, _ = train_step(model, trainer, batch, None, cfg, generator=g, weights=weights)
        first = losses["recon"] if first is None else first
        last = losses["recon"]
    assert last is not None and first is not None and last < 0.7 * first
    assert all(p.dtype == dtype for p in model.parameters())
    assert model.codebook.embed.dtype == dtype


def test_float64_and_float32_steps_agree() -> None:
    cfg = _cfg()
    out = {}
    for dtype in (torch.float32, torch.float64):
        model = _model(cfg, dtype)
        batch = {m: x.to(dtype) for m, x in _batch().items()}
        out[dtype] = model(batch, generator=torch.Generator().manual_seed(0)).losses
    for k, v in out[torch.float64].items():
        assert torch.allclose(out[torch.float32][k].double(), v, rtol=1e-4, atol=1e-5), k


def test_avt_step_bench_runs_at_tiny_sizes() -> None:
    times = avt_step_times(batch=2, steps=2, repeats=2, warmup=0,
                           overrides={"model.cmg_width": 8})  # fmt: skip
    assert len(times) == 2 and all(t > 0 for t in times)


PIPE = {
    "model.dim": 16, "model.heads": 2, "model.ffn": 32, "model.spec_dim": 8,
    "model.club_hidden": 16, "codebook.size": 16, "train.epochs": 1, "train.batch_size": 16,
    "data.source": "synthetic", "data.stages": ("video-text", "audio-text"),
    "data.train_sequences": 48, "data.val_sequences": 16, "data.steps": 4, "eval.epochs": 1,
    "replay.k2": 4, "ewc.fisher_batches": 1, "model.video_frontend": "cmg",
    "model.cmg_grid": G, "model.cmg_channels": C, "model.cmg_width": W,
}  # fmt: skip


def _bench(video_dim: int):
    from comet_model.data import synthetic_benchmark

    return synthetic_benchmark(
        stages=("video-text", "audio-text"), steps=4, train_sequences=48, val_sequences=16,
        dim={"video": video_dim, "text": 8, "audio": 8},
    )  # fmt: skip


def test_continual_pipeline_with_cmg_video_and_resume(tmp_path) -> None:
    from comet_model.continual.pipeline import run_continual

    cfg = preset("smoke").override(PIPE)
    result = run_continual(cfg, benchmark=_bench(G * G * C), out_dir=tmp_path)
    assert [r.name for r in result.stages] == ["video-text", "audio-text"]
    assert isinstance(result.model.encoders.specific["video"], CMGSpecific)
    assert all(math.isfinite(v) for v in result.stages[-1].summary.values()
               if isinstance(v, float))  # fmt: skip
    again = run_continual(cfg, benchmark=_bench(G * G * C), out_dir=tmp_path)  # from checkpoint
    assert isinstance(again.model.encoders.decoder["video"], CMGDecoder)
    assert again.stages[-1].metrics == result.stages[-1].metrics


def test_pipeline_rejects_a_video_width_that_is_not_a_map() -> None:
    from comet_model.continual.pipeline import run_continual

    cfg = preset("smoke").override(PIPE)
    with pytest.raises(ConfigError, match=r"model.video_frontend.*'video'.*400.*has 12"):
        run_continual(cfg, benchmark=_bench(12))
