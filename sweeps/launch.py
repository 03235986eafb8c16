"""Run a validated spec as one Ray Tune experiment whose results land in the store.

Tune does the scheduling (grid search, per-trial resources, concurrency), the retries from
checkpoints (``FailureConfig``) and the resume of an interrupted sweep (``Tuner.restore``). This
module adds what Tune lacks: checks made before anything starts (store location, devices,
existing state, resources, storage every node can reach), one driver per sweep
(``sweeps.lock``), a resume from the store alone when Tune's state is gone (``sweeps.resume``),
clean stops on SIGINT/SIGTERM (``sweeps.interrupt``), an embedded Ray that listens on loopback
only, and the store, written by ``sweeps.callback.StoreCallback``.

Tune's experiment state lives in STORE/_tune/<sweep>/, Ray's and Tune's output in
STORE/_tune/<sweep>.log, and the sweep's grid in STORE/_sweeps/<sweep>.json (readers skip
folders starting with "_"; only _tune is left out when a store is committed).
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs as pafs

from layrot.paths import check_output_dir
from layrot.signals import Interrupted
from sweeps.console import quiet_output
from sweeps.console import say as console_say
from sweeps.interrupt import SweepSignals, sweep_signals
from sweeps.lock import SweepLock
from sweeps.resume import StorePlan, check_grid, drop_trial, plan_from_store, recorded_grid, save_grid, stored_trials
from layrot.run import rate_label, resolve
from sweeps.spec import SweepSpec
from sweeps.store import open_store, sweep_exists

TUNE_DIR = "_tune"


@dataclass(frozen=True)
class SweepOutcome:
    name: str
    trials: int
    completed: int
    diverged: int
    errored: int
    pruned: int = 0
    interrupted: int | None = None   # the signal that stopped the sweep before its end

    @property
    def done(self) -> int:
        return self.completed + self.diverged + self.pruned


def sweep_trial(params: dict) -> None:
    """The Tune trainable: trains one grid point (a run config, see ``layrot.run``)."""
    from trainables.tune_trial import run_trial

    # One "checkpoint created" line per trial and epoch would drown the sweep's progress lines.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    run_trial(params)


def trial_dirname(trial) -> str:
    """Tune's folder of a trial: its canonical setting, id and rates (the names layrot.run gives)."""
    c = trial.config
    return f"{c['setting']}_{trial.trial_id}_alpha={c['alpha']:g}_rho0={rate_label(c['rho0'])}_seed={c['seed']}"


def _join(location: str, *parts: str) -> str:
    """A path below a local path or URI; a URI keeps its query (e.g. ?endpoint_override=...)."""
    if "://" not in location:
        return os.path.join(open_store(location)[1], *parts)
    scheme, netloc, path, query, fragment = urlsplit(location)
    return urlunsplit((scheme, netloc, "/".join([path.rstrip("/"), *parts]), query, fragment))


def tune_path(store: str) -> str:
    """Tune's storage_path for a store: STORE/_tune, absolute (Tune requires it) or a URI."""
    return _join(store, TUNE_DIR)


def is_local_path(store: str) -> bool:
    """Whether the store is a path on the driver's own disks (a plain path or file:// URI)."""
    return "://" not in store or store.startswith("file://")


def local_addresses() -> set[str]:
    """IP addresses that name the driver's host."""
    import ray

    names = {"127.0.0.1", "localhost", ray.util.get_node_ip_address()}
    try:
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return names


def check_store_reachable(store: str, node_addresses: list[str], driver_addresses: set[str]) -> None:
    """A local path is only shared with nodes on the driver's own host: refuse it when the
    cluster has nodes elsewhere, since their trials write checkpoints into Tune's state there."""
    remote = sorted(set(node_addresses) - driver_addresses)
    if remote and is_local_path(store):
        raise ValueError(
            f"--store {store!r} is a local path, but the cluster has nodes on other hosts "
            f"({', '.join(remote)}) that cannot reach it; give a URI every node and the driver "
            "can reach, e.g. s3://bucket/layrot or gs://bucket/layrot"
        )


def check_resources(spec: SweepSpec, nodes: list[dict], autoscaling: bool = False) -> str | None:
    """Refuse a spec no node can run: Tune would otherwise leave its trials pending forever.

    On an existing cluster an autoscaler may still add a node that fits (a GPU worker scaled
    from zero), so there the shortage is only returned, as a warning to print.
    """
    fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= spec.cpus and n["Resources"].get("GPU", 0) >= spec.gpus]
    if fits:
        return None
    most = max(((n["Resources"].get("CPU", 0), n["Resources"].get("GPU", 0)) for n in nodes), default=(0, 0))
    message = (f"spec {spec.name!r} asks {spec.cpus:g} CPU and {spec.gpus:g} GPU per trial, but no node of "
               f"the cluster has that much (largest: {most[0]:g} CPU, {most[1]:g} GPU)")
    if not autoscaling:
        raise ValueError(f"{message}; change 'resources'")
    return f"{message} yet; trials wait until the autoscaler adds such a node"


