"""A version-1 store (one optimizer + layca pair per setting, one metric per layer) is refused by
the reader with the command that upgrades it, and reads the same numbers after the upgrade."""
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.load import load
from layrot.cli import main
from sweeps.schema import METADATA_KEY

V1 = {METADATA_KEY: b"1"}


def _write(path, rows: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows).replace_schema_metadata(V1), path)


def _v1_trial(root, trial_id: str, optimizer: str, layca: bool, status: str = "completed") -> None:
    config = {"task": "fmnist", "optimizer": optimizer, "layca": layca, "alpha": 0.0, "rho0": 1 / 9, "seed": 1,
              "epochs": None, "data_fraction": 1.0, "device": "auto", "data_dir": None, "bf16": False,
              "compile": False}
    key = {"sweep": ["s"], "trial_id": [trial_id]}
    _write(root / "epochs" / "s" / f"{trial_id}.parquet",
           {"sweep": ["s"] * 2, "trial_id": [trial_id] * 2, "epoch": pa.array([1, 2], pa.int32()),
            "lr": [0.1, 0.1], "train_loss": [1.0, 0.5], "train_acc": [0.6, 0.9], "val_acc": [0.5, 0.8],
            "test_acc": [0.5, 0.7], "seconds": [2.0, 3.0]})
    _write(root / "rotation" / "s" / f"{trial_id}.parquet",
           {"sweep": ["s"] * 4, "trial_id": [trial_id] * 4, "epoch": pa.array([1, 1, 2, 2], pa.int32()),
            "layer": pa.array([0, 1, 0, 1], pa.int32()), "layer_name": ["a", "b", "a", "b"],
            "cosine_distance": [0.1, 0.2, 0.3, 0.6]})
    _write(root / "trials" / "s" / f"{trial_id}.parquet",
           {**key, "task": ["fmnist"], "optimizer": [optimizer], "layca": [layca], "alpha": [0.0], "rho0": [1 / 9],
            "weight_decay": [0.002 if optimizer == "sgd_l2" else 0.0], "seed": [1], "status": [status],
            "epochs_done": pa.array([2], pa.int32()), "epochs_planned": pa.array([40], pa.int32()),
            "final_test_acc": [0.7], "best_val_acc": [0.8], "best_val_epoch": pa.array([2], pa.int32()),
            "test_acc_at_best_val": [0.7], "final_val_acc": [0.8], "final_train_acc": [0.9],
            "final_train_loss": [0.5], "rotation_mean": [0.45], "rotation_min": [0.3],
            "rotation_frac_above_0_9": [0.0], "num_layers": pa.array([2], pa.int32()), "wall_seconds": [5.0],
            "error": pa.array([None], pa.string()), "config_json": [json.dumps(config)],
            "layrot_version": ["0.1.0"], "updated_at": pa.array([0], pa.timestamp("us", tz="UTC"))})


def test_version_1_is_refused_with_the_upgrade_command_then_upgraded(tmp_path, capsys):
    store = tmp_path / "store"
    _v1_trial(store, "t1", "sgd", True)
    _v1_trial(store, "t2", "sgd_l2", False, status="diverged")
    with pytest.raises(ValueError, match=re.escape(f"upgrade the store in place with `layrot upgrade-store {store}`")):
        load(str(store))

    assert main(["upgrade-store", str(store)]) == 0
    assert "upgraded 2 trial(s)" in capsys.readouterr().out
    results = load(str(store))
    t = results.trials.set_index("trial_id")
    assert t.loc["t1", "setting"] == "layca-sgd" and t.loc["t2", "setting"] == "sgd-l2"
    assert t.loc["t1", "epochs"] == 40 and t.loc["t1", "rotation_max"] == pytest.approx(0.6)
    assert t.loc["t1", "final_test_acc"] == 0.7 and t.loc["t2", "status"] == "diverged"
    assert json.loads(t.loc["t1", "config_json"])["setting"] == "layca-sgd"
    epochs = results.epochs.astype({"trial_id": str}).sort_values(["trial_id", "epoch"])
    assert epochs["epoch_seconds"].tolist() == [2.0, 3.0, 2.0, 3.0]
    assert epochs["diverged"].tolist() == [False, False, False, True]
    assert results.rotation["relative_distance"].isna().all()       # never measured in version 1
    assert main(["upgrade-store", str(store)]) == 0                   # idempotent
    assert "upgraded 0 trial(s)" in capsys.readouterr().out
