"""Command line: a smoke run writes metrics.json and prints a table; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from comet_model.__main__ import main, make_config

SYNTHETIC = [
    "--preset", "smoke", "--stages", "a-t", "--threads", "1", "--seed", "3",
    "--set", "data.source=synthetic", "--set", "data.train_sequences=64",
    "--set", "data.val_sequences=16", "--set", "data.steps=6", "--set", "train.batch_size=16",
    "--set", "eval.epochs=2",
]  # fmt: skip


def test_smoke_run_writes_metrics_and_prints_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        assert main(["run", *SYNTHETIC, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # the CLI sets it for the process
    captured = capsys.readouterr()
    data = json.loads((out / "metrics.json").read_text())
    assert data["config"]["seed"] == 3 and data["config"]["data.stages"] == ["a-t"]
    assert data["config"]["train.threads"] == 1
    [stage] = data["stages"]
    assert stage["stage"] == "a-t" and stage["epochs"] == 1 and stage["steps"] == 4
    metrics = data["metrics"]
    assert metrics == stage["metrics"]
    for key in ("ave/a->t/acc", "ave/t->a/acc", "retrieval/a->t/r10", "retrieval/t->a/r1"):
        assert 0.0 <= metrics[key] <= 100.0, key
    lines = captured.out.splitlines()
    assert lines[0].split()[:2] == ["stage", "name"] and lines[1].split()[:2] == ["1", "a-t"]
    header = lines.index(next(line for line in lines if line.startswith("metric")))
    assert lines[header].split() == ["metric", "S1"]
    assert any(line.split()[0] == "ave/a->t/acc" for line in lines[header:] if line)
    assert "epoch 1/1" in captured.err and "total" in captured.err and "evaluated" in captured.err
    assert (out / "checkpoint.pt").exists()
    assert not list(out.glob(".*tmp*"))  # atomic writes left no temporary file

    # the same command again finds the finished run and only reprints it
    assert main(["run", *SYNTHETIC, "--out", str(out), "--quiet"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["metrics"] == metrics and again["resumed_from"] == 1
    assert capsys.readouterr().err == ""
    # another configuration refuses the folder with one line
    with pytest.raises(SystemExit) as info:
        main(["run", *SYNTHETIC, "--set", "model.dim=16", "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "model.dim" in err


def test_default_preset_is_full_comet_and_comet_false_is_plain_dcid() -> None:
    from argparse import Namespace

    base = {"preset": "default", "stages": None, "seed": None, "threads": None, "plan": None}
    cfg = make_config(Namespace(**base, overrides=[]))
    assert cfg.comet and cfg.method == "dcid"
    assert cfg.data.stages == ("video-text", "audio-text", "image-text")
    plain = make_config(Namespace(**(base | {"stages": "video-audio"}), overrides=["comet=false"]))
    assert not plain.comet and plain.data.stages == ("video-audio",)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "model.dimm=3"], "model.dimm: unknown config key"),
        (["--set", "model.dim=abc"], "model.dim: expected int"),
        (["--set", "model.dim"], "expected key=value"),
        (["--stages", "video"], "data.stages"),
        (["--preset", "huge"], "invalid choice"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--out", str(tmp_path / "x"), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err
    assert not (tmp_path / "x").exists()


def test_help_lists_the_run_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--preset", "--stages", "--out", "--seed", "--set", "--threads"):
        assert flag in text
