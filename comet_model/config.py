"""Experiment configuration: one frozen, typed dataclass tree with flat dotted keys.

``ExperimentConfig`` is the root; each section (``model``, ``codebook``, ``moe``, ...) is a frozen
dataclass. ``to_flat()`` gives ``{"model.dim": 64, ...}`` for Ray and Parquet, ``from_flat()``
builds a config back (missing keys keep their defaults; unknown keys and wrong types raise
:class:`ConfigError` naming the key). Variants are made with ``dataclasses.replace`` or
``cfg.override({"codebook.size": 256})``; every construction validates types and values.

Type rules of the flat form: ints are accepted for floats, lists for tuples, ``None`` only for
optional fields; bools are never accepted as ints or floats (nor ints as bools).

``comet`` defaults to True (every preset runs the paper's COMET): the CMoE-Adapter
(``moe.enabled``), EWC on the adapter (``ewc.enabled``) and pseudo-modality replay with the
expanding codebook (``replay.enabled``, ``replay.k2``) in the continual pipeline.
``comet=False`` is the plain continual baseline (DCID, CMCM or TURN by ``method``): no adapter,
no EWC, no replay and a fixed codebook size. Our own extensions are switches that are off in
every preset: ``ewc.mediator`` (EWC also on the mediator's encoder), ``moe.linear_fallback`` (a
linear adapter when the MoE is off) and ``loss.add_cpc`` (a Cross-CPC control for TURN and
CMCM). ``codebook.protect_old`` (old codes exempt from the dead-code reset in later stages)
follows the spec: on with COMET.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Literal

from comet_model.config_schema import ConfigError, Section, parse_text

# Upper bounds of sizes, far beyond any real run: a typo (1e15 codes, a 10**9-wide layer) is
# refused up front instead of failing on an allocation mid-run
MAX_WIDTH = 1 << 16  # widths, channels, experts, layers
MAX_COUNT = 1 << 24  # codes, batches, sequences, steps, epochs, thresholds
SEED_RANGE = 2**32  # seeds are in [0, 2**32): NumPy's generators refuse negative seeds

__all__ = [
    "ClubConfig",
    "CodebookConfig",
    "ConfigError",
    "DataConfig",
    "EWCConfig",
    "EvalConfig",
    "ExperimentConfig",
    "LossConfig",
    "MoEConfig",
    "ModelConfig",
    "PRESETS",
    "ReplayConfig",
    "TrainConfig",
    "parse_override",
    "preset",
    "stage_modalities",
]


@dataclass(frozen=True)
class ModelConfig(Section):
    """Encoders, decoders, CLUB and Cross-CPC sizes (spec section 2)."""

    _name: ClassVar[str] = "model"
    dim: int = 64  # D: shared semantic / code dimension
    layers: int = 1  # Transformer encoder layers of each semantic encoder (0 = linear only)
    heads: int = 4  # attention heads (dim must be divisible by heads)
    ffn: int = 128  # Transformer feed-forward width
    # Transformer dropout (the original and the paper preset: 0.1). 0 in the default preset,
    # chosen on the validation split with train.epochs 8 -> 7 for speed: objective after stage
    # 3, 3 seeds, full / overlap plans: 48.5 / 37.6 with (0.1, 8) vs 47.6 / 38.6 with (0, 7)
    dropout: float = 0.0
    norm_first: bool = True  # pre-norm Transformer (original: post-norm; pre-norm aligns faster)
    positional: bool = False  # sinusoidal positional encoding (original: none)
    spec_dim: int = 64  # width of the modality-specific encoder
    club_hidden: int = 64  # hidden width of the CLUB estimator MLPs
    cpc_layers: int = 1  # LSTM layers of each Cross-CPC context network (original: 2)
    contrastive_temperature: float = 0.1  # TURN InfoNCE temperature
    # CMG-compatible video front end (dcid_reference 1.3-1.5): "cmg" gives the modalities in
    # cmg_modalities DCID's convolutional modules on VGG19 pool5 maps, fed flattened as
    # [N, T, cmg_grid * cmg_grid * cmg_channels] (channels fastest, as CMG's released features)
    video_frontend: Literal["linear", "cmg"] = "linear"
    cmg_modalities: tuple[str, ...] = ("video",)
    cmg_grid: int = 7  # side of the feature map (VGG19 pool5: 7)
    cmg_channels: int = 512  # channels of the feature map (VGG19 pool5: 512)
    cmg_width: int = 2048  # channels of the convolutional specific encoder (original: 2048)

    def _validate(self) -> None:
        for name in ("dim", "heads", "ffn", "spec_dim", "club_hidden", "cpc_layers"):
            self._require(0 < getattr(self, name) <= MAX_WIDTH, name, f"in [1, {MAX_WIDTH}]")
        self._require(5 <= self.cmg_grid <= 64, "cmg_grid",
                      "in [5, 64] (two unpadded 3x3 convolutions)")  # fmt: skip
        for name in ("cmg_channels", "cmg_width"):
            self._require(0 < getattr(self, name) <= MAX_WIDTH, name, f"in [1, {MAX_WIDTH}]")
        self._require(0 <= self.layers <= MAX_WIDTH, "layers", f"in [0, {MAX_WIDTH}]")
        self._require(self.dim % self.heads == 0, "heads", f"a divisor of model.dim={self.dim}")
        self._require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)")
        self._require(self.contrastive_temperature > 0, "contrastive_temperature", "> 0")


@dataclass(frozen=True)
class CodebookConfig(Section):
    """Shared EMA codebook with MM-EMA, commitment, CMCM and dead-code reset (spec section 2)."""

    _name: ClassVar[str] = "codebook"
    size: int = 128  # K: number of codes (stage 1)
    decay: float = 0.99  # EMA decay gamma
    eps: float = 1e-5  # Laplace smoothing of cluster sizes
    commitment: float = 0.25  # beta of the commitment loss
    expire: bool = True  # dead-code reset on/off
    dead_code_threshold: int = 100  # steps unused before a code is re-seeded
    pairing: Literal["index", "attention"] = "index"  # partner vector for MM-EMA / cross terms
    init: Literal["data", "uniform"] = "data"  # seed codes from data tokens or U(-1/K, 1/K)
    # stages >= 2: codes of earlier stages exempt from the dead-code reset (spec section 5, not
    # the paper): "with_comet" = on exactly when COMET is on; "on"/"off" for the control arms
    protect_old: Literal["with_comet", "on", "off"] = "with_comet"
    cmcm_temperature: float = 1.0  # temperature of the CMCM code distributions

    def _validate(self) -> None:
        self._require(2 <= self.size <= MAX_COUNT, "size", f"in [2, {MAX_COUNT}]")
        self._require(0.0 < self.decay < 1.0, "decay", "in (0, 1)")
        self._require(self.eps > 0, "eps", "> 0")
        self._require(self.commitment >= 0, "commitment", ">= 0")
        self._require(1 <= self.dead_code_threshold <= MAX_COUNT, "dead_code_threshold",
                      f"in [1, {MAX_COUNT}]")  # fmt: skip
        self._require(self.cmcm_temperature > 0, "cmcm_temperature", "> 0")


@dataclass(frozen=True)
class MoEConfig(Section):
    """CMoE-Adapter (paper Eq. 4-5, spec section 3); used only when ``comet`` is on."""

    _name: ClassVar[str] = "moe"
    enabled: bool = True  # switch "MoE": off -> no adapter (or a linear one, linear_fallback)
    num_experts: int = 6  # O
    specific_layers: bool = True  # switch "SL": modality-specific expert layers
    combine: Literal["parallel", "sequential"] = "parallel"  # how common + specific combine
    residual: bool = True  # x + MoE(x)
    top_k: int = 0  # 0 = dense mixture, else top-k gating
    # ours, not the paper's: with the MoE off, a plain residual linear adapter instead of none
    linear_fallback: bool = False

    def _validate(self) -> None:
        self._require(1 <= self.num_experts <= MAX_WIDTH, "num_experts", f"in [1, {MAX_WIDTH}]")
        self._require(0 <= self.top_k <= self.num_experts, "top_k", "in [0, moe.num_experts]")


@dataclass(frozen=True)
class EWCConfig(Section):
    """Elastic weight consolidation of the adapter (paper Eq. 6, spec section 4)."""

    _name: ClassVar[str] = "ewc"
    enabled: bool = True  # switch "EWC" (only with comet)
    lam: float = 100.0  # lambda: weight of the penalty
    adaptive: bool = True  # normalise each layer's Fisher to mean 1
    gamma: float = 1.0  # online accumulation F <- gamma F + F_new
    fisher_batches: int = 10  # N_f batches for the Fisher estimate
    # Extension, not in the paper (whose EWC covers the adapter only): EWC also on the
    # mediator's semantic encoder, against its drift in later stages (spec section 9). Off in
    # every preset (COMET means the paper's method); arms that turn it on say "+mEWC".
    mediator: bool = False

    def _validate(self) -> None:
        self._require(self.lam >= 0, "lam", ">= 0")
        self._require(self.gamma >= 0, "gamma", ">= 0")
        self._require(1 <= self.fisher_batches <= MAX_COUNT, "fisher_batches",
                      f"in [1, {MAX_COUNT}]")  # fmt: skip


@dataclass(frozen=True)
class ReplayConfig(Section):
    """Pseudo-modality replay and the expanding codebook (spec section 5)."""

    _name: ClassVar[str] = "replay"
    enabled: bool = True  # switch "PM": pseudo stream in Cross-CPC (only with comet)
    k2: int = 32  # codes appended per stage >= 2
    w_k2: float = 0.5  # weight of pseudo steps whose code comes from the new block
    beta_pmr: float = 1.0  # weight of the whole PMR term
    tau: float | None = None  # optional distance threshold on V1 hits

    def _validate(self) -> None:
        self._require(0 <= self.k2 <= MAX_COUNT, "k2", f"in [0, {MAX_COUNT}]")
        self._require(self.w_k2 >= 0, "w_k2", ">= 0")
        self._require(self.beta_pmr >= 0, "beta_pmr", ">= 0")
        self._require(self.tau is None or self.tau > 0, "tau", "None or > 0")


@dataclass(frozen=True)
class LossConfig(Section):
    """Weights of the named losses (a weight of 0 switches a loss off, saving its compute)."""

    _name: ClassVar[str] = "loss"
    recon: float = 1.0  # reconstruction MSE
    commit: float = 1.0  # commitment with cross terms
    cmcm: float = 1.0  # cross-modal code matching
    cpc: float = 1.0  # Cross-CPC InfoNCE
    club: float = 0.1  # CLUB MI upper bound (spec section 9: 1.0 breaks alignment)
    gate: float = 0.1  # MoE load balance (switch "gate" = 0)
    contrastive: float = 1.0  # TURN global InfoNCE
    # control arm, not a method of the paper: add DCID's Cross-CPC loss (weight loss.cpc) to
    # TURN or CMCM, which "+COMET" brings in for its PMR term
    add_cpc: bool = False

    def _validate(self) -> None:
        for f in fields(self):
            if f.name != "add_cpc":
                self._require(getattr(self, f.name) >= 0, f.name, ">= 0")


@dataclass(frozen=True)
class ClubConfig(Section):
    """Alternating optimisation of the CLUB estimators (dcid_reference 1.10)."""

    _name: ClassVar[str] = "club"
    inner_steps: int = 1  # estimator Adam steps per training step (original: 5)
    lr: float = 1e-3  # estimator learning rate
    clamp: bool = True  # bound clipped at 0 per modality (original: unclipped)

    def _validate(self) -> None:
        self._require(0 <= self.inner_steps <= MAX_WIDTH, "inner_steps", f"in [0, {MAX_WIDTH}]")
        self._require(self.lr > 0, "lr", "> 0")


@dataclass(frozen=True)
class TrainConfig(Section):
    """Main optimisation loop (Adam, gradient clipping)."""

    _name: ClassVar[str] = "train"
    epochs: int = 7  # epochs per stage (see model.dropout for the choice)
    batch_size: int = 80  # sequences per step
    lr: float = 2e-3  # Adam learning rate (original 4e-4; tuned on validation, digits world)
    clip: float = 0.5  # global gradient-norm clip (0 = off)
    threads: int = 0  # torch threads set by the CLI/pipeline (0 = leave torch's default)
    # autocast of the training step (comet_model.nn.precision): the codebook, the loss
    # reductions and the EMA statistics stay in float32; fp16 adds a gradient scaler
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    frozen: tuple[str, ...] = ()  # parameter groups frozen in stages >= 2 (e.g. "semantic.text")

    def _validate(self) -> None:
        self._require(1 <= self.epochs <= MAX_COUNT, "epochs", f"in [1, {MAX_COUNT}]")
        self._require(2 <= self.batch_size <= MAX_COUNT, "batch_size", f"in [2, {MAX_COUNT}]")
        self._require(self.lr > 0, "lr", "> 0")
        self._require(self.clip >= 0, "clip", ">= 0")
        self._require(0 <= self.threads <= MAX_WIDTH, "threads", f"in [0, {MAX_WIDTH}]")


def stage_modalities(stage: str) -> tuple[str, ...]:
    """Modalities of a stage name: ``"video-text"`` -> ``("video", "text")``."""
    parts = tuple(stage.split("-"))
    if len(parts) < 2 or any(not p for p in parts) or len(set(parts)) != len(parts):
        raise ConfigError(f"data.stages: bad stage {stage!r}, expected e.g. 'video-text'")
    return parts


@dataclass(frozen=True)
class DataConfig(Section):
    """Where the stages come from and in which order (spec sections 7-8)."""

    _name: ClassVar[str] = "data"
    source: Literal["digits", "plan", "synthetic"] = "digits"  # benchmark builder
    plan_file: str = ""  # stage plan file (source "plan")
    # stage order; with a plan: the plan's stages to train, in this order (a selection or a
    # reordering; left at this default: every stage of the plan, in the plan's order)
    stages: tuple[str, ...] = ("video-text", "audio-text", "image-text")
    class_plan: Literal["full", "overlap"] = "full"  # digits world class plan
    steps: int = 10  # T
    train_sequences: int = 4000  # training sequences per stage
    val_sequences: int = 400  # validation sequences per stage
    seed: int = 0  # seed of the data builder (fixed across model seeds)
    # plan files: read HDF5 features from disk in batches ("on"), load them ("off"), or stream
    # when they would take over half the available memory ("auto"); same results either way
    streaming: Literal["auto", "on", "off"] = "auto"

    def _validate(self) -> None:
        self._require(len(self.stages) >= 1, "stages", "a non-empty list")
        if self.source == "plan":  # a plan's stage names are free (checked against the plan)
            self._require(all(self.stages), "stages", "a list of stage names")
            self._require(len(set(self.stages)) == len(self.stages), "stages", "distinct")
        else:
            for s in self.stages:
                stage_modalities(s)
        self._require(self.source != "plan" or bool(self.plan_file), "plan_file", "set")
        self._require(self.source == "plan" or not self.plan_file, "plan_file",
                      f"empty unless data.source is 'plan' (it is {self.source!r})")  # fmt: skip
        self._require(2 <= self.steps <= MAX_WIDTH, "steps", f"in [2, {MAX_WIDTH}]")
        for name, low in (("train_sequences", 2), ("val_sequences", 1)):
            self._require(low <= getattr(self, name) <= MAX_COUNT, name, f"in [{low}, {MAX_COUNT}]")
        self._require(0 <= self.seed < SEED_RANGE, "seed", "in [0, 2**32)")


@dataclass(frozen=True)
class EvalConfig(Section):
    """Downstream evaluation: heads trained on frozen quantised codes (comet_model.eval)."""

    _name: ClassVar[str] = "eval"
    epochs: int = 20  # head training epochs
    lr: float = 3e-3  # head learning rate (Adam)
    batch_size: int = 128  # head batch size
    # downstream splits evaluated after every stage: "val" (sets from held-out training-pool
    # instances: what every choice is made on) and "test" (what tables report); the metrics of
    # "val" carry the key prefix "val/"
    splits: tuple[str, ...] = ("val", "test")

    def _validate(self) -> None:
        self._require(1 <= self.epochs <= MAX_COUNT, "epochs", f"in [1, {MAX_COUNT}]")
        self._require(self.lr > 0, "lr", "> 0")
        self._require(1 <= self.batch_size <= MAX_COUNT, "batch_size", f"in [1, {MAX_COUNT}]")
        ok = bool(self.splits) and set(self.splits) <= {"val", "test"}
        self._require(ok and len(set(self.splits)) == len(self.splits), "splits",
                      "distinct entries of 'val', 'test'")  # fmt: skip


@dataclass(frozen=True)
class ExperimentConfig(Section):
    """Root of the configuration tree."""

    seed: int = 0  # model seed (init, shuffling, sampling)
    method: Literal["dcid", "cmcm", "turn"] = "dcid"  # alignment losses (spec section 6)
    comet: bool = True  # CMoE-Adapter + EWC + PMR (False: the plain continual baseline)
    model: ModelConfig = field(default_factory=ModelConfig)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    ewc: EWCConfig = field(default_factory=EWCConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    club: ClubConfig = field(default_factory=ClubConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def _validate(self) -> None:
        self._require(0 <= self.seed < SEED_RANGE, "seed", "in [0, 2**32)")

    def to_flat(self) -> dict[str, Any]:
        """Flat dotted-key dict (tuples stay tuples; ``from_flat(to_flat())`` round-trips)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Section):
                for g in fields(value):  # type: ignore[arg-type]
                    out[f"{f.name}.{g.name}"] = getattr(value, g.name)
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_flat(
        cls, flat: Mapping[str, Any], base: ExperimentConfig | None = None
    ) -> ExperimentConfig:
        """Build from dotted keys; missing keys come from ``base`` (default: the defaults)."""
        base = cls() if base is None else base
        known = base.to_flat()
        unknown = sorted(k for k in flat if k not in known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown config key")
        sections: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for key, value in flat.items():
            if "." in key:
                sec, name = key.split(".", 1)
                sections.setdefault(sec, {})[name] = value
            else:
                top[key] = value
        for sec, values in sections.items():
            top[sec] = replace(getattr(base, sec), **values)
        return replace(base, **top)

    def override(self, flat: Mapping[str, Any]) -> ExperimentConfig:
        """A copy with the dotted keys of ``flat`` replaced (validated)."""
        return type(self).from_flat(flat, base=self)


def parse_override(text: str, cfg: ExperimentConfig | None = None) -> tuple[str, Any]:
    """Parse a CLI ``key=value`` into a typed pair using the field type of ``key``."""
    if "=" not in text:
        raise ConfigError(f"{text}: expected key=value")
    key, raw = (s.strip() for s in text.split("=", 1))
    flat = (cfg or ExperimentConfig()).to_flat()
    if key not in flat:
        raise ConfigError(f"{key}: unknown config key")
    sec, _, name = key.rpartition(".")
    owner = type(getattr(cfg or ExperimentConfig(), sec)) if sec else ExperimentConfig
    tp = typing.get_type_hints(owner)[name]
    return key, parse_text(key, raw, tp)


def _smoke() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(dim=32, heads=2, ffn=64, spec_dim=32, club_hidden=32),
        codebook=CodebookConfig(size=32, dead_code_threshold=20),
        replay=ReplayConfig(k2=8),
        train=TrainConfig(epochs=1, batch_size=40),
        data=DataConfig(train_sequences=320, val_sequences=80),
        eval=EvalConfig(epochs=2),
    )


