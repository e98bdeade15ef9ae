"""Provenance: every run record says which code, data and machine made it; the report and the
resume refuse to mix runs of different code or data unless told to.

Ray-free: run records are written by the trial's own record path, sweeps are literal records
(``test_reports.write_sweep``), and the resume is refused before Ray starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy
import pytest
import ray
import torch
from test_reports import ABLATIONS, UNSEEN, write_sweep

from ablations import provenance as prov
from ablations.records import write_run, write_stage_metrics
from comet_model.config import preset
from comet_model.data.bank import default_bank_path
from reports.build import main as report_main
from reports.load import load_results
from reports.stats import DAGGER, DOUBLE_DAGGER

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "ablations" / "run.py")]
AXES = {"variant": "full", "method": "dcid", "comet": True, "num_experts": 6}


def _git(*args: str) -> str | None:
    if shutil.which("git") is None:
        return None
    out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def _sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _record(tmp_path: Path, flat: dict, sweep: dict) -> dict:
    """Write one run record the way a trial does and read it back."""
    row = prov.run_provenance(sweep, flat, "cpu")
    write_run(tmp_path, sweep="s", run_key="r1", seed=0, trial_id="t", axes=AXES,
              status="complete", stages_done=3, num_stages=3, config=flat,
              provenance=row)  # fmt: skip
    write_stage_metrics(tmp_path, sweep="s", run_key="r1", seed=0, trial_id="t", attempt=0,
                        axes=AXES, stage=1, stage_name="video-text",
                        metrics={"objective": 1.0})  # fmt: skip
    _, runs = load_results(tmp_path)
    return runs.iloc[0].to_dict()


def test_run_record_provenance_matches_the_running_environment(tmp_path: Path) -> None:
    flat = preset("smoke").to_flat()
    rec = _record(tmp_path, flat, prov.sweep_provenance([flat]))
    top = _git("rev-parse", "--show-toplevel")
    in_repo = top is not None and Path(top.strip()).resolve() == ROOT
    assert rec["code_version"] == version("comet-cmg")
    if in_repo:
        assert rec["code_commit"] == _git("rev-parse", "HEAD").strip()
        assert bool(rec["code_dirty"]) == bool(_git("diff", "HEAD", "--no-ext-diff", "--binary"))
        assert (rec["code_diff"] != "") == bool(rec["code_dirty"])
    else:
        assert rec["code_commit"] == "unknown"
    assert rec["torch_version"] == torch.__version__
    assert rec["ray_version"] == ray.__version__
    assert rec["numpy_version"] == numpy.__version__
    assert rec["python_version"] == platform.python_version()
    assert rec["device"].startswith("cpu: ") and len(rec["device"]) > len("cpu: ")
    if Path("/proc/cpuinfo").exists():
        models = [
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ]
        assert not models or rec["device"] == f"cpu: {models[0]}"
    assert rec["threads"] == torch.get_num_threads()
    assert rec["precision"] == "fp32"  # the smoke preset's train.precision
    bank = default_bank_path()
    assert rec["data_fingerprint"] == _sha(bank)
    assert json.loads(rec["data_files"]) == {bank.name: _sha(bank)}


def test_precision_is_read_from_the_config_when_present() -> None:
    flat = preset("smoke").to_flat() | {"train.precision": "bf16"}
    assert prov.run_provenance({}, flat, "cpu")["precision"] == "bf16"


def test_without_git_the_commit_is_unknown_and_nothing_fails(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "")  # no git executable
    code = prov.code_provenance()
    assert code["code_commit"] == "unknown" and code["code_dirty"] is None
    assert code["code_version"] == version("comet-cmg")
    monkeypatch.undo()
    outside = Path(tempfile.mkdtemp(prefix="np"))  # a source root that is no repository's top
    monkeypatch.setattr(prov, "SOURCE_ROOT", outside)
    try:
        assert prov.code_provenance()["code_commit"] == "unknown"
    finally:
        outside.rmdir()


def _plan(folder: Path) -> Path:
    folder.mkdir()
    for name in ("vt_train.npz", "vt_val.npz", "at_train.npz"):
        (folder / name).write_bytes(name.encode() * 1000)
    plan = folder / "plan.toml"
    plan.write_text('[[stages]]\nmodalities = ["video", "text"]\ntrain = "vt_train.npz"\n'
                    'val = "vt_val.npz"\n\n[[stages]]\nmodalities = ["audio", "text"]\n'
                    'train = "at_train.npz"\n')  # fmt: skip
    return plan


def test_a_changed_data_file_changes_the_fingerprint(tmp_path: Path, monkeypatch) -> None:
    plan = _plan(tmp_path / "byo")
    key = prov.data_key({"data.source": "plan", "data.plan_file": str(plan)})
    first = prov.data_fingerprint(key)
    assert set(first["files"]) == {"plan.toml", "vt_train.npz", "vt_val.npz", "at_train.npz"}
    assert prov.data_fingerprint(key) == first  # deterministic
    with open(tmp_path / "byo" / "at_train.npz", "r+b") as f:  # one byte of one feature file
        f.seek(10)
        f.write(b"X")
    second = prov.data_fingerprint(key)
    assert second["fingerprint"] != first["fingerprint"]
    assert second["files"]["at_train.npz"] != first["files"]["at_train.npz"]
    assert second["files"]["vt_train.npz"] == first["files"]["vt_train.npz"]
    plan.write_text(plan.read_text() + "seed = 1\n")  # the plan file itself
    assert prov.data_fingerprint(key)["fingerprint"] != second["fingerprint"]
    bank = tmp_path / "digits_bank.npz"  # the bank: a copy, then one byte changed
    shutil.copy2(default_bank_path(), bank)
    monkeypatch.setattr("comet_model.data.bank.default_bank_path", lambda: bank)
    before = prov.data_fingerprint("digits")["fingerprint"]
    assert before == _sha(default_bank_path())
    with open(bank, "r+b") as f:
        f.seek(bank.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    assert prov.data_fingerprint("digits")["fingerprint"] not in (before, "unknown")


def test_file_digest_streams_and_missing_files_do_not_raise(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * (1 << 20) + 17))  # more than one read chunk
    assert prov.file_digest(big) == _sha(big)
    assert prov.file_digest(tmp_path / "absent.npz") == "missing"
    plan = tmp_path / "absent.toml"
    assert prov.data_fingerprint(f"plan:{plan}")["fingerprint"] == "unknown"


def _provenance(commit: str) -> dict:
    return {"code_version": "0.1.0", "code_commit": commit, "code_dirty": False, "code_diff": "",
            "torch_version": "2.13.0", "ray_version": "2.60.0", "numpy_version": "2.4.6",
            "python_version": "3.11.9", "device": "cpu: Test CPU", "threads": 1,
            "precision": "fp32", "data_fingerprint": "sha256:00112233aabbccdd",
            "data_files": json.dumps({"digits_bank.npz": "sha256:00112233aabbccdd"})}  # fmt: skip


A, B = "a" * 40, "b" * 40


def _report(args: list[str], capsys) -> tuple[int, str, str]:
    code = report_main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_report_refuses_runs_of_different_commits_then_marks_them(tmp_path: Path, capsys) -> None:
    res, out = tmp_path / "r", tmp_path / "out"
    # seed 2 of every variant was run on another commit
    write_sweep(res, "abl", ABLATIONS, keys=UNSEEN,
                run_fn=lambda v, s: _provenance(B if s == 2 else A))  # fmt: skip
    code, stdout, err = _report(["--results", str(res), "--out", str(out)], capsys)
    assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1
    assert "'abl'" in err and A[:12] in err and B[:12] in err and "--allow-mixed" in err
    assert not out.exists()
    code, stdout, _ = _report(["--results", str(res), "--out", str(out), "--allow-mixed"], capsys)
    assert code == 0 and "manifest.json" in stdout
    md = (out / "tables" / "table6-abl.md").read_text(encoding="utf-8")
    rows = [line for line in md.splitlines() if line.startswith("| COMET (full)")]
    assert rows and all(DOUBLE_DAGGER in r and DAGGER not in r for r in rows)
    assert "--allow-mixed" in md  # the note, with each marked row's code and data
    assert f"code {A[:12]} (2 runs), {B[:12]} (1 run)" in md
    delta = (out / "tables" / "table6-abl-delta.md").read_text(encoding="utf-8")
    assert DOUBLE_DAGGER in delta
    tex = (out / "tables" / "table6-abl.tex").read_text(encoding="utf-8")
    assert r"$^\ddagger$" in tex
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    (entry,) = manifest["sweeps"]
    assert entry["sweep"] == "abl" and entry["runs"] == 12 and entry["mixed"]
    assert [(c["commit"], c["runs"]) for c in entry["code"]] == [(A, 8), (B, 4)]
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Provenance" in page and A[:12] in page and B[:12] in page


def test_one_commit_per_sweep_builds_and_the_manifest_lists_it(tmp_path: Path, capsys) -> None:
    res, out = tmp_path / "r", tmp_path / "out"
    write_sweep(res, "abl", ABLATIONS, keys=UNSEEN, run_fn=lambda v, s: _provenance(A))
    write_sweep(res, "old", ABLATIONS, keys=UNSEEN)  # records from before provenance
    code, _, err = _report(["--results", str(res), "--out", str(out)], capsys)
    assert code == 0, err
    md = (out / "tables" / "table6-abl.md").read_text(encoding="utf-8")
    assert DOUBLE_DAGGER not in md
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    by = {s["sweep"]: s for s in manifest["sweeps"]}
    assert by["abl"]["code"] == [{"label": A[:12], "version": "0.1.0", "commit": A,
                                  "dirty": False, "diff": "", "runs": 12}]  # fmt: skip
    assert by["abl"]["data"][0]["fingerprint"] == "sha256:00112233aabbccdd"
    assert by["abl"]["devices"] == [{"device": "cpu: Test CPU", "threads": 1,
                                     "precision": "fp32", "runs": 12}]  # fmt: skip
    assert by["abl"]["libraries"][0] | {"runs": 0} == {"torch": "2.13.0", "ray": "2.60.0",
                                                       "numpy": "2.4.6", "python": "3.11.9",
                                                       "runs": 0}  # fmt: skip
    assert by["old"]["code"][0]["commit"] == "unknown" and by["old"]["data"][0]["fingerprint"] \
        == "unknown" and not by["old"]["mixed"]  # fmt: skip


def _smoke_sweep(storage: Path, name: str):
    """The spec of the CLI's ``--grid smoke --preset smoke --seeds 2`` sweep."""
    from ablations.run import build_parser, make_spec

    args = build_parser().parse_args(["--grid", "smoke", "--preset", "smoke", "--seeds", "2",
                                      "--name", name, "--storage", str(storage)])  # fmt: skip
    return make_spec(args)


