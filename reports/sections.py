"""What the report shows for each kind of sweep, decided from the sweep's variant labels and axes.

- ablation sweep (the ``ablations`` grid): paper Table 6 and its paired differences, plus the
  retrieval tables (Table 8 layout for image<->audio);
- methods sweep (the ``methods`` grid): Table 1 and its differences, retrieval Tables 2-4, 7;
- any other grid: the unseen-pair table with the objective, one row per variant, and the paired
  differences of every arm whose grid names a reference row (e.g. ``headline``);
Row labels, order and references come from the grid's arms (``search_spaces.grids``); every
table shows test-set metrics, and choices (a best grid value, a search) are read from the
validation sets.
- a swept axis (``num_experts``, ``ewc_lam``, ``k2``, ``w_k2``, ``beta_pmr``): curves (Fig. 2);
- every grid: codebook usage (Fig. 3) and the forgetting heatmap;
- the Optuna search (variant ``search``): best trials and parameter importances.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from reports.tables import Column, unseen_columns
from search_spaces.axes import AXES as SWEEP_AXES
from search_spaces.grids import match_grid

#: Axes the reports draw curves over, with their labels (search_spaces/axes.py).
CURVE_AXES = {axis.column: axis.label for axis in SWEEP_AXES if axis.curve}
#: Report kinds of the grids whose tables follow a paper layout.
PAPER_KINDS = {"ablations": "ablation", "methods": "methods"}
#: Paper table numbers of the retrieval tables, by (sweep kind, unordered modality pair).
PAPER_RETRIEVAL = {
    ("methods", frozenset({"text", "video"})): "Table 2",
    ("methods", frozenset({"text", "audio"})): "Table 3",
    ("methods", frozenset({"text", "image"})): "Table 4",
    ("methods", frozenset({"image", "audio"})): "Table 7",
    ("ablation", frozenset({"image", "audio"})): "Table 8",
}
OBJECTIVE = Column(("objective", "", "value"), ("Objective", ""), in_avg=False)
USAGE_COLUMNS = [
    Column(("usage", "", "codes_1"), ("1 modality",), in_avg=False),
    Column(("usage", "", "codes_2"), ("2 modalities",), in_avg=False),
    Column(("usage", "", "codes_3plus"), ("3+ modalities",), in_avg=False),
    Column(("usage", "", "codes_0"), ("unused",), in_avg=False),
    Column(("usage", "", "perplexity"), ("perplexity",), in_avg=False),
]


@dataclass
class SweepPlan:
    """The artifacts one sweep gets."""

    sweep: str
    kind: str  # ablation | methods | search | grid
    variants: list[str]
    unseen: tuple[str, str] | None
    stages: list[int]
    curves: list[tuple[str, str | None]] = field(default_factory=list)
    retrieval: list[tuple[str, str, bool]] = field(default_factory=list)  # (a, b, mean recorded)
    titles: dict[str, str] = field(default_factory=dict)  # variant -> table row label
    references: dict[str, str] = field(default_factory=dict)  # variant -> its reference row
    controls: dict[str, tuple[str, ...]] = field(default_factory=dict)  # variant -> control rows
    legends: dict[str, str] = field(default_factory=dict)  # variant -> what its label means

    @property
    def notes(self) -> list[str]:
        """The legends of the extra rows present (each once)."""
        return list(dict.fromkeys(self.legends[v] for v in self.variants if v in self.legends))

    @property
    def rows(self) -> list[tuple[str, str]]:
        """``(variant, row label)`` in table order."""
        return [(v, self.titles.get(v, v)) for v in self.variants]

    def deltas(self) -> list[tuple[str, str, str]]:
        """``(variant, reference, label)`` of every variant whose grid names a reference row
        present in the sweep, then of every variant against its control rows: the paired
        differences to show."""
        t = self.titles
        pairs = list(self.references.items())
        pairs += [(v, c) for v, cs in self.controls.items() for c in cs]
        return [
            (v, r, f"{t.get(v, v)} - {t.get(r, r)}")
            for v, r in pairs
            if v in self.variants and r in self.variants
        ]


def slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_") or "sweep"


def _natural(label: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label))


def ordered_variants(m: pd.DataFrame, fixed: Sequence[tuple[str, str]] = ()) -> list[str]:
    """Variants in the paper's row order where it has one, else by swept axis values, then label."""
    present = list(dict.fromkeys(m["variant"].astype(str)))
    head = [v for v, _ in fixed if v in present]
    rest = [v for v in present if v not in head]
    axes = [a for a in CURVE_AXES if a in m and m[a].nunique(dropna=True) > 1]
    firsts = m.drop_duplicates("variant").set_index("variant")

    def key(v: str) -> tuple:
        vals = tuple(float(firsts.at[v, a]) if pd.notna(firsts.at[v, a]) else -1.0 for a in axes)
        return (*vals, _natural(v))

    return head + sorted(rest, key=key)


def _pairs(m: pd.DataFrame, task: str) -> list[tuple[str, str]]:
    sel = m.loc[m["task"] == task, "pair"].drop_duplicates()
    return [tuple(p.split("->", 1)) for p in sel if "->" in p and "<->" not in p]


def stage_modalities(m: pd.DataFrame) -> list[set[str]]:
    """The modality sets trained together, from stage names such as ``video-text``."""
    names = m.drop_duplicates(["variant", "stage"])["stage_name"].dropna().astype(str)
    return [set(n.split("-")) for n in names.unique() if "-" in n]


