"""The streaming benchmark runs end to end at tiny sizes and reports both paths."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest

from ablations.benchmarks import streaming as bench

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="the benchmark's plans are TOML (tomllib: Python 3.11+)"
)


def test_stage_file_has_the_importers_layout(tmp_path) -> None:
    size = bench.write_stage_file(tmp_path / "s.h5", 5, block=2)
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["video"].shape == (5, 10, 25088) and f["video"].chunks == (1, 10, 25088)
        assert f["video"].dtype == np.float16 and f["text"].shape == (5, 10, 768)
        assert f["mask_text"][:, :8].all() and np.isfinite(f["video"][()]).all()
    assert size > 5 * 10 * 25088 * 2


@pytest.mark.slow
def test_benchmark_prints_streamed_and_in_memory_figures(tmp_path, capsys) -> None:
    argv = [
        "--dir",
        str(tmp_path),
        "--big-gb",
        "0.02",
        "--small-items",
        "24",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--repeats",
        "1",
        "--cmg-width",
        "8",
        "--threads",
        "1",
        "--stream-big",
        "on",
    ]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "streamed  (streaming=on: from disk)" in out
    assert "memory    (streaming=auto: in memory)" in out
    assert "peak RSS" in out and "% per pair" in out and "load average" in out
    assert not list(tmp_path.iterdir())  # scratch files removed
