"""Build the COMET report (tables, figures, index.html) from a folder of sweep records.

    python reports/build.py [--results results/] [--out report/] [--allow-partial] [--no-pdf]

Reads every sweep under ``--results`` (Parquet records, :mod:`reports.schema`), builds only the
artifacts the sweeps present support (:mod:`reports.sections`), and writes ``tables/*.md|tex|csv``,
``figures/*.png|svg|pdf``, ``tables.tex`` (every table at its width in a two-column paper),
compiled to ``tables.pdf`` when ``pdflatex`` is installed, and ``index.html`` under ``--out``. A
partial sweep is refused (exit 2) unless ``--allow-partial``, which marks its cells with a dagger.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from reports.page import FigureRef, TableRef
    from reports.tables import Table

EPILOG = """examples:
  python reports/build.py                                  # results/ -> report/
  python reports/build.py --results runs/ --out public/report
  python reports/build.py --allow-partial                  # include unfinished sweeps, marked
Open <out>/index.html in a browser (no server needed); <out>/tables.pdf shows every table as
it sets in a two-column paper."""


class ReportError(Exception):
    """A report that cannot be built (one-line message; the CLI exits 2)."""


def _progress(text: str) -> None:
    print(f"[report] {text}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``reports/build.py`` (console script ``comet-report``)."""
    p = argparse.ArgumentParser(
        prog="reports/build.py",
        description="Build tables, figures and index.html from COMET sweep records.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="results folder: one sweep (holding records/) or a folder of them",
    )
    p.add_argument("--out", type=Path, default=Path("report"), help="output folder (report/)")
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="build from partial sweeps too, marking their cells with a dagger",
    )
    p.add_argument(
        "--no-pdf", action="store_true", help="do not compile tables.pdf (tables.tex is written)"
    )
    return p


def _load(results: Path):
    import pyarrow as pa

    from reports.checks import validate
    from reports.load import ResultsError, load_results

    try:
        metrics, runs = load_results(results)
        return validate(metrics, runs)
    except ResultsError as exc:
        raise ReportError(str(exc)) from None
    except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ReportError(
            f"{results}: unreadable results ({type(exc).__name__}: {first})"
        ) from None


class Report:
    """Artifacts written under ``out``: ``refs`` (tables and figures, in order) and ``files``."""

    def __init__(self, out: Path, log: Callable[[str], None]) -> None:
        self.out, self.log = out, log
        self.files: list[Path] = []
        self.refs: list[TableRef | FigureRef] = []  # in build order
        self.counts = {"tables": 0, "figures": 0}
        self.pdf: str | None = None  # tables.pdf, once compiled
        self.pdf_note = ""

    def table(self, t: Table) -> TableRef:
        """Write ``t`` as Markdown, LaTeX and CSV under ``tables/``."""
        from reports.page import TableRef
        from reports.tables import write_table

        paths = write_table(t, self.out / "tables")
        self.files += paths
        self.counts["tables"] += 1
        self.log(f"table  tables/{t.name}.{{md,tex,csv}}")
        self.refs.append(TableRef(t, [p.relative_to(self.out).as_posix() for p in paths]))
        return self.refs[-1]

    def figure(self, fig: Figure, name: str, title: str) -> FigureRef:
        """Write ``fig`` as PNG, SVG and PDF under ``figures/``."""
        from reports.page import FigureRef
        from reports.plots import save_figure

        paths = save_figure(fig, self.out / "figures", name, title=title)
        self.files += paths
        self.counts["figures"] += 1
        self.log(f"figure figures/{name}.{{png,svg,pdf}}")
        self.refs.append(FigureRef(name, title, *(p.relative_to(self.out).as_posix()
                                                  for p in paths)))  # fmt: skip
        return self.refs[-1]

    def typeset(self, source: str, *, compile_pdf: bool) -> str:
        """Write ``tables.tex`` and compile it to ``tables.pdf``; returns a one-line summary."""
        from reports.latex import compile_tables, find_pdflatex, tables_document
        from reports.layout import plan_layout

        tables = [ref.table for ref in self.refs if hasattr(ref, "table")]
        names = [t.name for t in tables]
        tex = self.out / "tables.tex"
        document = tables_document([(t.name, plan_layout(t).wide) for t in tables], source=source)
        tex.write_text(document, encoding="utf-8")
        self.files.append(tex)
        pdflatex = find_pdflatex() if compile_pdf else None
        if pdflatex is None:
            why = (
                "--no-pdf" if not compile_pdf else "no pdflatex on PATH (texlive-latex-recommended)"
            )
            return f"tables.pdf skipped: {why}; compile tables.tex with pdflatex"
        check, _ = compile_tables(self.out, pdflatex)
        for problem in check.problems(names)[:5]:
            self.log(f"warning: tables.pdf: {problem}")
        if not (self.out / "tables.pdf").exists():
            return "tables.pdf failed: see tables.log"
        self.files.append(self.out / "tables.pdf")
        self.pdf = "tables.pdf"
        scales = [check.scale(n) for n in names if n in check.widths] or [1.0]
        return (f"tables.pdf: {len(names)} tables on {check.pages} pages, smallest scale "
                f"{min(scales):.2f}, {len(check.overfull)} overfull boxes")  # fmt: skip