def check_store_location(store: str) -> None:
    """A local store must be, or be creatable as, a writable directory (URIs are checked by
    their filesystem when first opened)."""
    if is_local_path(store):
        check_output_dir(open_store(store)[1], "--store")


def check_devices(spec: SweepSpec) -> None:
    """On an embedded Ray, trials that ask for CUDA need a CUDA device here and a GPU share."""
    from ray._private.accelerators import get_accelerator_manager_for_resource

    for config in spec.trial_configs():
        device = config.get("device", "auto")
        if not device.startswith("cuda"):
            continue
        if get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators() == 0:
            raise ValueError(f"train.device={device!r}, but this machine has no CUDA device; use device auto "
                             "or cpu, or --address a Ray cluster with GPU nodes")
        if spec.gpus == 0:
            raise ValueError(f"train.device={device!r} needs a GPU per trial; set resources: {{gpus: N}} with "
                             "N > 0 (a fraction lets trials share one)")
        return


def _experiment(spec: SweepSpec, store: str) -> str:
    return _join(store, TUNE_DIR, spec.name)


def tune_state_restorable(spec: SweepSpec, store: str) -> bool:
    """Whether Tune's state of the sweep can be restored: its tuner.pkl (``Tuner.can_restore``)
    and a snapshot of its trials (experiment_state-*.json). A driver killed within its first
    seconds leaves the first without the second, and ``Tuner.restore`` then creates the trials
    anew with an empty config."""
    from ray.tune import Tuner

    experiment = _experiment(spec, store)
    if not Tuner.can_restore(experiment):
        return False
    fs, root = open_store(experiment)
    return any(info.base_name.startswith("experiment_state-") and info.base_name.endswith(".json")
               for info in fs.get_file_info(pafs.FileSelector(root)))


def previous_state(spec: SweepSpec, store: str, resume: bool) -> str:
    """How the sweep starts: "new", "tune" (restore Tune's state) or "store" (from the store
    alone, ``sweeps.resume``). Refuses to start over a sweep that already ran, or to resume
    one with a changed grid."""
    tune_state = tune_state_restorable(spec, store)
    if not (tune_state or recorded_grid(store, spec.name) is not None or sweep_exists(store, spec.name)):
        return "new"
    if not resume:
        raise ValueError(f"sweep {spec.name!r} already ran in {store!r}; pass --resume to continue it "
                         "or give the spec another name")
    check_grid(spec, store)
    return "tune" if tune_state else "store"


def _loopback_only() -> None:
    """Make an embedded Ray listen on 127.0.0.1 only. With Ray's switch for platforms without
    clusters off, its node address is 127.0.0.1, and every Ray server (GCS, raylet, object
    manager, workers' gRPC, runtime-env agent) binds to the node address when it is loopback."""
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"   # for the processes Ray starts
    ray_constants.ENABLE_RAY_CLUSTER = False                      # read once, when ray was imported


def _connect(address: str | None) -> None:
    """An existing cluster when given one, else an embedded Ray on loopback."""
    import ray

    if address:
        ray.init(address=address, log_to_driver=True)
    else:  # "local": never attach to someone else's Ray on this machine
        _loopback_only()
        ray.init(address="local", include_dashboard=False)


def log_path(store: str, sweep: str) -> str:
    """Ray's and Tune's output of a sweep: STORE/_tune/<sweep>.log for a local store, a local
    file copied there at the end for an object store."""
    if is_local_path(store):
        return os.path.join(open_store(store)[1], TUNE_DIR, f"{sweep}.log")
    return os.path.join(tempfile.gettempdir(), f"layrot-{sweep}-{os.getpid()}.log")


def _upload_log(local: str, store: str, sweep: str) -> None:
    if is_local_path(store) or not os.path.exists(local):
        return
    fs, root = open_store(_join(store, TUNE_DIR))
    fs.create_dir(root, recursive=True)
    with open(local, "rb") as src, fs.open_output_stream(f"{root}/{sweep}.log") as dst:
        dst.write(src.read())
    os.remove(local)


def outcome_from_store(spec: SweepSpec, store: str, interrupted: int | None = None) -> SweepOutcome:
    """The sweep's counts as the store holds them (trials never started count in none)."""
    statuses = [t.status for t in stored_trials(store, spec.name)]
    return SweepOutcome(spec.name, spec.num_trials, statuses.count("completed"), statuses.count("diverged"),
                        statuses.count("errored"), statuses.count("pruned"), interrupted)


