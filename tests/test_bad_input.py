"""Every bad input refused up front: one line, exit status 2, no traceback, nothing written.

One row per case: the command line (``run`` = ``python -m comet_model run``, ``data`` =
``python -m comet_model.data``, ``sweep`` = ``ablations/run.py``, ``report`` =
``reports/build.py``), its arguments, what is done to a valid two-stage plan first, and a
fragment of the expected message. Each case runs in-process through the command's ``main``
with training and Ray start-up replaced by failures (so a case that got that far fails the
test), and checks that the files under ``tmp_path`` are exactly those the setup made. A few
cases also run as real subprocesses. Categories: config values, output folders, sweep names
and --fresh, stage plans and their files (headers, sizes, memory, values, labels, label spaces),
stage selection, flags.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from byo_plans import N, T, replace_arrays, write_plan

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="the plans are TOML (tomllib needs Python 3.11+)"
)

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
Setup = Callable[[Path, Path], None]  # (tmp_path, plan file)

RUN = ("run", "--preset", "smoke", "--quiet", "--out", "{tmp}/out")
RUN_PLAN = (*RUN, "--plan", "{plan}")
CHECK = ("check", "{plan}")
SWEEP = ("--grid", "smoke", "--preset", "smoke", "--seeds", "1", "--storage", "{tmp}/st")
SWEEP_PLAN = (*SWEEP, "--plan", "{plan}")
REPORT = ("--results", "{tmp}/results", "--out", "{tmp}/report", "--no-pdf")


@dataclass(frozen=True)
class Case:
    id: str
    command: str  # run | data | sweep | report
    argv: tuple[str, ...]  # "{tmp}" and "{plan}" are filled in
    fragment: str  # part of the one-line message
    setup: Setup | None = None
    needs_non_root: bool = False  # permissions do not bind root


# ---- setups -----------------------------------------------------------------------------------


def edit_plan(old: str, new: str) -> Setup:
    def setup(tmp: Path, plan: Path) -> None:
        text = plan.read_text()
        assert old in text, old
        plan.write_text(text.replace(old, new))

    return setup


def prepend_plan(lines: str) -> Setup:
    def setup(tmp: Path, plan: Path) -> None:
        plan.write_text(lines + "\n" + plan.read_text())

    return setup


def append_plan(lines: str) -> Setup:
    def setup(tmp: Path, plan: Path) -> None:
        plan.write_text(plan.read_text() + lines)

    return setup


def remove(file: str) -> Setup:
    return lambda tmp, plan: (plan.parent / file).unlink()


def unwritten_v(shape: tuple[int, ...], chunks: tuple[int, ...] | None = None):
    """An HDF5 writer: 'v' declared with ``shape`` but never written, 't' as in s0.npz."""

    def make(f, held: dict) -> None:
        f.create_dataset("v", shape=shape, dtype="f4", chunks=chunks)
        f.create_dataset("t", data=held["t"])

    return make


def arrays(file: str, **values: Callable[[], np.ndarray | None]) -> Setup:
    def setup(tmp: Path, plan: Path) -> None:
        replace_arrays(plan.parent / file, **{k: make() for k, make in values.items()})

    return setup


def write(rel: str, data: bytes = b"") -> Setup:
    def setup(tmp: Path, plan: Path) -> None:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)

    return setup


def folder(rel: str) -> Setup:
    return lambda tmp, plan: (tmp / rel).mkdir(parents=True)


def both(*setups: Setup) -> Setup:
    def setup(tmp: Path, plan: Path) -> None:
        for s in setups:
            s(tmp, plan)

    return setup


def read_only(rel: str) -> Setup:
    def setup(tmp: Path, plan: Path) -> None:
        (tmp / rel).mkdir(parents=True, exist_ok=True)
        (tmp / rel).chmod(0o555)

    return setup


def unreadable(rel: str) -> Setup:
    return lambda tmp, plan: (plan.parent / rel).chmod(0)


def broken_link(rel: str) -> Setup:
    return lambda tmp, plan: (tmp / rel).symlink_to(tmp / "nowhere")


def damaged_deflate(tmp: Path, plan: Path) -> None:
    """s0.npz compressed, with bytes inside the first member's deflate stream overwritten."""
    path = plan.parent / "s0.npz"
    with np.load(path) as f:
        held = {k: f[k] for k in f.files}
    np.savez_compressed(path, **held)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.infolist()[0]
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + 200 : start + 260] = b"\xff" * 60
    path.write_bytes(bytes(raw))


