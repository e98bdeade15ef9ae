"""Sweep harness without Ray: grids, flag validation, one-line errors, GPU resolution."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ablations.sweep import SweepError, SweepSpec, expected_run_keys, resolve_gpus
from comet_model.config import ExperimentConfig, preset
from search_spaces.grids import GRIDS, check_keys, get_grid

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "ablations" / "run.py")]


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_every_grid_key_is_a_config_key_and_every_arm_is_valid(name: str) -> None:
    flat = preset("default").to_flat()
    arms = get_grid(name)
    assert arms, name
    check_keys(arms, flat)
    for overrides in arms.values():
        cfg = ExperimentConfig.from_flat({**flat, **overrides})
        for key, value in overrides.items():
            got = cfg.to_flat()[key]
            assert got == (tuple(value) if isinstance(value, list) else value)


def test_check_keys_names_the_bad_key() -> None:
    with pytest.raises(KeyError, match="moe.num_expert"):
        check_keys({"a": {"moe.num_expert": 3}}, preset("smoke").to_flat())


def test_ablation_arms_differ_from_full_by_exactly_their_switch() -> None:
    arms = get_grid("ablations")
    full = ExperimentConfig.from_flat({**preset("default").to_flat(), **arms["full"]}).to_flat()
    for label, overrides in arms.items():
        cfg = ExperimentConfig.from_flat({**preset("default").to_flat(), **overrides}).to_flat()
        changed = {k for k in full if full[k] != cfg[k]}
        assert changed == {k for k in overrides if full[k] != overrides[k]}, label


def test_expected_run_keys_cross_arms_and_seeds() -> None:
    spec = SweepSpec(name="t", preset="smoke", seeds=(0, 1, 2), arms=get_grid("smoke"))
    keys = expected_run_keys(spec, preset("smoke").to_flat())
    assert len(keys) == len(get_grid("smoke")) * 3
    assert sorted(set(keys.values())) == sorted(
        (arm, s) for arm in get_grid("smoke") for s in (0, 1, 2)
    )


def test_spec_digest_changes_with_the_sweep() -> None:
    a = SweepSpec(name="t", preset="smoke", seeds=(0,), arms=get_grid("smoke"))
    b = SweepSpec(name="t", preset="smoke", seeds=(0, 1), arms=get_grid("smoke"))
    assert a.digest() == SweepSpec(**a.__dict__).digest() and a.digest() != b.digest()


def test_gpu_request_resolves_to_cpu_without_gpus() -> None:
    assert resolve_gpus(0.25, {"CPU": 2.0}) == 0.0
    assert resolve_gpus(0.25, {"CPU": 2.0, "GPU": 1.0}) == 0.25
    assert resolve_gpus(0.0, {"GPU": 1.0}) == 0.0
    with pytest.raises(SweepError, match="exceeds"):
        resolve_gpus(2.0, {"GPU": 1.0})


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--grid", "nope"], "unknown grid 'nope'"),
        (["--grid", "experts", "--seeds", "0"], "--seeds"),
        (["--grid", "experts", "--seeds", "1,1"], "--seeds"),
        (["--grid", "experts", "--gpus-per-trial", "-0.5"], "--gpus-per-trial"),
        (["--grid", "experts", "--cpus-per-trial", "0"], "--cpus-per-trial"),
        (["--grid", "experts", "--max-concurrent", "0"], "--max-concurrent"),
        (["--grid", "experts", "--preset", "huge"], "--preset"),
        (["--grid", "experts", "--set", "moe.num_expert=3"], "moe.num_expert"),
        (["--grid", "experts", "--set", "moe.num_experts=many"], "moe.num_experts"),
        (["--grid", "experts", "--set", "train.epochs=0"], "train.epochs"),
        (["--grid", "experts", "--set", "moe.num_experts=4"], "conflicts with the grid"),
        (["--grid", "experts", "--plan", "no/such/plan.toml"], "plan.toml"),
        (["--search", "optuna", "--num-samples", "0"], "--num-samples"),
        ([], "--grid"),
        (["--grid", "smoke", "--preset", "smoke", "--address", "127.0.0.1:1"], "cannot reach"),
        (["--grid", "smoke", "--preset", "smoke", "--address", "nonsense"], "host:port"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, expected, tmp_path) -> None:
    env = dict(os.environ, RAY_ADDRESS="")
    proc = subprocess.run(
        [*RUN, *args, "--storage", str(tmp_path / "results")],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_summary_orders_variants_by_number() -> None:
    from ablations.summary import natural_key

    names = ["experts=10", "experts=2", "experts=1", "ewc.lam=1e3", "DCID"]
    assert sorted(names, key=natural_key)[:3] == ["DCID", "ewc.lam=1e3", "experts=1"]
    assert sorted(names, key=natural_key)[3:] == ["experts=2", "experts=10"]


def test_resumed_progress_counts_the_runs_already_complete(tmp_path, capsys) -> None:
    """Tune hands a resumed sweep the pickled callback of its first start: ``restart`` (called
    from the callback's ``setup``) takes the count from the records and restarts the clock."""
    import pickle
    import time

    from ablations.progress import Progress, RunKeys
    from ablations.records import write_run
    from comet_model.config import preset

    keys = RunKeys(preset("smoke").to_flat(), {"a": {"moe.num_experts": 1}, "b": {}}, {})
    done = {"arm": "a", "seed": 0}
    write_run(tmp_path, sweep="s", run_key=keys(done), seed=0, trial_id="t1", axes={},
              status="complete", stages_done=3, num_stages=3, config={})  # fmt: skip
    first = Progress(4, 3, tmp_path, keys, start=time.perf_counter() - 3600)  # an hour ago
    progress = pickle.loads(pickle.dumps(first))
    progress.restart()
    err = capsys.readouterr().err
    assert err.startswith("[1/4 runs,   0.0 min] resuming: 1 of 4 runs already complete"), err

    class Trial:
        def __init__(self, config):
            self.config = config

    progress.finished(Trial(done), ok=True)  # relaunched after it had finished: not twice
    progress.finished(Trial({"arm": "b", "seed": 0}), ok=False)
    progress.finished(Trial({"arm": "b", "seed": 1}), ok=True)
    counts = [line.split(" runs")[0] for line in capsys.readouterr().err.splitlines()]
    assert counts == ["[1/4", "[2/4", "[3/4"]
