"""The results store's writing side: whole per-trial Parquet files, replaced atomically.

Layout and schemas are in ``sweeps.schema``. Every write replaces one trial's file in one table
with a complete new version (temp file in the same folder, then rename), so readers and crashes
only ever see whole files, and re-writing a trial after a resume cannot duplicate rows.
Temp files start with "." so ``pyarrow.dataset`` skips them and ``*.parquet`` globs miss them.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from layrot.run import EPOCH_METRICS, EXPERIMENT_KEYS, LAYER_METRICS, LAYER_NAMES, STATUSES, RunConfig, summarize
from sweeps.schema import SCHEMAS, TABLES, TRIALS, check_sweep_name, with_version


def open_store(store: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path) of a store given as a local path or a pyarrow filesystem URI."""
    if "://" in store:
        return pafs.FileSystem.from_uri(store)
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(store))


def trial_path(root: str, table: str, sweep: str, trial_id: str) -> str:
    if table not in TABLES:
        raise ValueError(f"unknown store table {table!r}; allowed: {', '.join(TABLES)}")
    check_sweep_name(sweep)
    if not isinstance(trial_id, str) or "/" in trial_id or trial_id.startswith((".", "_")) or not trial_id:
        raise ValueError(f"trial id {trial_id!r} cannot be a file name (no '/', no leading '.' or '_')")
    return f"{root.rstrip('/')}/{table}/{sweep}/{trial_id}.parquet"


def _conform(table: str, rows: pa.Table, sweep: str, trial_id: str) -> pa.Table:
    """Rows in the table's column order and types; missing nullable columns become nulls."""
    schema = SCHEMAS[table]
    extra = sorted(set(rows.column_names) - set(schema.names))
    if extra:
        raise ValueError(f"columns {extra} are not in the {table!r} schema; allowed: {schema.names}")
    columns = []
    for f in schema:
        if f.name in rows.column_names:
            columns.append(rows.column(f.name).cast(f.type))
        elif f.nullable:
            columns.append(pa.nulls(rows.num_rows, f.type))
        else:
            raise ValueError(f"rows for the {table!r} table lack the required column {f.name!r}")
    out = pa.Table.from_arrays(columns, schema=with_version(schema))
    for key, want in (("sweep", sweep), ("trial_id", trial_id)):
        found = set(out.column(key).to_pylist())
        if found - {want}:
            raise ValueError(f"rows carry {key} values {sorted(found - {want})}, expected only {want!r}")
    return out


def write_trial_file(store: str, table: str, sweep: str, trial_id: str, rows: pa.Table) -> None:
    """Replace STORE/<table>/<sweep>/<trial_id>.parquet with ``rows``, atomically.

    ``rows`` must use the table's column names (see ``sweeps.schema``); it is cast to the
    versioned schema, so a bad column or value fails here and nothing is written.
    """
    fs, root = open_store(store)
    path = trial_path(root, table, sweep, trial_id)
    data = _conform(table, rows, sweep, trial_id)
    folder, name = path.rsplit("/", 1)
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(data, tmp, filesystem=fs)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except (FileNotFoundError, OSError):
            pass
        raise


def read_trial_file(store: str, table: str, sweep: str, trial_id: str) -> pa.Table | None:
    """One trial's file in one table, or None if it was never written."""
    fs, root = open_store(store)
    path = trial_path(root, table, sweep, trial_id)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    return pq.read_table(path, filesystem=fs)


SWEEPS_DIR = "_sweeps"   # STORE/_sweeps/<sweep>.json: what a sweep announced when it started


def write_sweep_file(store: str, sweep: str, record: dict) -> None:
    """Write (atomically) the JSON record of a sweep: its grid and pre-registered analysis
    settings. The folder starts with "_", so table readers skip it."""
    fs, root = open_store(store)
    folder = f"{root}/{SWEEPS_DIR}"
    fs.create_dir(folder, recursive=True)
    path, tmp = f"{folder}/{check_sweep_name(sweep)}.json", f"{folder}/.{sweep}.{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(json.dumps(record, sort_keys=True, indent=1).encode())
    fs.move(tmp, path)


def read_sweep_files(store: str) -> dict[str, dict]:
    """{sweep: record} of every sweep file in the store (empty for stores written before them)."""
    fs, root = open_store(store)
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/{SWEEPS_DIR}", allow_not_found=True))
    out = {}
    for info in infos:
        if info.type == pafs.FileType.File and info.base_name.endswith(".json") and not info.base_name.startswith("."):
            with fs.open_input_stream(info.path) as f:
                out[info.base_name[: -len(".json")]] = json.loads(f.read().decode())
    return out