def absurd_npz_header(tmp: Path, plan: Path) -> None:
    """s0.npz whose 'v' header claims 10**12 items (48 TB) over the 1,152 bytes it holds."""
    path = plan.parent / "s0.npz"
    with np.load(path) as f:
        held = {k: f[k] for k in f.files}
    member = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**12, T, 3)}
    np.lib.format.write_array_header_1_0(member, header)
    member.write(held["v"].tobytes())
    text = io.BytesIO()
    np.save(text, held["t"])
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("v.npy", member.getvalue())
        zf.writestr("t.npy", text.getvalue())


def h5_stage(make: Callable[[object, dict], None]) -> Setup:
    """Stage 1 as s0.h5, written by ``make(h5file, arrays of s0.npz)``."""

    def setup(tmp: Path, plan: Path) -> None:
        import h5py

        with np.load(plan.parent / "s0.npz") as f:
            held = {k: f[k] for k in f.files}
        with h5py.File(plan.parent / "s0.h5", "w") as f:
            make(f, held)
        plan.write_text(plan.read_text().replace('"s0.npz"', '"s0.h5"'))

    return setup


def truncated_h5(tmp: Path, plan: Path) -> None:
    h5_stage(lambda f, a: [f.create_dataset(k, data=v) for k, v in a.items()])(tmp, plan)
    path = plan.parent / "s0.h5"
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def little_memory(tmp: Path, plan: Path) -> None:
    """Not a file: the case's monkeypatch (see ``MEMORY``) says 1 KiB is available."""


def results_records(tmp: Path, plan: Path) -> None:
    (tmp / "results" / "sw" / "records" / "runs").mkdir(parents=True)
    (tmp / "results" / "sw" / "records" / "runs" / "r.parquet").write_bytes(b"not parquet")


def other_folder(tmp: Path, plan: Path) -> None:
    (tmp / "st" / "mine").mkdir(parents=True)
    (tmp / "st" / "mine" / "thesis.tex").write_text("precious")


def victim(tmp: Path, plan: Path) -> None:
    (tmp / "victim").mkdir()
    (tmp / "victim" / "keep.txt").write_text("precious")


def f32(shape: tuple[int, ...], value: float | None = None) -> Callable[[], np.ndarray]:
    def make() -> np.ndarray:
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        if value is not None:
            x = x.astype(np.float64)
            x[0, 0, 0] = value
        return x

    return make


def labels(
    fill: int | None = None, dtype: str = "int64", first: int | None = None
) -> Callable[[], np.ndarray]:
    """[N, T] labels in [0, 5), or all ``fill``; the first step ``first`` if given."""

    def make() -> np.ndarray:
        y = np.random.default_rng(2).integers(0, 5, size=(N, T)).astype(dtype)
        if fill is not None:
            y[:] = fill
        if first is not None:
            y[0, 0] = first
        return y

    return make


def multi_hot_avvp(width: int) -> Setup:
    """AVVP sets of their own (avvp.npz): multi-hot labels of ``width`` classes, class 0 on."""

    def setup(tmp: Path, plan: Path) -> None:
        y = np.zeros((N, T, width), dtype=bool)
        y[..., 0] = True
        (plan.parent / "avvp.npz").write_bytes((plan.parent / "down.npz").read_bytes())
        replace_arrays(plan.parent / "avvp.npz", labels=y)
        for split in ("train", "test"):
            edit_plan(f'avvp_{split} = "down.npz"', f'avvp_{split} = "avvp.npz"')(tmp, plan)

    return setup


def garbage_h5(tmp: Path, plan: Path) -> None:
    h5_stage(lambda f, a: None)(tmp, plan)
    (plan.parent / "s0.h5").write_bytes(b"\x89HDF" + b"\0" * 500)


def not_utf8(tmp: Path, plan: Path) -> None:
    plan.write_bytes(b"# \xff\xfe\n" + plan.read_bytes())


NONE = lambda: None  # noqa: E731 (an array to remove)
MEMORY = {"memory"}  # ids of cases run with 1 KiB of available memory