def _grid_sections(plan, m, partial, w: Report) -> list:
    from reports import sections, tables

    items: list = []
    sw = sections.slug(plan.sweep)
    labels = dict(sections.ABLATION_ROWS if plan.kind == "ablation" else sections.METHOD_ROWS)
    rows = [(v, labels.get(v, v)) for v in plan.variants]
    common = {"rows": rows, "stages": plan.stages, "partial": partial}
    if plan.unseen and plan.kind in ("ablation", "methods"):
        number = "Table 6" if plan.kind == "ablation" else "Table 1"
        stem = f"{number.lower().replace(' ', '')}-{sw}"
        cols = sections.unseen_table_columns(plan, with_objective=False)
        a, b = plan.unseen
        title = f"Unseen pair {a}<->{b} (paper {number} layout), sweep {plan.sweep}"
        items.append(w.table(tables.grid_table(m, name=stem, title=title, columns=cols, **common)))
        if plan.kind == "ablation":  # full COMET minus each ablation (and the DCID baseline)
            pairs = [("full", v, f"full - ({v})") for v in plan.variants if v != "full"]
        else:  # X+COMET minus X
            pairs = [
                (f"{x}+COMET", x, f"{x}+COMET - {x}")
                for x in ("TURN", "CMCM", "DCID")
                if x in plan.variants and f"{x}+COMET" in plan.variants
            ]
        if pairs:
            title = f"{number} differences, sweep {plan.sweep}"
            t = tables.delta_table(m, name=f"{stem}-delta", title=title, pairs=pairs,
                              stages=plan.stages, columns=cols, partial=partial)  # fmt: skip
            items.append(w.table(t))
    elif plan.unseen or "objective" in set(m["task"]):
        cols = sections.unseen_table_columns(plan, with_objective=True)
        title = f"Objective and unseen-pair metrics per variant, sweep {plan.sweep}"
        items.append(w.table(tables.grid_table(m, name=f"unseen-{sw}", title=title, columns=cols,
                                          **common)))  # fmt: skip
    common["stages"] = sorted(int(s) for s in m["stage"].unique())  # retrieval: every stage
    for a, b, has_mean in plan.retrieval:
        number = sections.PAPER_RETRIEVAL.get((plan.kind, frozenset((a, b))))
        layout = f" (paper {number} layout)" if number else ""
        title = f"Zero-shot retrieval {a}<->{b}{layout}, sweep {plan.sweep}"
        cols = tables.retrieval_columns(a, b, has_mean)
        name = f"retrieval-{sw}-{sections.slug(a)}_{sections.slug(b)}"
        items.append(w.table(tables.grid_table(m, name=name, title=title, columns=cols, **common)))
    items += _curves(plan, m, w)
    items += _usage_and_forgetting(plan, m, rows, partial, w)
    return items