def run_sweep(
    spec: SweepSpec,
    store: str,
    *,
    address: str | None = None,
    resume: bool = False,
    max_concurrent: int | None = None,
    extra_config: dict | None = None,
    out: TextIO | None = None,
    verbose: bool = False,
    force_unlock: bool = False,
) -> SweepOutcome:
    """Run (or, with ``resume``, continue) the sweep; returns once every trial has ended or a
    signal stopped it (``SweepOutcome.interrupted``).

    ``extra_config`` adds keys to every trial's config (keys starting with "_" reach
    ``trainables.tune_trial.run_trial``, e.g. to inject failures in tests). Ray's and Tune's
    own output goes to ``log_path(store, spec.name)`` unless ``verbose``.
    """
    if max_concurrent is not None and max_concurrent < 1:
        raise ValueError(f"--max-concurrent {max_concurrent} must be >= 1")
    address = address or os.environ.get("RAY_ADDRESS") or None
    check_store_location(store)
    if address is None:
        check_devices(spec)
    with sweep_signals() as signals:
        try:
            with SweepLock(store, spec.name, force_unlock):
                _run_locked(spec, store, address, resume, max_concurrent, extra_config, out, verbose, signals)
        except Interrupted:
            pass
        return outcome_from_store(spec, store, signals.signum)


def _run_locked(spec: SweepSpec, store: str, address: str | None, resume: bool, max_concurrent: int | None,
                extra_config: dict | None, out: TextIO | None, verbose: bool, signals: SweepSignals) -> None:
    # Tune's default TensorBoard logger would import torch into the driver; loggers are explicit.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # One checkpoint per epoch is the design; Tune's warning about frequent snapshots is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    mode = previous_state(spec, store, resume)  # also fails on a malformed URI, before Ray starts
    plan = plan_from_store(spec, store) if mode == "store" else None
    say = (lambda line: print(line, file=out, flush=True)) if out else console_say
    if plan is not None and not plan.remaining:
        for trial_id in plan.stale:
            drop_trial(store, spec.name, trial_id)
        say(f"[{spec.name}] every trial is already in {store}; nothing to run")
        return

    log = None if verbose else log_path(store, spec.name)
    try:
        with quiet_output(log):
            try:
                _connect(address)
                signals.reclaim()
                nodes = [n for n in ray.nodes() if n.get("Alive")]
                check_store_reachable(store, [n["NodeManagerAddress"] for n in nodes], local_addresses())
                if warning := check_resources(spec, nodes, autoscaling=address is not None):
                    say(f"[{spec.name}] warning: {warning}")
                tuner = _tuner(spec, store, mode, plan, max_concurrent, extra_config, out)
                todo = spec.num_trials - outcome_from_store(spec, store).done
                say(f"[{spec.name}] {'starting' if mode == 'new' else 'resuming'} {todo} of {spec.num_trials} "
                    f"trials into {store}" + (f"; Ray's output: {log}" if log else ""))
                with signals.tune_fit():
                    tuner.fit()
            finally:
                ray.shutdown()
    finally:
        if log:
            _upload_log(log, store, spec.name)


def _tuner(spec: SweepSpec, store: str, mode: str, plan: StorePlan | None, max_concurrent: int | None,
           extra_config: dict | None, out: TextIO | None):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from sweeps.callback import StoreCallback
    from sweeps.scheduler import tune_scheduler

    trainable = tune.with_resources(sweep_trial, {"cpu": spec.cpus, "gpu": spec.gpus})
    if mode == "tune":  # Tune restores the run config, store callback included, as first given
        return tune.Tuner.restore(_experiment(spec, store), trainable, resume_errored=True)
    param_space = {**spec.fixed, **(extra_config or {}),
                   **{k: tune.grid_search(list(v)) for k, v in spec.axes().items()}}
    if mode == "new":
        save_grid(spec, store)
        tune_config = tune.TuneConfig(reuse_actors=True, max_concurrent_trials=max_concurrent,
                                      trial_dirname_creator=trial_dirname, scheduler=tune_scheduler(spec, store))
        done_before = epochs_before = 0
        epochs_total = planned_epochs(spec.trial_configs())
    else:  # from the store alone: a new experiment of the grid points not done yet
        if recorded_grid(store, spec.name) is None:   # a store from before grids were recorded
            save_grid(spec, store)
        for trial_id in plan.stale:
            drop_trial(store, spec.name, trial_id)
        fs, root = open_store(_experiment(spec, store))
        if fs.get_file_info(root).type != pafs.FileType.NotFound:
            fs.delete_dir(root)   # Tune state too incomplete to restore
        # Each preset point fixes every grid axis, so it is exactly one trial.
        tune_config = tune.TuneConfig(reuse_actors=True, max_concurrent_trials=max_concurrent,
                                      trial_dirname_creator=trial_dirname, scheduler=tune_scheduler(spec, store),
                                      num_samples=len(plan.remaining),
                                      search_alg=BasicVariantGenerator(points_to_evaluate=plan.remaining))
        done_before, epochs_before = len(plan.done), sum(t.epochs_done for t in plan.done)
        epochs_total = epochs_before + planned_epochs([{**spec.fixed, **p} for p in plan.remaining])
    callback = StoreCallback(store, spec.name, spec.num_trials, out=out, done_before=done_before,
                             epochs_total=epochs_total, epochs_before=epochs_before)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=tune_path(store),
            callbacks=[callback, CSVLoggerCallback(), JsonLoggerCallback()],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )


def planned_epochs(configs: list[dict]) -> int:
    """Epochs of these run configs if no trial diverges."""
    return sum(resolve(c).epochs for c in configs)