# One case per line or two: a table to read, kept out of the formatter.
# fmt: off
CASES = [
    # config values: finite, in range, known, typed
    Case("lam-inf", "run", (*RUN, "--set", "ewc.lam=inf"), "ewc.lam: must be a finite number"),
    Case("lam-nan", "run", (*RUN, "--set", "ewc.lam=nan"), "ewc.lam: must be a finite number"),
    Case("lr-overflows-f32", "run", (*RUN, "--set", "train.lr=1e300"), "overflows float32"),
    Case("tau-minus-inf", "run", (*RUN, "--set", "replay.tau=-inf"), "replay.tau"),
    Case("dim-absurd", "run", (*RUN, "--set", "model.dim=1000000000000000"), "model.dim"),
    Case("int-overflows-int64", "run", (*RUN, "--set", "codebook.size=" + "9" * 30), "int64"),
    Case("seed-negative", "run", (*RUN, "--seed", "-1"), "seed: must be in [0, 2**32)"),
    Case("data-seed-big", "run", (*RUN, "--set", "data.seed=99999999999"), "data.seed"),
    Case("decay-out-of-range", "run", (*RUN, "--set", "codebook.decay=1.5"), "codebook.decay"),
    Case("loss-negative", "run", (*RUN, "--set", "loss.recon=-1"), "loss.recon"),
    Case("batch-one", "run", (*RUN, "--set", "train.batch_size=1"), "train.batch_size"),
    Case("threads-negative", "run", (*RUN, "--threads", "-1"), "train.threads"),
    Case("unknown-key", "run", (*RUN, "--set", "model.dimm=3"), "unknown config key"),
    Case("not-a-number", "run", (*RUN, "--set", "model.dim=abc"), "model.dim: expected int"),
    Case("bad-split", "run", (*RUN, "--set", "eval.splits=val,train"), "eval.splits"),
    Case("plan-file-without-source", "run", (*RUN, "--set", "data.plan_file=p.toml"),
         "data.plan_file: must be empty unless"),
    Case("no-equals", "run", (*RUN, "--set", "ewc.lam"), "expected key=value"),
    Case("unknown-preset", "run", ("run", "--preset", "huge", "--out", "{tmp}/out"), "--preset"),
    Case("no-out", "run", ("run", "--preset", "smoke"), "--out"),
    Case("sweep-lam-inf", "sweep", (*SWEEP, "--set", "ewc.lam=inf"), "ewc.lam"),
    Case("sweep-seed-negative", "sweep", (*SWEEP[:-4], "--seeds", "0,-1", *SWEEP[-2:]),
         "seed: must be in"),
    Case("sweep-max-failures", "sweep", (*SWEEP, "--max-failures", "-1"), "--max-failures"),
    # output folders
    Case("out-is-file", "run", RUN, "--out", write("out")),
    Case("out-under-file", "run", (*RUN[:-1], "{tmp}/f/sub"), "f is a file, not a folder",
         write("f")),
    Case("out-broken-link", "run", RUN, "broken symbolic link", broken_link("out")),
    Case("out-read-only", "run", (*RUN[:-1], "{tmp}/ro/out"), "Permission denied",
         read_only("ro"), needs_non_root=True),
    Case("storage-is-file", "sweep", SWEEP, "--storage", write("st")),
    Case("storage-under-file", "sweep", (*SWEEP[:-1], "{tmp}/f/st"), "is a file, not a folder",
         write("f")),
    Case("storage-read-only", "sweep", (*SWEEP[:-1], "{tmp}/ro/st"), "Permission denied",
         read_only("ro"), needs_non_root=True),
    Case("checkpoint-damaged", "run", RUN, "unreadable checkpoint (damaged, or not ours)",
         write("out/checkpoint.pt", b"garbage")),
    Case("checkpoint-not-zip", "run", RUN, "unreadable checkpoint (RuntimeError",
         write("out/checkpoint.pt", b"PK\x03\x04junk")),
    Case("checkpoint-is-folder", "run", RUN, "unreadable checkpoint (Is a directory)",
         folder("out/checkpoint.pt")),
    Case("report-out-is-file", "report", REPORT, "is a file, not a folder", write("report")),
    Case("report-out-under-file", "report", (*REPORT[:3], "{tmp}/f/r", "--no-pdf"),
         "is a file, not a folder", write("f")),
    Case("report-out-read-only", "report", (*REPORT[:3], "{tmp}/ro/r", "--no-pdf"),
         "Permission denied", read_only("ro"), needs_non_root=True),
    Case("build-out-is-folder", "data", ("build", "--raw", "{tmp}", "--out", "{tmp}/d"),
         "is a folder, expected a file name", folder("d")),
    Case("import-out-is-file", "data",
         ("import-cmg", "--pretrain-csv", "{tmp}/a.csv", "--video-zips", "{tmp}/z", "--prompts",
          "{tmp}/p.csv", "--stages", "video-text", "--out", "{tmp}/o"),
         "--out", both(folder("z"), write("o"))),
    # sweep names and --fresh
    Case("name-parent", "sweep", (*SWEEP, "--name", "../victim", "--fresh"), "plain folder name",
         victim),
    Case("name-absolute", "sweep", (*SWEEP, "--name", "{tmp}/victim", "--fresh"),
         "plain folder name", victim),
    Case("name-nested", "sweep", (*SWEEP, "--name", "a/b"), "plain folder name"),
    Case("name-dots", "sweep", (*SWEEP, "--name", ".."), "plain folder name"),
    Case("name-empty", "sweep", (*SWEEP, "--name", ""), "plain folder name"),
    Case("fresh-not-a-sweep", "sweep", (*SWEEP, "--name", "mine", "--fresh"), "holds no sweep",
         other_folder),
    # stage plans: the plan file itself
    Case("plan-missing", "run", (*RUN, "--plan", "{tmp}/nope.toml"), "plan file not found"),
    Case("plan-is-folder", "run", (*RUN, "--plan", "{tmp}/pf"), "is a folder, expected a plan",
         folder("pf")),
    Case("plan-type", "run", (*RUN, "--plan", "{tmp}/plan.txt"), "unknown plan type",
         write("plan.txt", b"x")),
    Case("plan-syntax", "run", RUN_PLAN, "unreadable plan", prepend_plan("seed = = 1")),
    Case("plan-not-utf8", "data", CHECK, "not UTF-8", not_utf8),
    Case("plan-unknown-key", "run", RUN_PLAN, "unknown key 'epochs'", prepend_plan("epochs = 3")),
    Case("plan-seed-negative", "run", RUN_PLAN, "'seed' must be an integer in",
         prepend_plan("seed = -1")),
    Case("plan-val-fraction", "data", CHECK, "val_fraction", prepend_plan("val_fraction = 1.5")),
    Case("plan-stage-name-twice", "run", RUN_PLAN, "taken by an earlier stage",
         edit_plan('name = "a-t"', 'name = "v-t"')),
    Case("plan-stage-name-comma", "data", CHECK, "has a comma",
         edit_plan('name = "a-t"', 'name = "a,t"')),
    Case("plan-one-modality", "data", CHECK, "at least two distinct",
         edit_plan('modalities = ["a", "t"]', 'modalities = ["a"]')),
    Case("plan-mediator", "data", CHECK, "mediator", prepend_plan('mediator = "v"')),
    Case("plan-and-set-source", "run", (*RUN_PLAN, "--set", "data.source=digits"),
         "--plan: conflicts with --set data.source"),
    Case("sweep-plan-missing", "sweep", (*SWEEP, "--plan", "{tmp}/nope.toml"), "not found"),
    Case("sweep-plan-is-folder", "sweep", (*SWEEP, "--plan", "{tmp}/pf"), "is a folder",
         folder("pf")),
    # stage selection: --stages with a plan selects or reorders its stages, or is refused
    Case("stages-unknown", "run", (*RUN_PLAN, "--stages", "x-t"), "no stage named 'x-t'"),
    Case("stages-twice", "run", (*RUN_PLAN, "--stages", "v-t,v-t"), "distinct"),
    Case("stages-both-flags", "run", (*RUN_PLAN, "--stages", "v-t", "--set", "data.stages=a-t"),
         "given twice"),
    Case("sweep-stages-unknown", "sweep", (*SWEEP_PLAN, "--set", "data.stages=x-t"),
         "no stage named 'x-t'"),
    Case("sweep-order-grid-on-plan", "sweep", ("--grid", "order", *SWEEP_PLAN[2:]),
         "arm 'AT-VT-IT': "),
    # files a plan names: readable, what their headers say, sizes against memory
    Case("file-missing", "run", RUN_PLAN, "s1.npz: file not found", remove("s1.npz")),
    Case("file-is-folder", "run", RUN_PLAN, "is a folder, expected a feature file",
         both(remove("s1.npz"), folder("plan/s1.npz"))),
    Case("file-unreadable", "run", RUN_PLAN, "cannot read (Permission denied)",
         unreadable("s1.npz"), needs_non_root=True),
    Case("file-type", "data", CHECK, "unknown file type",
         edit_plan('"s1.npz"', '"s1.csv"')),
    Case("npz-not-zip", "run", RUN_PLAN, "not a zip archive", write("plan/s1.npz", b"x" * 99)),
    Case("npz-damaged-deflate", "run", RUN_PLAN, "damaged compressed data", damaged_deflate),
    Case("npz-absurd-header", "run", RUN_PLAN, "header claims shape (1000000000000, 4, 3)",
         absurd_npz_header),
    Case("h5-unwritten-chunks", "run", RUN_PLAN, "chunks written",
         h5_stage(unwritten_v((10**9, T, 3), chunks=(1, T, 3)))),
    Case("h5-unwritten-contiguous", "data", CHECK, "stores 0",
         h5_stage(unwritten_v((N, T, 3)))),
    Case("h5-truncated", "run", RUN_PLAN, "unreadable HDF5", truncated_h5),
    Case("h5-not-hdf5", "data", CHECK, "unreadable HDF5", garbage_h5),
    Case("memory", "data", ("check", "{plan}", "--streaming", "off"), "of memory",
         little_memory),
    # feature values
    Case("features-nan", "run", RUN_PLAN, "'v' contains NaN or Inf",
         arrays("s0.npz", v=f32((N, T, 3), float("nan")))),
    Case("features-overflow-f32", "run", RUN_PLAN, "overflows float32",
         arrays("s0.npz", v=f32((N, T, 3), 1e300))),
    Case("features-int", "data", CHECK, "integer/bool dtype",
         arrays("s0.npz", v=lambda: np.ones((N, T, 3), dtype=np.int32))),
    Case("features-2d", "data", CHECK, "expected 3 [N, T, d]",
         arrays("s0.npz", v=lambda: np.ones((N, T), dtype=np.float32))),
    Case("features-empty", "data", CHECK, "is empty",
         arrays("s0.npz", v=lambda: np.ones((0, T, 3), dtype=np.float32))),
    Case("features-n-differ", "data", CHECK, "N=",
         arrays("s0.npz", v=f32((N - 1, T, 3)))),
    Case("features-d-differ", "data", CHECK, "has d=5",
         arrays("s1.npz", t=f32((N, T, 5)))),
    Case("features-missing", "data", CHECK, "missing array 'v'", arrays("s0.npz", v=NONE)),
    Case("mask-shape", "data", CHECK, "mask_v",
         arrays("s0.npz", mask_v=lambda: np.ones((N, T + 1), dtype=bool))),
    # labels and label spaces (what the downstream evaluation needs)
    Case("downstream-no-labels", "run", RUN_PLAN, "needs labels", arrays("down.npz", labels=NONE)),
    Case("downstream-all-unknown", "run", RUN_PLAN, "no labelled step",
         arrays("down.npz", labels=labels(fill=-1))),
    Case("labels-uint32-unknown", "run", RUN_PLAN, "4294967295",
         arrays("down.npz", labels=labels(dtype="uint32", first=2**32 - 1))),
    Case("labels-below-minus-one", "run", RUN_PLAN, "below -1",
         arrays("down.npz", labels=labels(first=-5))),
    Case("labels-float", "data", CHECK, "expected integers",
         arrays("down.npz", labels=lambda: np.zeros((N, T), dtype=np.float32))),
    Case("labels-shape", "data", CHECK, "'labels' has shape",
         arrays("down.npz", labels=lambda: np.zeros((N, T + 1), dtype=np.int64))),
    Case("num-classes-absurd", "run", RUN_PLAN, "'num_classes' is 1000000000000000, at most",
         prepend_plan("num_classes = 1000000000000000")),
    Case("num-classes-one", "run", RUN_PLAN, "need at least 2", prepend_plan("num_classes = 1")),
    Case("num-classes-below-labels", "data", CHECK, "labels reach 4",
         prepend_plan("num_classes = 3")),
    Case("num-classes-float", "data", CHECK, "non-negative integer",
         prepend_plan("num_classes = 5.5")),
    Case("one-class-labels", "run", RUN_PLAN, "need at least 2",
         arrays("down.npz", labels=labels(fill=0))),
    Case("background-out-of-range", "data", CHECK, "background_class",
         prepend_plan("background_class = 9")),
    Case("class-names-count", "data", CHECK, "class_names", prepend_plan('class_names = ["a"]')),
    Case("multi-hot-width", "data", CHECK, "multi-hot labels have 3 classes, num_classes is 5",
         both(prepend_plan("num_classes = 5"), multi_hot_avvp(3))),
    Case("task-table-one-class", "data", CHECK, "at least 2",
         append_plan("[downstream.ave]\nnum_classes = 1\n")),
    Case("sweep-labels-uint32", "sweep", SWEEP_PLAN, "4294967295",
         arrays("down.npz", labels=labels(dtype="uint32", first=2**32 - 1))),
    Case("sweep-features-nan", "sweep", SWEEP_PLAN, "NaN or Inf",
         arrays("s1.npz", a=f32((N, T, 3), float("inf")))),
    # flags
    Case("check-streaming-choice", "data", (*CHECK, "--streaming", "sometimes"), "--streaming"),
    Case("check-no-plan", "data", ("check",), "PLAN"),
    Case("build-raw-missing", "data", ("build", "--raw", "{tmp}/raw", "--out", "{tmp}/b.npz"),
         "raw data folder not found"),
    Case("probe-bank-missing", "data", ("probe", "--bank", "{tmp}/bank.npz"), "bank file not"),
    Case("import-val-fraction-nan", "data",
         ("import-cmg", "--pretrain-csv", "{tmp}/a.csv", "--video-zips", "{tmp}/z", "--prompts",
          "{tmp}/p.csv", "--stages", "video-text", "--out", "{tmp}/o", "--val-fraction", "nan"),
         "--val-fraction", folder("z")),
    Case("sweep-unknown-grid", "sweep", ("--grid", "nope", *SWEEP[2:]), "unknown grid"),
    Case("report-unknown-flag", "report", (*REPORT, "--colour"), "unrecognized arguments"),
    Case("report-results-missing", "report", REPORT, "does not exist"),
    Case("report-results-file", "report", REPORT, "is a file, expected a results folder",
         write("results")),
    Case("report-results-empty", "report", REPORT, "no sweep records", folder("results")),
    Case("report-records-garbage", "report", REPORT, "unreadable", results_records),
]
# fmt: on