def _other_commit(current: dict) -> dict:
    return {**current, "code": {**current["code"], "code_commit": "c" * 40, "code_dirty": False}}


def test_resume_after_a_code_change_stops_before_anything_runs(tmp_path: Path) -> None:
    from ablations.sweep import _prepare_storage, _sweep_provenance

    storage, name = tmp_path / "results", "smk"
    spec = _smoke_sweep(storage, name)
    current = _sweep_provenance(spec, preset("smoke").to_flat())
    # a start on commit c... that recorded one stage
    exp = _prepare_storage(spec, storage, False, _other_commit(current))
    write_stage_metrics(exp, sweep=name, run_key="r1", seed=0, trial_id="t", attempt=0,
                        axes=AXES, stage=1, stage_name="video-text",
                        metrics={"objective": 1.0})  # fmt: skip
    before = {p: p.read_bytes() for p in exp.rglob("*") if p.is_file()}
    ray_tmp = Path(tempfile.mkdtemp(prefix="rp"))
    try:
        env = dict(os.environ, RAY_ADDRESS="", RAY_TMPDIR=str(ray_tmp))
        proc = subprocess.run(
            [*RUN, "--grid", "smoke", "--preset", "smoke", "--seeds", "2", "--name", name,
             "--storage", str(storage)], capture_output=True, text=True, timeout=300, env=env,
            cwd=tmp_path)  # fmt: skip
        assert not any(ray_tmp.iterdir()), "Ray was started"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "c" * 12 in lines[0] and "--allow-code-change" in lines[0] and "--fresh" in lines[0]
    assert {p: p.read_bytes() for p in exp.rglob("*") if p.is_file()} == before  # untouched


