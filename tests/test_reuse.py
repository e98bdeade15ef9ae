"""Run reuse (ablations/reuse.py): which finished runs of other sweeps count as donors.

The end-to-end check (a reused sweep's numbers equal a retrained one's) is in
tests/test_sweep_ray.py; these are the rules, on hand-written records.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ablations.records import write_run
from ablations.reuse import Donor, copied_donor, copy_donor, find_donor, same_origin
from reports.schema import PROVENANCE

KEY = "0123456789abcdef"
AXES = {"variant": "full", "method": "dcid", "comet": True, "num_experts": 6}
PROV = {
    "code_version": "0.1.0", "code_commit": "a" * 40, "code_dirty": False, "code_diff": "",
    "torch_version": "2.13.0", "ray_version": "2.60.0", "numpy_version": "2.3.0",
    "python_version": "3.11.9", "device": "cpu: test", "threads": 1, "precision": "fp32",
    "data_fingerprint": "sha256:" + "b" * 16, "data_files": "{}",
}  # fmt: skip


def _donor(storage: Path, sweep: str, *, status: str = "complete", stages: int = 3,
           prov: dict | None = None, checkpoint: bool = True, key: str = KEY) -> Path:  # fmt: skip
    exp = storage / sweep
    write_run(exp, sweep=sweep, run_key=key, seed=0, trial_id="t", axes=AXES, status=status,
              stages_done=stages, num_stages=3, config={"seed": 0},
              provenance=PROV if prov is None else prov)  # fmt: skip
    if checkpoint:
        (exp / "work" / key).mkdir(parents=True, exist_ok=True)
        (exp / "work" / key / "checkpoint.pt").write_bytes(b"checkpoint of " + sweep.encode())
    return exp


def test_provenance_columns_are_all_compared() -> None:
    assert set(PROV) == set(PROVENANCE)  # the test covers every column the records hold
    assert same_origin(PROV, dict(PROV))
    for name in PROVENANCE:
        other = dict(PROV) | {name: "different" if isinstance(PROV[name], str) else 2}
        assert not same_origin(PROV, other), name


def test_unknown_code_is_never_reused() -> None:
    for change in ({"code_commit": "unknown"}, {"code_commit": ""}, {"code_dirty": None}):
        assert not same_origin(PROV | change, PROV | change), change


def test_a_complete_run_of_the_same_key_and_origin_in_another_sweep_is_found(tmp_path) -> None:
    storage = tmp_path / "results"
    _donor(storage, "ablations-default")
    me = storage / "methods-default"
    donor = find_donor(storage, me, KEY, PROV, 3)
    assert donor is not None and donor.sweep == "ablations-default"
    assert donor.work == (storage / "ablations-default" / "work" / KEY).resolve()
    copy_donor(donor, me / "work" / KEY)
    assert (me / "work" / KEY / "checkpoint.pt").read_bytes() == b"checkpoint of ablations-default"
    assert copied_donor(me / "work" / KEY) == Donor("ablations-default", me / "work" / KEY)
    assert copied_donor(storage / "ablations-default" / "work" / KEY) is None  # trained, not copied
    assert not list((me / "work" / KEY).glob(".*"))  # no temporary file left


@pytest.mark.parametrize(
    "kind",
    ["same sweep", "failed", "unfinished", "other threads", "other code", "dirty code",
     "no checkpoint", "other key", "fewer stages planned"],
)  # fmt: skip
def test_no_donor(tmp_path, kind: str) -> None:
    storage = tmp_path / "results"
    me = storage / "mine"
    args = {
        "same sweep": {"sweep": "mine"},
        "failed": {"status": "failed"},
        "unfinished": {"stages": 2},
        "other threads": {"prov": PROV | {"threads": 2}},
        "other code": {"prov": PROV | {"code_commit": "c" * 40}},
        "dirty code": {"prov": PROV | {"code_dirty": True, "code_diff": "123456789abc"}},
        "no checkpoint": {"checkpoint": False},
        "other key": {"key": "fedcba9876543210"},
        "fewer stages planned": {},
    }[kind]
    _donor(storage, args.pop("sweep", "other"), **args)
    assert find_donor(storage, me, KEY, PROV, 4 if kind == "fewer stages planned" else 3) is None


def test_the_newest_status_of_a_donor_counts(tmp_path) -> None:
    storage = tmp_path / "results"
    _donor(storage, "other", status="complete")
    _donor(storage, "other", status="failed", checkpoint=False)  # a later relaunch failed
    assert find_donor(storage, storage / "mine", KEY, PROV, 3) is None