def _curves(plan, m, w: Report) -> list:
    import pandas as pd

    from reports import plots, sections, tables

    items: list = []
    cols = sections.unseen_table_columns(plan, with_objective=True)
    frames = tables.seed_values(m, cols)
    firsts = m.drop_duplicates("variant").set_index("variant")
    targets = [("objective", sections.OBJECTIVE, "objective")]
    if plan.unseen:  # the Table-6 average of the unseen-pair metrics
        targets.append(("unseen_avg", cols[-1], "unseen-pair Avg. (Table 6)"))
    for x, hue in plan.curves:
        for metric, col, ylabel in targets:
            recs = []
            for (variant, stage), g in frames.items():
                if stage not in plan.stages:
                    continue
                series = g[tables.AVG_KEY] if col.key is None else g[col.key]
                for seed, value in series.dropna().items():
                    rec = {x: firsts.at[variant, x], "stage": stage, "seed": seed, "value": value}
                    if hue:
                        rec[hue] = firsts.at[variant, hue]
                    recs.append(rec)
            if not recs:
                continue
            name = f"curve-{sections.slug(plan.sweep)}-{x}-{metric}"
            xlabel = sections.CURVE_AXES[x]
            title = f"{ylabel} vs {xlabel}, sweep {plan.sweep} (mean, 95 % CI over seeds)"
            fig = plots.curve_figure(pd.DataFrame(recs), x=x, xlabel=xlabel, ylabel=ylabel,
                                     hue=hue)  # fmt: skip
            items.append(w.figure(fig, name, title))
    return items


def _usage_and_forgetting(plan, m, rows, partial, w: Report) -> list:
    import pandas as pd

    from reports import plots, sections, tables

    items: list = []
    sw = sections.slug(plan.sweep)
    usage = m[(m["task"] == "usage") & (m["pair"] == "") & m["metric"].str.startswith("codes_")]
    if not usage.empty:
        stages = sorted(int(s) for s in usage["stage"].unique())
        title = f"Codebook usage: codes per number of modalities (paper Fig. 3), sweep {plan.sweep}"
        per_seed = usage.groupby(["variant", "stage", "metric", "seed"], observed=True)["value"]
        data = per_seed.mean().reset_index()
        data["variant"] = pd.Categorical(data["variant"], plan.variants)
        data = data.sort_values("variant")
        data["variant"] = data["variant"].astype(str)
        items.append(w.figure(plots.usage_figure(data), f"usage-{sw}", title))
        items.append(w.table(tables.grid_table(m, name=f"usage-{sw}", title=title, rows=rows,
                                          stages=stages, columns=sections.USAGE_COLUMNS,
                                          partial=partial, digits=1)))  # fmt: skip
    mat = sections.forgetting_matrix(m, plan.variants)
    if mat is not None:
        title = (
            f"Retrieval mean R@1/5/10 (%) on each stage's pair after each stage, sweep {plan.sweep}"
        )
        fig = plots.forgetting_figure(mat, label="retrieval mean (%)")
        items.append(w.figure(fig, f"forgetting-{sw}", title))
        pairs = list(dict.fromkeys(p for v in plan.variants for _, p in sections.stage_pairs(m, v)))
        cols = [tables.Column(("retrieval", p, "mean"), (p,), in_avg=False) for p in pairs]
        all_stages = sorted(int(s) for s in m["stage"].unique())
        items.append(w.table(tables.grid_table(
            m, name=f"forgetting-{sw}", title=title, rows=rows, stages=all_stages, columns=cols,
            partial=partial, notes=["Values before a pair's own stage are zero-shot."],
        )))  # fmt: skip
    fg = m[m["task"] == "forgetting"]
    if not fg.empty:
        keys = fg[["pair", "metric"]].drop_duplicates().sort_values(["pair", "metric"]).values
        cols = [tables.Column(("forgetting", p, k), (p or "all", k), in_avg=False) for p, k in keys]
        items.append(w.table(tables.grid_table(
            m, name=f"forgetting-rows-{sw}", title=f"Forgetting (recorded), sweep {plan.sweep}",
            rows=rows, stages=sorted(int(s) for s in fg["stage"].unique()), columns=cols,
            partial=partial)))  # fmt: skip
    return items


