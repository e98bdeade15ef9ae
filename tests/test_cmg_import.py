"""import-cmg on tiny files in CMG's exact containers: conversion, skips, resume, bad input."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cmg_layout import AVVP_NAMES, SHARED, Layout, import_args, make_cmg_layout

from comet_model.data import cmg_sources as src
from comet_model.data import load_plan
from comet_model.data.__main__ import main
from comet_model.data.cmg_import import ImportOptions, import_cmg
from comet_model.data.h5_writer import Skip

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="the written plans are TOML (tomllib needs Python 3.11+)"
)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return make_cmg_layout(tmp_path_factory.mktemp("cmg"))


def _source(layout: Layout, modality: str, clip: str) -> np.ndarray:
    folder = layout.audio_zips if modality == "audio" else layout.video_zips
    with zipfile.ZipFile(folder / f"{clip}.zip") as zf:
        return pickle.loads(zf.read(f"{clip}.pkl"))  # our own benign test files


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


def _skipped(out: Path) -> dict[str, str]:
    lines = (out / "skipped.tsv").read_text().splitlines()[1:]
    return {line.split("\t")[1]: line.split("\t")[2] for line in lines}


@pytest.fixture(scope="module")
def imported(layout: Layout, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    assert main(import_args(layout, out)) == 0
    return out


def test_stages_split_the_clips_into_disjoint_equal_parts(layout: Layout, imported: Path) -> None:
    vt, at = (_arrays(imported / f) for f in ("stage1_video-text.h5", "stage2_audio-text.h5"))
    ids = [[s.decode() for s in a["meta_ids"]] for a in (vt, at)]
    all_ids = [
        ids[0] + [s.decode() for s in vt["meta_skipped_ids"]],
        ids[1] + [s.decode() for s in at["meta_skipped_ids"]],
    ]
    assert not set(all_ids[0]) & set(all_ids[1])
    assert sorted(all_ids[0] + all_ids[1]) == sorted(layout.ids)
    assert len(all_ids[0]) == len(all_ids[1]) == len(layout.ids) // 2
    assert set(vt) >= {"video", "text", "mask_text"} and "audio" not in vt
    assert vt["video"].dtype == np.float16 and vt["video"].shape[1:] == (10, 5 * 5 * 8)
    for i, clip in enumerate(ids[0]):  # flattened maps, channels fastest
        want = _source(layout, "video", clip).reshape(10, -1).astype(np.float16)
        assert np.array_equal(vt["video"][i], want)


def test_defects_are_skipped_with_their_reason_and_no_pickle_code_runs(
    layout: Layout, imported: Path
) -> None:
    skipped = _skipped(imported)
    expected = {
        "missing zip": "zip missing",
        "corrupt zip": "unreadable zip",
        "not an array": "holds a dict",
        "malicious pickle": "refused global",
    }
    for clip, defect in layout.defects.items():
        if defect in expected:
            assert expected[defect] in skipped[clip], (defect, skipped[clip])
        else:
            assert clip not in skipped  # short and long audio are fitted, not skipped
    assert not (layout.root / "pwned").exists()


def test_plan_loads_with_the_tasks_label_spaces(imported: Path) -> None:
    bench = load_plan(imported / "plan.toml")
    assert [s.name for s in bench.stages] == ["video-text", "audio-text"]
    assert bench.stages[0].mediator == "text"
    assert "stand-in" in bench.meta["text_features"]
    d = bench.downstream
    assert (d.classes["ave"].num_classes, d.classes["ave"].background_class) == (9, 8)
    assert (d.classes["avvp"].num_classes, d.classes["avvp"].background_class) == (8, 7)
    assert d.ave_avvp_shared == tuple(SHARED) and d.retrieval is None
    assert d.ave_train.labels.dtype == torch.int64 and d.ave_train.labels.shape[1] == 10
    y = d.avvp_test.labels_for("video")
    assert y.dtype == torch.bool and y.shape[1:] == (10, len(AVVP_NAMES) + 1)
    assert torch.equal(y[..., -1], ~y[..., :-1].any(-1))  # background where no event
    assert not torch.equal(d.avvp_test.labels_for("audio"), y)  # annotated separately


def test_ave_rows_follow_the_order_files(layout: Layout, imported: Path) -> None:
    ave = _arrays(imported / "ave_test.h5")
    with h5py.File(layout.ave / "test_order.h5") as f:
        order = f["order"][()]
    with h5py.File(layout.ave / "labels.h5") as f:
        onehot = f["avadataset"][()][order]
    with h5py.File(layout.ave / "audio_feature.h5") as f:
        audio = f["avadataset"][()][order]
    assert np.array_equal(ave["labels"], onehot.argmax(-1))
    assert np.array_equal(ave["audio"], audio.astype(np.float16))


def test_tri_modal_stage_pads_short_audio_by_repeating_the_last_row(
    layout: Layout, tmp_path: Path
) -> None:
    opts = ImportOptions(
        out=tmp_path,
        stages=(("video", "audio", "text"),),
        pretrain_csv=layout.pretrain_csv,
        audio_zips=layout.audio_zips,
        video_zips=layout.video_zips,
        prompts=layout.prompts,
        video_map=layout.grid,
        dtype="float32",
        text_dim=16,
    )
    import_cmg(opts)
    a = _arrays(tmp_path / "stage1_video-audio-text.h5")
    ids = [s.decode() for s in a["meta_ids"]]
    short, long = _source(layout, "audio", ids[1]), _source(layout, "audio", ids[2])
    assert short.shape == (3, 128) and long.shape == (12, 128)
    padded = np.concatenate([short, np.repeat(short[-1:], 7, 0)]).astype(np.float32)
    assert np.array_equal(a["audio"][1], padded)
    assert np.array_equal(a["audio"][2], long[:10].astype(np.float32))
    assert load_plan(tmp_path / "plan.toml").stages[0].modalities == ("video", "audio", "text")


def test_an_interrupted_import_resumes_to_identical_files(
    layout: Layout, imported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed mid-file: no file that looks complete; the rerun ends as an uninterrupted run."""
    opts = ImportOptions(
        out=tmp_path,
        stages=(("video", "text"), ("audio", "text")),
        pretrain_csv=layout.pretrain_csv,
        audio_zips=layout.audio_zips,
        video_zips=layout.video_zips,
        prompts=layout.prompts,
        ave=layout.ave,
        avvp=layout.avvp,
        video_map=layout.grid,
        text_dim=32,
        shard_items=3,
    )
    calls, fit = [0], src.fit_video

    def interrupted(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 14:  # inside the AVE train file
            raise KeyboardInterrupt
        return fit(*args, **kwargs)

    monkeypatch.setattr(src, "fit_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_cmg(opts)
    assert not (tmp_path / "plan.toml").exists() and not (tmp_path / "ave_train.h5").exists()
    assert (tmp_path / "stage2_audio-text.h5").exists()  # finished files stay
    assert list((tmp_path / ".import" / "ave_train.h5").glob("shard_*.h5"))  # whole shards
    monkeypatch.setattr(src, "fit_video", fit)
    report = import_cmg(opts)
    assert any(r.resumed for r in report.files)
    for name in ("stage1_video-text.h5", "ave_train.h5", "avvp_test.h5"):
        a, b = _arrays(imported / name), _arrays(tmp_path / name)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name
    assert (tmp_path / "plan.toml").read_text() == (imported / "plan.toml").read_text()
    assert not (tmp_path / ".import").exists()


def test_a_rerun_finds_the_files_done_and_other_settings_are_refused(
    layout: Layout, imported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in imported.glob("*.h5")}
    assert main(import_args(layout, imported)) == 0
    assert {p.name: p.stat().st_mtime_ns for p in imported.glob("*.h5")} == before
    capsys.readouterr()
    assert main([*import_args(layout, imported), "--dtype", "float32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other inputs or settings" in err[0] and "--fresh" in err[0]


def _bad(layout: Layout, tmp: Path) -> dict[str, tuple[list[str], str]]:
    args = import_args(layout, tmp / "out")

    def replace(flag: str, value: str) -> list[str]:
        return [value if args[i - 1] == flag else a for i, a in enumerate(args)]

    no_col = tmp / "nocol.csv"
    no_col.write_text("id,category\nx,y\n")
    no_ave = tmp / "AVE_empty"
    no_ave.mkdir(exist_ok=True)
    return {
        "missing csv": (
            replace("--pretrain-csv", str(tmp / "absent.csv")),
            "absent.csv: file not found",
        ),
        "csv column": (replace("--pretrain-csv", str(no_col)), "nocol.csv: no column 'video_id'"),
        "bad stage": (replace("--stages", "video-image"), "'video-image' needs"),
        "zips folder": (replace("--video-zips", str(tmp / "nope")), "nope: --video-zips folder"),
        "ave alone": ([a for a in args if a not in ("--avvp", str(layout.avvp))], "go together"),
        "ave files": (replace("--ave", str(no_ave)), "visual_feature.h5: file not found"),
        "unknown flag": ([*args, "--colour"], "unrecognized arguments: --colour"),
        "bad map": (replace("--video-map", "7x7"), "--video-map"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing csv",
        "csv column",
        "bad stage",
        "zips folder",
        "ave alone",
        "ave files",
        "unknown flag",
        "bad map",
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    layout: Layout, tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, expected = _bad(layout, tmp_path)[case]
    with pytest.raises(SystemExit) if case in ("unknown flag", "bad map") else _nothing():
        rc = main(argv)
        assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not (tmp_path / "out" / "plan.toml").exists()
    assert not list((tmp_path / "out").glob("*.h5")) if (tmp_path / "out").exists() else True


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_bad_input_in_a_real_process_has_no_traceback(layout: Layout, tmp_path: Path) -> None:
    argv, expected = _bad(layout, tmp_path)["missing csv"]
    res = subprocess.run(
        [sys.executable, "-m", "comet_model.data", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and expected in res.stderr


def test_text_model_without_transformers_says_so_in_one_line(
    layout: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    argv = [*import_args(layout, tmp_path / "out"), "--text-model", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "transformers" in err[0] and "not installed" in err[0]


def test_fit_audio_and_video_shapes_and_values() -> None:
    a = np.arange(6.0).reshape(3, 2).repeat(64, axis=1)  # [3, 128]
    assert src.fit_audio(a, "float32").shape == (10, 128)
    for bad, why in (
        (np.zeros((3, 64)), "shape"),
        (np.full((10, 128), np.nan), "NaN"),
        (np.full((10, 128), 1e6), "float16 range"),
    ):
        with pytest.raises(Skip, match=why):
            src.fit_audio(bad, "float16")
    with pytest.raises(Skip, match="video has shape"):
        src.fit_video(np.zeros((9, 7, 7, 512)), (7, 7, 512), "float16")


# the class names as listed by the AVE release and by AVVP's AVVP_Categories.txt
AVE_28 = [
    "Church bell",
    "Male speech",
    "Bark",
    "Fixed-wing aircraft",
    "Race car",
    "Female speech",
    "Helicopter",
    "Violin",
    "Flute",
    "Ukulele",
    "Frying (food)",
    "Truck",
    "Shofar",
    "Motorcycle",
    "Acoustic guitar",
    "Train horn",
    "Clock",
    "Banjo",
    "Goat",
    "Baby cry",
    "Bus",
    "Chainsaw",
    "Cat",
    "Horse",
    "Toilet flush",
    "Rodent",
    "Accordion",
    "Mandolin",
]
AVVP_25 = [
    "Speech",
    "Car",
    "Cheering",
    "Dog",
    "Cat",
    "Frying_(food)",
    "Basketball_bounce",
    "Fire_alarm",
    "Chainsaw",
    "Cello",
    "Banjo",
    "Singing",
    "Chicken_rooster",
    "Violin_fiddle",
    "Vacuum_cleaner",
    "Baby_laughter",
    "Accordion",
    "Lawn_mower",
    "Motorcycle",
    "Helicopter",
    "Acoustic_guitar",
    "Telephone_bell_ringing",
    "Baby_cry_infant_crying",
    "Blender",
    "Clapping",
]


def test_shared_classes_by_name_give_cmgs_13_way_head() -> None:
    """CMG's AVE -> AVVP head has 13 outputs: 12 shared AVVP classes and background."""
    pairs = src.shared_by_name(AVE_28, AVVP_25)
    assert len({b for _, b in pairs}) == 12
    named = {(AVE_28[a], AVVP_25[b]) for a, b in pairs}
    assert {
        ("Male speech", "Speech"),
        ("Female speech", "Speech"),
        ("Violin", "Violin_fiddle"),
        ("Baby cry", "Baby_cry_infant_crying"),
        ("Race car", "Car"),
    } <= named
    assert not any(b == "Dog" or a == "Church bell" for a, b in named)


@pytest.mark.slow
def test_end_to_end_import_check_and_continual_run_at_cmg_shapes(tmp_path: Path) -> None:
    """Full-size 7x7x512 maps: import, check and a continual run with the CMG video front end
    give AVE, AVVP and AVE -> AVVP metrics for video<->audio, all through the command lines."""
    layout = make_cmg_layout(
        tmp_path / "cmg", clips=16, grid=(7, 7, 512), ave_clips=12, avvp_clips=10
    )
    out, run = tmp_path / "out", tmp_path / "run"
    argv = [a for a in import_args(layout, out) if a not in ("--video-map", "7x7x512")]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [sys.executable, "-m", *args], capture_output=True, text=True, timeout=600
        )
        assert res.returncode == 0, res.stderr
        return res

    cli("comet_model.data", *argv)
    assert "features in memory" in cli("comet_model.data", "check", str(out / "plan.toml")).stdout
    sets = [
        "data.source=plan",
        f"data.plan_file={out / 'plan.toml'}",
        "model.video_frontend=cmg",
        "model.cmg_width=16",
        "train.batch_size=4",
        "codebook.size=16",
        "replay.k2=4",
    ]
    cli(
        "comet_model",
        "run",
        "--preset",
        "smoke",
        "--out",
        str(run),
        "--quiet",
        "--threads",
        "1",
        *[x for s in sets for x in ("--set", s)],
    )
    result = json.loads((run / "metrics.json").read_text())
    metrics = result["metrics"]
    for key in (
        "ave/video->audio/acc",
        "ave/audio->video/acc",
        "avvp/video->audio/f1",
        "avvp/audio->video/f1",
        "ave_avvp/video->audio/f1",
        "ave_avvp/audio->video/f1",
    ):
        assert key in metrics and np.isfinite(metrics[key]), key
    assert np.isfinite(metrics["objective"])
    assert "stand-in" in result["stages"][0]["data"]["text_features"]


def test_text_model_gives_its_last_layer_token_vectors(layout: Layout, tmp_path: Path) -> None:
    """A tiny BERT made here (nothing downloaded): the text rows are its token vectors."""
    transformers = pytest.importorskip("transformers")
    words = sorted({w for _, p in layout_prompts(layout) for w in p.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    model_dir = tmp_path / "tiny-bert"
    model_dir.mkdir()
    (model_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(model_dir / "vocab.txt"))
    tok.save_pretrained(model_dir)
    cfg = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    torch.manual_seed(0)
    bert = transformers.BertModel(cfg).eval()
    bert.save_pretrained(model_dir)
    out = tmp_path / "out"
    argv = [a for a in import_args(layout, out) if a not in ("--text-dim", "32")]
    assert main([*argv, "--text-model", str(model_dir)]) == 0
    stage = _arrays(out / "stage1_video-text.h5")
    assert stage["text"].shape[1:] == (10, 16)
    meta = load_plan(out / "plan.toml").meta["text_features"]
    assert "tiny-bert" in meta and "bert" in meta and "stand-in" not in meta
    clip = stage["meta_ids"][0].decode()
    rows = src.read_csv(layout.pretrain_csv, ("video_id", "category"))
    prompt = dict(layout_prompts(layout))[
        next(r["category"] for r in rows if r["video_id"] == clip)
    ]
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        want = bert(**enc).last_hidden_state[0, 1:-1].numpy()  # without [CLS] and [SEP]
    n = min(10, len(want))
    assert stage["mask_text"][0].sum() == n
    assert np.allclose(stage["text"][0][:n], want[:n], atol=2e-3)  # float16 on disk


def layout_prompts(layout: Layout) -> list[tuple[str, str]]:
    lines = layout.prompts.read_text().splitlines()[1:]
    return [tuple(line.split(",", 1)) for line in lines]
