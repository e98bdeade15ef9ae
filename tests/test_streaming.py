"""Data larger than memory: streamed HDF5 rows equal the in-memory path, and so do results."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from comet_model.data import DataError, load_plan, synthetic_benchmark, write_sequences
from comet_model.data import streaming as st
from comet_model.data.streaming import H5Rows, check_finite, should_stream

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="the fixture plans are TOML (tomllib needs Python 3.11+)"
)


def _h5(path: Path, dtype: str, n: int = 23, chunks: bool = True) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((n, 4, 6)).astype(dtype)
    st.release(path)  # a cached read handle of an earlier version blocks rewriting
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=x, chunks=(1, 4, 6) if chunks else None)
    return x


INDICES = {
    "permutation": lambda n: torch.randperm(n, generator=torch.Generator().manual_seed(1)),
    "with repeats": lambda n: torch.tensor([5, 2, 5, 0, n - 1, 2]),
    "contiguous": lambda n: torch.arange(3, 11),
    "numpy": lambda n: np.array([n - 2, 1]),
    "list": lambda n: [4, 3],
    "slice": lambda n: slice(2, None, 3),
    "negative int": lambda n: -1,
    "empty": lambda n: torch.zeros(0, dtype=torch.long),
}


@pytest.mark.parametrize("chunks", [True, False])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("kind", sorted(INDICES))
def test_rows_equal_the_in_memory_tensor(tmp_path: Path, dtype: str, kind: str, chunks: bool):
    x = _h5(tmp_path / "a.h5", dtype, chunks=chunks)
    mem = torch.from_numpy(x.astype(np.float32))  # what the in-memory loader holds
    rows = H5Rows(tmp_path / "a.h5", "v")
    assert tuple(rows.shape) == tuple(mem.shape) and rows.ndim == 3 and len(rows) == 23
    index = INDICES[kind](23)
    got = rows[index]
    assert got.dtype == torch.float32 and torch.equal(got, mem[index])
    view = rows.take(torch.tensor([20, 3, 7, 3]))  # a row view: indexing goes through it
    assert torch.equal(view[torch.tensor([1, 0, 3])], mem[torch.tensor([3, 20, 3])])
    assert torch.equal(torch.cat(list(view.chunks(3))), mem[torch.tensor([20, 3, 7, 3])])


def test_index_out_of_range_raises(tmp_path: Path) -> None:
    _h5(tmp_path / "a.h5", "float32")
    with pytest.raises(IndexError):
        H5Rows(tmp_path / "a.h5", "v")[torch.tensor([23])]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_streamed_check_finds_a_bad_value_in_the_last_chunk(
    tmp_path: Path, dtype: str, bad: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(st, "CHUNK_BYTES", 4 * 4 * 6 * 5)  # chunks of 5 rows: 5 chunks
    x = _h5(tmp_path / "a.h5", dtype)
    rows = H5Rows(tmp_path / "a.h5", "v")
    check_finite(rows, "a.h5", "v")  # clean: passes
    x[22, 3, 5] = bad
    st.release()
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("v", data=x, chunks=(1, 4, 6))
    with pytest.raises(DataError, match="a.h5: 'v' contains NaN or Inf"):
        check_finite(H5Rows(tmp_path / "a.h5", "v"), "a.h5", "v")


def test_a_file_replaced_after_loading_is_refused(tmp_path: Path) -> None:
    _h5(tmp_path / "a.h5", "float32")
    rows = H5Rows(tmp_path / "a.h5", "v")
    rows[0]
    _h5(tmp_path / "a.h5", "float32", n=30)
    with pytest.raises(DataError, match="changed after it was loaded"):
        rows[0]


def test_rows_pickle_without_a_file_handle(tmp_path: Path) -> None:
    import pickle

    x = _h5(tmp_path / "a.h5", "float16")
    rows = pickle.loads(pickle.dumps(H5Rows(tmp_path / "a.h5", "v").take([4, 1])))
    assert torch.equal(rows[:], torch.from_numpy(x[[4, 1]].astype(np.float32)))


def test_should_stream_is_half_the_available_memory() -> None:
    assert should_stream(600, available=1000) and not should_stream(500, available=1000)
    assert st.available_memory() is None or st.available_memory() > 0


PLAN = """
seed = 3
val_fraction = 0.25
[[stages]]
name = "video-text"
modalities = ["video", "text"]
train = "vt.h5"
[[stages]]
name = "audio-text"
modalities = ["audio", "text"]
train = "at.h5"
[downstream]
ave_train = "ave_train.h5"
ave_test = "ave_test.h5"
avvp_train = "avvp_train.h5"
avvp_test = "avvp_test.h5"
retrieval = "retrieval.h5"
"""


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    """A synthetic benchmark written as HDF5 files (float16 video) and a plan."""
    bench = synthetic_benchmark(
        stages=("video-text", "audio-text"),
        steps=4,
        train_sequences=40,
        val_sequences=8,
        dim={"video": 200, "audio": 8, "text": 8},
        downstream_sequences=24,
        retrieval_items=12,
    )
    for s, name in zip(bench.stages, ("vt", "at"), strict=True):
        write_sequences(tmp_path / f"{name}.h5", s.train)
    for k in bench.downstream.names():
        write_sequences(tmp_path / f"{k}.h5", getattr(bench.downstream, k))
    with h5py.File(tmp_path / "vt.h5", "a") as f:  # store video as float16, chunked per item
        v = f["video"][()].astype(np.float16)
        del f["video"]
        f.create_dataset("video", data=v, chunks=(1, *v.shape[1:]))
    (tmp_path / "plan.toml").write_text(PLAN)
    return tmp_path / "plan.toml"


def test_streamed_plan_holds_the_same_values(plan: Path) -> None:
    mem, disk = load_plan(plan, streaming="off"), load_plan(plan, streaming="on")
    assert disk.streamed and not mem.streamed
    for a, b in zip(mem.stages, disk.stages, strict=True):
        for split in ("train", "val"):
            sa, sb = getattr(a, split), getattr(b, split)
            assert sb.streamed and not sa.streamed
            for m in a.modalities:
                assert isinstance(sb.features[m], H5Rows)
                assert torch.equal(sb.features[m][:], sa.features[m])
    for k in mem.downstream.names():
        da, db = getattr(mem.downstream, k), getattr(disk.downstream, k)
        assert all(torch.equal(db.features[m][:], da.features[m]) for m in da.modalities)


def test_auto_streams_only_when_memory_is_short(
    plan: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not load_plan(plan).streamed  # a few KB: in memory
    monkeypatch.setattr(st, "available_memory", lambda: 1000)
    assert load_plan(plan).streamed


def test_streamed_validation_names_the_file(plan: Path) -> None:
    st.release()
    with h5py.File(plan.parent / "at.h5", "a") as f:
        f["audio"][3, 1, 2] = np.nan
    for mode in ("on", "off"):
        with pytest.raises(DataError, match=r"at.h5: 'audio' contains NaN or Inf"):
            load_plan(plan, streaming=mode)


TINY = {
    "model.dim": 16,
    "model.heads": 2,
    "model.ffn": 32,
    "model.spec_dim": 8,
    "model.club_hidden": 16,
    "codebook.size": 16,
    "train.epochs": 2,
    "train.batch_size": 8,
    "replay.k2": 4,
    "ewc.fisher_batches": 2,
    "eval.epochs": 2,
    "data.source": "plan",
    "model.video_frontend": "cmg",
    "model.cmg_grid": 5,
    "model.cmg_channels": 8,
    "model.cmg_width": 8,
}


def test_streamed_and_in_memory_runs_give_identical_metrics(
    plan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    """Training batches, Fisher batches, K2 seeding and evaluation all read the same rows in
    the same seeded order from either storage (chunked reads forced small here)."""
    from comet_model.config import preset
    from comet_model.continual.pipeline import run_continual

    monkeypatch.setattr(st, "CHUNK_BYTES", 4 * 4 * 200 * 5)  # 5 video rows a chunk
    runs = {}
    for mode in ("on", "off"):
        cfg = preset("smoke").override(TINY | {"data.plan_file": str(plan), "data.streaming": mode})
        runs[mode] = run_continual(cfg, out_dir=tmp_path / mode)
    on, off = runs["on"].stages, runs["off"].stages
    assert [r.metrics for r in on] == [r.metrics for r in off]
    assert [r.summary["losses"] for r in on] == [r.summary["losses"] for r in off]
    assert (
        "ave/video->audio/acc" in on[-1].metrics and "retrieval/video<->text/mean" in on[0].metrics
    )
