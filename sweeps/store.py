"""The results store's writing side: whole per-trial Parquet files, replaced atomically.

Layout and schemas are in ``sweeps.schema``. Every write replaces one trial's file in one table
with a complete new version (temp file in the same folder, then rename), so readers and crashes
only ever see whole files, and re-writing a trial after a resume cannot duplicate rows.
Temp files start with "." so ``pyarrow.dataset`` skips them and ``*.parquet`` globs miss them.
"""
from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweeps.schema import SCHEMAS, STATUSES, TABLES, TRIALS, check_sweep_name, with_version

ROTATION_HIGH = 0.9  # threshold of the trials table's rotation_frac_above_0_9


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

    ``epochs`` maps epoch number -> the trial's metrics dict for that epoch (the keys documented
    in ``trainables``). A report for epoch e drops any stored epoch >= e first: a trial that
    resumed from an older checkpoint re-reports those epochs, and they must not appear twice.
    """

    sweep: str
    trial_id: str
    config: dict                       # the resolved trainables config (TrainConfig.to_dict())
    weight_decay: float
    epochs_planned: int
    status: str = "running"
    error: str | None = None
    epochs: dict[int, dict] = field(default_factory=dict)

    def add_epoch(self, metrics: dict) -> None:
        epoch = int(metrics["epoch"])
        self.epochs = {e: m for e, m in self.epochs.items() if e < epoch}
        self.epochs[epoch] = metrics

    def finish(self, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"trial status {status!r}; allowed: {', '.join(STATUSES)}")
        self.status, self.error = status, error

    def _key(self, n: int) -> dict:
        return {"sweep": [self.sweep] * n, "trial_id": [self.trial_id] * n}

    def epochs_table(self) -> pa.Table:
        ms = [self.epochs[e] for e in sorted(self.epochs)]
        return pa.table(
            {
                **self._key(len(ms)),
                "epoch": [int(m["epoch"]) for m in ms],
                "lr": [float(m["lr"]) for m in ms],
                "train_loss": [float(m["train_loss"]) for m in ms],
                "train_acc": [float(m["train_acc"]) for m in ms],
                "val_acc": [float(m["val_acc"]) for m in ms],
                "test_acc": [float(m["test_acc"]) for m in ms],
                "seconds": [float(m["epoch_seconds"]) for m in ms],
            }
        )

    def rotation_table(self) -> pa.Table:
        rows = [
            (e, layer, name, float(d))
            for e in sorted(self.epochs)
            for layer, (name, d) in enumerate(zip(self.epochs[e]["layer_names"], self.epochs[e]["rotation"]))
        ]
        epoch, layer, name, dist = (list(c) for c in zip(*rows)) if rows else ([], [], [], [])
        return pa.table(
            {**self._key(len(rows)), "epoch": epoch, "layer": layer, "layer_name": name, "cosine_distance": dist}
        )

    def trials_table(self) -> pa.Table:
        from layrot import __version__

        ms = [self.epochs[e] for e in sorted(self.epochs)]
        last = ms[-1] if ms else None
        best = max(ms, key=lambda m: (m["val_acc"], -m["epoch"])) if ms else None  # first best epoch
        rotation = [float(d) for d in last["rotation"]] if last else []
        row = {
            "task": self.config["task"],
            "optimizer": self.config["optimizer"],
            "layca": bool(self.config["layca"]),
            "alpha": float(self.config["alpha"]),
            "rho0": float(self.config["rho0"]),
            "weight_decay": float(self.weight_decay),
            "seed": int(self.config["seed"]),
            "status": self.status,
            "epochs_done": len(ms),
            "epochs_planned": self.epochs_planned,
            "final_test_acc": last["test_acc"] if last else None,
            "best_val_acc": best["val_acc"] if best else None,
            "best_val_epoch": best["epoch"] if best else None,
            "test_acc_at_best_val": best["test_acc"] if best else None,
            "final_val_acc": last["val_acc"] if last else None,
            "final_train_acc": last["train_acc"] if last else None,
            "final_train_loss": last["train_loss"] if last else None,
            "rotation_mean": math.fsum(rotation) / len(rotation) if rotation else None,
            "rotation_min": min(rotation) if rotation else None,
            "rotation_frac_above_0_9": sum(d > ROTATION_HIGH for d in rotation) / len(rotation) if rotation else None,
            "num_layers": len(rotation) if last else None,
            "wall_seconds": math.fsum(m["epoch_seconds"] for m in ms),
            "error": self.error,
            "config_json": json.dumps(self.config, sort_keys=True),
            "layrot_version": __version__,
            "updated_at": datetime.now(timezone.utc),
        }
        return pa.Table.from_pylist([{"sweep": self.sweep, "trial_id": self.trial_id, **row}], schema=TRIALS)

    def write(self, store: str) -> None:
        """Write the trial's three files; the trials row goes last so it never claims more epochs
        than the other tables hold."""
        for table, rows in (("epochs", self.epochs_table()), ("rotation", self.rotation_table()),
                            ("trials", self.trials_table())):
            write_trial_file(store, table, self.sweep, self.trial_id, rows)


def stored_epochs(store: str, sweep: str, trial_id: str) -> dict[int, dict]:
    """The per-epoch metrics already in the store for a trial (empty if none), in the form
    ``TrialRecord.epochs`` holds, so a resumed driver continues the trial's files."""
    epochs = read_trial_file(store, "epochs", sweep, trial_id)
    if epochs is None:
        return {}
    rotation = read_trial_file(store, "rotation", sweep, trial_id)
    layers: dict[int, list[tuple[int, str, float]]] = {}
    for r in (rotation.to_pylist() if rotation is not None else []):
        layers.setdefault(r["epoch"], []).append((r["layer"], r["layer_name"], r["cosine_distance"]))
    out = {}
    for r in epochs.to_pylist():
        per_layer = sorted(layers.get(r["epoch"], []))
        out[r["epoch"]] = {
            "epoch": r["epoch"], "lr": r["lr"], "train_loss": r["train_loss"], "train_acc": r["train_acc"],
            "val_acc": r["val_acc"], "test_acc": r["test_acc"], "epoch_seconds": r["seconds"],
            "layer_names": [name for _, name, _ in per_layer], "rotation": [d for _, _, d in per_layer],
        }
    return out
