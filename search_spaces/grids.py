"""Named sweep grids: each is a list of arms, an arm a labelled set of config overrides.

A grid arm overrides the preset's config (dotted keys of ``ExperimentConfig.to_flat()``); seeds
are crossed with the arms by the harness and recorded as replicates. "COMET" is the paper's
method everywhere: our extensions and the control arms appear as extra rows whose labels name
them. Every arm carries a statement of what it changes (``Arm.doc``) in a small grammar that
``tests/test_grids.py`` checks against the arm's resolved config:

- ``Against: <label>.`` the reference row in the same grid;
- ``Off: <components>.`` / ``On: <components>.`` switched against that row (or, without a
  reference, the stated state); the components are ``COMET``, ``MoE``, ``gate loss``, ``SL``
  (specific layers), ``EWC``, ``mEWC`` (EWC on the mediator, ours), ``linear adapter`` (ours),
  ``PM`` (pseudo-modality replay), ``expanding codebook``, ``old-code protection`` (spec), and
  ``Cross-CPC`` (the Cross-CPC loss among the modalities);
- ``Method: <dcid|cmcm|turn>.``; ``Set: <key>=<value>, ...`` for the axis grids (against the
  preset's full COMET).

The keys are checked against the config's flat keys before anything runs (``check_keys``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from search_spaces.axes import by_column

Arms = dict[str, dict[str, object]]

FULL: dict[str, object] = {"comet": True, "method": "dcid"}
#: Everything "+COMET" switches on against its baseline (the paper's COMET, spec sections 3-5).
COMET_PARTS = "COMET, MoE, gate loss, SL, EWC, PM, expanding codebook, old-code protection"


@dataclass(frozen=True)
class Arm:
    """One row of a grid: its label (records, CLI), table title, overrides and statement."""

    label: str
    overrides: dict[str, object]
    doc: str  # what the arm changes, in the grammar of the module docstring
    title: str = ""  # the row label of tables (default: the label)
    extra: bool = False  # ours or a control, not a row of the paper: shown as an extra row

    @property
    def row(self) -> str:
        """The row label of tables."""
        return self.title or self.label


def _axis_arms(column: str, values: Iterable[object]) -> list[Arm]:
    ax = by_column()[column]
    return [Arm(ax.arm(v), FULL | {ax.key: v}, f"Set: {ax.key}={v}.") for v in values]


def experts() -> list[Arm]:
    """Expert count O of the CMoE-Adapter (paper Fig. 2)."""
    return _axis_arms("num_experts", (1, 2, 4, 6, 8, 10))


def ablations() -> list[Arm]:
    """Paper Table 6: full COMET, each component removed, the DCID baseline; plus our extension
    (EWC on the mediator), our variant of -MoE and the old-code protection control."""
    off_moe = {"moe.enabled": False, "loss.gate": 0.0, "moe.specific_layers": False}
    return [
        Arm(
            "full",
            dict(FULL),
            f"The paper's COMET. On: {COMET_PARTS}. Off: mEWC, linear adapter.",
            "COMET (full)",
        ),  # fmt: skip
        Arm("-PM", FULL | {"replay.enabled": False}, "Against: full. Off: PM."),
        Arm(
            "-MoE",
            FULL | off_moe | {"ewc.enabled": False},
            "Against: full. Off: MoE, gate loss, EWC, SL.",
        ),  # fmt: skip
        Arm("-gate", FULL | {"loss.gate": 0.0}, "Against: full. Off: gate loss."),
        Arm("-EWC", FULL | {"ewc.enabled": False}, "Against: full. Off: EWC."),
        Arm("-SL", FULL | {"moe.specific_layers": False}, "Against: full. Off: SL."),
        Arm("DCID", {"comet": False, "method": "dcid"}, f"Against: full. Off: {COMET_PARTS}."),
        Arm(
            "-MoE+linear",
            FULL | off_moe | {"moe.linear_fallback": True},
            "Against: full. Off: MoE, gate loss, SL. On: linear adapter.",
            "-MoE, linear adapter with EWC (ours)",
            extra=True,
        ),  # fmt: skip
        Arm(
            "-protect",
            FULL | {"codebook.protect_old": "off"},
            "Against: full. Off: old-code protection.",
            "-old-code protection (spec)",
            extra=True,
        ),  # fmt: skip
        Arm(
            "COMET+mEWC",
            FULL | {"ewc.mediator": True},
            "Against: full. On: mEWC.",
            "COMET + EWC on the mediator (ours)",
            extra=True,
        ),  # fmt: skip
    ]


def ewc() -> list[Arm]:
    """EWC strength lambda (paper Eq. 6), Fisher normalised per layer to mean 1."""
    return _axis_arms("ewc_lam", (0.0, 1.0, 10.0, 100.0, 1000.0))


def k2() -> list[Arm]:
    """Number of new codes K2 appended per stage (paper section 3.3)."""
    return _axis_arms("k2", (0, 16, 32, 64, 128))


def pmr() -> list[Arm]:
    """PMR weights: w_K2 (weight of steps whose pseudo code is new) x beta_pmr (whole term)."""
    w_ax, b_ax = by_column()["w_k2"], by_column()["beta_pmr"]
    return [
        Arm(
            f"{w_ax.arm(w)},{b_ax.arm(b)}",
            FULL | {w_ax.key: w, b_ax.key: b},
            f"Set: {w_ax.key}={w}, {b_ax.key}={b}.",
        )  # fmt: skip
        for w in (0.1, 0.5, 1.0)
        for b in (0.1, 0.5, 1.0)
    ]


def methods() -> list[Arm]:
    """Paper Table 1: TURN, CMCM and DCID, each without and with COMET; plus the controls for
    what "+COMET" brings besides its named parts (the Cross-CPC module TURN and CMCM lack, the
    old-code protection) and our extension."""
    arms = []
    for method, name in (("turn", "TURN"), ("cmcm", "CMCM")):
        base = {"method": method, "comet": False}
        arms += [
            Arm(name, base, f"Method: {method}. Off: COMET, Cross-CPC."),
            Arm(
                f"{name}+CPC",
                base | {"loss.add_cpc": True},
                f"Against: {name}. On: Cross-CPC.",
                f"{name} + Cross-CPC (control)",
                extra=True,
            ),  # fmt: skip
            Arm(f"{name}+COMET", base | {"comet": True}, f"Against: {name}. On: {COMET_PARTS}."),
        ]
    return arms + headline(protect_control=True)


def headline(*, protect_control: bool = False) -> list[Arm]:
    """COMET against DCID (the README's headline), with our extension as an extra row (and,
    in the methods grid, the old-code protection control)."""
    dcid = {"method": "dcid", "comet": False}
    arms = [Arm("DCID", dcid, "Method: dcid. Off: COMET. On: Cross-CPC.")]
    if protect_control:
        arms.append(Arm("DCID+protect", dcid | {"codebook.protect_old": "on"},
                        "Against: DCID. On: old-code protection.",
                        "DCID + old-code protection (control)", extra=True))  # fmt: skip
    return arms + [
        Arm("DCID+COMET", dcid | {"comet": True}, f"Against: DCID. On: {COMET_PARTS}."),
        Arm(
            "DCID+COMET+mEWC",
            dcid | {"comet": True, "ewc.mediator": True},
            "Against: DCID+COMET. On: mEWC.",
            "DCID+COMET + EWC on the mediator (ours)",
            extra=True,
        ),  # fmt: skip
    ]


ORDERS: dict[str, tuple[str, ...]] = {
    "VT-AT-IT": ("video-text", "audio-text", "image-text"),
    "AT-VT-IT": ("audio-text", "video-text", "image-text"),
    "IT-VT-AT": ("image-text", "video-text", "audio-text"),
    "VT-IT-AT": ("video-text", "image-text", "audio-text"),
}


def order() -> list[Arm]:
    """Stage orders (the paper's main order first)."""
    return [Arm(label, FULL | {"data.stages": stages}, f"Set: data.stages={','.join(stages)}.")
            for label, stages in ORDERS.items()]  # fmt: skip


def smoke() -> list[Arm]:
    """Two arms for tests and CI (use with the smoke preset)."""
    return _axis_arms("num_experts", (1, 2))


GRIDS: dict[str, Callable[[], list[Arm]]] = {
    "experts": experts,
    "ablations": ablations,
    "ewc": ewc,
    "k2": k2,
    "pmr": pmr,
    "methods": methods,
    "headline": headline,
    "order": order,
    "smoke": smoke,
}


def grid_arms(name: str) -> list[Arm]:
    """The arms of grid ``name`` in table order; raises ``KeyError`` with the known names."""
    if name not in GRIDS:
        raise KeyError(f"unknown grid {name!r}; known grids: {', '.join(GRIDS)}")
    return GRIDS[name]()


def get_grid(name: str) -> Arms:
    """The arms of grid ``name`` as ``{label: overrides}``."""
    return {arm.label: dict(arm.overrides) for arm in grid_arms(name)}


def arm_titles() -> dict[str, str]:
    """Table row label of every arm label of every grid (the reports' row names)."""
    return {arm.label: arm.row for grid in GRIDS.values() for arm in grid()}


def check_keys(arms: Mapping[str, Mapping[str, object]], known: Iterable[str]) -> None:
    """Raise ``KeyError`` naming the first arm key that is not a flat config key."""
    known = set(known)
    for label, overrides in arms.items():
        for key in overrides:
            if key not in known:
                raise KeyError(f"grid arm {label!r} sets unknown config key {key!r}")