def _main(command: str) -> Callable[[list[str]], int]:
    if command == "run":
        from comet_model.__main__ import main
    elif command == "data":
        from comet_model.data.__main__ import main
    elif command == "sweep":
        from ablations.run import main
    else:
        from reports.build import main
    return main


def _tree(root: Path) -> dict[str, tuple[bool, int, int]]:
    out = {}
    for p in root.rglob("*"):
        st = p.lstat()
        out[str(p.relative_to(root))] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return out


def _prepare(case: Case, tmp: Path) -> tuple[list[str], dict]:
    plan = write_plan(tmp / "plan", 2)
    if case.setup is not None:
        case.setup(tmp, plan)
    argv = [a.format(tmp=tmp, plan=plan) for a in case.argv]
    return argv, _tree(tmp)


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training and Ray start-up fail the test: every case must stop before them."""
    import ablations.sweep
    import comet_model.continual.pipeline as pipeline

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("got past the checks: training or Ray started")

    monkeypatch.setattr(pipeline, "_train", forbidden)
    monkeypatch.setattr(ablations.sweep, "_init_ray", forbidden)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_up_front(
    case: Case,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    nothing_starts: None,
) -> None:
    if case.needs_non_root and IS_ROOT:
        pytest.skip("permissions do not bind root")
    argv, before = _prepare(case, tmp_path)
    if case.id in MEMORY:
        import comet_model.data.files as files

        monkeypatch.setattr(files, "available_memory", lambda: 1024)
    capsys.readouterr()
    try:
        code = _main(case.command)(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and out == "", (out, err)
    assert case.fragment in lines[0], lines[0]
    assert _tree(tmp_path) == before  # nothing written, nothing deleted


def test_the_table_covers_every_command_and_enough_cases() -> None:
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    assert {c.command for c in CASES} == {"run", "data", "sweep", "report"}
    assert sum(not c.needs_non_root for c in CASES) >= 60  # also when run as root


COMMAND_LINES = {  # how each command is started for real
    "run": ["-m", "comet_model"],
    "data": ["-m", "comet_model.data"],
    "sweep": [str(ROOT / "ablations" / "run.py")],
    "report": [str(ROOT / "reports" / "build.py")],
}
SUBPROCESS = ["lam-inf", "labels-uint32-unknown", "name-parent", "report-out-is-file"]


@pytest.mark.parametrize("case_id", SUBPROCESS)
def test_bad_input_as_a_real_command_line(case_id: str, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == case_id)
    argv, before = _prepare(case, tmp_path)
    env = dict(os.environ, RAY_ADDRESS="")
    command = [sys.executable, *COMMAND_LINES[case.command], *argv]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=env)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and case.fragment in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert _tree(tmp_path) == before
