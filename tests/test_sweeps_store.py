import json
import math
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from run_records import epoch_record

import sweeps.store as store_mod
from layrot.run import resolve
from sweeps.schema import METADATA_KEY, SCHEMA_VERSION
from sweeps.store import (TrialRecord, read_sweep_files, read_trial_file, stored_epochs, sweep_exists,
                          write_sweep_file, write_trial_file)


def _epoch_rows(trial_id: str, epochs: list[int], sweep: str = "s1") -> pa.Table:
    n = len(epochs)
    return pa.table(
        {
            "sweep": [sweep] * n,
            "trial_id": [trial_id] * n,
            "epoch": epochs,
            "lr": [0.1] * n,
            "train_loss": [1.0 / e for e in epochs],
            "train_acc": [0.5] * n,
            "val_acc": [0.4] * n,
            "test_acc": [0.3] * n,
            "epoch_seconds": [2.0] * n,
        }
    )


def test_written_files_are_plain_versioned_parquet(tmp_path):
    write_trial_file(str(tmp_path), "epochs", "s1", "t1", _epoch_rows("t1", [1, 2, 3]))
    write_trial_file(str(tmp_path), "epochs", "s1", "t2", _epoch_rows("t2", [1, 2]))
    write_trial_file(str(tmp_path), "epochs", "s2", "t1", _epoch_rows("t1", [1], sweep="s2"))

    path = tmp_path / "epochs" / "s1" / "t1.parquet"
    meta = pq.read_schema(path).metadata
    assert meta[METADATA_KEY] == str(SCHEMA_VERSION).encode()
    table = ds.dataset(str(tmp_path / "epochs"), format="parquet").to_table()
    assert table.num_rows == 6
    df = pd.read_parquet(tmp_path / "epochs")
    assert sorted(df.groupby(["sweep", "trial_id"]).size().items()) == [(("s1", "t1"), 3), (("s1", "t2"), 2), (("s2", "t1"), 1)]
    assert pq.read_schema(path).field("epoch").type == pa.int64()
    assert pq.read_schema(path).field("val_images").type == pa.int64()  # missing nullable column
    assert sweep_exists(str(tmp_path), "s1") and not sweep_exists(str(tmp_path), "s3")


def test_rewrite_replaces_whole_file_and_uri_store_works(tmp_path):
    uri = f"file://{tmp_path}"
    write_trial_file(uri, "epochs", "s1", "t1", _epoch_rows("t1", [1, 2]))
    write_trial_file(uri, "epochs", "s1", "t1", _epoch_rows("t1", [1, 2, 3]))
    assert read_trial_file(str(tmp_path), "epochs", "s1", "t1").column("epoch").to_pylist() == [1, 2, 3]
    assert [p.name for p in (tmp_path / "epochs" / "s1").iterdir()] == ["t1.parquet"]


def test_missing_nullable_columns_become_null(tmp_path):
    rows = pa.table({"sweep": ["s1"], "trial_id": ["t1"], "epoch": [1], "layer": [0], "cosine_distance": [0.5]})
    write_trial_file(str(tmp_path), "rotation", "s1", "t1", rows)
    got = read_trial_file(str(tmp_path), "rotation", "s1", "t1")
    assert got.column("layer_name").to_pylist() == [None]
    assert got.column("cosine_distance").to_pylist() == [0.5]


@pytest.mark.parametrize(
    "table, sweep, trial_id, rows, message",
    [
        ("epoch", "s1", "t1", _epoch_rows("t1", [1]), "unknown store table 'epoch'"),
        ("epochs", "bad/name", "t1", _epoch_rows("t1", [1]), "sweep name 'bad/name'"),
        ("epochs", "s1", "../t1", _epoch_rows("t1", [1]), "trial id '../t1'"),
        ("epochs", "s1", "t1", _epoch_rows("t1", [1]).append_column("acc", pa.array([1.0])), "columns ['acc']"),
        ("epochs", "s1", "t1", _epoch_rows("t1", [1]).drop_columns(["epoch"]), "required column 'epoch'"),
        ("epochs", "s1", "t1", _epoch_rows("t9", [1]), "trial_id values ['t9']"),
    ],
)
def test_bad_writes_fail_with_a_named_value_and_write_nothing(tmp_path, table, sweep, trial_id, rows, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        write_trial_file(str(tmp_path), table, sweep, trial_id, rows)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_crash_during_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    write_trial_file(str(tmp_path), "epochs", "s1", "t1", _epoch_rows("t1", [1]))
    real_write = pq.write_table

    def half_write(table, where, filesystem):
        real_write(table.slice(0, 0), where, filesystem=filesystem)
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.pq, "write_table", half_write)
    with pytest.raises(OSError, match="disk full"):
        write_trial_file(str(tmp_path), "epochs", "s1", "t1", _epoch_rows("t1", [1, 2]))
    files = [p.name for p in (tmp_path / "epochs" / "s1").iterdir()]
    assert files == ["t1.parquet"]
    assert read_trial_file(str(tmp_path), "epochs", "s1", "t1").column("epoch").to_pylist() == [1]


def _metrics(epoch: int, val: float, layers: int = 3) -> dict:
    return epoch_record(epoch, val, [0.24 * epoch / (i + 1) for i in range(layers)], lr=0.3 * 0.2 ** (epoch > 2),
                        seconds=1.5 + epoch)