def sweep_exists(store: str, sweep: str) -> bool:
    """Whether any table of the store already holds files of this sweep."""
    fs, root = open_store(store)
    return any(
        fs.get_file_info(f"{root}/{table}/{check_sweep_name(sweep)}").type == pafs.FileType.Directory
        for table in TABLES
    )


@dataclass
class TrialRecord:
    """Everything the store holds about one trial, rebuilt into whole files on every change.

    ``epochs`` maps epoch number -> the trial's record for that epoch (``layrot.run.EPOCH_KEYS``).
    A report for epoch e drops any stored epoch >= e first: a trial that resumed from an older
    checkpoint re-reports those epochs, and they must not appear twice.
    """

    sweep: str
    trial_id: str
    config: RunConfig
    status: str = "running"
    error: str | None = None
    epochs: dict[int, dict] = field(default_factory=dict)

    def add_epoch(self, metrics: dict) -> None:
        epoch = int(metrics["epoch"])
        self.epochs = {e: m for e, m in self.epochs.items() if e < epoch}
        self.epochs[epoch] = metrics

    def missing_epochs(self) -> list[int]:
        """Epochs before the latest one that the record lacks. A trial reports every epoch, so a
        gap means the store lost writes its Tune checkpoint had passed (a store reverted or
        copied while its sweep ran): the trial's history is incomplete and must be rerun."""
        return sorted(set(range(1, max(self.epochs, default=0) + 1)) - set(self.epochs))

    def finish(self, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"trial status {status!r}; allowed: {', '.join(STATUSES)}")
        self.status, self.error = status, error

    def _records(self) -> list[dict]:
        return [self.epochs[e] for e in sorted(self.epochs)]

    def _key(self, n: int) -> dict:
        return {"sweep": [self.sweep] * n, "trial_id": [self.trial_id] * n}

    def epochs_table(self) -> pa.Table:
        ms = self._records()
        return pa.table({**self._key(len(ms)), **{m.name: [r[m.name] for r in ms] for m in EPOCH_METRICS}})

    def rotation_table(self) -> pa.Table:
        rows = [(r["epoch"], layer, name, *(r[m.name][layer] for m in LAYER_METRICS))
                for r in self._records() for layer, name in enumerate(r[LAYER_NAMES])]
        names = ["epoch", "layer", "layer_name", *(m.name for m in LAYER_METRICS)]
        columns = [list(c) for c in zip(*rows)] if rows else [[] for _ in names]
        return pa.table({**self._key(len(rows)), **dict(zip(names, columns))})

    def trials_table(self) -> pa.Table:
        from layrot import __version__

        experiment = self.config.experiment()
        row = {
            "sweep": self.sweep, "trial_id": self.trial_id,
            **{k: experiment[k] for k in EXPERIMENT_KEYS},
            "weight_decay": self.config.weight_decay,
            "status": self.status,
            **summarize(self._records()),
            "error": self.error,
            "config_json": json.dumps(self.config.to_dict(), sort_keys=True),
            "layrot_version": __version__,
            "updated_at": datetime.now(timezone.utc),
        }
        return pa.Table.from_pylist([row], schema=TRIALS)

    def write(self, store: str) -> None:
        """Write the trial's three files; the trials row goes last so it never claims more epochs
        than the other tables hold."""
        for table, rows in (("epochs", self.epochs_table()), ("rotation", self.rotation_table()),
                            ("trials", self.trials_table())):
            write_trial_file(store, table, self.sweep, self.trial_id, rows)


def stored_epochs(store: str, sweep: str, trial_id: str) -> dict[int, dict]:
    """The epoch records already in the store for a trial (empty if none), in the form
    ``TrialRecord.epochs`` holds, so a resumed driver continues the trial's files."""
    epochs = read_trial_file(store, "epochs", sweep, trial_id)
    if epochs is None:
        return {}
    rotation = read_trial_file(store, "rotation", sweep, trial_id)
    layers: dict[int, list[dict]] = {}
    for r in sorted(rotation.to_pylist() if rotation is not None else [], key=lambda r: (r["epoch"], r["layer"])):
        layers.setdefault(r["epoch"], []).append(r)
    out = {}
    for r in epochs.to_pylist():
        per_layer = layers.get(r["epoch"], [])
        out[r["epoch"]] = {
            **{m.name: r[m.name] for m in EPOCH_METRICS},
            LAYER_NAMES: [x["layer_name"] for x in per_layer],
            **{m.name: [x[m.name] for x in per_layer] for m in LAYER_METRICS},
        }
    return out
