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
from dataclasses import dataclass, replace

from search_spaces.axes import by_column

Arms = dict[str, dict[str, object]]

FULL: dict[str, object] = {"comet": True, "method": "dcid"}
#: Everything "+COMET" switches on against its baseline (the paper's COMET, spec sections 3-5).
COMET_PARTS = "COMET, MoE, gate loss, SL, EWC, PM, expanding codebook, old-code protection"
#: What the short labels of the extra rows mean (the reports put them in the table notes).
LEGENDS = {
    "mEWC": "+mEWC: EWC also on the mediator's semantic encoder (our extension, not the paper's)",
    "linear": "-MoE+linear: the MoE (and its gate loss and specific layers) replaced by one "
    "linear adapter that EWC keeps (our variant; the paper's -MoE removes EWC too)",
    "protect": "protect: codes of earlier stages exempt from the dead-code reset in later stages "
    "(from our spec, not the paper; on with COMET)",
    "CPC": "+CPC: the Cross-CPC loss added alone, without COMET (control: +COMET brings a "
    "Cross-CPC module to TURN and CMCM for its PMR term)",
}


@dataclass(frozen=True)
class Arm:
    """One row of a grid: its label (records, CLI), table title, overrides and statement."""

    label: str
    overrides: dict[str, object]
    doc: str  # what the arm changes, in the grammar of the module docstring
    title: str = ""  # the row label of tables (default: the label)
    extra: bool = False  # ours or a control, not a row of the paper: shown as an extra row
    legend: str = ""  # what the label means, for the table notes (extra rows)
    controls: tuple[str, ...] = ()  # control rows it is also compared with (paired, in reports)

    @property
    def row(self) -> str:
        """The row label of tables."""
        return self.title or self.label

    @property
    def against(self) -> str | None:
        """The label of the reference row the statement names (``Against: <label>.``)."""
        for sentence in self.doc.split(". "):
            head, _, value = sentence.partition(": ")
            if head == "Against":
                return value.rstrip(".").strip()
        return None


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
        ),
        Arm("-PM", FULL | {"replay.enabled": False}, "Against: full. Off: PM."),
        Arm(
            "-MoE",
            FULL | off_moe | {"ewc.enabled": False},
            "Against: full. Off: MoE, gate loss, EWC, SL.",
        ),
        Arm("-gate", FULL | {"loss.gate": 0.0}, "Against: full. Off: gate loss."),
        Arm("-EWC", FULL | {"ewc.enabled": False}, "Against: full. Off: EWC."),
        Arm("-SL", FULL | {"moe.specific_layers": False}, "Against: full. Off: SL."),
        Arm("DCID", {"comet": False, "method": "dcid"}, f"Against: full. Off: {COMET_PARTS}."),
        Arm(
            "-MoE+linear",
            FULL | off_moe | {"moe.linear_fallback": True},
            "Against: full. Off: MoE, gate loss, SL. On: linear adapter.",
            "-MoE+linear (ours)",
            extra=True,
            legend=LEGENDS["linear"],
        ),
        Arm(
            "-protect",
            FULL | {"codebook.protect_old": "off"},
            "Against: full. Off: old-code protection.",
            "-protect (spec)",
            extra=True,
            legend=LEGENDS["protect"],
        ),
        Arm(
            "COMET+mEWC",
            FULL | {"ewc.mediator": True},
            "Against: full. On: mEWC.",
            "COMET+mEWC (ours)",
            extra=True,
            legend=LEGENDS["mEWC"],
        ),
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


_DCID: dict[str, object] = {"method": "dcid", "comet": False}
_BASELINES = {
    "TURN": {"method": "turn", "comet": False},
    "CMCM": {"method": "cmcm", "comet": False},
}
_DCID_ARM = Arm("DCID", _DCID, "Method: dcid. Off: COMET. On: Cross-CPC.")
_DCID_COMET = Arm("DCID+COMET", _DCID | {"comet": True}, f"Against: DCID. On: {COMET_PARTS}.")
_DCID_MEWC = Arm("DCID+COMET+mEWC", _DCID | {"comet": True, "ewc.mediator": True},
                 "Against: DCID+COMET. On: mEWC.", "DCID+COMET+mEWC (ours)", extra=True,
                 legend=LEGENDS["mEWC"])  # fmt: skip
_DCID_PROTECT = Arm("DCID+protect", _DCID | {"codebook.protect_old": "on"},
                    "Against: DCID. On: old-code protection.", "DCID+protect (control)",
                    extra=True, legend=LEGENDS["protect"])  # fmt: skip


def methods() -> list[Arm]:
    """Paper Table 1 (its row order): TURN, CMCM and DCID, then each with COMET; then the
    controls for what "+COMET" brings besides its named parts (the Cross-CPC module TURN and
    CMCM lack, the old-code protection), each "+COMET" row also compared with its control, and
    our extension."""
    rows = [
        Arm(n, b, f"Method: {b['method']}. Off: COMET, Cross-CPC.") for n, b in _BASELINES.items()
    ]
    rows.append(_DCID_ARM)
    rows += [Arm(f"{n}+COMET", b | {"comet": True}, f"Against: {n}. On: {COMET_PARTS}.",
                 controls=(f"{n}+CPC",)) for n, b in _BASELINES.items()]  # fmt: skip
    rows.append(replace(_DCID_COMET, controls=("DCID+protect",)))
    rows += [
        Arm(f"{n}+CPC", b | {"loss.add_cpc": True}, f"Against: {n}. On: Cross-CPC.",
            f"{n}+CPC (control)", extra=True, legend=LEGENDS["CPC"])
        for n, b in _BASELINES.items()
    ]  # fmt: skip
    return rows + [_DCID_PROTECT, _DCID_MEWC]


def headline() -> list[Arm]:
    """COMET against DCID (the README's headline), with our extension as an extra row."""
    return [_DCID_ARM, _DCID_COMET, _DCID_MEWC]


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


def match_grid(labels: Iterable[str]) -> tuple[str, list[Arm]] | None:
    """The grid whose arms a sweep's variant ``labels`` come from (the one holding all of them
    with the fewest other arms); None if no grid holds them all."""
    labels = set(labels)
    found = [(name, grid()) for name, grid in GRIDS.items()]
    found = [(n, arms) for n, arms in found if labels <= {a.label for a in arms}]
    return min(found, key=lambda item: len(item[1])) if found else None


def check_keys(arms: Mapping[str, Mapping[str, object]], known: Iterable[str]) -> None:
    """Raise ``KeyError`` naming the first arm key that is not a flat config key."""
    known = set(known)
    for label, overrides in arms.items():
        for key in overrides:
            if key not in known:
                raise KeyError(f"grid arm {label!r} sets unknown config key {key!r}")
