"""Run a validated spec as one Ray Tune experiment whose results land in the store.

Tune does the scheduling (grid search, per-trial resources, concurrency), the retries from
checkpoints (``FailureConfig``) and the resume of an interrupted sweep (``Tuner.restore``). This
module adds what Tune lacks: checks made before anything starts (existing state, resources,
storage every node can reach) and the store, written by ``sweeps.callback.StoreCallback``.

Tune's experiment state lives in STORE/_tune/<sweep>/ (readers skip folders starting with "_").
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

from sweeps.spec import SweepSpec
from sweeps.store import open_store, sweep_exists, write_sweep_file

TUNE_DIR = "_tune"
GRID_FILE = "layrot_grid.json"  # the grid a sweep started with, checked on --resume


@dataclass(frozen=True)
class SweepOutcome:
    name: str
    trials: int
    completed: int
    diverged: int
    errored: int


def sweep_trial(params: dict) -> None:
    """The Tune trainable: trains one grid point (a run config, see ``layrot.run``)."""
    from trainables.tune_trial import run_trial

    # One "checkpoint created" line per trial and epoch would drown the sweep's progress lines.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    run_trial(params)


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


def _experiment(spec: SweepSpec, store: str) -> str:
    return _join(store, TUNE_DIR, spec.name)


def _grid_json(spec: SweepSpec) -> str:
    return json.dumps(spec.trial_configs(), sort_keys=True)


def previous_state(spec: SweepSpec, store: str, resume: bool) -> bool:
    """Whether Tune state exists to restore. Refuses to start over a sweep that already ran,
    to resume with a changed grid, or to mix a new start into results without state."""
    from ray.tune import Tuner

    fs, root = open_store(_experiment(spec, store))
    if Tuner.can_restore(_experiment(spec, store)):
        if not resume:
            raise ValueError(f"sweep {spec.name!r} already ran in {store!r}; pass --resume to continue it "
                             "or give the spec another name")
        with fs.open_input_stream(f"{root}/{GRID_FILE}") as f:
            if f.readall().decode() != _grid_json(spec):
                raise ValueError(f"the spec of sweep {spec.name!r} changed since it started in {store!r}; "
                                 "resume it with the original spec or give the new one another name")
        return True
    if sweep_exists(store, spec.name):
        raise ValueError(f"store {store!r} holds results of sweep {spec.name!r} but no Tune state to resume; "
                         "give the spec another name or use another store")
    return False


def _save_grid(spec: SweepSpec, store: str) -> None:
    fs, root = open_store(_experiment(spec, store))
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/{GRID_FILE}") as f:
        f.write(_grid_json(spec).encode())


def _connect(address: str | None) -> bool:
    """An existing cluster when given one (argument or RAY_ADDRESS), else an embedded Ray.
    Returns whether it is an existing cluster."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=True)
    else:  # "local": never attach to someone else's Ray on this machine
        ray.init(address="local", include_dashboard=False)
    return bool(address)


def run_sweep(
    spec: SweepSpec,
    store: str,
    *,
    address: str | None = None,
    resume: bool = False,
    max_concurrent: int | None = None,
    extra_config: dict | None = None,
    out: TextIO | None = None,
) -> SweepOutcome:
    """Run (or, with ``resume``, continue) the sweep; returns once every trial has ended.

    ``extra_config`` adds keys to every trial's config (keys starting with "_" reach
    ``trainables.tune_trial.run_trial``, e.g. to inject failures in tests).
    """
    if max_concurrent is not None and max_concurrent < 1:
        raise ValueError(f"--max-concurrent {max_concurrent} must be >= 1")
    # Tune's default TensorBoard logger would import torch into the driver; loggers are explicit.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # One checkpoint per epoch is the design; Tune's warning about frequent snapshots is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from sweeps.callback import StoreCallback
    from sweeps.scheduler import tune_scheduler

    restoring = previous_state(spec, store, resume)  # also fails on a malformed URI, before Ray starts
    existing_cluster = _connect(address)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        check_store_reachable(store, [n["NodeManagerAddress"] for n in nodes], local_addresses())
        if warning := check_resources(spec, nodes, autoscaling=existing_cluster):
            print(f"[{spec.name}] warning: {warning}", file=out or sys.stdout, flush=True)
        if not restoring:
            _save_grid(spec, store)
            write_sweep_file(store, spec.name, {"sweep": spec.name, "analysis": spec.analysis,
                                                "grid": spec.trial_configs()})

        trainable = tune.with_resources(sweep_trial, {"cpu": spec.cpus, "gpu": spec.gpus})
        if restoring:  # Tune restores the run config, store callback included, as first given
            tuner = tune.Tuner.restore(_experiment(spec, store), trainable, resume_errored=True)
        else:
            callback = StoreCallback(store, spec.name, spec.num_trials, out=out)
            param_space = {**spec.fixed, **(extra_config or {}),
                           **{k: tune.grid_search(list(v)) for k, v in spec.axes().items()}}
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=max_concurrent,
                                            scheduler=tune_scheduler(spec, store)),
                run_config=tune.RunConfig(
                    name=spec.name,
                    storage_path=tune_path(store),
                    callbacks=[callback, CSVLoggerCallback(), JsonLoggerCallback()],
                    failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    verbose=0,
                ),
            )
        print(f"[{spec.name}] {'resuming' if restoring else 'starting'} {spec.num_trials} trials "
              f"into {store}", file=out or sys.stdout, flush=True)
        grid = tuner.fit()
    finally:
        ray.shutdown()
    statuses = [r.metrics.get("diverged") for r in grid if r.error is None]
    diverged = sum(1 for d in statuses if d)
    return SweepOutcome(spec.name, len(grid), len(statuses) - diverged, diverged, grid.num_errors)
