"""What a store alone says about a sweep: its grid, which grid points are done, what to rerun.

The store's tables and ``STORE/_sweeps/<sweep>.json`` (the grid the sweep started with) are
committed with the results; Tune's state under ``STORE/_tune`` is not. So a sweep can be
resumed on a machine that has only the committed store: grid points the store holds as
``completed`` or ``diverged`` are done, every other one is run again from scratch after its
partial files are removed (a trial id belongs to one Tune experiment, and the rerun gets a new
one). Grid points are compared by the configuration keys that determine results
(``RunConfig.experiment()``), so a resume may change where and how fast trials run (device,
data folder, compilation) but not what they compute.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from layrot.run import ENDED, resolve
from sweeps.lock import sweep_file
from sweeps.schema import TABLES
from sweeps.spec import SweepSpec
from sweeps.store import open_store, trial_path, write_sweep_file

DONE = ENDED                              # trial statuses that a resume does not run again
LEGACY_GRID = "_tune/{sweep}/layrot_grid.json"   # where stores of schema version 1 kept the grid


@dataclass(frozen=True)
class StoredTrial:
    trial_id: str
    status: str
    point: str          # the grid point's key, see ``point_key``
    epochs_done: int


def point_key(config: dict) -> str:
    """A grid point's identity: the keys of its run config (``SweepSpec.trial_configs``, a
    stored ``config_json``) that determine its results."""
    params = {k: v for k, v in config.items() if not k.startswith("_")}
    return json.dumps(resolve(params).experiment(), sort_keys=True)


def grid_points(spec: SweepSpec) -> list[dict]:
    """Every grid point as Tune trial parameters (axis values as the spec writes them)."""
    keys = list(spec.axes())
    return [dict(zip(keys, values)) for values in itertools.product(*spec.axes().values())]


def _point_keys(spec: SweepSpec) -> list[str]:
    return [point_key(c) for c in spec.trial_configs()]


def _read_json(fs: pafs.FileSystem, path: str) -> object | None:
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        return json.loads(f.readall().decode())


def recorded_grid(store: str, sweep: str) -> list[str] | None:
    """The grid point keys a sweep started with, or None if the store has no record of it."""
    fs, path = sweep_file(store, sweep, ".json")
    record = _read_json(fs, path)
    if record is not None:
        return list(record["grid"])
    fs, root = open_store(store)
    legacy = _read_json(fs, f"{root.rstrip('/')}/{LEGACY_GRID.format(sweep=sweep)}")
    return None if legacy is None else [point_key(c) for c in legacy]


def _announced(spec: SweepSpec) -> dict:
    """What a sweep fixes when it starts, besides its grid: the pre-registered analysis settings
    and the scheduler that decides which trials stop early."""
    return {"analysis": spec.analysis, "scheduler": asdict(spec.pruning)}


def save_grid(spec: SweepSpec, store: str) -> None:
    """Record the sweep's grid, analysis settings and scheduler in the store."""
    write_sweep_file(store, spec.name, {"sweep": spec.name, "grid": _point_keys(spec), **_announced(spec)})


def check_grid(spec: SweepSpec, store: str) -> None:
    """Refuse to resume a sweep whose grid, analysis settings or scheduler are not the ones it
    started with."""
    fs, path = sweep_file(store, spec.name, ".json")
    record = _read_json(fs, path) or {}
    changed = sorted(k for k, v in _announced(spec).items() if k in record and record[k] != v)
    if changed:
        raise ValueError(f"the spec of sweep {spec.name!r} changed since it started in {store!r} ({', '.join(changed)}); "
                         "resume it with the original spec or give the new one another name")
    recorded = recorded_grid(store, spec.name)
    if recorded is None:  # a store without a grid record: every trial it holds must be in the grid
        wanted = set(_point_keys(spec))
        if any(t.point not in wanted for t in stored_trials(store, spec.name)):
            recorded = []
        else:
            return
    if recorded != _point_keys(spec):
        raise ValueError(f"the spec of sweep {spec.name!r} changed since it started in {store!r}; "
                         "resume it with the original spec or give the new one another name")


def stored_trials(store: str, sweep: str) -> list[StoredTrial]:
    """Every trial of the sweep that the store's trials table holds."""
    fs, root = open_store(store)
    folder = f"{root.rstrip('/')}/trials/{sweep}"
    files = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    out = []
    for info in files:
        if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet") or info.base_name.startswith("."):
            continue
        for row in pq.read_table(info.path, filesystem=fs,
                                 columns=["trial_id", "status", "config_json", "epochs_done"]).to_pylist():
            out.append(StoredTrial(row["trial_id"], row["status"], point_key(json.loads(row["config_json"])),
                                   int(row["epochs_done"] or 0)))
    return out


def drop_trial(store: str, sweep: str, trial_id: str) -> None:
    """Remove a trial's files; the trials row first, so no row ever claims epochs already gone."""
    fs, root = open_store(store)
    for table in ("trials", *[t for t in TABLES if t != "trials"]):
        path = trial_path(root, table, sweep, trial_id)
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_file(path)


@dataclass(frozen=True)
class StorePlan:
    """A resume from the store alone: the grid points still to run (as Tune trial parameters),
    the trials done, and the trials whose partial files must go before the rerun."""
    remaining: list[dict]
    done: list[StoredTrial]
    stale: list[str]


def plan_from_store(spec: SweepSpec, store: str) -> StorePlan:
    trials = stored_trials(store, spec.name)
    done = {t.point: t for t in trials if t.status in DONE}
    stale = [t.trial_id for t in trials if done.get(t.point) is not t]
    remaining = [p for p in grid_points(spec) if point_key({**spec.fixed, **p}) not in done]
    return StorePlan(remaining, list(done.values()), stale)