def _search_sections(plan, m, r, w: Report) -> list:
    from reports import plots, search
    from reports.checks import expected_stages
    from reports.sections import slug

    sw = slug(plan.sweep)
    final = expected_stages(m, r)
    trials = search.search_trials(m, r, final)
    if trials.empty:
        return [f"Optuna search {plan.sweep}: no trial finished stage {final}."]
    items: list = [w.table(search.top_table(trials, name=f"search-{sw}-best",
                                       title=f"Best 5 search trials (stage {final} objective), "
                                       f"sweep {plan.sweep}"))]  # fmt: skip
    imps, note = search.importances(trials)
    if imps is None:
        items.append(f"Parameter importances, sweep {plan.sweep}: {note}.")
    else:
        title = f"Parameter importances, sweep {plan.sweep}"
        items.append(w.table(search.importance_table(imps, name=f"search-{sw}-importance",
                                                title=title, note=note)))  # fmt: skip
        items.append(w.figure(plots.importance_figure(imps),
                              f"search-{sw}-importance", title))  # fmt: skip
    params = [p for p in search.SEARCHED if trials[p].map(search.is_number).all()]
    if params and len(trials) >= 2:
        title = f"Search trials: objective vs searched parameters, sweep {plan.sweep}"
        items.append(w.figure(plots.search_figure(trials, params),
                              f"search-{sw}-params", title))  # fmt: skip
    return items


def build(
    results: Path,
    out: Path,
    *,
    allow_partial: bool = False,
    pdf: bool = True,
    log: Callable[[str], None] = _progress,
) -> Report:
    """Build every artifact the sweeps under ``results`` support into ``out``.

    ``pdf``: compile ``tables.pdf`` when ``pdflatex`` is installed (``tables.tex`` is always
    written); ``Report.pdf_note`` says what happened, in one line.
    """
    from reports.checks import describe, partial_reasons
    from reports.page import Section, render_index
    from reports.sections import plan_sweep, slug

    t0 = time.perf_counter()
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: --out names a file, not a folder")
    metrics, runs = _load(results)
    sweeps = sorted(set(metrics["sweep"]) | set(runs["sweep"]))
    partial = partial_reasons(metrics, runs)
    if partial and not allow_partial:
        raise ReportError(f"{describe(partial)}; finish the sweep or pass --allow-partial")
    if metrics.empty:
        raise ReportError(f"{results}: the records hold no metric rows")
    log(f"loaded {len(metrics)} metric rows and {len(runs)} runs of {len(sweeps)} sweep(s) "
        f"from {results} in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    w = Report(out, log)
    page = []
    for sweep in sweeps:
        m = metrics[metrics["sweep"] == sweep]
        if m.empty:
            log(f"sweep {sweep}: no metrics, skipped")
            continue
        plan = plan_sweep(sweep, m)
        log(f"sweep {sweep}: {plan.kind}, {len(plan.variants)} variant(s)")
        p = partial.get(sweep, {})
        section = Section(f"Sweep {sweep} ({plan.kind})", f"sweep-{slug(sweep)}")
        if p:
            section.items.append(f"\u2020 partial sweep: {describe({sweep: p}, limit=99)}")
        if plan.kind == "search":
            section.items += _search_sections(plan, m, runs[runs["sweep"] == sweep], w)
        else:
            section.items += _grid_sections(plan, m, p, w)
        page.append(section)
    w.pdf_note = w.typeset(Path(results).resolve().name or str(results), compile_pdf=pdf)
    log(w.pdf_note)
    index = render_index(page, out, source=str(results), pdf=w.pdf, pdf_note=w.pdf_note)
    w.files.append(index)
    log(f"index  {index.name} ({time.perf_counter() - t0:.1f} s in all)")
    return w


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 for unusable or partial results)."""
    args = build_parser().parse_args(argv)
    try:
        w = build(args.results, args.out, allow_partial=args.allow_partial, pdf=not args.no_pdf)
    except ReportError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # always one line
        return 2
    except OSError as exc:  # a write failing half-way (disk full, permissions)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}cannot write the report ({exc.strerror or exc})", file=sys.stderr)
        return 2
    print(f"built {w.counts['tables']} tables and {w.counts['figures']} figures in {args.out}/")
    for ref in w.refs:
        if hasattr(ref, "table"):
            print(f"  table   tables/{ref.table.name}.{{md,tex,csv}}")
        else:
            print(f"  figure  figures/{ref.name}.{{png,svg,pdf}}")
    print(f"  {w.pdf_note}")
    print(f"open {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
