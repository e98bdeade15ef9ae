"""Reports: tables match hand-computed aggregates, figures render, partial/broken inputs refused.

The records are literal rows written with pyarrow in the results schema (``reports.schema``) under
``<tmp>/<sweep>/records/{metrics,runs}/``, exactly where the harness writes them.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import zlib
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reports.build import build, main
from reports.layout import plan_layout
from reports.schema import AXES, METRICS_SCHEMA, RUNS_SCHEMA
from reports.stats import DAGGER

STAGES = ("video-text", "audio-text", "image-text")
UNSEEN = [
    (task, f"{a}->{b}", metric)
    for task, metric in (("ave", "acc"), ("avvp", "f1"), ("ave_avvp", "f1"))
    for a, b in (("video", "audio"), ("audio", "video"))
]
RETRIEVAL_PAIRS = (("image", "audio"), ("video", "text"), ("audio", "text"), ("image", "text"))
T975_DF2 = 4.302652729749464  # Student t quantile 0.975 with 2 degrees of freedom (tables)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def metric_keys(full: bool = False) -> list[tuple[str, str, str]]:
    """The (task, pair, metric) keys one stage reports (``full``: a realistic ~90 keys)."""
    keys = list(UNSEEN)
    if full:
        mods = ("video", "audio", "image")
        keys = [
            (task, f"{a}->{b}", metric)
            for a in mods
            for b in mods
            if a != b
            for task, metrics in (
                ("ave", ("acc", "step_acc")),
                ("avvp", ("f1", "precision", "recall")),
                ("ave_avvp", ("f1", "precision", "recall")),
            )  # fmt: skip
            for metric in metrics
        ]
    for a, b in RETRIEVAL_PAIRS:
        keys += [
            ("retrieval", f"{x}->{y}", f"r{k}") for x, y in ((a, b), (b, a)) for k in (1, 5, 10)
        ]
        keys.append(("retrieval", f"{a}<->{b}", "mean"))
    keys += [("usage", "", f"codes_{c}") for c in ("0", "1", "2", "3plus")]
    keys += [("usage", "", "perplexity"), ("objective", "", "value")]
    return keys


def value(variant: str, seed: int, stage: int, key: tuple[str, str, str]) -> float:
    """A deterministic, irregular literal value for one measurement."""
    h = zlib.crc32(f"{variant}|{seed}|{stage}|{'/'.join(key)}".encode())
    if key[0] == "usage" and key[2].startswith("codes"):
        return float(h % 60)
    return round(10 + (h % 4000) / 100.0, 2)


def write_sweep(
    root: Path,
    sweep: str,
    variants: dict[str, dict[str, object]],
    *,
    seeds: tuple[int, ...] = (0, 1, 2),
    stages: int = 3,
    full: bool = False,
    failed: tuple[tuple[str, int], ...] = (),
    drop: tuple[tuple[str, int, int], ...] = (),
    skip: tuple[tuple[str, int], ...] = (),
    keys: list[tuple[str, str, str]] | None = None,
    value_fn=value,
    config_fn=None,
    run_fn=None,
) -> None:
    """Write one sweep's metrics and runs; ``failed``/``skip`` (variant, seed), ``drop`` a stage;
    ``run_fn(variant, seed)``: more columns of the run's record (its provenance)."""
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    mrows, rrows = [], []
    keys = metric_keys(full) if keys is None else keys
    for variant, axes in variants.items():
        for seed in seeds:
            if (variant, seed) in skip:
                continue
            key = hashlib.sha256(f"{sweep}|{variant}|{seed}".encode()).hexdigest()[:16]
            ax = {name: axes.get(name) for name in AXES} | {"variant": variant}
            base = {"sweep": sweep, "run_key": key, "seed": seed, "trial_id": "t", "attempt": 0}
            for stage in range(1, stages + 1):
                if (variant, seed, stage) in drop:
                    continue
                for k in keys:
                    mrows.append(base | ax | {"stage": stage, "stage_name": STAGES[stage - 1],
                                              "task": k[0], "pair": k[1], "metric": k[2],
                                              "value": value_fn(variant, seed, stage, k),
                                              "recorded_at": now})  # fmt: skip
            cfg = config_fn(variant, seed) if config_fn else {"seed": seed}
            status = "failed" if (variant, seed) in failed else "complete"
            rrows.append({"sweep": sweep, "run_key": key, "seed": seed, "trial_id": "t", **ax,
                          "status": status, "stages_done": stages, "num_stages": stages,
                          "error": "boom" if status == "failed" else "", "wall_s": 1.0,
                          "config_json": json.dumps(cfg), "recorded_at": now})  # fmt: skip
            rrows[-1] |= run_fn(variant, seed) if run_fn else {}
    for sub, rows, schema in (("metrics", mrows, METRICS_SCHEMA), ("runs", rrows, RUNS_SCHEMA)):
        folder = root / sweep / "records" / sub
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-0.parquet")


