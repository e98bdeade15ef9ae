"""Build, run and resume a Ray Tune sweep of continual COMET pipelines (one trial per pipeline)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ablations.checks import SweepError, check_arms, check_fresh, check_storage, sweep_dir
from ablations.keys import resolve_flat, run_key
from ablations.progress import Progress, RunKeys, progress_callback
from ablations.trainable import comet_trial

__all__ = [
    "Resources",
    "SweepError",
    "SweepOutcome",
    "SweepSpec",
    "expected_run_keys",
    "planned_runs",
    "resolve_gpus",
    "run_sweep",
]


@dataclass(frozen=True)
class SweepSpec:
    """Everything that defines a sweep's set of runs (its hash guards ``--name`` reuse)."""

    name: str
    preset: str
    seeds: tuple[int, ...]
    arms: dict[str, dict[str, object]]  # grid arms (a single "search" arm for Optuna)
    base: dict[str, object] = field(default_factory=dict)  # --set / --plan overrides
    search: str = "grid"  # grid | optuna
    num_samples: int = 1
    metric: str = "objective"
    mode: str = "max"

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    address: str | None = None
    max_failures: int = 0
    reuse: bool = True  # copy finished runs of the same key from other sweeps (ablations.reuse)


@dataclass
class SweepOutcome:
    exp_dir: Path
    expected: int
    complete: list[str]
    failed: dict[str, str]  # run_key -> error
    missing: int
    interrupted: bool
    wall_s: float

    @property
    def ok(self) -> bool:
        return not self.failed and self.missing == 0 and not self.interrupted


def expected_run_keys(spec: SweepSpec, preset_flat: dict) -> dict[str, tuple[str, int]]:
    """run_key -> (arm, seed) of every run a grid sweep must produce."""
    keys = {}
    for arm, overrides in spec.arms.items():
        for seed in spec.seeds:
            flat = resolve_flat(preset_flat, dict(spec.base) | overrides, seed)
            keys[run_key(flat)] = (arm, seed)
    return keys


def planned_runs(spec: SweepSpec) -> list[dict[str, object]]:
    """Every run of ``spec`` (grid: arm x seed, with its run key and resolved overrides; search:
    one entry per sample with the searched keys), in launch order."""
    from comet_model.config import preset as get_preset

    if spec.search == "optuna":
        from search_spaces.axes import by_column
        from search_spaces.optuna_space import SEARCHED

        keys = [by_column()[c].key for c in SEARCHED]
        return [{"sweep": spec.name, "arm": "search", "sample": i, "seed": spec.seeds[0],
                 "searched": keys, "overrides": dict(spec.base), "metric": spec.metric}
                for i in range(spec.num_samples)]  # fmt: skip
    preset_flat = get_preset(spec.preset).to_flat()
    runs = []
    for arm, overrides in spec.arms.items():
        for seed in spec.seeds:
            merged = dict(spec.base) | dict(overrides)
            key = run_key(resolve_flat(preset_flat, merged, seed))
            runs.append({"sweep": spec.name, "arm": arm, "seed": seed, "run_key": key,
                         "overrides": merged})  # fmt: skip
    return runs


def resolve_gpus(requested: float, cluster: dict) -> float:
    """The GPU share a trial may ask for: 0 on a GPU-less cluster (a GPU request there would
    leave every trial PENDING forever), else the request (a fraction packs trials per GPU)."""
    available = float(cluster.get("GPU", 0) or 0)
    if requested <= 0 or available <= 0:
        return 0.0
    if requested > available:
        raise SweepError(f"--gpus-per-trial {requested:g} exceeds the cluster's {available:g} GPUs")
    return float(requested)


