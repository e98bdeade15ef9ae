"""Configuration tree: flat round trip, strict keys and types, validation, presets."""

from __future__ import annotations

import dataclasses
import re

import pytest

from comet_model.config import (
    PRESETS,
    ConfigError,
    ExperimentConfig,
    parse_override,
    preset,
    stage_modalities,
)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_flat_round_trip(name: str) -> None:
    cfg = preset(name)
    flat = cfg.to_flat()
    assert all(isinstance(k, str) for k in flat)
    assert ExperimentConfig.from_flat(flat) == cfg
    # lists (what JSON / Parquet give back) are accepted for tuples
    as_lists = {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}
    assert ExperimentConfig.from_flat(as_lists) == cfg


def test_presets_differ_where_documented() -> None:
    smoke, default, paper = preset("smoke"), preset("default"), preset("paper")
    assert (default.model.dim, default.model.layers, default.model.heads) == (64, 1, 4)
    assert (default.model.ffn, default.codebook.size, default.train.epochs) == (128, 128, 7)
    assert default.model.dropout == 0.0 and paper.model.dropout == pytest.approx(0.1)
    # the paper preset follows the original DCID where the paper is silent (dcid_reference 1.12)
    assert (paper.train.epochs, paper.train.lr, paper.train.batch_size) == (6, 4e-4, 80)
    assert (paper.loss.club, paper.club.inner_steps, paper.codebook.dead_code_threshold) == (
        1.0, 5, 300)  # fmt: skip
    assert paper.codebook.pairing == "attention"  # the paper's Eq. 3 (the code pairs by index)
    assert not paper.model.norm_first and not paper.model.positional
    assert not any(p.ewc.mediator for p in (smoke, default, paper))  # the paper's EWC scope
    assert (default.train.batch_size, default.data.train_sequences) == (80, 4000)
    assert default.loss.club == pytest.approx(0.1)
    assert (paper.model.dim, paper.codebook.size, paper.model.ffn) == (256, 400, 1024)
    assert (paper.model.layers, paper.moe.num_experts, paper.data.steps) == (2, 6, 10)
    assert smoke.model.dim == 32 and smoke.codebook.size == 32 and smoke.train.epochs == 1
    assert smoke.data.train_sequences < 1000


def test_frozen() -> None:
    cfg = ExperimentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.dim = 3  # type: ignore[misc]


def test_unknown_key_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^model\.dimm: unknown"):
        ExperimentConfig.from_flat({"model.dimm": 3})
    with pytest.raises(ConfigError, match="unknown"):
        ExperimentConfig.from_flat({"nosection.x": 1})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("model.dim", "64", "int"),
        ("model.dim", 64.0, "int"),
        ("model.dim", True, "int"),  # bools are not ints
        ("train.lr", False, "float"),
        ("comet", 1, "bool"),
        ("method", "vq", "'dcid'"),
        ("data.stages", "video-text", "tuple"),
        ("replay.tau", "far", "float | None"),
    ],
)
def test_wrong_type_rejected(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_flat({key: value})
    msg = str(info.value)
    assert msg.startswith(key) and expected in msg and "\n" not in msg


def test_ints_accepted_for_floats_and_none_for_optional() -> None:
    cfg = ExperimentConfig.from_flat({"train.lr": 1, "replay.tau": None, "ewc.lam": 5})
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0
    assert cfg.replay.tau is None and isinstance(cfg.ewc.lam, float)
    assert ExperimentConfig.from_flat({"replay.tau": 2}).replay.tau == 2.0


@pytest.mark.parametrize(
    "flat",
    [
        {"model.dim": 0},
        {"model.heads": 3},  # 64 not divisible by 3
        {"codebook.decay": 1.0},
        {"train.batch_size": 1},
        {"loss.club": -0.1},
        {"moe.top_k": 7},
        {"data.stages": []},
        {"data.stages": ["video"]},
        {"data.stages": ["video-video"]},
        {"data.source": "plan"},  # needs data.plan_file
    ],
)
def test_bad_values_rejected(flat: dict) -> None:
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_flat(flat)
    key = str(info.value).split(":")[0]
    assert key in ExperimentConfig().to_flat() and "\n" not in str(info.value)
    assert key.split(".")[0] == next(iter(flat)).split(".")[0]  # names the offending section


def test_replace_validates_and_override_keeps_base() -> None:
    cfg = preset("smoke")
    with pytest.raises(ConfigError, match="model.dim"):
        dataclasses.replace(cfg.model, dim=-1)
    over = cfg.override({"codebook.size": 64})
    assert over.codebook.size == 64 and over.model == cfg.model and cfg.codebook.size == 32


def test_parse_override_uses_field_types() -> None:
    assert parse_override("model.dim=48") == ("model.dim", 48)
    assert parse_override("train.lr=1e-3") == ("train.lr", 1e-3)
    assert parse_override("comet=true") == ("comet", True)
    assert parse_override("replay.tau=none") == ("replay.tau", None)
    assert parse_override("data.stages=video-audio,audio-text") == (
        "data.stages",
        ("video-audio", "audio-text"),
    )
    for bad in ("model.dim=abc", "comet=maybe", "model.dimm=3", "model.dim"):
        with pytest.raises(ConfigError):
            parse_override(bad)


def test_stage_modalities() -> None:
    assert stage_modalities("video-text") == ("video", "text")
    with pytest.raises(ConfigError):
        stage_modalities("video-")


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="preset"):
        preset("huge")


def test_every_number_key_refuses_non_finite_and_out_of_type_range_values() -> None:
    """One check for every float key (finite, within float32) and int key (within int64)."""
    flat = ExperimentConfig().to_flat()
    floats = [k for k, v in flat.items() if isinstance(v, float)] + ["replay.tau"]
    ints = [k for k, v in flat.items() if isinstance(v, int) and not isinstance(v, bool)]
    assert "ewc.lam" in floats and "model.dim" in ints
    for key in floats:
        for bad in (float("inf"), float("-inf"), float("nan"), 1e39, -1e300):
            with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: "):
                ExperimentConfig.from_flat({key: bad})
    for key in ints:
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: .*int64"):
            ExperimentConfig.from_flat({key: 2**63})
