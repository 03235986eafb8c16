"""The results store's schema (version 2), derived from the run definition in ``layrot.run``.

A store is a directory (local path or pyarrow filesystem URI) holding three tables, each a
folder of Parquet files, one file per (sweep, trial)::

    STORE/trials/<sweep>/<trial_id>.parquet     one row per trial: its config and summary
    STORE/epochs/<sweep>/<trial_id>.parquet     one row per trial and epoch (layrot.run.EPOCH_METRICS)
    STORE/rotation/<sweep>/<trial_id>.parquet   one row per trial, epoch and kernel layer (LAYER_METRICS)

Every table carries ``sweep`` and ``trial_id`` columns, so the folders need no partitioning
scheme: ``pyarrow.dataset.dataset("STORE/epochs")``, ``pandas.read_parquet`` or DuckDB's
``read_parquet('STORE/epochs/*/*.parquet')`` read them without our code. Epochs count from 1
(the number of finished epochs); the rotation at epoch 0 is 0 by definition and not stored.

Each file's Parquet metadata carries ``layrot.schema_version``; readers refuse versions they
do not know. Version 1 (before settings had one name and layers three metrics) is upgraded in
place by ``layrot upgrade-store STORE`` (``sweeps.upgrade``).
"""
from __future__ import annotations

import re

import pyarrow as pa

from layrot.run import CONFIG_KINDS, EPOCH_METRICS, EXPERIMENT_KEYS, LAYER_METRICS, SUMMARIES

SCHEMA_VERSION = 2
METADATA_KEY = b"layrot.schema_version"
TABLES = ("trials", "epochs", "rotation")

# Sweep names become folder names.
SWEEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

_ARROW = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}
_KEY = [pa.field("sweep", pa.string(), nullable=False), pa.field("trial_id", pa.string(), nullable=False)]

TRIALS = pa.schema(
    _KEY
    + [pa.field(k, _ARROW[CONFIG_KINDS[k]]) for k in EXPERIMENT_KEYS]   # the keys that determine results
    + [
        pa.field("weight_decay", pa.float64()),      # torch weight_decay actually used (0 if none)
        pa.field("status", pa.string()),             # one of layrot.run.STATUSES
    ]
    + [pa.field(s.name, _ARROW[s.kind]) for s in SUMMARIES]
    + [
        pa.field("error", pa.string()),              # last line of the error for "errored", else null
        pa.field("config_json", pa.string()),        # the full resolved config, JSON
        pa.field("layrot_version", pa.string()),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)

EPOCHS = pa.schema(
    _KEY + [pa.field(m.name, _ARROW[m.kind], nullable=m.name != "epoch") for m in EPOCH_METRICS]
)

ROTATION = pa.schema(
    _KEY
    + [
        pa.field("epoch", pa.int64(), nullable=False),
        pa.field("layer", pa.int64(), nullable=False),  # forward order, 0 = first kernel layer
        pa.field("layer_name", pa.string()),
    ]
    + [pa.field(m.name, _ARROW[m.kind]) for m in LAYER_METRICS]
)

SCHEMAS = {"trials": TRIALS, "epochs": EPOCHS, "rotation": ROTATION}


def with_version(schema: pa.Schema) -> pa.Schema:
    """The schema as written to disk: tagged with the schema version."""
    return schema.with_metadata({METADATA_KEY: str(SCHEMA_VERSION).encode()})


def check_sweep_name(name: str) -> str:
    if not isinstance(name, str) or not SWEEP_NAME.match(name):
        raise ValueError(
            f"sweep name {name!r} is not allowed: use 1-100 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name
