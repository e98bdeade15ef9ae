"""End-to-end Ray Tune sweeps on the smoke preset: failures, SIGKILL and SIGTERM resume (the
latter after a simulated code change, refused until --allow-code-change), run provenance.

Slow (each starts a local Ray instance): marked ``slow`` and ``ray``; CI runs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from reports.load import load_results

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "ablations" / "run.py")]


def _env() -> dict[str, str]:
    tmp = os.environ.get("RAY_TMPDIR") or tempfile.mkdtemp(prefix="rt", dir="/tmp")
    return dict(
        os.environ, RAY_AUTH_MODE="disabled", RAY_ADDRESS="", RAY_TMPDIR=tmp, OMP_NUM_THREADS="1"
    )


def _cmd(storage: Path, name: str, *extra: str) -> list[str]:
    return [
        *RUN, "--grid", "smoke", "--preset", "smoke", "--seeds", "2", "--storage", str(storage),
        "--name", name, "--max-concurrent", "2", *extra,
    ]  # fmt: skip


def _metric_files(exp: Path) -> dict[str, list[str]]:
    files = sorted((exp / "records" / "metrics").glob("*.parquet"))
    out: dict[str, list[str]] = {}
    for f in files:
        key = f.name.split("-s")[0]
        out.setdefault(key, []).append(f.name)
    return out


def _complete_runs(exp: Path) -> set[str]:
    try:
        _, runs = load_results(exp)
    except Exception:
        return set()
    return set(runs.loc[runs["status"] == "complete", "run_key"])


def _simulate_code_change(exp: Path, env: dict, cmd: list[str], cwd: Path) -> None:
    """Store another commit as the last start's provenance: the resume must stop, in one line,
    before Ray starts, and write nothing."""
    marker = exp / "sweep.json"
    doc = json.loads(marker.read_text())
    doc["provenance"]["code"] |= {"code_commit": "c" * 40, "code_dirty": False}
    marker.write_text(json.dumps(doc))
    before = {p: p.stat().st_mtime_ns for p in exp.rglob("*")}
    refused = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "c" * 12 in lines[0] and "--allow-code-change" in lines[0], lines
    assert {p: p.stat().st_mtime_ns for p in exp.rglob("*")} == before


def _check_provenance(runs) -> None:
    """Every run record names this checkout's commit and the committed bank's digest."""
    from comet_model.data.bank import default_bank_path

    bank = "sha256:" + hashlib.sha256(default_bank_path().read_bytes()).hexdigest()[:16]
    assert set(runs["data_fingerprint"]) == {bank}
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--show-toplevel", "HEAD"],
                          capture_output=True, text=True)  # fmt: skip
    top, _, commit = head.stdout.strip().partition("\n")
    in_repo = head.returncode == 0 and Path(top).resolve() == ROOT
    assert set(runs["code_commit"]) == {commit if in_repo else "unknown"}
    assert set(runs["threads"]) == {1} and set(runs["precision"]) == {"fp32"}  # 1 CPU per trial
    assert all(d.startswith("cpu: ") for d in runs["device"])


def _interrupt_and_resume(tmp_path: Path, sig: int, code_change: bool = False) -> None:
    storage, name = tmp_path / "results", f"kill{sig}"
    exp = storage / name
    env = _env()
    proc = subprocess.Popen(
        _cmd(storage, name),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 240
    # Wait until at least one run is finished and at least one is not.
    while time.time() < deadline and proc.poll() is None:
        done = _complete_runs(exp)
        if done and len(done) < 4:
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"sweep ended before it could be interrupted:\n{proc.stdout.read()}"
    done_before = _complete_runs(exp)
    files_before = {k: v for k, v in _metric_files(exp).items() if k in done_before}
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:  # graceful stop: non-zero exit, a resume hint
        assert proc.returncode not in (0, None), out
        assert "run the same command again" in out, out

    extra = []
    if code_change:
        _simulate_code_change(exp, env, _cmd(storage, name), tmp_path)
        extra = ["--allow-code-change"]
    again = subprocess.run(
        _cmd(storage, name, *extra), env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert ("warning: sweep" in again.stderr) == code_change, again.stderr
    # the resumed progress counts on from the runs already complete, on a fresh clock
    resumed = re.search(r"\[(\d+)/4 runs, +([\d.]+) min\] resuming: (\d+) of 4 runs already "
                        r"complete", again.stderr)  # fmt: skip
    assert resumed, again.stderr
    already = int(resumed.group(3))
    assert already >= len(done_before) and int(resumed.group(1)) == already
    assert float(resumed.group(2)) < 0.5
    counts = [int(n) for n in re.findall(r"^\[(\d+)/4 runs", again.stderr, re.M)]
    assert min(counts) == already and counts[-1] == 4, again.stderr
    assert "4/4 complete" in again.stdout, again.stdout
    metrics, runs = load_results(exp)
    assert len(runs) == 4 and set(runs["status"]) == {"complete"}
    _check_provenance(runs)
    # No stage of a run finished before the interruption was recomputed.
    files_after = _metric_files(exp)
    for key, names in files_before.items():
        assert files_after[key] == names, key
    # Exactly one record file per (run, stage) and no duplicated rows, even before dedup.
    per_stage = Counter(n.rsplit("-", 1)[0] for names in files_after.values() for n in names)
    assert set(per_stage.values()) == {1}, per_stage
    assert sorted(Counter(metrics["run_key"]).values()) == sorted(
        Counter(metrics["run_key"]).values()
    )
    assert metrics.duplicated(["run_key", "stage", "split", "task", "pair", "metric"]).sum() == 0
    assert set(metrics["split"]) == {"val", "test"}  # every run evaluates both
    assert metrics.groupby("run_key")["stage"].nunique().eq(3).all()


def test_sweep_resumes_exactly_after_sigkill(tmp_path: Path) -> None:
    _interrupt_and_resume(tmp_path, signal.SIGKILL)


def test_sweep_resumes_after_sigterm_handled_as_graceful_stop(tmp_path: Path) -> None:
    _interrupt_and_resume(tmp_path, signal.SIGTERM, code_change=True)


def test_failing_trial_is_recorded_and_does_not_stop_the_others(tmp_path: Path) -> None:
    from ablations.sweep import Resources, SweepSpec, run_sweep

    bad = {"comet": True, "train.lr": 1e30}  # valid, and diverges in the first epoch
    spec = SweepSpec(
        name="fail", preset="smoke", seeds=(0,), arms={"ok": {"comet": True}, "bad": bad}
    )
    os.environ.update({k: v for k, v in _env().items() if k.startswith("RAY_")})
    import ray

    try:
        outcome = run_sweep(spec, Resources(cpus_per_trial=1), tmp_path / "results")
    finally:
        ray.shutdown()
    assert not outcome.ok
    assert len(outcome.complete) == 1 and len(outcome.failed) == 1
    (error,) = outcome.failed.values()
    assert "loss is nan" in error
    _, runs = load_results(outcome.exp_dir)
    assert sorted(runs["status"]) == ["complete", "failed"]


def test_optuna_search_chooses_on_validation_and_confirms_on_new_seeds(tmp_path: Path) -> None:
    import json

    import optuna

    storage, name = tmp_path / "results", "search"
    cmd = [*RUN, "--search", "optuna", "--num-samples", "2", "--preset", "smoke",
           "--confirm-seeds", "2", "--storage", str(storage), "--name", name,
           "--max-concurrent", "2"]  # fmt: skip
    out = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    metrics, runs = load_results(storage / name)
    final = metrics[(metrics["stage"] == 3) & (metrics["task"] == "objective")]
    val = dict(zip(final.loc[final["split"] == "val", "run_key"],
                   final.loc[final["split"] == "val", "value"], strict=True))  # fmt: skip
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{storage / name / 'optuna.db'}")
    values = sorted(t.value for t in study.trials if t.value is not None)
    assert len(values) == 2 and values == pytest.approx(sorted(val.values()))
    best = max(val, key=val.get)
    searched = ("ewc.lam", "replay.k2", "replay.w_k2", "replay.beta_pmr")
    best_cfg = json.loads(runs.loc[runs["run_key"] == best, "config_json"].iloc[0])
    cm, cr = load_results(storage / f"{name}-confirm")
    assert sorted(cr["seed"]) == [1, 2] and set(cr["status"]) == {"complete"}  # new seeds
    for config in cr["config_json"]:
        assert all(json.loads(config)[k] == best_cfg[k] for k in searched)
    assert {"val", "test"} <= set(cm["split"])
    # The report shows the confirmed configuration's test metrics over the confirmation seeds.
    report = subprocess.run([sys.executable, str(ROOT / "reports" / "build.py"), "--results",
                             str(storage), "--out", str(tmp_path / "report"), "--no-pdf"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert report.returncode == 0, report.stdout + report.stderr
    confirmed = pd.read_csv(tmp_path / "report" / "tables" / f"search-{name}-confirmed.csv")
    shown = confirmed[(confirmed["task"] == "objective") & (confirmed["n"] > 0)]
    shown = shown.set_index("stage")  # stage 1 has no unseen pair yet: no objective (n = 0)
    test = cm[(cm["split"] == "test") & (cm["task"] == "objective") & cm["value"].notna()]
    assert len(shown) >= 1 and set(shown["n"]) == {2}
    assert set(shown.index) == set(test["stage"])
    for stage, row in shown.iterrows():
        assert row["mean"] == pytest.approx(test[test["stage"] == stage]["value"].mean())
    page = (tmp_path / "report" / "index.html").read_text()
    assert "2 new seeds" in page
    assert "Search trials: validation objective vs searched parameters" in page


def test_a_run_another_sweep_finished_is_copied_with_the_very_same_numbers(tmp_path) -> None:
    """Sweep "second" copies the two runs of "first" (same keys: same grid, preset and seeds);
    "retrained" (reuse off) trains them again: all three hold identical metrics, and only the
    copies name their donor (records and report provenance)."""
    from ablations.sweep import Resources, SweepSpec, run_sweep
    from reports.provenance import block_lines, sweep_summary

    arms = {"one": {"comet": True, "moe.num_experts": 1}, "two": {"comet": True}}
    storage = tmp_path / "results"
    os.environ.update({k: v for k, v in _env().items() if k.startswith("RAY_")})
    import ray

    try:
        for name, reuse in (("first", True), ("second", True), ("retrained", False)):
            spec = SweepSpec(name=name, preset="smoke", seeds=(0,), arms=arms)
            res = Resources(cpus_per_trial=1, max_concurrent=2, reuse=reuse)
            assert run_sweep(spec, res, storage).ok, name
    finally:
        ray.shutdown()
    metrics, runs = load_results(storage)
    idx = ["run_key", "stage", "split", "task", "pair", "metric"]
    values = {s: g.set_index(idx)["value"].sort_index() for s, g in metrics.groupby("sweep")}
    assert len(values["first"]) > 100 and values["first"].notna().sum() > 100
    assert values["second"].equals(values["first"])  # copied
    assert values["retrained"].equals(values["first"])  # trained again: a fixed seed is exact
    donors = {s: set(g["reused_from"]) for s, g in runs.groupby("sweep")}
    assert donors == {"first": {""}, "second": {"first"}, "retrained": {""}}
    second = runs[runs["sweep"] == "second"]
    assert set(second["variant"]) == {"one", "two"} and set(second["status"]) == {"complete"}
    assert sweep_summary("second", second)["reused"] == {"first": 2}
    assert any(line.startswith("Reused: 2 from 'first'") for line in
               block_lines(sweep_summary("second", second)))  # fmt: skip
    for key in second["run_key"]:
        copied, donor = (storage / s / "work" / key / "checkpoint.pt" for s in ("second", "first"))
        assert copied.read_bytes() == donor.read_bytes()