def unseen_pair(m: pd.DataFrame) -> tuple[str, str] | None:
    """The pair for Tables 1/6: video<->audio if measured, else a pair never trained together."""
    directed = set(_pairs(m, "ave"))
    both = [(a, b) for a, b in directed if (b, a) in directed]
    if not both:
        return None
    if ("video", "audio") in directed and ("audio", "video") in directed:
        return ("video", "audio")
    trained = stage_modalities(m)
    never = [(a, b) for a, b in both if not any({a, b} <= s for s in trained)]
    return sorted(never or both)[0]


def retrieval_pairs(m: pd.DataFrame) -> list[tuple[str, str, bool]]:
    """Retrieval pairs (a, b, whether ``a<->b/mean`` is recorded) measured in both directions."""
    r = m[m["task"] == "retrieval"]
    means = [tuple(p.split("<->", 1)) for p in r["pair"].drop_duplicates() if "<->" in p]
    directed = set(_pairs(m, "retrieval"))
    out = [(a, b, True) for a, b in means if (a, b) in directed and (b, a) in directed]
    seen = {frozenset(p[:2]) for p in out}
    for a, b in sorted(directed):
        if (b, a) in directed and frozenset((a, b)) not in seen:
            out.append((a, b, False))
            seen.add(frozenset((a, b)))
    return out


def report_stages(m: pd.DataFrame) -> list[int]:
    """Stages shown for unseen pairs: from stage 2 on when there are more (paper Tables 1/6)."""
    stages = sorted(int(s) for s in m["stage"].unique())
    return [s for s in stages if s >= 2] or stages


def plan_sweep(sweep: str, m: pd.DataFrame) -> SweepPlan:
    """Decide which artifacts the sweep's metrics ``m`` support; row labels, row order and
    reference rows come from the grid the variants belong to (``search_spaces.grids``)."""
    present = list(dict.fromkeys(m["variant"].astype(str)))
    grid = match_grid(present)
    arms = grid[1] if grid else []
    fixed = [(a.label, a.row) for a in arms]
    kind = PAPER_KINDS.get(grid[0], "grid") if grid else "grid"
    if "search" in present:
        kind = "search"
    plan = SweepPlan(sweep, kind, ordered_variants(m, fixed), unseen_pair(m), report_stages(m))
    plan.titles = {a.label: a.row for a in arms}
    plan.references = {a.label: a.against for a in arms if a.against}
    plan.controls = {a.label: a.controls for a in arms if a.controls}
    plan.legends = {a.label: a.legend for a in arms if a.legend}
    if kind in ("ablation", "methods"):
        plan.retrieval = retrieval_pairs(m)
    if kind != "search":
        varying = [a for a in CURVE_AXES if a in m and m[a].nunique(dropna=True) > 1]
        if len(varying) == 2:
            plan.curves = [(varying[0], varying[1])]
        else:
            plan.curves = [(a, None) for a in varying]
    return plan


def unseen_table_columns(plan: SweepPlan, with_objective: bool) -> list[Column]:
    """Table 1/6 columns for the plan's unseen pair, optionally preceded by the objective."""
    cols = list(unseen_columns(*plan.unseen)) if plan.unseen else []
    return ([OBJECTIVE] if with_objective else []) + cols


def stage_pairs(m: pd.DataFrame, variant: str) -> list[tuple[int, str]]:
    """(stage, retrieval pair) of each stage of ``variant`` whose pair has a recorded mean."""
    v = m[m["variant"] == variant]
    means = set(v.loc[(v["task"] == "retrieval") & (v["metric"] == "mean"), "pair"])
    out = []
    for stage, name in (
        v.drop_duplicates("stage").sort_values("stage")[["stage", "stage_name"]].values
    ):
        mods = set(str(name).split("-"))
        hit = [p for p in sorted(means) if set(p.split("<->")) == mods]
        if hit:
            out.append((int(stage), hit[0]))
    return out


def forgetting_matrix(m: pd.DataFrame, variants: Sequence[str]) -> pd.DataFrame | None:
    """Rows = (variant, stage finished), columns = each stage's pair; retrieval mean over seeds.

    Cells before the pair's own stage (for that variant's stage order) are NaN: not learnt yet.
    Columns are labelled ``pair (S<k>)`` when every variant learns the pair at stage k.
    """
    per_variant = {v: stage_pairs(m, v) for v in variants}
    per_variant = {v: p for v, p in per_variant.items() if p}
    if not per_variant:
        return None
    r = m[(m["task"] == "retrieval") & (m["metric"] == "mean")]
    per_seed = r.groupby(["variant", "stage", "pair", "seed"], observed=True)["value"].mean()
    mean = per_seed.groupby(level=["variant", "stage", "pair"]).mean()
    pairs = list(dict.fromkeys(p for ps in per_variant.values() for _, p in ps))
    learnt = {p: {k for ps in per_variant.values() for k, q in ps if q == p} for p in pairs}
    labels = [f"{p} (S{next(iter(learnt[p]))})" if len(learnt[p]) == 1 else p for p in pairs]
    index, rows = [], []
    for v, ps in per_variant.items():
        first = {p: k for k, p in ps}
        for s in sorted(int(x) for x in m.loc[m["variant"] == v, "stage"].unique()):
            index.append((v, s))
            rows.append([
                mean.get((v, s, p), float("nan")) if p in first and s >= first[p] else float("nan")
                for p in pairs
            ])  # fmt: skip
    return pd.DataFrame(
        rows,
        index=pd.MultiIndex.from_tuples(index, names=["variant", "stage"]),
        columns=[c.replace("<->", "\u2194") for c in labels],
        dtype=float,
    )
