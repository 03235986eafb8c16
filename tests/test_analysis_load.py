import shutil
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.load import StoreFileWarning, load
from analysis.synthetic import write_synthetic_store
from sweeps.schema import METADATA_KEY


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two sweeps; the second still running (its last two trials stopped mid-training)."""
    path = tmp_path_factory.mktemp("store") / "store"
    write_synthetic_store(str(path), "alpha", tasks=("C10-CNN1",), n_trials=20, epochs=6, layers=4, seed=1)
    write_synthetic_store(str(path), "beta", tasks=("C100-resnet",), n_trials=12, epochs=5, layers=3,
                          running=2, seed=2)
    return path


def copy(store, tmp_path):
    target = tmp_path / "store"
    shutil.copytree(store, target)
    return target


def test_loads_every_row_as_pyarrow_reads_it(store):
    results = load(str(store))
    assert results.skipped == []
    assert results.sweeps == ["alpha", "beta"]
    # An independent reader of the same files: pandas over each table folder.
    for name, frame in (("trials", results.trials), ("epochs", results.epochs), ("rotation", results.rotation)):
        expected = pd.concat([pd.read_parquet(p) for p in sorted((store / name).glob("*/*.parquet"))])
        assert len(frame) == len(expected)
    rotation = pd.concat([pd.read_parquet(p) for p in sorted((store / "rotation").glob("*/*.parquet"))])
    mine = results.rotation.astype({"sweep": str, "trial_id": str, "layer_name": str})
    key = ["sweep", "trial_id", "epoch", "layer"]
    merged = mine.merge(rotation, on=key, suffixes=("", "_ref"))
    assert len(merged) == len(rotation)
    np.testing.assert_array_equal(merged["cosine_distance"], merged["cosine_distance_ref"])
    # Rows per trial follow from the trials table: epochs done x layers.
    per_trial = mine.groupby(["sweep", "trial_id"]).size().to_dict()
    trials = results.trials.set_index(["sweep", "trial_id"])
    assert per_trial == (trials["epochs_done"] * trials["num_layers"]).to_dict()


def test_running_trials_of_a_live_sweep_load_with_their_partial_epochs(store):
    trials = load(str(store), sweep="beta").trials
    running = trials[trials["status"] == "running"]
    assert len(running) == 2
    assert (running["epochs_done"] < running["epochs"]).all()


def test_filters_by_sweep_task_and_setting(store):
    results = load(str(store), sweep="alpha")
    assert set(results.trials["sweep"]) == {"alpha"} and set(results.rotation["sweep"]) == {"alpha"}
    adam = load(str(store), setting="adam")
    assert set(adam.trials["setting"]) == {"adam"}
    assert set(adam.epochs["trial_id"]) == set(adam.trials["trial_id"])
    both = load(str(store), task=["C10-CNN1", "C100-resnet"])
    assert len(both.trials) == 32


def test_derived_columns_name_settings_and_families(store):
    trials = load(str(store)).trials
    assert set(trials["setting"]) == {"layca-sgd", "sgd", "sgd-l2", "adam", "layca-adam"}
    by_setting = trials.drop_duplicates("setting").set_index("setting")
    assert by_setting.loc["layca-sgd", ["label", "family", "layca"]].tolist() == ["Layca-SGD", "SGD", True]
    assert by_setting.loc["sgd-l2", ["label", "family", "layca"]].tolist() == ["SGD+L2", "SGD", False]
    assert by_setting.loc["layca-adam", ["label", "family", "layca"]].tolist() == ["Layca-Adam", "Adam", True]
    assert all(c["rho0"] == r for c, r in zip(trials["config"], trials["rho0"]))


def test_unknown_sweep_names_the_sweeps_present(store):
    with pytest.raises(ValueError, match=r"sweep 'gamma' is not in store .*sweeps there: alpha, beta"):
        load(str(store), sweep="gamma")


def test_filter_matching_nothing_is_a_clear_error(store):
    with pytest.raises(ValueError, match=r"no trials with task \['tiny-CNN'\]; tasks in the store: C10-CNN1"):
        load(str(store), task="tiny-CNN")


def test_missing_and_empty_stores(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(str(tmp_path / "nowhere"))
    (tmp_path / "empty" / "trials").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no trials"):
        load(str(tmp_path / "empty"))


def test_corrupt_file_is_named_and_skipped(store, tmp_path):
    target = copy(store, tmp_path)
    broken = target / "rotation" / "alpha" / "trial_00003.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    truncated = target / "trials" / "beta" / "trial_00001.parquet"
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.warns(StoreFileWarning) as caught:
        results = load(str(target))
        results.rotation                                    # the per-epoch tables are read on first use
    messages = [str(w.message) for w in caught]
    assert any(str(broken) in m for m in messages) and any(str(truncated) in m for m in messages)
    assert len(results.skipped) == 2
    assert len(results.trials) == 31
    assert "trial_00003" not in set(results.rotation[results.rotation["sweep"] == "alpha"]["trial_id"])
    assert len(results.rotation[results.rotation["sweep"] == "alpha"]) > 0


def test_file_without_a_required_column_is_skipped(store, tmp_path):
    target = copy(store, tmp_path)
    path = target / "epochs" / "alpha" / "trial_00000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["val_acc"]), path)
    results = load(str(target))
    with pytest.warns(StoreFileWarning, match="column 'val_acc' is missing"):
        results.epochs
    assert "trial_00000" not in set(results.epochs[results.epochs["sweep"] == "alpha"]["trial_id"])


def test_other_schema_version_fails_with_a_clear_message(store, tmp_path):
    target = copy(store, tmp_path)
    path = target / "trials" / "alpha" / "trial_00002.parquet"
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: b"0"}), path)
    with pytest.raises(ValueError, match=r"trial_00002.parquet has schema version 0; this layrot reads version 2 only"):
        load(str(target))


def test_temp_files_and_underscore_folders_are_ignored(store, tmp_path):
    target = copy(store, tmp_path)
    (target / "trials" / "alpha" / ".trial_00000.parquet.123.tmp").write_bytes(b"half written")
    (target / "trials" / "_tune").mkdir()
    (target / "trials" / "_tune" / "x.parquet").write_bytes(b"not ours")
    (target / "_tune").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreFileWarning)
        results = load(str(target))
        results.epochs, results.rotation
    assert len(results.trials) == 32


def test_rows_of_some_trials_equal_the_full_table_filtered(store):
    results = load(str(store))
    some = results.trials.iloc[[0, 5, 25]]
    lazily = results.rows_of("rotation", some)                 # reads just these three files
    keys = set(zip(some["sweep"], some["trial_id"]))
    full = results.rotation
    expected = full[[k in keys for k in zip(full["sweep"], full["trial_id"])]]
    columns = ["sweep", "trial_id", "epoch", "layer", "cosine_distance"]
    as_rows = lambda f: sorted(map(tuple, f[columns].astype({"sweep": str, "trial_id": str}).to_numpy().tolist()))
    assert as_rows(lazily) == as_rows(expected) and len(expected) > 0
    assert as_rows(results.rows_of("rotation", some)) == as_rows(expected)   # now from the loaded table


def test_reads_a_pyarrow_filesystem_uri(store):
    assert len(load(f"file://{store}").trials) == 32


def test_categorical_keys_keep_memory_small(store):
    rotation = load(str(store)).rotation
    assert isinstance(rotation["trial_id"].dtype, pd.CategoricalDtype)
    assert pa.types.is_floating(pa.from_numpy_dtype(rotation["cosine_distance"].dtype))
