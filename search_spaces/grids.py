"""Named sweep grids: each returns its arms as ``{label: {flat config key: value}}``.

A grid arm is a labelled set of overrides of the preset's config (dotted keys of
``ExperimentConfig.to_flat()``); seeds are crossed with the arms by the harness and recorded as
replicates. Every arm starts from full COMET (``comet = True``, DCID losses) unless it says
otherwise, so a row of a table differs from "full" only by what its label names. The keys are
checked against the config's flat keys before anything runs (``check_keys``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from search_spaces.axes import by_column

Arms = dict[str, dict[str, object]]

FULL: dict[str, object] = {"comet": True, "method": "dcid"}


def experts() -> Arms:
    """Expert count O of the CMoE-Adapter (paper Fig. 2)."""
    ax = by_column()["num_experts"]
    return {ax.arm(n): FULL | {ax.key: n} for n in (1, 2, 4, 6, 8, 10)}


def ablations() -> Arms:
    """Paper Table 6: full COMET, each component removed, and the DCID baseline."""
    return {
        "full": dict(FULL),
        "-PM": FULL | {"replay.enabled": False},
        "-MoE": FULL | {"moe.enabled": False},
        "-gate": FULL | {"loss.gate": 0.0},
        "-EWC": FULL | {"ewc.enabled": False},
        "-SL": FULL | {"moe.specific_layers": False},
        "DCID": {"comet": False, "method": "dcid"},
    }


def ewc() -> Arms:
    """EWC strength lambda (paper Eq. 6), Fisher normalised per layer to mean 1."""
    ax = by_column()["ewc_lam"]
    return {ax.arm(lam): FULL | {ax.key: lam} for lam in (0.0, 1.0, 10.0, 100.0, 1000.0)}


def k2() -> Arms:
    """Number of new codes K2 appended per stage (paper section 3.3)."""
    ax = by_column()["k2"]
    return {ax.arm(k): FULL | {ax.key: k} for k in (0, 16, 32, 64, 128)}


def pmr() -> Arms:
    """PMR weights: w_K2 (weight of steps whose pseudo code is new) x beta_pmr (whole term)."""
    w_ax, b_ax = by_column()["w_k2"], by_column()["beta_pmr"]
    return {
        f"{w_ax.arm(w)},{b_ax.arm(b)}": FULL | {w_ax.key: w, b_ax.key: b}
        for w in (0.1, 0.5, 1.0)
        for b in (0.1, 0.5, 1.0)
    }


def methods() -> Arms:
    """Paper Table 1: TURN, CMCM and DCID, each without and with COMET."""
    return {
        f"{name}{'+COMET' if comet else ''}": {"method": m, "comet": comet}
        for m, name in (("turn", "TURN"), ("cmcm", "CMCM"), ("dcid", "DCID"))
        for comet in (False, True)
    }


ORDERS: dict[str, tuple[str, ...]] = {
    "VT-AT-IT": ("video-text", "audio-text", "image-text"),
    "AT-VT-IT": ("audio-text", "video-text", "image-text"),
    "IT-VT-AT": ("image-text", "video-text", "audio-text"),
    "VT-IT-AT": ("video-text", "image-text", "audio-text"),
}


def order() -> Arms:
    """Stage orders (the paper's main order first)."""
    return {label: FULL | {"data.stages": stages} for label, stages in ORDERS.items()}


def smoke() -> Arms:
    """Two arms for tests and CI (use with the smoke preset)."""
    ax = by_column()["num_experts"]
    return {ax.arm(n): FULL | {ax.key: n} for n in (1, 2)}


GRIDS: dict[str, Callable[[], Arms]] = {
    "experts": experts,
    "ablations": ablations,
    "ewc": ewc,
    "k2": k2,
    "pmr": pmr,
    "methods": methods,
    "order": order,
    "smoke": smoke,
}


def get_grid(name: str) -> Arms:
    """The arms of grid ``name``; raises ``KeyError`` with the known names."""
    if name not in GRIDS:
        raise KeyError(f"unknown grid {name!r}; known grids: {', '.join(GRIDS)}")
    return GRIDS[name]()


def check_keys(arms: Mapping[str, Mapping[str, object]], known: Iterable[str]) -> None:
    """Raise ``KeyError`` naming the first arm key that is not a flat config key."""
    known = set(known)
    for label, overrides in arms.items():
        for key in overrides:
            if key not in known:
                raise KeyError(f"grid arm {label!r} sets unknown config key {key!r}")