def _check_address(address: str) -> None:
    """Fail fast (3 s) with one line when a cluster address does not answer."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise SweepError(f"--address {address!r} is not of the form host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        raise SweepError(f"cannot reach Ray cluster at {address} ({exc.strerror or exc})") from None


def _init_ray(res: Resources) -> dict:
    # One checkpoint per stage forces an experiment snapshot each time (what makes SIGKILL
    # resume exact); Tune warns about that on fast smoke runs. The warning is expected here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    if ray.is_initialized():  # a second sweep of the same command (the Optuna confirmation)
        return ray.cluster_resources()
    if res.address:
        _check_address(res.address)
        ray.init(address=res.address, log_to_driver=False)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        tmp = os.environ.get("RAY_TMPDIR") or os.path.join(tempfile.gettempdir(), "rc")
        os.makedirs(tmp, exist_ok=True)
        ray.init(
            address="local",
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=100 * 1024**2,
            _temp_dir=tmp,
            runtime_env={"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}},
        )
    return ray.cluster_resources()


def _prepare_storage(
    spec: SweepSpec, storage: Path, fresh: bool, provenance: dict, allow_code_change: bool = False
) -> Path:
    """The sweep's folder under ``storage``, refusing a name started with other settings, or
    holding runs of other code or data (unless ``allow_code_change``: then a warning)."""
    exp_dir = sweep_dir(storage, spec.name)  # a folder directly inside the storage
    storage = exp_dir.parent
    marker = exp_dir / "sweep.json"
    if fresh and (exp_dir.exists() or exp_dir.is_symlink()):
        check_fresh(exp_dir)  # only a sweep's own folder
        shutil.rmtree(exp_dir)
    if marker.exists():
        old = json.loads(marker.read_text()).get("digest")
        if old != spec.digest():
            raise SweepError(
                f"sweep {spec.name!r} in {storage} was started with different settings; "
                "rerun with --fresh to start over or pick another --name"
            )
    _check_provenance(spec, exp_dir, provenance, allow_code_change)
    exp_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"digest": spec.digest(), "spec": asdict(spec),
                                  "provenance": provenance}, default=str))  # fmt: skip
    shutil.rmtree(exp_dir / "scratch", ignore_errors=True)  # staging dirs leaked by killed trials
    return exp_dir


def _check_provenance(spec: SweepSpec, exp_dir: Path, provenance: dict, allow: bool) -> None:
    """Refuse (or, when ``allow``, warn about) resuming runs made by other code or data."""
    from ablations.provenance import resume_difference

    diff = resume_difference(exp_dir, provenance) if exp_dir.exists() else None
    if diff is None:
        return
    if not allow:
        raise SweepError(
            f"sweep {spec.name!r} holds runs of other code or data ({diff}); rerun with "
            "--allow-code-change to add runs of this code anyway, or --fresh to start over"
        )
    print(f"warning: sweep {spec.name!r} holds runs of other code or data ({diff}); "
          "continuing (--allow-code-change)", file=sys.stderr)  # fmt: skip


def _sweep_provenance(spec: SweepSpec, preset_flat: dict) -> dict:
    """The code and data provenance of this start (once per sweep: git, data hashes)."""
    from ablations.provenance import sweep_provenance

    flats = [dict(preset_flat) | dict(spec.base) | dict(o) for o in spec.arms.values()]
    return sweep_provenance(flats)


def _tuner(spec: SweepSpec, res: Resources, exp_dir: Path, cluster: dict, progress: Progress,
           provenance: dict | None = None):  # fmt: skip
    """A new Tuner for the sweep, or the restored one of an interrupted run."""
    from ray import tune

    gpus = resolve_gpus(res.gpus_per_trial, cluster)
    if res.gpus_per_trial > 0 and gpus == 0:
        print("note: the cluster has no GPU; trials run on CPU", file=sys.stderr)
    trainable = tune.with_resources(
        tune.with_parameters(
            comet_trial, sweep=spec.name, root=str(exp_dir), preset=spec.preset, arms=spec.arms,
            base=spec.base, metric=spec.metric, gpu_fraction=gpus, provenance=provenance,
            reuse=res.reuse,
        ),
        {"cpu": res.cpus_per_trial, "gpu": gpus},
    )  # fmt: skip
    if tune.Tuner.can_restore(str(exp_dir)):
        print(f"resuming sweep {spec.name!r} from {exp_dir}", file=sys.stderr)
        return tune.Tuner.restore(
            str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    run_config = tune.RunConfig(
        name=spec.name,
        storage_path=str(exp_dir.parent),
        verbose=0,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=res.max_failures),
        callbacks=[progress_callback(progress)],
    )
    return tune.Tuner(
        trainable,
        param_space=_param_space(spec),
        tune_config=_tune_config(spec, res, exp_dir),
        run_config=run_config,
    )


def _fit(tuner) -> bool:
    """Run the tuner; SIGTERM (batch schedulers) becomes Tune's graceful SIGINT stop. Returns
    whether the sweep was interrupted."""
    interrupted = {"flag": False}

    def graceful(signum, frame):
        interrupted["flag"] = True
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, graceful)
    try:
        tuner.fit()
    except KeyboardInterrupt:
        interrupted["flag"] = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    return interrupted["flag"]


def run_sweep(
    spec: SweepSpec,
    res: Resources,
    storage: Path,
    *,
    fresh: bool = False,
    allow_code_change: bool = False,
) -> SweepOutcome:
    """Run (or resume) the sweep ``spec`` under ``storage/spec.name``.

    Before anything is written or started (:mod:`ablations.checks`): the name, the storage,
    every arm's config and every stage plan the arms use; a problem raises :class:`SweepError`.
    Resuming a sweep whose recorded runs came from other code or data raises
    :class:`SweepError` too, unless ``allow_code_change`` (then a warning).
    """
    from comet_model.config import preset as get_preset
    from comet_model.data.plan import stage_count

    preset_flat = get_preset(spec.preset).to_flat()
    exp_dir = sweep_dir(storage, spec.name)
    check_storage(storage)
    check_arms(preset_flat, spec.arms, spec.base, spec.seeds)
    flat = {**preset_flat, **spec.base}  # a stage plan names its own stages
    num_stages = stage_count(flat["data.source"], flat["data.plan_file"], flat["data.stages"])
    if res.address:
        _check_address(res.address)  # before anything is written
    provenance = _sweep_provenance(spec, preset_flat)
    exp_dir = _prepare_storage(spec, storage, fresh, provenance, allow_code_change)
    cluster = _init_ray(res)
    total = spec.num_samples if spec.search == "optuna" else len(spec.arms) * len(spec.seeds)
    start = time.perf_counter()
    progress = Progress(total, num_stages, exp_dir, RunKeys(preset_flat, spec.arms, spec.base))
    tuner = _tuner(spec, res, exp_dir, cluster, progress, provenance)
    interrupted = _fit(tuner)
    return _check(spec, preset_flat, exp_dir, interrupted, time.perf_counter() - start)


def _param_space(spec: SweepSpec) -> dict:
    from ray import tune

    if spec.search == "optuna":
        from search_spaces.optuna_space import comet_space

        return {"arm": "search", "seed": spec.seeds[0], **comet_space()}
    return {"arm": tune.grid_search(list(spec.arms)), "seed": tune.grid_search(list(spec.seeds))}


def _tune_config(spec: SweepSpec, res: Resources, exp_dir: Path):
    from ray import tune

    if spec.search != "optuna":  # FIFO grid: every arm runs all stages
        return tune.TuneConfig(num_samples=1, max_concurrent_trials=res.max_concurrent)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.RDBStorage(f"sqlite:///{exp_dir / 'optuna.db'}")
    searcher = OptunaSearch(
        metric=spec.metric, mode=spec.mode, seed=0, study_name=spec.name, storage=storage
    )
    return tune.TuneConfig(
        search_alg=searcher,
        num_samples=spec.num_samples,
        max_concurrent_trials=res.max_concurrent,
    )


def _check(spec, preset_flat, exp_dir: Path, interrupted: bool, wall: float) -> SweepOutcome:
    """Completeness check from the harness's own records (Tune's counters are not reliable)."""
    from reports.load import ResultsError, load_results

    try:
        _, runs = load_results(exp_dir)
    except ResultsError:
        runs = None
    status = (
        {}
        if runs is None
        else dict(
            zip(runs["run_key"], zip(runs["status"], runs["error"], strict=True), strict=True)
        )
    )
    if spec.search == "optuna":
        complete = [k for k, (s, _) in status.items() if s == "complete"]
        failed = {k: e for k, (s, e) in status.items() if s != "complete"}
        missing = max(0, spec.num_samples - len(complete) - len(failed))
        expected = spec.num_samples
    else:
        keys = expected_run_keys(spec, preset_flat)
        complete = [k for k in keys if status.get(k, ("",))[0] == "complete"]
        failed = {k: status[k][1] for k in keys if k in status and status[k][0] != "complete"}
        missing = len(keys) - len(complete) - len(failed)
        expected = len(keys)
    return SweepOutcome(exp_dir, expected, complete, failed, missing, interrupted, wall)
