"""The benchmark CLI (ablations/bench.py): one-line flag errors, figures that agree, sections."""

from __future__ import annotations

import gc
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ablations import bench
from ablations.benchmarks import cmg, common
from ablations.benchmarks import step as step_bench
from comet_model.config import PRESETS, preset

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, str(ROOT / "ablations" / "bench.py")]
TINY = {
    "model.dim": 16, "model.heads": 2, "model.ffn": 32, "model.spec_dim": 8,
    "model.club_hidden": 16, "codebook.size": 16, "train.batch_size": 8, "data.steps": 6,
}  # fmt: skip


@pytest.fixture
def tiny_preset(monkeypatch: pytest.MonkeyPatch) -> str:
    """A registered preset ``tiny`` (smoke shrunk further) and small matmuls: fast step runs."""
    monkeypatch.setitem(PRESETS, "tiny", lambda: preset("smoke").override(TINY))
    monkeypatch.setattr(step_bench, "MATMUL_SIZES", (32, 64))
    return "tiny"


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["--sections", "step,nope"], "nope"),
        (["--repeats", "0"], "--repeats"),
        (["--repeats", "2.5"], "--repeats"),
        (["--preset", "nope"], "nope"),
        (["--step-presets", "default,nope"], "nope"),
        (["--set", "model.nope=1"], "model.nope"),
        (["--set", "train.epochs=0"], "train.epochs"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], word: str) -> None:
    out = subprocess.run(BENCH + args, capture_output=True, text=True, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and out.stdout == ""
    assert len(lines) == 1 and lines[0].startswith("error:") and word in lines[0]


def test_stat_is_median_min_max_to_three_significant_digits() -> None:
    assert common.stat([3.0, 1.0, 2.0, 10.0]) == "2.50 [1.00, 10.0]"
    assert common.stat([0.001234, 1234.0]) == "617 [0.00123, 1234]"


def _rows(out: str) -> list[list[str]]:
    """Data rows of the step table (cells split on two or more spaces; the first table)."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines() if line[:1].isdigit()]
    return [r for r in rows if len(r) == 10]


def test_step_section_prints_headings_and_consistent_figures(
    tiny_preset: str, capsys: pytest.CaptureFixture[str]
) -> None:
    threads = torch.get_num_threads()
    code = bench.main(["--sections", "step", "--repeats", "2", "--step-presets", tiny_preset])
    assert code == 0 and torch.get_num_threads() == threads  # thread count restored
    out = capsys.readouterr().out
    headings = ("machine:", "software: python", "== step:", "load average at start:",
                "load average at end:", "n=2 timed steps", "matmul/conv/attention")  # fmt: skip
    for heading in headings:
        assert heading in out, heading
    rows = _rows(out)
    assert [int(r[0]) for r in rows] == sorted({1, common.all_threads()})
    for r in rows:
        ms, bf16 = float(r[4].split()[0]), float(r[5].split()[0])
        gflop, rate = float(r[6]), float(r[7])
        mm = float(r[8].split()[0])
        assert gflop > 0 and mm > 0 and bf16 > 0
        assert rate == pytest.approx(gflop / (ms / 1000.0), rel=0.02)
        assert float(r[9]) == pytest.approx(rate / mm, rel=0.02)
    assert "fp32 / bf16 step time" in out


def test_gpu_section_without_cuda_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the section would run")
    assert bench.main(["--sections", "gpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    skipped = [line for line in lines if line.startswith("skipped:")]
    assert len(skipped) == 1 and "CUDA" in skipped[0]


def test_cmg_section_reports_every_precision_against_the_original(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    full = cmg.avt_step_times
    calls: list[tuple[torch.dtype, str]] = []

    def tiny(**kw: object) -> list[float]:  # same code path, tiny batch and width
        over = dict(kw["overrides"])  # type: ignore[arg-type]
        calls.append((kw["dtype"], over["train.precision"]))  # type: ignore[arg-type]
        kw |= {"batch": 2, "steps": 2, "overrides": over | {"model.cmg_width": 8}}
        return full(**kw)  # type: ignore[arg-type]

    monkeypatch.setattr(cmg, "avt_step_times", tiny)
    flops = cmg.avt_step_flops

    def tiny_flops(**kw: object) -> int:
        over = dict(kw["overrides"])  # type: ignore[arg-type]
        return flops(**kw | {"batch": 2, "steps": 2, "overrides": over | {"model.cmg_width": 8}})

    monkeypatch.setattr(cmg, "avt_step_flops", tiny_flops)
    assert bench.main(["--sections", "cmg", "--repeats", "2", "--cmg-float64"]) == 0
    out = capsys.readouterr().out
    assert calls == [(torch.float32, "fp32"), (torch.float32, "bf16"), (torch.float64, "fp32")]
    rows = [re.split(r"\s{2,}", r.strip()) for r in out.splitlines()
            if r.startswith(("float", "bf16 autocast"))]  # fmt: skip
    assert [r[0] for r in rows] == [name for name, *_ in cmg.PRECISIONS]
    medians = {r[0]: float(r[1].split()[0]) for r in rows}
    # the original's step on this machine, estimated through our float64 step
    estimate = cmg.ORIGINAL_STEP_S * medians["float64"] / cmg.REFERENCE_F64_STEP_S
    for r in rows:
        median = medians[r[0]]
        assert float(r[2].rstrip("x")) == pytest.approx(cmg.ORIGINAL_STEP_S / median, rel=0.01)
        assert float(r[3].rstrip("x")) == pytest.approx(estimate / median, rel=0.02)
        if sys.platform == "linux":  # peak RSS of the set-up and steps, and its growth
            peak, grown = float(r[4]), float(r[5])
            assert peak > 100 and 0 <= grown <= peak  # torch alone is over 100 MiB resident
    assert "estimated original step on this machine" in out and "not a run" in out
    assert "bf16 / float32 step time" in out
    floor = re.search(r"float32 step: ([\d.]+) GFLOP .*?([\d.]+) GFLOP/s = (\d+) % .*?\(([\d.]+) "
                      r"GFLOP/s at .*would take ([\d.]+) s", out)  # fmt: skip
    assert floor is not None
    gflop, achieved, pct, peak = (float(floor[i]) for i in range(1, 5))
    assert gflop > 0 and achieved == pytest.approx(gflop / medians["float32"], rel=0.05)
    assert pct == pytest.approx(100 * achieved / peak, abs=1)


@pytest.mark.skipif(sys.platform != "linux", reason="reads and resets /proc/self VmHWM")
def test_peak_rss_reset_forgets_a_freed_peak_and_sees_a_new_one() -> None:
    big = torch.ones(64 * 2**20)  # 256 MiB, touched
    assert common.peak_rss_mib() >= 256
    del big
    gc.collect()
    if not common.reset_peak_rss():
        pytest.skip("/proc/self/clear_refs is not writable here")
    before = common.rss_mib()
    assert before is not None and common.peak_rss_mib() < before + 64  # the old peak is gone
    again = torch.ones(32 * 2**20)  # 128 MiB
    assert common.peak_rss_mib() - before == pytest.approx(128, abs=24)
    del again


def test_matmul_rates_are_one_per_repeat_and_positive() -> None:
    rates = step_bench.matmul_gflops(32, 3)
    assert len(rates) == 3 and all(r > 0 for r in rates)


@pytest.mark.slow
def test_step_flops_count_backward_and_scale_with_the_batch() -> None:
    cfg = preset("smoke").override(TINY)
    one, two = (
        step_bench.step_flops(cfg),
        step_bench.step_flops(cfg.override({"train.batch_size": 16})),
    )
    assert 1.9 < two / one < 2.2  # every counted op is per token (InfoNCE adds a little B^2)
    assert step_bench.step_flops(cfg.override({"club.inner_steps": 0})) < one  # CLUB steps counted


SYNTH = TINY | {"data.source": "synthetic", "data.train_sequences": 32, "eval.epochs": 1}


def _sets(flat: dict[str, object]) -> list[str]:
    return [a for k, v in flat.items() for a in ("--set", f"{k}={v}")]


@pytest.mark.slow
def test_trial_memory_and_scaling_sections_on_a_tiny_trial(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--sections", "trial,memory,scaling", "--repeats", "1", "--preset", "smoke"]
    assert bench.main(args + _sets(SYNTH)) == 0
    out = capsys.readouterr().out
    assert "stage 3 image-text: evaluation" in out and "all stages: training" in out
    rss = re.search(r"one trial, preset smoke\s+([\d.]+)", out)
    base = re.search(r"imports only \(torch, comet_model.continual.pipeline\)\s+([\d.]+)", out)
    assert rss and base and float(rss.group(1)) > float(base.group(1)) > 50
    scaling = [line.split() for line in out.splitlines() if re.match(r"[124]x\s", line)]
    assert [int(r[1]) for r in scaling] == [32, 64, 128]
    assert scaling[0][-5:-3] == ["1.00", "1.00"]  # total/1x, training/1x of the 1x row


@pytest.mark.slow
@pytest.mark.ray
def test_sweep_section_runs_both_concurrencies(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--sections", "sweep", "--repeats", "1", "--preset", "smoke"]
    assert bench.main(args + _sets(SYNTH)) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if re.match(r"[12]\s+\d", line)}
    assert sorted(rows) == ["1", "2"]
    ratio = re.search(r"speed-up wall\(1\)/wall\(2\) = ([\d.]+)", out)
    assert ratio and float(ratio.group(1)) > 0
    assert all(float(rows[c].split()[4]) > 0 for c in rows)  # median trial wall_s from Parquet
