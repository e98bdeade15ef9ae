"""What made a run: code, libraries, machine and data, recorded with every run of a sweep.

Two halves, so that a trial pays almost nothing:

- :func:`sweep_provenance` runs once per sweep, in the driver: the package version, the git
  commit of the package's own source tree (with a dirty flag and a digest of the uncommitted
  diff), and a data fingerprint per data source the sweep's arms use (a streamed SHA-256 of the
  committed bank file, or of a bring-your-own plan file and every feature file it names). It is
  passed to the trials and stored in ``sweep.json``.
- :func:`run_provenance` runs in the trial when its record is written: the library versions
  already imported, the device, the thread count and the precision, plus the driver's code
  identity and the fingerprint of this run's data source.

Nothing here fails for lack of git or of a file: what cannot be found is recorded as
``"unknown"``. The code identity ignores untracked files (as ``git describe --dirty`` does).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"
PACKAGE = "comet-cmg"
SOURCE_ROOT = Path(__file__).resolve().parents[1]  # holds ablations/, comet_model/, ...
GIT_TIMEOUT_S = 5.0
_CHUNK = 1 << 20


def _git(*args: str) -> str | None:
    """Output of ``git -C SOURCE_ROOT ARGS`` or None (no git, not a repository, timeout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # no GIT_DIR override
    try:
        out = subprocess.run(["git", "-C", str(SOURCE_ROOT), *args], capture_output=True,
                             timeout=GIT_TIMEOUT_S, env=env, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode("utf-8", "replace")


def code_provenance() -> dict[str, Any]:
    """``code_version``, ``code_commit``, ``code_dirty`` (None: unknown) and ``code_diff`` (a
    digest of ``git diff HEAD``, "" when clean) of the installed package's source tree.

    The commit is only taken when the repository's top level is the package's own source root,
    so a copy installed into site-packages inside some other repository records "unknown".
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version(PACKAGE)
    except PackageNotFoundError:
        ver = UNKNOWN
    out = {"code_version": ver, "code_commit": UNKNOWN, "code_dirty": None, "code_diff": ""}
    lines = (_git("rev-parse", "--show-toplevel", "HEAD") or "").split()
    if len(lines) != 2 or Path(lines[0]).resolve() != SOURCE_ROOT:
        return out
    out["code_commit"] = lines[1]
    diff = _git("diff", "HEAD", "--no-ext-diff", "--binary")
    if diff is not None:
        out["code_dirty"] = bool(diff)
        out["code_diff"] = hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else ""
    return out


def file_digest(path: Path) -> str:
    """``sha256:<16 hex>`` of a file, read in 1 MiB chunks; "missing" if it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
    except OSError:
        return "missing"
    return f"sha256:{h.hexdigest()[:16]}"


def _combined(files: Mapping[str, str]) -> str:
    text = "".join(f"{name}\t{digest}\n" for name, digest in sorted(files.items()))
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def plan_files(plan: Path) -> list[str]:
    """The feature files a stage plan names (``stages[].train|val``, ``downstream.*``), as
    written in the plan (relative to its folder). Only what fingerprinting needs is parsed: an
    unreadable plan names none (the trial reports the problem)."""
    try:
        text = plan.read_text(encoding="utf-8")
        if plan.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception:  # unreadable, malformed, or no TOML parser (Python 3.10)
        return []
    if not isinstance(data, dict):
        return []
    names = []
    for stage in data.get("stages") or []:
        if isinstance(stage, dict):
            names += [stage[k] for k in ("train", "val") if isinstance(stage.get(k), str)]
    downstream = data.get("downstream")
    if isinstance(downstream, dict):
        names += [v for v in downstream.values() if isinstance(v, str)]
    return list(dict.fromkeys(names))


def data_key(flat: Mapping[str, object]) -> str:
    """The data source of a resolved flat config: ``digits``, ``synthetic`` or ``plan:<path>``."""
    source = str(flat.get("data.source", "digits"))
    return f"plan:{flat.get('data.plan_file', '')}" if source == "plan" else source


def data_fingerprint(key: str) -> dict[str, Any]:
    """``{"fingerprint": ..., "files": {name: digest}}`` of one data source (:func:`data_key`).

    The bank's fingerprint is its file's digest; a plan's is a digest of the (name, digest)
    list of the plan file and every feature file it names; synthetic data has no files.
    """
    if key == "synthetic":
        return {"fingerprint": "synthetic", "files": {}}
    if key == "digits":
        from comet_model.data.bank import default_bank_path

        path = default_bank_path()
        digest = file_digest(path)
        return {"fingerprint": digest if digest != "missing" else UNKNOWN,
                "files": {path.name: digest}}  # fmt: skip
    if key.startswith("plan:"):
        plan = Path(key[len("plan:") :])
        files = {plan.name: file_digest(plan)}
        for name in plan_files(plan):
            files[name] = file_digest(plan.parent / name)
        if files[plan.name] == "missing":
            return {"fingerprint": UNKNOWN, "files": files}
        return {"fingerprint": _combined(files), "files": files}
    return {"fingerprint": UNKNOWN, "files": {}}


def sweep_provenance(flats: list[Mapping[str, object]]) -> dict[str, Any]:
    """The driver's part, computed once per sweep: ``{"code": code_provenance(), "data":
    {data_key: data_fingerprint}}`` over the resolved configs ``flats`` of the sweep's arms."""
    keys = sorted({data_key(f) for f in flats})
    return {"code": code_provenance(), "data": {k: data_fingerprint(k) for k in keys}}


@functools.lru_cache(maxsize=4)
def describe_device(device: str) -> str:
    """``"cpu: <CPU model>"`` or ``"cuda: <GPU name>"``."""
    if device.startswith("cuda"):
        import torch

        try:
            return f"cuda: {torch.cuda.get_device_name(torch.device(device))}"
        except (RuntimeError, AssertionError):  # CUDA present but not usable here
            return f"cuda: {UNKNOWN}"
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         "")  # fmt: skip
    except OSError:
        pass
    return f"cpu: {model or platform.processor() or platform.machine() or UNKNOWN}"


def run_provenance(sweep: Mapping[str, Any], flat: Mapping[str, object], device: str) -> dict:
    """The provenance columns of one run record (``reports.schema.PROVENANCE``): the driver's
    ``sweep`` provenance for code and data, this process's libraries, device and threads."""
    import numpy
    import ray
    import torch

    data = sweep.get("data", {}).get(data_key(flat), {})
    return {
        **{k: sweep.get("code", {}).get(k, UNKNOWN) for k in ("code_version", "code_commit")},
        "code_dirty": sweep.get("code", {}).get("code_dirty"),
        "code_diff": sweep.get("code", {}).get("code_diff", ""),
        "torch_version": torch.__version__,
        "ray_version": ray.__version__,
        "numpy_version": numpy.__version__,
        "python_version": platform.python_version(),
        "device": describe_device(device),
        "threads": torch.get_num_threads(),
        "precision": str(flat.get("train.precision", "fp32")),  # fp32 until the key exists
        "data_fingerprint": data.get("fingerprint", UNKNOWN),
        "data_files": json.dumps(data.get("files", {}), sort_keys=True),
    }


def _label(code: Mapping[str, Any]) -> str:
    from reports.provenance import code_label

    commit, version = str(code.get("code_commit", UNKNOWN)), str(code.get("code_version", UNKNOWN))
    return code_label(commit, code.get("code_dirty"), str(code.get("code_diff", "")), version)


def _counted(counter: Mapping[str, int], stored: set[str]) -> str:
    from reports.provenance import counted

    text = [counted(counter)] if counter else []
    text += [f"{k} (unfinished runs)" for k in sorted(stored - set(counter))]
    return ", ".join(text)


def resume_difference(exp_dir: Path, current: Mapping[str, Any]) -> str | None:
    """How the code or data of what ``exp_dir`` already holds differs from ``current`` (the
    :func:`sweep_provenance` of this start), in one line; None when nothing differs.

    Compared: every recorded run (the runs table) and, when any stage record exists, the
    provenance stored in ``sweep.json`` by the last start (it made the unfinished runs' stages;
    a sweep started before provenance was recorded counts as "unknown").
    """
    from collections import Counter

    from reports.load import ResultsError, load_results
    from reports.provenance import code_labels

    try:
        metrics, runs = load_results(exp_dir)
    except ResultsError:
        return None
    codes = Counter(code_labels(runs)) if not runs.empty else Counter()
    data = Counter(runs["data_fingerprint"].astype(str)) if not runs.empty else Counter()
    stored_code, stored_data = set(), set()
    marker = exp_dir / "sweep.json"
    stored = json.loads(marker.read_text()).get("provenance") if marker.exists() else None
    if not metrics.empty:
        stored = stored or {"code": {}, "data": {"": {}}}
        stored_code.add(_label(stored.get("code", {})))
        stored_data |= {d.get("fingerprint", UNKNOWN) for d in stored.get("data", {}).values()}
    now_code = _label(current["code"])
    now_data = {d["fingerprint"] for d in current["data"].values()}
    parts = []
    recorded_code = set(codes) | stored_code
    if recorded_code and recorded_code != {now_code}:
        parts.append(f"code {_counted(codes, stored_code)}, now {now_code}")
    if (set(data) | stored_data) - now_data:
        parts.append(f"data {_counted(data, stored_data)}, now {', '.join(sorted(now_data))}")
    return "; ".join(parts) or None
