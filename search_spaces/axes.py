"""THE list of sweep axes: every parameter a grid, the Optuna space, the records and the reports
name, spelled once.

An axis ties a flat config key (``moe.num_experts``) to its results column (``num_experts``), the
prefix of grid-arm labels (``experts=6``), the label of tables and figures ("number of experts"),
the scale it is searched and plotted on, and the Arrow type of its column. Grids build their arm
labels with :meth:`Axis.arm`, ``ablations/keys.py`` copies the axis values of a run into its
records, ``reports/schema.py`` types the columns, the reports label curves and search tables from
here, and a test checks every key against ``ExperimentConfig.to_flat()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["AXES", "Axis", "by_column", "by_key"]


@dataclass(frozen=True)
class Axis:
    """One sweep parameter (see the module docstring)."""

    column: str  # results column, e.g. "num_experts"
    key: str  # flat config key, e.g. "moe.num_experts"
    label: str  # human label of tables and figure axes
    arm_prefix: str  # grid arm labels read "<arm_prefix>=<value>"
    kind: Literal["int", "float", "bool", "str"]  # also the Arrow type of the column
    scale: Literal["linear", "log", "category"] = "category"  # how it is searched and plotted
    curve: bool = False  # the reports draw metric-vs-axis curves over it when it varies

    def arm(self, value: object) -> str:
        """The grid-arm label of ``value``: ``experts=6``, ``lambda=100``, ``K2=32``."""
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        return f"{self.arm_prefix}={shown}"


AXES: tuple[Axis, ...] = (
    Axis("method", "method", "alignment method", "method", "str"),
    Axis("comet", "comet", "COMET on", "comet", "bool"),
    Axis("num_experts", "moe.num_experts", "number of experts", "experts", "int", "linear", True),
    Axis("ewc_lam", "ewc.lam", "EWC lambda", "lambda", "float", "log", True),
    Axis("k2", "replay.k2", "K2 (new codes per stage)", "K2", "int", "linear", True),
    Axis("w_k2", "replay.w_k2", "w_K2 (PMR weight of new codes)", "w_K2", "float", "linear", True),
    Axis("beta_pmr", "replay.beta_pmr", "beta_PMR (PMR loss weight)", "beta", "float", "log", True),
    Axis("stage_order", "data.stages", "stage order", "order", "str"),
    Axis("class_plan", "data.class_plan", "class plan", "plan", "str"),
)


def by_column() -> Mapping[str, Axis]:
    """Axes by results column."""
    return {a.column: a for a in AXES}


def by_key() -> Mapping[str, Axis]:
    """Axes by flat config key."""
    return {a.key: a for a in AXES}
