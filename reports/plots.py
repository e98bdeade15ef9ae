"""Figures of the report: hyper-parameter curves (paper Fig. 2), codebook usage (Fig. 3), the
forgetting heatmap and the Optuna search plots. Each function takes tidy data and returns a
``matplotlib.figure.Figure`` built without pyplot (no global state); the Agg backend is forced.

Every figure is sized for a two-column paper and meant to be included at 100 %: one panel is
:data:`COLUMN_IN` wide (``\\columnwidth``), several panels :data:`TEXT_IN` (``\\textwidth``), all
in one font (:data:`STYLE`: DejaVu Sans, 8 pt text, 7 pt ticks and legends). Titles go in the
caption (the page's, or the paper's), not in the figure; they are kept in the files' metadata.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

N_BOOT = 1000  # bootstrap resamples of seaborn's 95 % CI band (fixed, with seed 0)
USAGE_PARTS = (
    ("codes_1", "1 modality"),
    ("codes_2", "2 modalities"),
    ("codes_3plus", "3+ modalities"),
    ("codes_0", "unused"),
)
USAGE_COLORS = ("#4c72b0", "#55a868", "#c44e52", "#bbbbbb")
COLUMN_IN = 3.25  # \columnwidth of the reference two-column page (reports.layout), inches
TEXT_IN = 6.75  # \textwidth
FONT_PT, SMALL_PT = 8.0, 7.0  # labels and titles; ticks, legends and annotations
STYLE = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: the same font on every machine
    "font.size": FONT_PT, "axes.titlesize": FONT_PT, "axes.labelsize": FONT_PT,
    "figure.titlesize": FONT_PT, "xtick.labelsize": SMALL_PT, "ytick.labelsize": SMALL_PT,
    "legend.fontsize": SMALL_PT, "legend.title_fontsize": SMALL_PT,
    "axes.linewidth": 0.6, "lines.linewidth": 1.2, "lines.markersize": 4,
    "xtick.major.width": 0.6, "ytick.major.width": 0.6, "grid.linewidth": 0.5,
    "pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType, not Type 3: venues reject Type 3 fonts
    "svg.hashsalt": "comet-report",  # stable SVG ids between builds
}  # fmt: skip
F = TypeVar("F", bound=Callable[..., Figure])


def styled(fn: F) -> F:
    """Build the figure under :data:`STYLE` (rcParams are read when artists are made)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _width(panels: int) -> float:
    return COLUMN_IN if panels <= 1 else TEXT_IN


def _scale_x(ax, values: Sequence[float]) -> None:
    """Log axis for wide positive ranges, symlog when zero is one of the values."""
    arr = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    pos = arr[arr > 0]
    if pos.size < 2 or pos.max() / pos.min() < 50:
        return
    if (arr <= 0).any():
        ax.set_xscale("symlog", linthresh=float(pos.min()))
    else:
        ax.set_xscale("log")


