"""Build the COMET report (tables, figures, index.html) from a folder of sweep records.

    python reports/build.py [--results results/] [--out report/] [--allow-partial]
                            [--allow-mixed] [--no-pdf]

Reads every sweep under ``--results`` (Parquet records, :mod:`reports.schema`), builds only the
artifacts the sweeps present support (:mod:`reports.sections`), and writes ``tables/*.md|tex|csv``,
``figures/*.png|svg|pdf``, ``tables.tex`` (every table at its width in a two-column paper),
compiled to ``tables.pdf`` when ``pdflatex`` is installed, ``index.html`` (with each sweep's
provenance: code, data, devices, libraries) and ``manifest.json`` (the same, per sweep) under
``--out``. A partial sweep is refused (exit 2) unless ``--allow-partial``, which marks its cells
with a dagger; a sweep whose runs came from different code commits or data is refused unless
``--allow-mixed``, which marks the cells that mix them with a double dagger
(:mod:`reports.provenance`). Progress goes to stderr.

Every problem (a bad flag, unusable results, an ``--out`` that is a file or cannot be written)
is one line ``error: ...`` on stderr and exit status 2, found before anything is written.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from reports.page import FigureRef, TableRef
    from reports.tables import Table

EPILOG = """examples:
  python reports/build.py                                  # results/ -> report/
  python reports/build.py --results runs/ --out public/report
  python reports/build.py --allow-partial                  # include unfinished sweeps, marked
  python reports/build.py --allow-mixed                    # include sweeps mixing code/data
Open <out>/index.html in a browser (no server needed); <out>/tables.pdf shows every table as
it sets in a two-column paper."""


class ReportError(Exception):
    """A report that cannot be built (one-line message; the CLI exits 2)."""


def _progress(text: str) -> None:
    print(f"[report] {text}", file=sys.stderr, flush=True)


class _OneLineParser(argparse.ArgumentParser):
    """Bad flags: one line naming the problem, exit status 2 (reports may not import
    comet_model, whose ``_cli.OneLineParser`` this mirrors)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def check_out(out: Path) -> None:
    """ReportError unless ``out`` is a writable folder or can be created (nothing is created;
    the same rule as ``comet_model._cli.check_output_dir``, which reports may not import)."""
    probe = out
    while not probe.exists() and probe.parent != probe:
        if probe.is_symlink():
            raise ReportError(f"--out {out}: {probe} is a broken symbolic link")
        probe = probe.parent
    if not probe.is_dir():
        what = "is a file" if probe == out else f"{probe} is a file"
        raise ReportError(f"--out {out}: {what}, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        inside = "" if probe == out else f" (in {probe})"
        raise ReportError(f"--out {out}: cannot write there{inside}: {exc.strerror}") from None


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``reports/build.py`` (console script ``comet-report``)."""
    p = _OneLineParser(
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
        "--allow-mixed",
        action="store_true",
        help="build from sweeps whose runs came from different code commits or data, marking "
        "the cells that mix them with a double dagger",
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


SPLIT_NOTE = (
    "Tables and figures show test-set metrics; every choice (a best grid value, a "
    "search) is made on the validation sets, built from held-out training-pool "
    "instances."
)


def _split(metrics, split: str):
    """The rows of one downstream split (records without the column count as test)."""
    if "split" not in metrics:
        return metrics if split == "test" else metrics.iloc[0:0]
    return metrics[metrics["split"] == split]


def _provenance(metrics, runs, sweeps: list[str], allow_mixed: bool):
    """Per sweep: its manifest entry, and per variant the code and data of its runs where the
    sweep mixes them; raises :class:`ReportError` on a mixed sweep unless ``allow_mixed``."""
    from reports.provenance import describe_mixed, mixed_sweeps, sweep_summary, variant_origins

    mixed = mixed_sweeps(metrics, runs)
    if mixed and not allow_mixed:
        raise ReportError(f"{describe_mixed(mixed)}; rerun it on one commit and data "
                          "(--fresh) or pass --allow-mixed")  # fmt: skip
    summaries = {s: sweep_summary(s, runs[runs["sweep"] == s]) for s in sweeps}
    fed = runs[runs["run_key"].isin(set(metrics["run_key"]))]
    origins = {s: variant_origins(fed[fed["sweep"] == s]) for s in mixed}
    return summaries, origins


def build(
    results: Path,
    out: Path,
    *,
    allow_partial: bool = False,
    allow_mixed: bool = False,
    pdf: bool = True,
    log: Callable[[str], None] = _progress,
) -> Report:
    """Build every artifact the sweeps under ``results`` support into ``out``.

    ``pdf``: compile ``tables.pdf`` when ``pdflatex`` is installed (``tables.tex`` is always
    written); ``Report.pdf_note`` says what happened, in one line. ``allow_mixed``: build sweeps
    whose runs differ in code or data too, marking the cells that mix them.
    """
    from reports import artifacts
    from reports.checks import describe, partial_reasons
    from reports.page import Block, Section, render_index
    from reports.provenance import block_lines, write_manifest
    from reports.sections import plan_sweep, slug

    t0 = time.perf_counter()
    check_out(out)
    metrics, runs = _load(results)
    sweeps = sorted(set(metrics["sweep"]) | set(runs["sweep"]))
    partial = partial_reasons(metrics, runs)
    if partial and not allow_partial:
        raise ReportError(f"{describe(partial)}; finish the sweep or pass --allow-partial")
    if metrics.empty:
        raise ReportError(f"{results}: the records hold no metric rows")
    summaries, origins = _provenance(metrics, runs, sweeps, allow_mixed)
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
        section.items.append(Block("Provenance", block_lines(summaries[sweep])))
        if p:
            section.items.append(f"\u2020 partial sweep: {describe({sweep: p}, limit=99)}")
        test, val = _split(m, "test"), _split(m, "val")
        if plan.kind == "search":
            confirm = _split(metrics[metrics["sweep"] == f"{sweep}-confirm"], "test")
            section.items += artifacts.search_sections(plan, val if not val.empty else test,
                                              runs[runs["sweep"] == sweep], w, confirm,
                                              origins.get(f"{sweep}-confirm"))  # fmt: skip
        else:
            section.items.append(SPLIT_NOTE)
            section.items += artifacts.grid_sections(
                plan, test, p, w, val if not val.empty else None, origins.get(sweep)
            )
        page.append(section)
    w.pdf_note = w.typeset(Path(results).resolve().name or str(results), compile_pdf=pdf)
    log(w.pdf_note)
    index = render_index(page, out, source=str(results), pdf=w.pdf, pdf_note=w.pdf_note)
    w.files.append(index)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest = write_manifest(out / "manifest.json", list(summaries.values()),
                              source=str(results), built_at=stamp)  # fmt: skip
    w.files.append(manifest)
    log(f"index  {index.name}, {manifest.name} ({time.perf_counter() - t0:.1f} s in all)")
    return w


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 for unusable or partial results)."""
    args = build_parser().parse_args(argv)
    try:
        w = build(args.results, args.out, allow_partial=args.allow_partial,
                  allow_mixed=args.allow_mixed, pdf=not args.no_pdf)  # fmt: skip
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
    print("  manifest.json (provenance of every sweep)")
    print(f"open {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