def _paper() -> ExperimentConfig:
    """The paper's COMET at the original DCID's sizes and schedule where the paper is silent
    (dcid_reference 1.1-1.12): every remaining difference, and why, is in the README table
    "Differences from the paper and the original code"."""
    return ExperimentConfig(
        model=ModelConfig(
            dim=256,
            layers=2,
            heads=4,
            ffn=1024,
            spec_dim=256,
            club_hidden=128,
            cpc_layers=2,
            norm_first=False,  # post-norm, as the original
            dropout=0.1,
        ),
        # MM-EMA partner by cross-attention: the paper's Eq. 3 (the released code pairs by index)
        codebook=CodebookConfig(
            size=400, dead_code_threshold=300, init="uniform", pairing="attention"
        ),
        moe=MoEConfig(num_experts=6),  # paper section 4.7
        replay=ReplayConfig(k2=100),  # not given in the paper
        loss=LossConfig(club=1.0),  # the original's weight 1 for the CLUB bound
        club=ClubConfig(inner_steps=5),  # the original's 5 estimator steps per step
        train=TrainConfig(lr=4e-4, epochs=6),  # Adam 4e-4, 6 epochs (the original's pretraining)
    )


PRESETS: dict[str, typing.Callable[[], ExperimentConfig]] = {
    "smoke": _smoke,  # seconds; every metric at chance: plumbing only (spec section 9)
    "default": ExperimentConfig,  # the digits world: D=64, 1 layer, 128 codes, 7 epochs
    "paper": _paper,  # the paper's COMET at the original DCID's sizes and schedule
}


def preset(name: str) -> ExperimentConfig:
    """A named preset configuration (``"smoke"``, ``"default"`` or ``"paper"``)."""
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown {name!r}, expected one of {sorted(PRESETS)}")
    return PRESETS[name]()