def _record() -> TrialRecord:
    config = resolve({"task": "fmnist", "setting": "sgd-l2", "alpha": -0.2, "rho0": 3.0**-3, "seed": 4, "epochs": 4})
    return TrialRecord("s1", "t1", config)


def test_trial_record_summaries_agree_with_epoch_rows(tmp_path):
    rec = _record()
    vals = [0.6, 0.8, 0.8, 0.7]
    for e, v in enumerate(vals, start=1):
        rec.add_epoch(_metrics(e, v))
    rec.finish("completed")
    rec.write(str(tmp_path))

    trials = read_trial_file(str(tmp_path), "trials", "s1", "t1").to_pylist()
    assert len(trials) == 1
    t = trials[0]
    last = _metrics(4, 0.7)
    assert (t["task"], t["setting"], t["alpha"], t["seed"], t["epochs"]) == ("fmnist", "sgd-l2", -0.2, 4, 4)
    assert t["rho0"] == pytest.approx(1 / 27) and t["weight_decay"] == 2e-3
    assert (t["status"], t["epochs_done"]) == ("completed", 4)
    assert t["final_test_acc"] == pytest.approx(0.65) and t["final_val_acc"] == 0.7
    assert t["final_train_acc"] == pytest.approx(0.9) and t["final_train_loss"] == pytest.approx(0.5)
    rot = np.array(last["cosine_distance"])  # 0.96, 0.48, 0.32: one layer above 0.9
    assert t["rotation_mean"] == pytest.approx(rot.mean()) and t["rotation_min"] == pytest.approx(rot.min())
    assert t["rotation_max"] == pytest.approx(rot.max())
    assert t["rotation_frac_above_0_9"] == pytest.approx((rot > 0.9).mean())
    assert t["relative_distance_mean"] == pytest.approx(2 * rot.mean())
    assert t["norm_ratio_mean"] == pytest.approx(1 + rot.mean())
    assert t["relative_distance_network"] == pytest.approx(0.4) and t["num_layers"] == 3
    assert t["wall_seconds"] == pytest.approx(sum(1.5 + e for e in range(1, 5)))
    assert json.loads(t["config_json"])["alpha"] == -0.2
    assert t["layrot_version"] and t["updated_at"] is not None

    rotation = read_trial_file(str(tmp_path), "rotation", "s1", "t1").to_pandas()
    assert len(rotation) == 4 * 3
    final = rotation[rotation.epoch == 4].sort_values("layer")
    for name in ("cosine_distance", "relative_distance", "norm_ratio"):
        assert final[name].tolist() == pytest.approx(last[name])
    assert final.layer_name.tolist() == last["layer_names"]


def test_reported_epoch_replaces_itself_and_everything_after(tmp_path):
    rec = _record()
    for e in (1, 2, 3):
        rec.add_epoch(_metrics(e, 0.5))
    rec.add_epoch(_metrics(2, 0.9))  # the trial restarted from its epoch-1 checkpoint
    rec.write(str(tmp_path))
    epochs = read_trial_file(str(tmp_path), "epochs", "s1", "t1").to_pandas()
    assert epochs.epoch.tolist() == [1, 2]
    assert epochs.val_acc.tolist() == [0.5, 0.9]
    assert read_trial_file(str(tmp_path), "rotation", "s1", "t1").num_rows == 2 * 3


def test_stored_epochs_round_trip_and_errored_trial_without_epochs(tmp_path):
    rec = _record()
    for e in (1, 2):
        rec.add_epoch(_metrics(e, 0.5))
    rec.write(str(tmp_path))
    back = stored_epochs(str(tmp_path), "s1", "t1")
    for e in (1, 2):
        assert back[e] == _metrics(e, 0.5)
    assert stored_epochs(str(tmp_path), "s1", "nope") == {}

    empty = TrialRecord("s1", "t2", _record().config)
    empty.finish("errored", "RuntimeError: boom")
    empty.write(str(tmp_path))
    row = read_trial_file(str(tmp_path), "trials", "s1", "t2").to_pylist()[0]
    assert (row["status"], row["epochs_done"], row["error"]) == ("errored", 0, "RuntimeError: boom")
    assert row["final_test_acc"] is None and math.isclose(row["wall_seconds"], 0.0)
    assert read_trial_file(str(tmp_path), "epochs", "s1", "t2").num_rows == 0


def test_sweep_files_round_trip_and_are_invisible_to_table_readers(tmp_path):
    assert read_sweep_files(str(tmp_path)) == {}
    write_sweep_file(str(tmp_path), "s1", {"analysis": {"min_train_acc": 0.95}, "grid": [{"seed": 0}]})
    write_sweep_file(f"file://{tmp_path}", "s2", {"analysis": {"min_train_acc": 0.99}})
    assert read_sweep_files(str(tmp_path)) == {"s1": {"analysis": {"min_train_acc": 0.95}, "grid": [{"seed": 0}]},
                                               "s2": {"analysis": {"min_train_acc": 0.99}}}
    write_trial_file(str(tmp_path), "epochs", "s1", "t1", _epoch_rows("t1", [1]))
    assert ds.dataset(str(tmp_path / "epochs"), format="parquet").to_table().num_rows == 1
    assert sorted(p.name for p in (tmp_path / "_sweeps").iterdir()) == ["s1.json", "s2.json"]