ABLATIONS = {
    "full": {"method": "dcid", "comet": True, "num_experts": 6},
    "-PM": {"method": "dcid", "comet": True, "num_experts": 6},
    "-EWC": {"method": "dcid", "comet": True, "num_experts": 6},
    "DCID": {"method": "dcid", "comet": False, "num_experts": 6},
}
METHODS = {
    f"{m}{s}": {"method": m.lower(), "comet": bool(s), "num_experts": 6}
    for s in ("", "+COMET")
    for m in ("TURN", "DCID")
} | {"TURN+CPC": {"method": "turn", "comet": False, "num_experts": 6}}
EXPERTS = {f"experts={n}": {"method": "dcid", "comet": True, "num_experts": n} for n in (1, 2, 4)}
PMR = {
    f"w_K2={w:g},beta={b:g}": {"method": "dcid", "comet": True, "w_k2": w, "beta_pmr": b}
    for w in (0.1, 1.0)
    for b in (0.1, 1.0)
}
SEARCH_PARAMS = ("ewc.lam", "replay.k2", "replay.w_k2", "replay.beta_pmr")


def search_config(variant: str, seed: int) -> dict[str, object]:
    """A trial's resolved config: seed ``s`` stands for trial ``s`` of the search."""
    return {
        "seed": 0,
        "ewc.lam": 10.0 ** ((seed * 7) % 5 - 1),
        "replay.k2": (0, 16, 32, 64, 128)[seed % 5],
        "replay.w_k2": 0.05 + 0.1 * (seed % 9),
        "replay.beta_pmr": 0.05 * (1 + seed % 4),
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One report over an ablation, a methods, an expert-count, a PMR and a search sweep."""
    root = tmp_path_factory.mktemp("reports")
    res = root / "results"
    write_sweep(res, "abl", ABLATIONS)
    write_sweep(res, "meth", METHODS)
    write_sweep(res, "exp", EXPERTS)
    write_sweep(res, "pmr", PMR, seeds=(0, 1))
    write_sweep(res, "opt", {"search": {"comet": True}}, seeds=tuple(range(8)),
                config_fn=search_config)  # fmt: skip
    w = build(res, root / "out", log=lambda s: None)
    return res, root / "out", w


def _table(w, name: str):
    hits = [ref.table for ref in w.refs if hasattr(ref, "table") and ref.table.name == name]
    assert hits, f"no table {name}; built {[getattr(r, 'name', '') for r in w.refs]}"
    return hits[0]


def _cell(table, row: str, stage: int, column: str):
    d = table.data
    hit = d[(d["row"] == row) & (d["stage"] == stage) & (d["column"] == column)]
    assert len(hit) == 1, (row, stage, column)
    return hit.iloc[0]


def _text(table, row: str, header: tuple[str, ...]) -> str:
    return table.cells[table.rows.index(row)][table.header.index(header)].text()


def _decimals(table) -> int:
    """The one number of decimals every cell of ``table`` is rounded to."""
    found = {len(c.value.split(".")[1]) for line in table.cells for c in line if "." in c.value}
    assert len(found) == 1, found
    return found.pop()


def _hand(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_table6_cells_are_mean_std_n_over_seeds(report) -> None:
    _, _, w = report
    t6 = _table(w, "table6-abl")
    assert t6.rows == ["COMET (full)", "-PM", "-EWC", "DCID"]
    assert {h[0] for h in t6.header} == {"Stage 2", "Stage 3"}  # the paper's two stages
    key = ("ave", "video->audio", "acc")
    mean, std = _hand([value("-PM", s, 2, key) for s in (0, 1, 2)])
    c = _cell(t6, "-PM", 2, "AVE V->A")
    assert (c["mean"], c["std"], c["n"]) == (pytest.approx(mean), pytest.approx(std), 3)
    d = _decimals(t6)
    assert d == 1  # spreads of several points: one decimal
    assert _text(t6, "-PM", ("Stage 2", "AVE", "V->A")) == f"{mean:.{d}f} \u00b1 {std:.{d}f}"
    assert "over 3 seeds" in t6.stat  # n once, in the caption, not in every cell
    assert not any(c.n for line in t6.cells for c in line)
    # Avg.: per seed the mean of the six unseen-pair metrics, then mean and std over seeds.
    mean, std = _hand([sum(value("DCID", s, 3, k) for k in UNSEEN) / 6 for s in (0, 1, 2)])
    c = _cell(t6, "DCID", 3, "Avg.")
    assert (c["mean"], c["std"]) == (pytest.approx(mean), pytest.approx(std))
    c = _cell(t6, "COMET (full)", 3, "AVVP A->V")
    assert c["mean"] == pytest.approx(
        sum(value("full", s, 3, ("avvp", "audio->video", "f1")) for s in (0, 1, 2)) / 3
    )


def test_table6_differences_carry_paired_t_interval(report) -> None:
    _, _, w = report
    delta = _table(w, "table6-abl-delta")
    # each arm minus the reference row its grid names (the ablation grid: full COMET)
    assert delta.rows == ["-PM - COMET (full)", "-EWC - COMET (full)", "DCID - COMET (full)"]
    key = ("ave_avvp", "audio->video", "f1")
    d = [value("-EWC", s, 3, key) - value("full", s, 3, key) for s in (0, 1, 2)]
    mean, sd = _hand(d)
    half = T975_DF2 * sd / math.sqrt(3)
    c = _cell(delta, "-EWC - COMET (full)", 3, "AVE->AVVP A->V")
    assert (c["diff"], c["ci_lo"], c["ci_hi"], c["n"]) == (
        pytest.approx(mean),
        pytest.approx(mean - half),
        pytest.approx(mean + half),
        3,
    )
    d = _decimals(delta)
    text = _text(delta, "-EWC - COMET (full)", ("Stage 3", "AVE->AVVP", "A->V"))
    assert text == f"{mean:+.{d}f} [{mean - half:+.{d}f}, {mean + half:+.{d}f}]"
    # Significance stays readable: bold exactly where the interval excludes 0.
    rows = delta.data.set_index(["row", "stage", "column"])
    for label, line in zip(delta.rows, delta.cells, strict=True):
        for h, cell in zip(delta.header, line, strict=True):
            r = rows.loc[(label, int(h[0].split()[-1]), " ".join(x for x in h[1:] if x))]
            assert cell.strong == bool(r["ci_lo"] > 0 or r["ci_hi"] < 0) == r["excludes_zero"]
    assert "bold" in delta.stat and "3 seeds" in delta.stat


def test_table1_rows_and_comet_differences(report) -> None:
    _, _, w = report
    t1 = _table(w, "table1-meth")
    assert t1.rows == ["TURN", "DCID", "TURN+COMET", "DCID+COMET", "TURN+CPC (control)"]
    delta = _table(w, "table1-meth-delta")
    # each "+COMET" row against its baseline, the control against its own, then "+COMET"
    # against the control (what COMET adds beyond the Cross-CPC module it brings)
    assert delta.rows == ["TURN+COMET - TURN", "DCID+COMET - DCID", "TURN+CPC (control) - TURN",
                          "TURN+COMET - TURN+CPC (control)"]  # fmt: skip
    c = _cell(delta, "TURN+COMET - TURN+CPC (control)", 3, "AVE V->A")
    key = ("ave", "video->audio", "acc")
    diffs = [value("TURN+COMET", s, 3, key) - value("TURN+CPC", s, 3, key) for s in (0, 1, 2)]
    assert c["diff"] == pytest.approx(sum(diffs) / 3)
    avg = {v: [sum(value(v, s, 2, k) for k in UNSEEN) / 6 for s in (0, 1, 2)] for v in METHODS}
    d = [a - b for a, b in zip(avg["DCID+COMET"], avg["DCID"], strict=True)]
    mean, sd = _hand(d)
    c = _cell(delta, "DCID+COMET - DCID", 2, "Avg.")
    assert c["diff"] == pytest.approx(mean)
    assert c["ci_hi"] - c["ci_lo"] == pytest.approx(2 * T975_DF2 * sd / math.sqrt(3))


def test_retrieval_tables_have_both_directions_and_average(report) -> None:
    _, out, w = report
    t7 = _table(w, "retrieval-meth-image_audio")
    assert "Table 7" in t7.title and "Table 8" in _table(w, "retrieval-abl-image_audio").title
    assert [h[1:] for h in t7.header[:7]] == [
        ("I->A", "R@1"), ("I->A", "R@5"), ("I->A", "R@10"),
        ("A->I", "R@1"), ("A->I", "R@5"), ("A->I", "R@10"), ("Avg.", ""),
    ]  # fmt: skip
    assert {h[0] for h in t7.header} == {"Stage 1", "Stage 2", "Stage 3"}
    c = _cell(t7, "TURN", 1, "A->I R@5")
    mean, std = _hand([value("TURN", s, 1, ("retrieval", "audio->image", "r5")) for s in (0, 1, 2)])
    assert (c["mean"], c["std"]) == (pytest.approx(mean), pytest.approx(std))
    c = _cell(t7, "TURN", 1, "Avg.")  # the recorded a<->b mean
    assert c["mean"] == pytest.approx(
        sum(value("TURN", s, 1, ("retrieval", "image<->audio", "mean")) for s in (0, 1, 2)) / 3
    )
    for pair in ("video_text", "audio_text", "image_text"):
        assert (out / "tables" / f"retrieval-meth-{pair}.csv").stat().st_size > 0


def test_every_figure_renders_png_and_svg(report) -> None:
    _, out, w = report
    names = {ref.name for ref in w.refs if hasattr(ref, "png")}
    expected = {
        "curve-exp-num_experts-objective", "curve-exp-num_experts-unseen_avg",
        "curve-pmr-w_k2-objective", "usage-abl", "usage-meth", "forgetting-abl",
        "search-opt-importance", "search-opt-params",
    }  # fmt: skip
    assert expected <= names
    titles = {ref.name: ref.title for ref in w.refs if hasattr(ref, "png")}
    # the split each figure shows is named: curves report test; the search figure shows what
    # the search chose on (these records carry no split, so they read as test)
    assert all(titles[n].startswith("test ") for n in names if n.startswith("curve-")), titles
    assert titles["search-opt-params"].startswith("Search trials: test objective")
    for ref in (r for r in w.refs if hasattr(r, "png")):
        png, svg = out / ref.png, out / ref.svg
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 2000, ref.name
        assert b"<svg" in svg.read_bytes()[:2000], ref.name
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"


def test_usage_and_forgetting_tables(report) -> None:
    _, _, w = report
    usage = _table(w, "usage-abl")
    c = _cell(usage, "-PM", 2, "unused")
    assert c["mean"] == pytest.approx(
        sum(value("-PM", s, 2, ("usage", "", "codes_0")) for s in (0, 1, 2)) / 3
    )
    fg = _table(w, "forgetting-abl")  # each stage's pair, in stage order
    assert [h[1] for h in fg.header[:3]] == ["video<->text", "audio<->text", "image<->text"]


def test_every_table_written_in_three_formats_and_index_links_resolve(report) -> None:
    _, out, w = report
    page = (out / "index.html").read_text(encoding="utf-8")
    tables = [r.table for r in w.refs if hasattr(r, "table")]
    assert page.count('<table class="report"') == len(tables)
    for t in tables:
        for ext in ("md", "tex", "csv"):
            assert (out / "tables" / f"{t.name}.{ext}").stat().st_size > 0
        md = (out / "tables" / f"{t.name}.md").read_text(encoding="utf-8")
        panels = len(plan_layout(t).panels)  # per panel: header, rule, one line per row
        assert md.count("\n|") == (len(t.rows) + 2) * panels, t.name
    import re

    links = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert links and all(not link.startswith(("/", "http")) for link in links)
    assert all((out / link).is_file() for link in links)


def test_latex_escapes_and_groups_headers(report) -> None:
    _, out, _ = report
    tex = (out / "tables" / "table6-abl.tex").read_text(encoding="utf-8")
    assert r"\textit{Stage 2}" in tex and r"\multicolumn{2}{c}{AVE}" in tex  # stage blocks
    assert r"$\pm$" in tex and r"V$\rightarrow$A" in tex and "±" not in tex
    tex = (out / "tables" / "search-opt-best.tex").read_text(encoding="utf-8")
    assert r"ewc.lam" in tex and r"replay.beta\_pmr" in tex


def test_search_best_trials_and_importances(report) -> None:
    _, _, w = report
    best = _table(w, "search-opt-best")
    objectives = sorted((value("search", s, 3, ("objective", "", "value")) for s in range(8)),
                        reverse=True)  # fmt: skip
    assert best.data["objective"].tolist() == pytest.approx(objectives[:5])
    top_seed = int(best.data["seed"].iloc[0])
    cfg = search_config("search", top_seed)
    assert best.data.iloc[0]["replay.k2"] == cfg["replay.k2"]
    assert best.data.iloc[0]["ewc.lam"] == pytest.approx(cfg["ewc.lam"])
    imp = _table(w, "search-opt-importance")
    assert set(imp.rows) == set(SEARCH_PARAMS)
    assert imp.data["importance"].sum() == pytest.approx(1.0)


def test_search_with_too_few_trials_says_so(tmp_path: Path) -> None:
    keys = [("objective", "", "value")]
    write_sweep(tmp_path / "r", "opt", {"search": {}}, seeds=(0, 1), keys=keys,
                config_fn=search_config)  # fmt: skip
    w = build(tmp_path / "r", tmp_path / "out", log=lambda s: None)
    names = {getattr(r, "table", r).name for r in w.refs}
    assert "search-opt-best" in names and "search-opt-importance" not in names
    assert "too few finished trials" in (tmp_path / "out" / "index.html").read_text()


def _run_main(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.parametrize(
    "defect, reason",
    [
        ({"failed": (("-PM", 1),)}, "1 failed run"),
        ({"skip": (("-EWC", 2),)}, "2 of 3 seeds"),
        ({"drop": (("DCID", 0, 3),)}, "lacks stage 3"),
    ],
)
def test_partial_sweep_refused_then_marked(tmp_path: Path, capsys, defect, reason) -> None:
    res, out = tmp_path / "r", tmp_path / "out"
    write_sweep(res, "abl", ABLATIONS, keys=UNSEEN, **defect)
    code, _, err = _run_main(["--results", str(res), "--out", str(out)], capsys)
    assert code == 2 and reason in err and "--allow-partial" in err
    assert len(err.strip().splitlines()) == 1 and not (out / "index.html").exists()
    code, stdout, _ = _run_main(
        ["--results", str(res), "--out", str(out), "--allow-partial"], capsys
    )
    assert code == 0 and "index.html" in stdout
    md = (out / "tables" / "table6-abl.md").read_text(encoding="utf-8")
    bad = next(v for v in ABLATIONS if v in str(defect))
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if " | " in line}
    assert DAGGER in rows[bad if bad != "full" else "COMET (full)"]
    assert DAGGER not in rows["COMET (full)"] and reason in md  # footnote names the reason
    assert "(n=" not in rows["COMET (full)"]  # n per cell only where it differs
    if "seeds" in reason or "lacks" in reason:
        assert "(n=2)" in rows[bad] and "(n per cell where it differs)" in md
    assert "partial sweep" in (out / "index.html").read_text(encoding="utf-8")


def test_run_without_status_record_is_partial(tmp_path: Path, capsys) -> None:
    res = tmp_path / "r"
    write_sweep(res, "abl", ABLATIONS, keys=UNSEEN)
    for f in (res / "abl" / "records" / "runs").glob("*.parquet"):
        f.unlink()
    code, _, err = _run_main(["--results", str(res), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no status record" in err


def test_one_seed_gives_no_spread_and_na_interval(tmp_path: Path) -> None:
    write_sweep(tmp_path / "r", "meth", METHODS, seeds=(4,), keys=UNSEEN)
    w = build(tmp_path / "r", tmp_path / "out", log=lambda s: None)
    key = ("ave", "video->audio", "acc")
    v = value("TURN", 4, 2, key)
    t1, delta = _table(w, "table1-meth"), _table(w, "table1-meth-delta")
    assert _text(t1, "TURN", ("Stage 2", "AVE", "V->A")) == f"{v:.1f}"
    assert t1.stat.startswith("One seed")
    d = value("TURN+COMET", 4, 2, key) - v
    text = _text(delta, "TURN+COMET - TURN", ("Stage 2", "AVE", "V->A"))
    assert text == f"{d:+.1f} [n/a]" and "no interval" in delta.stat


def _corrupt(root: Path) -> Path:
    folder = root / "sweep" / "records" / "metrics"
    folder.mkdir(parents=True)
    (folder / "part-0.parquet").write_bytes(b"PAR1 this is not a parquet file")
    return root


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: p / "absent", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no sweep records"),
        (lambda p: _corrupt(p / "bad"), "unreadable"),
    ],
)
def test_unusable_results_folder_exits_2_with_one_line(tmp_path: Path, capsys, make, words) -> None:
    code, out, err = _run_main(["--results", str(make(tmp_path)), "--out", str(tmp_path / "o")],
                               capsys)  # fmt: skip
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and words in err


def test_cli_script_in_subprocess(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    script = [sys.executable, str(repo / "reports" / "build.py")]
    bad = subprocess.run([*script, "--results", str(tmp_path / "nope")], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr
    write_sweep(tmp_path / "results", "abl", ABLATIONS, keys=UNSEEN)
    ok = subprocess.run(script, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "report" / "index.html").is_file()  # the defaults: results/ -> report/
    assert "tables/table6-abl" in ok.stdout and "[report]" in ok.stderr


def _entry_point(kind: str) -> list[str]:
    repo = Path(__file__).resolve().parents[1]
    if kind == "script":
        return [sys.executable, str(repo / "reports" / "build.py")]
    if kind == "module":
        return [sys.executable, "-m", "reports.build"]
    console = Path(sys.executable).with_name("comet-report")
    if not console.exists():
        pytest.skip("console script comet-report not installed next to this interpreter")
    return [str(console)]


@pytest.mark.parametrize("kind", ["script", "module", "console"])
def test_every_entry_point_runs_and_refuses_bad_input_in_one_line(tmp_path: Path, kind) -> None:
    cmd = _entry_point(kind)
    ok = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120,
                        cwd=tmp_path)  # fmt: skip
    assert ok.returncode == 0 and "--results" in ok.stdout, ok.stderr
    write_sweep(tmp_path / "r", "abl", ABLATIONS, keys=UNSEEN)
    (tmp_path / "a-file").write_text("not a folder")
    for args, words in (
        (["--results", str(tmp_path / "nope")], "does not exist"),
        (["--results", str(tmp_path / "r"), "--out", "a-file"], "not a folder"),
    ):
        bad = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120,
                             cwd=tmp_path)  # fmt: skip
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert bad.stderr.startswith("error: ") and words in bad.stderr


def test_no_report_module_shadows_the_standard_library() -> None:
    """Run as ``python reports/build.py``, the folder is first on sys.path: no stdlib names."""
    folder = Path(__file__).resolve().parents[1] / "reports"
    names = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    assert names and not names & set(sys.stdlib_module_names)


def test_report_sources_stay_small() -> None:
    """No file of reports/ over 450 lines, no function over 80 (one reader's sitting each)."""
    import ast

    for path in (Path(__file__).resolve().parents[1] / "reports").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert source.count("\n") <= 450, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 80, f"{path.name}: {node.name}"


def test_import_loads_no_model_or_ray() -> None:
    code = (
        "import sys, json\nimport reports\nlight = sorted(sys.modules)\nimport reports.build\n"
        "print(json.dumps([light, sorted(sys.modules)]))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    light, loaded = (set(x) for x in json.loads(res.stdout.strip().splitlines()[-1]))
    for name in ("torch", "ray", "comet_model", "ablations"):
        assert name not in loaded, name
    for name in ("pandas", "matplotlib", "pyarrow"):
        assert name not in light, name  # the package itself is light


@pytest.mark.slow
def test_smoke_sized_build_within_30_s(tmp_path: Path) -> None:
    """7 variants x 3 seeds x 3 stages x ~90 metrics (the ablation grid) builds in < 30 s."""
    import time

    variants = {v: {"method": "dcid", "comet": v != "DCID", "num_experts": 6}
                for v in ("full", "-PM", "-MoE", "-gate", "-EWC", "-SL", "DCID")}  # fmt: skip
    write_sweep(tmp_path / "r", "ablations-smoke", variants, full=True)
    start = time.perf_counter()
    w = build(tmp_path / "r", tmp_path / "out", log=lambda s: None)
    elapsed = time.perf_counter() - start
    assert w.counts["tables"] >= 6 and w.counts["figures"] >= 2
    assert elapsed < 30.0, f"report build took {elapsed:.1f} s"


def test_recorded_forgetting_rows_get_a_table(tmp_path: Path) -> None:
    keys = [*UNSEEN, ("forgetting", "video<->text", "mean"), ("forgetting", "", "bwt")]
    write_sweep(tmp_path / "r", "abl", ABLATIONS, keys=keys)
    w = build(tmp_path / "r", tmp_path / "out", log=lambda s: None)
    t = _table(w, "forgetting-rows-abl")
    c = _cell(t, "-PM", 3, "video<->text mean")
    mean, std = _hand([value("-PM", s, 3, keys[-2]) for s in (0, 1, 2)])
    assert (c["mean"], c["std"], c["n"]) == (pytest.approx(mean), pytest.approx(std), 3)
    assert _cell(t, "DCID", 2, "all bwt")["n"] == 3
