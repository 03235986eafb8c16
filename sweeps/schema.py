"""The results store's schema, written down once (version 1).

A store is a directory (local path or pyarrow filesystem URI) holding three tables, each a
folder of Parquet files, one file per (sweep, trial)::

    STORE/trials/<sweep>/<trial_id>.parquet     one row per trial
    STORE/epochs/<sweep>/<trial_id>.parquet     one row per trial and epoch
    STORE/rotation/<sweep>/<trial_id>.parquet   one row per trial, epoch and kernel layer

Every table carries ``sweep`` and ``trial_id`` columns, so the folders need no partitioning
scheme: ``pyarrow.dataset.dataset("STORE/epochs")``, ``pandas.read_parquet`` or DuckDB's
``read_parquet('STORE/epochs/*/*.parquet')`` read them without our code. Epochs count from 1
(the number of finished epochs); the rotation at epoch 0 is 0 by definition and not stored.

Each file's Parquet metadata carries ``layrot.schema_version``; readers refuse versions they
do not know. Change a table here, bump ``SCHEMA_VERSION`` and teach ``analysis.load`` the old one.
"""
from __future__ import annotations

import re

import pyarrow as pa

SCHEMA_VERSION = 1
METADATA_KEY = b"layrot.schema_version"
TABLES = ("trials", "epochs", "rotation")

# Trial status values. "running" rows exist only while a sweep is in flight.
STATUSES = ("running", "completed", "diverged", "errored")

# Sweep names become folder names.
SWEEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

_KEY = [pa.field("sweep", pa.string(), nullable=False), pa.field("trial_id", pa.string(), nullable=False)]

TRIALS = pa.schema(
    _KEY
    + [
        pa.field("task", pa.string()),
        pa.field("optimizer", pa.string()),          # trainables.optimizers name: sgd, sgd_l2, adam, ...
        pa.field("layca", pa.bool_()),
        pa.field("alpha", pa.float64()),             # eq. 1 layer-wise multiplier parameter, in [-1, 1]
        pa.field("rho0", pa.float64()),              # initial learning rate / rotation rate
        pa.field("weight_decay", pa.float64()),      # torch weight_decay actually used (0 if none)
        pa.field("seed", pa.int64()),
        pa.field("status", pa.string()),             # one of STATUSES
        pa.field("epochs_done", pa.int32()),
        pa.field("epochs_planned", pa.int32()),
        pa.field("final_test_acc", pa.float64()),    # fractions in [0, 1]
        pa.field("best_val_acc", pa.float64()),
        pa.field("best_val_epoch", pa.int32()),
        pa.field("test_acc_at_best_val", pa.float64()),
        pa.field("final_val_acc", pa.float64()),
        pa.field("final_train_acc", pa.float64()),
        pa.field("final_train_loss", pa.float64()),
        pa.field("rotation_mean", pa.float64()),     # final cosine distance, mean over kernel layers
        pa.field("rotation_min", pa.float64()),      # final cosine distance, min over kernel layers
        pa.field("rotation_frac_above_0_9", pa.float64()),  # fraction of layers with distance > 0.9
        pa.field("num_layers", pa.int32()),
        pa.field("wall_seconds", pa.float64()),      # sum of the trial's epoch times
        pa.field("error", pa.string()),              # last line of the error for "errored", else null
        pa.field("config_json", pa.string()),        # the full trial config, JSON
        pa.field("layrot_version", pa.string()),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)

EPOCHS = pa.schema(
    _KEY
    + [
        pa.field("epoch", pa.int32(), nullable=False),
        pa.field("lr", pa.float64()),                # base rate in force during this epoch
        pa.field("train_loss", pa.float64()),
        pa.field("train_acc", pa.float64()),
        pa.field("val_acc", pa.float64()),
        pa.field("test_acc", pa.float64()),
        pa.field("seconds", pa.float64()),           # wall time of this epoch (train + eval)
    ]
)

ROTATION = pa.schema(
    _KEY
    + [
        pa.field("epoch", pa.int32(), nullable=False),
        pa.field("layer", pa.int32(), nullable=False),  # forward order, 0 = first kernel layer
        pa.field("layer_name", pa.string()),
        pa.field("cosine_distance", pa.float64()),
    ]
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
