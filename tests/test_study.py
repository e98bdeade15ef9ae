"""``ablations/study.py``: its sweeps in order with their arguments, a stop at the first failure,
and ``study.json`` summing the wall time of a resumed study over its invocations (what
``ablations/bench.py --sections study`` prints). The sweeps and the report are stand-ins here;
the real sweeps are the harness's own tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ablations import run, study
from reports import build


class _Calls(list):
    """The argv of every sweep and report call; a grid named in ``fail`` exits 1."""

    fail: set[str]


@pytest.fixture
def calls(monkeypatch) -> _Calls:
    seen = _Calls()
    fail: set[str] = set()

    def fake_run(argv: list[str]) -> int:
        seen.append(list(argv))
        return 1 if argv[argv.index("--grid") + 1] in fail else 0

    monkeypatch.setattr(run, "main", fake_run)
    monkeypatch.setattr(build, "main", lambda argv: seen.append(["report", *argv]) or 0)
    seen.fail = fail
    return seen


def test_runs_every_sweep_in_order_then_the_report(tmp_path: Path, calls) -> None:
    assert study.main(["--storage", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    grids = [a[a.index("--grid") + 1] for a in calls if a[0] != "report"]
    assert grids == [g for g, *_ in study.STUDY]
    names = [a[a.index("--name") + 1] for a in calls if a[0] != "report"]
    assert names == ["ablations-default", "methods-default", "experts-default",
                     "headline-default-overlap"]  # fmt: skip
    headline = calls[3]
    assert headline[headline.index("--set") + 1] == "data.class_plan=overlap"
    assert [a[a.index("--seeds") + 1] for a in calls[:4]] == ["5", "5", "3", "5"]
    assert calls[-1][0] == "report"
    done = json.loads((tmp_path / "study.json").read_text())
    steps = [f"{g}{suffix}" for g, _, _, suffix in study.STUDY]  # as the benchmark prints them
    assert list(done["sweeps_s"]) == [*steps, "report"]
    assert done["total_s"] == pytest.approx(sum(done["sweeps_s"].values()))
    assert set(done["invocations_per_step"].values()) == {1}


def test_stops_at_the_first_failure_and_a_resume_adds_its_time(tmp_path: Path, calls) -> None:
    calls.fail.add("methods")
    assert study.main(["--storage", str(tmp_path), "--no-report"]) == 1
    assert [a[a.index("--grid") + 1] for a in calls] == ["ablations", "methods"]
    first = json.loads((tmp_path / "study.json").read_text())  # written after every sweep
    assert set(first["sweeps_s"]) == {"ablations", "methods"}
    calls.fail.clear()
    calls.clear()
    assert study.main(["--storage", str(tmp_path), "--no-report"]) == 0
    assert len(calls) == len(study.STUDY)  # every sweep again: run.py skips what is complete
    done = json.loads((tmp_path / "study.json").read_text())
    assert done["invocations_per_step"]["ablations"] == 2
    assert done["invocations_per_step"]["experts"] == 1
    assert done["sweeps_s"]["ablations"] >= first["sweeps_s"]["ablations"]
    assert done["total_s"] == pytest.approx(sum(done["sweeps_s"].values()))


def test_a_partial_study_leaves_the_record_alone_and_bad_grids_exit_2(
    tmp_path: Path, calls, capsys
) -> None:
    assert study.main(["--storage", str(tmp_path), "--only", "experts", "--no-report"]) == 0
    assert not (tmp_path / "study.json").exists()  # --only is not the whole study
    assert study.main(["--storage", str(tmp_path), "--only", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: --only: unknown grid 'nope'"


def test_no_reuse_reaches_every_sweep(tmp_path: Path, calls) -> None:
    argv = ["--storage", str(tmp_path), "--out", str(tmp_path / "rep"), "--no-reuse"]
    assert study.main(argv) == 0
    sweeps = [a for a in calls if a[0] != "report"]
    assert sweeps and all("--no-reuse" in a for a in sweeps)
    calls.clear()
    assert study.main(argv[:-1]) == 0
    assert not any("--no-reuse" in a for a in calls)


def test_the_copies_the_benchmark_counts_are_runs_of_an_earlier_sweep() -> None:
    """Every study run an earlier sweep of the study holds is copied (same run key); the
    methods grid's DCID, DCID+COMET and DCID+COMET+mEWC are the ablations grid's DCID, full and
    COMET+mEWC, and the expert curve's default count is ``full`` (5 and 3 seeds)."""
    from ablations.benchmarks.throughput import study_copies, study_trials
    from ablations.keys import resolve_flat
    from comet_model.config import preset
    from search_spaces.grids import get_grid

    flat = preset("default").to_flat()
    resolved = {g: {a: resolve_flat(flat, o, 0) for a, o in get_grid(g).items()}
                for g in ("ablations", "methods", "experts")}  # fmt: skip
    same = {(g, a) for g in ("methods", "experts") for a, f in resolved[g].items()
            if f in resolved["ablations"].values()}  # fmt: skip
    assert same == {("methods", "DCID"), ("methods", "DCID+COMET"),
                    ("methods", "DCID+COMET+mEWC"), ("experts", "experts=6")}  # fmt: skip
    copies = study_copies("default")
    assert copies == {"ablations": 0, "methods": 3 * 5, "experts": 1 * 3, "headline-overlap": 0}
    assert sum(study_trials().values()) - sum(copies.values()) == 115


def test_the_projection_pays_a_sweeps_fixed_cost_once_per_sweep() -> None:
    """A 4-trial sweep of 100 s trials at 2 concurrent in 230 s wall has 30 s of per-sweep cost
    (start, stop); 10 trials in 3 sweeps project to 3 x 30 + 10 x 50 s, not 10 x 230 / 4."""
    from ablations.benchmarks.sweep import SweepRun
    from ablations.benchmarks.throughput import project_study, sweep_overhead

    run = SweepRun(230.0, [100.0, 100.0, 100.0, 100.0])
    assert sweep_overhead(run) == pytest.approx(30.0)
    assert project_study(run, trained=10, sweeps=3) == pytest.approx(3 * 30.0 + 10 * 50.0)
    # uneven trials: the mean counts, and a wall below the trials' own floors the cost at 0
    assert project_study(SweepRun(100.0, [60.0, 140.0]), trained=4, sweeps=1) == 200.0
    assert sweep_overhead(SweepRun(100.0, [150.0, 150.0])) == 0.0
    assert project_study(SweepRun(100.0, [150.0, 150.0]), trained=2, sweeps=5) == 150.0
