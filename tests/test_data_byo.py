"""Bring-your-own features: round trips, and one clear error per kind of bad input."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from comet_model.data import DataError, load_plan, make_benchmark
from comet_model.data.__main__ import main
from comet_model.data.byo import read_sequences

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="the fixture plans are TOML (tomllib needs Python 3.11+)"
)

N, T = 12, 4


def _arrays(rng: np.random.Generator, mods: tuple[str, ...], n: int = N, t: int = T) -> dict:
    out = {m: rng.standard_normal((n, t, 3 + i)).astype(np.float32) for i, m in enumerate(mods)}
    out["labels"] = rng.integers(0, 5, size=(n, t))
    return out


def _write(path: Path, arrays: dict) -> None:
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        import h5py

        with h5py.File(path, "w") as f:
            for k, v in arrays.items():
                f.create_dataset(k, data=v)


PLAN_TOML = """
seed = 1
val_fraction = 0.25
background_class = 4
[[stages]]
name = "vt"
modalities = ["v", "t"]
train = "vt_train.npz"
val = "vt_val.npz"
[[stages]]
name = "at"
modalities = ["a", "t"]
train = "at_train.h5"
[downstream]
ave_train = "down.npz"
ave_test = "down.npz"
avvp_train = "down.npz"
avvp_test = "down.npz"
retrieval = "down.h5"
"""


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    vt = _arrays(rng, ("v", "t"))
    vt["t"] = rng.standard_normal((N, T, 4)).astype(np.float32)  # d(t) = 4 everywhere
    _write(tmp_path / "vt_train.npz", vt)
    vt_val = {k: v[:5] for k, v in vt.items()}
    vt_val["mask_v"] = np.ones((5, T), dtype=np.uint8)
    _write(tmp_path / "vt_val.npz", vt_val)
    at = {
        "a": rng.standard_normal((N, T, 6)),  # float64 accepted
        "t": rng.standard_normal((N, T, 4)).astype(np.float16),
        "mask_a": rng.random((N, T)) > 0.2,
        "meta_ids": np.arange(N),
    }
    _write(tmp_path / "at_train.h5", at)
    down = {
        "v": vt["v"][:6],
        "a": at["a"][:6].astype(np.float32),
        "t": vt["t"][:6],
        "labels": vt["labels"][:6],
    }
    _write(tmp_path / "down.npz", down)
    _write(tmp_path / "down.h5", {k: v[:, :2] for k, v in down.items()})
    (tmp_path / "plan.toml").write_text(PLAN_TOML)
    return tmp_path


def test_load_plan_round_trip(plan_dir: Path) -> None:
    bench = load_plan(plan_dir / "plan.toml")
    s1, s2 = bench.stages
    assert (s1.name, s1.modalities, s2.modalities) == ("vt", ("v", "t"), ("a", "t"))
    assert s1.mediator == "t" == s2.mediator
    with np.load(plan_dir / "vt_train.npz") as f:
        assert torch.equal(s1.train.features["v"], torch.from_numpy(f["v"]))
        assert torch.equal(s1.train.labels, torch.from_numpy(f["labels"]).long())
    assert s1.val.num_items == 5 and s1.val.masks["v"].dtype == torch.bool
    # no val file: a seeded quarter of train split off, disjoint, all rows kept
    assert (s2.train.num_items, s2.val.num_items) == (9, 3)
    joined = torch.cat([s2.train.features["a"], s2.val.features["a"]])
    assert joined.dtype == torch.float32 and len(torch.unique(joined, dim=0)) == N
    assert s2.train.masks["a"].dtype == torch.bool and s2.train.labels is None
    assert dict(bench.feature_dims) == {"v": 3, "t": 4, "a": 6}
    assert bench.num_classes == 5 and bench.background_class == 4
    assert bench.downstream.retrieval.num_steps == 2
    assert set(bench.downstream.ave_test.modalities) == {"v", "a", "t"}
    again = load_plan(plan_dir / "plan.toml")
    assert torch.equal(again.stages[1].val.features["a"], s2.val.features["a"])
    assert make_benchmark("plan", path=plan_dir / "plan.toml").stages[0].name == "vt"


def test_yaml_plan_gives_the_same_benchmark(plan_dir: Path) -> None:
    import tomllib  # noqa: I001 (stdlib from Python 3.11)
    import yaml

    (plan_dir / "plan.yaml").write_text(yaml.safe_dump(tomllib.loads(PLAN_TOML)))
    a, b = load_plan(plan_dir / "plan.toml"), load_plan(plan_dir / "plan.yaml")
    for sa, sb in zip(a.stages, b.stages, strict=True):
        for m in sa.modalities:
            assert torch.equal(sa.train.features[m], sb.train.features[m])
            assert torch.equal(sa.val.features[m], sb.val.features[m])


def _set(name: str, key: str, value: Callable[[dict], object]) -> Callable[[Path], str]:
    """A mutation: rewrite file ``name`` with array ``key`` replaced (None: removed)."""

    def apply(d: Path) -> str:
        path = d / name
        if path.suffix == ".npz":
            with np.load(path) as f:
                arrays = dict(f)
        else:
            import h5py

            with h5py.File(path) as f:
                arrays = {k: f[k][()] for k in f}
        new = value(arrays)
        if new is None:
            arrays.pop(key)
        else:
            arrays[key] = new
        _write(path, arrays)
        return name

    return apply


def _plan_edit(old: str, new: str) -> Callable[[Path], str]:
    def apply(d: Path) -> str:
        text = (d / "plan.toml").read_text()
        assert old in text
        (d / "plan.toml").write_text(text.replace(old, new))
        return "plan.toml"

    return apply


def _garbage(name: str) -> Callable[[Path], str]:
    def apply(d: Path) -> str:
        (d / name).write_bytes(b"\x00garbage" * 10)
        return name

    return apply


def _remove(name: str) -> Callable[[Path], str]:
    def apply(d: Path) -> str:
        (d / name).unlink()
        return name

    return apply


BAD = {
    "missing file": (_remove("vt_val.npz"), "not found"),
    "missing plan file": (_remove("plan.toml"), "not found"),
    "unreadable npz": (_garbage("vt_train.npz"), "unreadable"),
    "unreadable h5": (_garbage("at_train.h5"), "unreadable"),
    "unreadable plan": (_garbage("plan.toml"), "unreadable"),
    "missing array": (_set("vt_train.npz", "v", lambda a: None), "missing array 'v'"),
    "modality no file provides": (
        lambda d: _plan_edit('["a", "t"]', '["a", "t", "s"]')(d) and "at_train.h5",
        "missing array 's'",
    ),
    "wrong dims": (_set("vt_train.npz", "v", lambda a: a["v"][:, 0]), "2 dims"),
    "different N": (_set("vt_train.npz", "t", lambda a: a["t"][:-1]), "N="),
    "different T in a file": (_set("at_train.h5", "t", lambda a: a["t"][:, :-1]), "T="),
    "different T train/val": (
        _set("vt_val.npz", "v", lambda a: np.repeat(a["v"], 2, axis=1)),
        "T=",
    ),
    "different d": (_set("down.npz", "a", lambda a: a["a"][..., :2]), "d="),
    "NaN": (_set("vt_train.npz", "v", lambda a: np.where(a["v"] > 1, np.nan, a["v"])), "NaN"),
    "Inf": (_set("at_train.h5", "a", lambda a: np.where(a["a"] > 1, np.inf, a["a"])), "Inf"),
    "integer dtype": (_set("vt_train.npz", "v", lambda a: (a["v"] * 10).astype(int)), "dtype"),
    "string dtype": (_set("vt_train.npz", "v", lambda a: a["v"].astype("U8")), "dtype"),
    "empty": (_set("vt_train.npz", "v", lambda a: a["v"][:, :, :0]), "empty"),
    "labels shape": (_set("vt_train.npz", "labels", lambda a: a["labels"][:, :-1]), "labels"),
    "labels dtype": (_set("vt_train.npz", "labels", lambda a: a["labels"] + 0.5), "labels"),
    "mask shape": (_set("vt_val.npz", "mask_v", lambda a: a["mask_v"][:2]), "mask_v"),
    "mask values": (_set("vt_val.npz", "mask_v", lambda a: a["mask_v"] * 3), "mask_v"),
    "one modality": (_plan_edit('["v", "t"]', '["v"]'), "at least two"),
    "unknown plan key": (_plan_edit("seed = 1", "sed = 1"), "unknown key"),
    "partial downstream": (_plan_edit('avvp_test = "down.npz"', ""), "avvp_test"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_raises_one_line_data_error(plan_dir: Path, case: str) -> None:
    mutate, expected = BAD[case]
    culprit = mutate(plan_dir)
    with pytest.raises(DataError) as err:
        load_plan(plan_dir / "plan.toml")
    msg = str(err.value)
    assert "\n" not in msg
    assert culprit in msg and expected in msg, msg


def test_read_sequences_without_modalities_takes_every_array(plan_dir: Path) -> None:
    seqs = read_sequences(plan_dir / "at_train.h5")
    assert set(seqs.modalities) == {"a", "t"}  # meta_ids ignored
    assert seqs.masks is not None and set(seqs.masks) == {"a"}


def _check_cli(plan: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "comet_model.data", "check", str(plan)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_check_accepts_a_good_plan(plan_dir: Path) -> None:
    res = _check_cli(plan_dir / "plan.toml")
    assert res.returncode == 0, res.stderr
    assert "2 stage(s)" in res.stdout and res.stderr == ""


def test_cli_check_bad_input_in_a_real_process(plan_dir: Path) -> None:
    culprit = BAD["NaN"][0](plan_dir)
    res = _check_cli(plan_dir / "plan.toml")
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0]
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "case", ["missing file", "unreadable npz", "different N", "unreadable plan", "one modality"]
)
def test_cli_check_bad_input_one_line_exit_2(
    plan_dir: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    mutate, expected = BAD[case]
    culprit = mutate(plan_dir)
    assert main(["check", str(plan_dir / "plan.toml")]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and out == "", err
    assert lines[0].startswith("error: ") and culprit in lines[0] and expected in lines[0]


def test_stage_count_reads_only_the_plan_file(plan_dir: Path) -> None:
    from comet_model.config import DataConfig
    from comet_model.data.plan import plan_stage_names, stage_count

    (plan_dir / "vt_train.npz").unlink()  # no feature file is read
    plan, default = str(plan_dir / "plan.toml"), DataConfig().stages
    assert plan_stage_names(plan) == ("vt", "at") and plan_stage_names(plan, ["at"]) == ("at",)
    assert stage_count("plan", plan, default) == 2  # the default: every stage of the plan
    assert stage_count("plan", plan, ("at",)) == 1  # a selection
    assert stage_count("digits", "", ("a-t", "b-t", "c-t")) == 3
    assert stage_count("plan", str(plan_dir / "absent.toml"), ("a-t", "b-t", "c-t")) == 3


def test_a_selection_of_stages_keeps_each_stage_and_its_split(plan_dir: Path) -> None:
    full = load_plan(plan_dir / "plan.toml")
    picked = load_plan(plan_dir / "plan.toml", stages=["at", "vt"])
    assert [s.name for s in picked.stages] == ["at", "vt"]
    for name in ("at", "vt"):
        a = next(s for s in full.stages if s.name == name)
        b = next(s for s in picked.stages if s.name == name)
        for m in a.modalities:  # the seeded train/val split does not depend on the selection
            assert torch.equal(a.val.features[m], b.val.features[m])
    for bad, why in ((["vt", "vt"], "twice"), (["xt"], "no stage named 'xt'"), ([], "no stage")):
        with pytest.raises(DataError, match=why):
            load_plan(plan_dir / "plan.toml", stages=bad)


def test_resolve_stages_refuses_the_one_selection_data_stages_cannot_express(
    tmp_path: Path,
) -> None:
    """data.stages left at its default means every stage of a plan; selecting exactly the
    default's names from a plan with further stages would silently train them all."""
    from comet_model.config import DataConfig
    from comet_model.data.plan import plan_selection, resolve_stages

    default = DataConfig().stages
    blocks = [f'[[stages]]\nname = "{n}"\nmodalities = ["{n.split("-")[0]}", "text"]\n'
              f'train = "x.npz"\n' for n in (*default, "speech-text")]  # fmt: skip
    (tmp_path / "plan.toml").write_text("\n".join(blocks))
    plan = tmp_path / "plan.toml"
    assert resolve_stages(plan, None) == (*default, "speech-text")
    assert resolve_stages(plan, ["speech-text", "video-text"]) == ("speech-text", "video-text")
    assert plan_selection(default) is None and plan_selection(["video-text"]) == ("video-text",)
    with pytest.raises(DataError, match="cannot be told apart"):
        resolve_stages(plan, list(default))