def test_resume_difference_names_code_and_data_and_allow_only_warns(tmp_path: Path,
                                                                    capsys) -> None:  # fmt: skip
    from ablations.sweep import SweepError, _check_provenance, _prepare_storage, _sweep_provenance

    storage = tmp_path / "results"
    spec = _smoke_sweep(storage, "smk")
    current = _sweep_provenance(spec, preset("smoke").to_flat())
    exp = _prepare_storage(spec, storage, False, current)
    assert prov.resume_difference(exp, current) is None  # no records yet
    flat = preset("smoke").to_flat()
    other = _other_commit(current)
    other["data"] = {k: {**v, "fingerprint": "sha256:feedfeedfeedfeed"}
                     for k, v in current["data"].items()}  # fmt: skip
    write_run(exp, sweep="smk", run_key="r1", seed=0, trial_id="t", axes=AXES,
              status="complete", stages_done=3, num_stages=3, config=flat,
              provenance=prov.run_provenance(other, flat, "cpu"))  # fmt: skip
    diff = prov.resume_difference(exp, current)
    assert "c" * 12 + " (1 run)" in diff and "sha256:feedfeedfeedfeed (1 run)" in diff
    assert current["data"]["digits"]["fingerprint"] in diff
    with pytest.raises(SweepError, match="--allow-code-change"):
        _check_provenance(spec, exp, current, allow=False)
    _check_provenance(spec, exp, current, allow=True)
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "c" * 12 in err
    assert _prepare_storage(spec, storage, True, current) == exp  # --fresh starts over
    assert prov.resume_difference(exp, current) is None


def test_a_sweep_started_before_provenance_counts_as_unknown(tmp_path: Path) -> None:
    from ablations.sweep import _sweep_provenance

    exp = tmp_path / "old"
    spec = _smoke_sweep(tmp_path, "old")
    exp.mkdir()
    (exp / "sweep.json").write_text(json.dumps({"digest": spec.digest()}))  # no provenance
    assert prov.resume_difference(exp, _sweep_provenance(spec, preset("smoke").to_flat())) is None
    write_stage_metrics(exp, sweep="old", run_key="r1", seed=0, trial_id="t", attempt=0,
                        axes=AXES, stage=1, stage_name="video-text",
                        metrics={"objective": 1.0})  # fmt: skip
    diff = prov.resume_difference(exp, _sweep_provenance(spec, preset("smoke").to_flat()))
    assert diff.startswith("code unknown (unknown) (unfinished runs), now ")
    assert "data unknown (unfinished runs)" in diff
