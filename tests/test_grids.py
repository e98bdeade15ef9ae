"""Every grid arm's statement (``Arm.doc``) holds for its resolved config.

The components are read off the resolved configuration here, independently of the grid code, so
a wrong override (for example a "-MoE" that keeps EWC) fails against the arm's own statement.
"""

from __future__ import annotations

import re

import pytest

from ablations.keys import resolve_flat
from comet_model.config import ExperimentConfig, parse_override, preset
from search_spaces.grids import GRIDS, grid_arms


def components(cfg: ExperimentConfig) -> dict[str, bool]:
    """What is effectively switched on in a run of ``cfg``."""
    comet, moe = cfg.comet, cfg.comet and cfg.moe.enabled
    linear = cfg.comet and not cfg.moe.enabled and cfg.moe.linear_fallback
    protect = cfg.comet if cfg.codebook.protect_old == "with_comet" else (
        cfg.codebook.protect_old == "on")  # fmt: skip
    return {
        "COMET": comet,
        "MoE": moe,
        "gate loss": moe and cfg.loss.gate > 0,
        "SL": moe and cfg.moe.specific_layers,
        "EWC": comet and cfg.ewc.enabled and (moe or linear),
        "mEWC": comet and cfg.ewc.enabled and cfg.ewc.mediator,
        "linear adapter": linear,
        "PM": comet and cfg.replay.enabled,
        "expanding codebook": comet and cfg.replay.k2 > 0,
        "old-code protection": protect,
        "Cross-CPC": cfg.method == "dcid" or cfg.loss.add_cpc,
    }


def parse(doc: str) -> dict[str, object]:
    """The statement's parts: against (label), on / off (component lists), method, set."""
    out: dict[str, object] = {"on": [], "off": [], "set": {}}
    for sentence in re.split(r"\.(?:\s+|$)", doc):
        part, _, value = sentence.partition(": ")
        items = [v.strip() for v in value.split(", ") if v.strip()]
        if part in ("On", "Off"):
            out[part.lower()] += items  # type: ignore[operator]
        elif part == "Against":
            out["against"] = value.strip()
        elif part == "Method":
            out["method"] = value.strip()
        elif part == "Set":
            out["set"] = dict(item.split("=", 1) for item in items)
    return out


def resolved(overrides: dict[str, object]) -> ExperimentConfig:
    flat = resolve_flat(preset("default").to_flat(), overrides, 0)
    return ExperimentConfig.from_flat(flat)


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_each_arm_changes_exactly_what_its_statement_says(grid: str) -> None:
    arms = {a.label: a for a in grid_arms(grid)}
    known = set(components(ExperimentConfig()))
    for label, arm in arms.items():
        stated = parse(arm.doc)
        cfg = resolved(arm.overrides)
        have = components(cfg)
        toggled = {c: True for c in stated["on"]} | {c: False for c in stated["off"]}
        assert set(toggled) <= known, (grid, label, set(toggled) - known)
        assert toggled or stated["set"], f"{grid}/{label}: the statement says nothing: {arm.doc}"
        if "against" in stated:
            ref = resolved(arms[str(stated["against"])].overrides)
            expected = components(ref) | toggled
            assert have == expected, (grid, label, {k for k in have if have[k] != expected[k]})
            if "method" not in stated:
                assert cfg.method == ref.method, (grid, label)
        else:
            for name, state in toggled.items():
                assert have[name] is state, (grid, label, name)
        if "method" in stated:
            assert cfg.method == stated["method"], (grid, label)
        if stated["set"]:  # exactly these keys differ from the preset's full COMET
            base = resolved({"comet": True, "method": "dcid"}).to_flat()
            now = cfg.to_flat()
            want = {k: parse_override(f"{k}={v}", cfg)[1] for k, v in stated["set"].items()}
            assert {k for k in now if now[k] != base[k]} <= set(want), (grid, label)
            assert all(now[k] == v for k, v in want.items()), (grid, label)


def test_minus_moe_is_the_papers_and_ours_is_labelled() -> None:
    arms = {a.label: a for a in grid_arms("ablations")}
    cfg = resolved(arms["-MoE"].overrides)
    # the flags themselves, as --dry-run shows them: MoE, gate loss, EWC and SL all off
    assert not cfg.moe.enabled and cfg.loss.gate == 0 and not cfg.ewc.enabled
    assert not cfg.moe.specific_layers and not cfg.moe.linear_fallback
    paper = components(cfg)
    assert not any(paper[c] for c in ("MoE", "gate loss", "EWC", "SL", "linear adapter"))
    assert paper["PM"] and paper["expanding codebook"]  # DCID + PMR with the expanding codebook
    ours = arms["-MoE+linear"]
    assert ours.extra and "ours" in ours.row and components(resolved(ours.overrides))["EWC"]


def test_no_arm_turns_an_extension_on_unless_its_label_says_so() -> None:
    for grid in GRIDS:
        for arm in grid_arms(grid):
            have = components(resolved(arm.overrides))
            if have["mEWC"]:
                assert "mEWC" in arm.label and "ours" in arm.row, (grid, arm.label)
            if have["linear adapter"]:
                assert "linear" in arm.label and "ours" in arm.row, (grid, arm.label)
            if resolved(arm.overrides).loss.add_cpc:
                assert "+CPC" in arm.label and "control" in arm.row, (grid, arm.label)


def test_presets_run_the_papers_comet() -> None:
    for name in ("smoke", "default", "paper"):
        have = components(preset(name))
        assert have["COMET"] and have["MoE"] and have["EWC"] and have["PM"]
        assert not have["mEWC"] and not have["linear adapter"], name


def test_controls_are_control_rows_of_the_same_grid_on_the_same_baseline() -> None:
    seen = 0
    for grid in GRIDS:
        arms = {a.label: a for a in grid_arms(grid)}
        for arm in arms.values():
            for name in arm.controls:
                control = arms[name]  # a KeyError names a control missing from the grid
                assert control.extra and "control" in control.row, (grid, arm.label, name)
                # same baseline: the difference isolates what the arm adds beyond the control
                assert control.against == arm.against, (grid, arm.label, name)
                seen += 1
    assert seen >= 3  # TURN+COMET, CMCM+COMET, DCID+COMET in the methods grid
