"""Rewrite a store of schema version 1 as version 2, in place (`layrot upgrade-store STORE`).

Version 1 named a setting by two columns (``optimizer`` "sgd_l2", ``layca``) and recorded one
metric per layer. Version 2 names it once (``setting`` "sgd-l2", "layca-sgd") and records the
relative distance and norm ratio beside the cosine distance; those, and the image counts behind
each accuracy, were never measured in a version-1 run and stay null. Each trial's files are
replaced atomically (trials row last), so an interrupted upgrade can simply be run again.
"""
from __future__ import annotations

import json
from typing import TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from layrot.run import EXPERIMENT_KEYS, get_setting
from sweeps.schema import METADATA_KEY, TABLES
from sweeps.store import open_store, write_trial_file

FROM_VERSION = b"1"


def upgrade_store(store: str, out: TextIO | None = None) -> int:
    """Upgrade every version-1 trial of ``store``; returns how many were upgraded."""
    fs, root = open_store(store)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"store {store!r} does not exist or is not a directory")
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/trials", recursive=True, allow_not_found=True))
    trials = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                    and not i.base_name.startswith((".", "_")))
    done = 0
    for path in trials:
        sweep, name = path.rsplit("/", 2)[-2:]
        trial_id = name[: -len(".parquet")]
        old = {t: _read(fs, f"{root}/{t}/{sweep}/{name}") for t in TABLES}
        if old["trials"] is None or _version(old["trials"]) != FROM_VERSION:
            continue
        for table, rows in _converted(old).items():
            write_trial_file(store, table, sweep, trial_id, rows)
        done += 1
        if out is not None and done % 50 == 0:
            print(f"upgrade-store: {done} trials", file=out, flush=True)
    return done


def _read(fs: pafs.FileSystem, path: str) -> pa.Table | None:
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_file(path) as f:
        return pq.read_table(f)


def _version(table: pa.Table) -> bytes | None:
    return (table.schema.metadata or {}).get(METADATA_KEY)


def _converted(old: dict[str, pa.Table | None]) -> dict[str, pa.Table]:
    """The version-2 tables of one trial (epochs and rotation first, the trials row last)."""
    row = old["trials"].to_pylist()[0]
    config = json.loads(row["config_json"])
    setting = get_setting(("layca-" if config.pop("layca") else "") + config.pop("optimizer").replace("_", "-")).name
    config = {"setting": setting, **config, "epochs": config.get("epochs") or row["epochs_planned"]}
    out = {}
    if old["epochs"] is not None:
        epochs = old["epochs"].rename_columns(
            ["epoch_seconds" if c == "seconds" else c for c in old["epochs"].column_names])
        last = max(epochs["epoch"].to_pylist(), default=None)
        diverged = [row["status"] == "diverged" and e == last for e in epochs["epoch"].to_pylist()]
        out["epochs"] = epochs.append_column("diverged", pa.array(diverged, pa.bool_()))
    rotation = old["rotation"]
    if rotation is not None:
        out["rotation"] = rotation
    rotation_max = None
    if rotation is not None and rotation.num_rows:
        last = rotation.filter(pc.equal(rotation["epoch"], pc.max(rotation["epoch"])))
        rotation_max = pc.max(last["cosine_distance"]).as_py()
    kept = ("weight_decay", "status", "epochs_done", "final_train_loss", "final_train_acc", "final_val_acc",
            "final_test_acc", "rotation_mean", "rotation_min", "rotation_frac_above_0_9", "num_layers",
            "wall_seconds", "error", "layrot_version", "updated_at")
    new_row = {"sweep": row["sweep"], "trial_id": row["trial_id"], **{k: config[k] for k in EXPERIMENT_KEYS},
               **{k: row[k] for k in kept}, "rotation_max": rotation_max,
               "config_json": json.dumps(config, sort_keys=True)}
    out["trials"] = pa.Table.from_pylist([new_row])
    return out