@styled
def curve_figure(
    data: pd.DataFrame, *, x: str, xlabel: str, ylabel: str, hue: str | None = None
) -> Figure:
    """Metric vs ``x``: mean and a 95 % bootstrap CI band over seeds.

    ``data`` columns: ``x``, ``stage``, ``value`` (one row per run and stage). Without ``hue``,
    one line per stage (paper Fig. 2); with ``hue`` (a second swept axis), one panel per stage.
    """
    import seaborn as sns

    stages = sorted(data["stage"].unique())
    panels = [None] if hue is None else stages
    fig = Figure(figsize=(_width(len(panels)), 2.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, stage in zip(axes, panels, strict=True):
        d = data.assign(Stage="stage " + data["stage"].astype(str))
        h = "Stage"
        if stage is not None:
            d = d[d["stage"] == stage].copy()
            d[hue] = d[hue].map(lambda v: f"{v:g}" if isinstance(v, float) else str(v))
            h = hue
            ax.set_title(f"stage {stage}")
        sns.lineplot(
            data=d, x=x, y="value", hue=h, ax=ax, marker="o", errorbar=("ci", 95),
            n_boot=N_BOOT, seed=0,
        )  # fmt: skip
        _scale_x(ax, data[x].astype(float).tolist())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend() is not None:
            ax.get_legend().set_title(hue if stage is not None else None)
    return fig


@styled
def usage_figure(data: pd.DataFrame) -> Figure:
    """Stacked bars of codes used by 1, 2 or 3+ modalities and unused codes (paper Fig. 3).

    ``data`` columns: ``variant``, ``stage``, ``metric`` (``codes_*``), ``value``; the bars are
    means over seeds, one panel per stage, variants in first-appearance order.
    """
    variants = list(dict.fromkeys(data["variant"]))
    stages = sorted(data["stage"].unique())
    mean = data.groupby(["stage", "variant", "metric"], observed=True)["value"].mean()
    fig = Figure(figsize=(_width(len(stages)), 2.6), layout="constrained")
    axes = fig.subplots(1, len(stages), squeeze=False, sharey=True)[0]
    xs = np.arange(len(variants))
    for ax, stage in zip(axes, stages, strict=True):
        bottom = np.zeros(len(variants))
        for (metric, label), color in zip(USAGE_PARTS, USAGE_COLORS, strict=True):
            vals = np.array([mean.get((stage, v, metric), np.nan) for v in variants], dtype=float)
            vals = np.nan_to_num(vals)
            ax.bar(xs, vals, bottom=bottom, color=color, label=label, width=0.7)
            bottom += vals
        ax.set_xticks(xs, variants, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_title(f"stage {stage}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("codes (mean over seeds)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)
    return fig


@styled
def forgetting_figure(mat: pd.DataFrame, *, label: str) -> Figure:
    """Heatmap of each stage's pair after every later stage; rows = (variant, stage finished).

    ``mat`` comes from :func:`reports.sections.forgetting_matrix`; NaN cells (pair not learnt
    yet) stay blank, values are means over seeds, variants are separated by lines.
    """
    arr = mat.to_numpy(dtype=float)
    nrows, ncols = arr.shape
    fig = Figure(figsize=(_width(1 if ncols <= 3 else 2), 0.9 + 0.17 * nrows),
                 layout="constrained")  # fmt: skip
    ax = fig.subplots()
    finite = arr[np.isfinite(arr)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = ax.imshow(np.ma.masked_invalid(arr), cmap="viridis", vmin=vmin, vmax=vmax,
                      aspect="auto")  # fmt: skip
    for (r, c), v in np.ndenumerate(arr):
        if np.isfinite(v):
            shade = "white" if v < (vmin + vmax) / 2 else "black"
            ax.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=SMALL_PT, color=shade)
    variants = [v for v, _ in mat.index]
    ax.set_yticks(range(nrows), [f"{v}  after {s}" for v, s in mat.index])
    ax.set_xticks(range(ncols), list(mat.columns), rotation=20, ha="right", rotation_mode="anchor")
    for r in range(1, nrows):
        if variants[r] != variants[r - 1]:
            ax.axhline(r - 0.5, color="white", linewidth=2)
    fig.colorbar(image, ax=ax, shrink=0.9, label=label)
    return fig


@styled
def importance_figure(importances: Mapping[str, float]) -> Figure:
    """Horizontal bars of Optuna parameter importances (largest on top)."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(COLUMN_IN, 0.6 + 0.3 * len(items)), layout="constrained")
    ax = fig.subplots()
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4c72b0")
    ax.set_xlabel("importance")
    ax.set_xlim(0, max(1e-9, max(v for _, v in items)) * 1.1)
    ax.grid(axis="x", alpha=0.3)
    return fig


@styled
def search_figure(
    data: pd.DataFrame, params: Sequence[str], ylabel: str = "objective (final stage)"
) -> Figure:
    """Final-stage objective of every search trial against each searched parameter."""
    fig = Figure(figsize=(_width(len(params)), 2.2), layout="constrained")
    axes = fig.subplots(1, len(params), squeeze=False, sharey=True)[0]
    for ax, p in zip(axes, params, strict=True):
        ax.scatter(data[p].astype(float), data["objective"], s=18, color="#4c72b0", alpha=0.8)
        _scale_x(ax, data[p].astype(float).tolist())
        ax.set_xlabel(p)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    return fig


def save_figure(fig: Figure, folder: Path, name: str, *, title: str = "") -> list[Path]:
    """Write ``<name>.png`` (150 dpi), ``.svg`` and ``.pdf`` (vector, TrueType fonts).

    ``title`` goes in each file's metadata; dates are left out so rebuilds give the same files.
    """
    folder.mkdir(parents=True, exist_ok=True)
    png, svg, pdf = (folder / f"{name}.{ext}" for ext in ("png", "svg", "pdf"))
    with matplotlib.rc_context(STYLE):
        fig.savefig(png, dpi=150, metadata={"Software": None, "Title": title})
        fig.set_layout_engine("none")  # keep the layout just computed: no second pass
        fig.savefig(svg, metadata={"Date": None, "Title": title})
        fig.savefig(pdf, metadata={"CreationDate": None, "Title": title})
    return [png, svg, pdf]
