"""Bring-your-own plans of 1, 2 and 4 stages: the plan's stage count and names everywhere.

``comet run --plan`` (metrics.json, the config it records, the progress lines), ``--stages``
selecting and reordering a plan's stages, and (slow, Ray) ``ablations/run.py --plan`` with
``reports/build.py`` on its records: run records, progress lines and the report agree on the
plan's stages.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest
from byo_plans import stage_names, write_plan

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="the plans are TOML (tomllib needs Python 3.11+)"
)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from comet_model.__main__ import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("stages", [1, 2, 4])
def test_comet_run_trains_the_plans_stages(
    stages: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write_plan(tmp_path / "plan", stages)
    out = tmp_path / "out"
    argv = ["run", "--preset", "smoke", "--plan", str(plan), "--out", str(out), "--threads", "1"]
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    names = stage_names(stages)
    result = json.loads((out / "metrics.json").read_text())
    assert [s["stage"] for s in result["stages"]] == names
    assert result["config"]["data.stages"] == names  # the config records what ran
    where = re.findall(r"^\[stage (\d+)/(\d+) (\S+)\]", err, re.M)
    assert {(int(i), int(n), s) for i, n, s in where} == {
        (i + 1, stages, s) for i, s in enumerate(names)
    }
    assert f"S{stages}" in stdout and f"S{stages + 1}" not in stdout


def test_stages_select_and_reorder_a_plans_stages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write_plan(tmp_path / "plan", 4)
    out = tmp_path / "out"
    argv = ["run", "--preset", "smoke", "--plan", str(plan), "--out", str(out), "--threads", "1",
            "--stages", "i-t,v-t", "--quiet"]  # fmt: skip
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    result = json.loads((out / "metrics.json").read_text())
    assert [s["stage"] for s in result["stages"]] == ["i-t", "v-t"]
    assert result["config"]["data.stages"] == ["i-t", "v-t"]


@pytest.mark.slow
@pytest.mark.ray
def test_sweep_and_report_follow_the_plans_stages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One local Ray instance, three sweeps (1, 2 and 4 stages), a report of each."""
    import ray

    from ablations.run import main as sweep
    from reports.build import main as report
    from reports.load import load_results

    tmp = os.environ.get("RAY_TMPDIR") or tempfile.mkdtemp(prefix="rt", dir="/tmp")
    for key, value in {"RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": "", "RAY_TMPDIR": tmp,
                       "OMP_NUM_THREADS": "1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    storage = tmp_path / "st"
    try:
        for stages in (1, 2, 4):
            plan = write_plan(tmp_path / f"plan{stages}", stages)
            capsys.readouterr()
            code = sweep(["--grid", "smoke", "--preset", "smoke", "--seeds", "1", "--plan",
                          str(plan), "--storage", str(storage), "--name", f"p{stages}",
                          "--max-concurrent", "2"])  # fmt: skip
            _, err = capsys.readouterr()
            assert code == 0, err
            names = stage_names(stages)
            shown = {(int(i), int(n)) for i, n in re.findall(r"stage (\d+)/(\d+) objective", err)}
            assert shown == {(i, stages) for i in range(1, stages + 1)}, err
            metrics, runs = load_results(storage / f"p{stages}")
            assert set(runs["num_stages"]) == {stages} and set(runs["stages_done"]) == {stages}
            assert set(runs["stage_order"]) == {",".join(names)}
            assert sorted(set(metrics["stage"])) == list(range(1, stages + 1))
            assert set(metrics["stage_name"]) == set(names)
            out = tmp_path / f"report{stages}"
            code = report(["--results", str(storage / f"p{stages}"), "--out", str(out),
                           "--no-pdf"])  # fmt: skip
            _, err = capsys.readouterr()
            assert code == 0, err
            tables = "\n".join(p.read_text() for p in (out / "tables").glob("*.md"))
            assert f"*Stage {stages}*" in tables and f"*Stage {stages + 1}*" not in tables
    finally:
        ray.shutdown()
