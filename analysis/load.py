"""Read a results store (or one sweep of it) into pandas DataFrames.

The store is written one whole file per (table, sweep, trial) by ``sweeps.store``; each file is
read on its own (in a thread pool: pyarrow releases the GIL) and its schema version and columns
are checked, so one corrupt file is named and skipped while the rest loads. A store being
written by a running sweep reads fine: files are replaced atomically, temp files start with "."
and are ignored, and a trial whose other files are not written yet simply has fewer rows.
"""
from __future__ import annotations

import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from layrot.run import SETTINGS
from sweeps.schema import METADATA_KEY, SCHEMA_VERSION, SCHEMAS, check_sweep_name
from sweeps.store import open_store
from sweeps.upgrade import FROM_VERSION

# Repeated strings of the big tables are read as categoricals: 3M rotation rows stay small.
_DICTIONARY_COLUMNS = {"trials": [], "epochs": ["sweep", "trial_id"],
                       "rotation": ["sweep", "trial_id", "layer_name"]}


class StoreFileWarning(UserWarning):
    """A store file could not be read and was skipped."""


class Results:
    """The loaded store: one row per trial, per (trial, epoch) and per (trial, epoch, layer).

    ``trials`` is read at once and gains derived columns from ``layrot.run.SETTINGS``: ``label``
    (the setting's name in figures, e.g. "Layca-SGD"), ``family`` (the base optimizer class, e.g.
    "SGD": Layca and L2 variants share it), ``layca`` (bool), and ``config`` (the trial's full
    config as a dict). The big per-epoch tables are read
    when first used: ``epochs`` and ``rotation`` hold every loaded trial's rows, while
    :meth:`rows_of` reads only the given trials' files (a report draws a few dozen curves).
    """

    def __init__(self, store: str, trials: pd.DataFrame, files: dict[str, dict[tuple[str, str], str]],
                 fs: pafs.FileSystem, skipped: list[str], threads: int):
        self.store = store
        self.trials = trials
        self.skipped = skipped                          # "path: reason" of unreadable files
        self._files, self._fs, self._threads = files, fs, threads

    @property
    def sweeps(self) -> list[str]:
        return sorted(self.trials["sweep"].unique())

    @cached_property
    def epochs(self) -> pd.DataFrame:
        return self._read("epochs", self._files["epochs"])

    @cached_property
    def rotation(self) -> pd.DataFrame:
        return self._read("rotation", self._files["rotation"])

    def of_sweeps(self, sweeps: Iterable[str]) -> "Results":
        """The same store restricted to the trials of ``sweeps``."""
        return self.of_trials(self.trials["sweep"].isin(set(sweeps)))

    def of_trials(self, keep: pd.Series) -> "Results":
        """The same store restricted to the trials (rows of ``trials``) where ``keep`` is true."""
        trials = self.trials[keep].reset_index(drop=True)
        kept = set(zip(trials["sweep"], trials["trial_id"]))
        files = {t: {k: p for k, p in by_trial.items() if k in kept} for t, by_trial in self._files.items()}
        return Results(self.store, trials, files, self._fs, self.skipped, self._threads)

    def rows_of(self, table: str, trials: pd.DataFrame) -> pd.DataFrame:
        """The "epochs" or "rotation" rows of the given trials (rows of ``self.trials``)."""
        wanted = set(zip(trials["sweep"], trials["trial_id"]))
        if table in self.__dict__:                      # already read in full
            frame = self.__dict__[table]
            rows = frame[frame["trial_id"].isin(trials["trial_id"]) & frame["sweep"].isin(trials["sweep"])]
            return rows[[key in wanted for key in zip(rows["sweep"], rows["trial_id"])]]
        return self._read(table, {k: p for k, p in self._files[table].items() if k in wanted})

    def _read(self, table: str, files: dict[tuple[str, str], str]) -> pd.DataFrame:
        with ThreadPoolExecutor(self._threads) as pool:
            return _read_table(pool, self._fs, table, files, self.skipped)


def load(
    store: str,
    sweep: str | None = None,
    task: str | Iterable[str] | None = None,
    setting: str | Iterable[str] | None = None,
    *,
    threads: int | None = None,
) -> Results:
    """Load a store, optionally one sweep, tasks and settings (names or lists of names).

    The trials table is read here; the per-epoch tables when first used (see :class:`Results`).
    Files are read by ``threads`` threads (default: one per CPU).
    Raises FileNotFoundError for a missing store, ValueError for a store with no trials, an
    unknown sweep, a filter that matches nothing, or a file of a schema version this layrot
    cannot read. Unreadable files are skipped with a :class:`StoreFileWarning` naming them.
    """
    fs, root = open_store(store)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"store {store!r} does not exist or is not a directory")
    if sweep is not None:
        check_sweep_name(sweep)
    files = {table: _list_files(fs, root, table, sweep) for table in SCHEMAS}
    if not files["trials"]:
        if sweep is None:
            raise ValueError(f"store {store!r} holds no trials yet")
        present = sorted({s for s, _ in _list_files(fs, root, "trials", None)})
        raise ValueError(f"sweep {sweep!r} is not in store {store!r}; sweeps there: "
                         f"{', '.join(present) or 'none'}")

    skipped: list[str] = []
    threads = threads or os.cpu_count() or 1
    with ThreadPoolExecutor(threads) as pool:
        trials = _read_table(pool, fs, "trials", files["trials"], skipped)
    trials = _select(trials, "task", task)
    trials = _select(trials, "setting", setting)
    keep = set(zip(trials["sweep"], trials["trial_id"]))
    files = {table: {k: p for k, p in found.items() if k in keep} for table, found in files.items()}
    return Results(store, _with_derived_columns(trials), files, fs, skipped, threads)


def _list_files(fs: pafs.FileSystem, root: str, table: str, sweep: str | None) -> dict[tuple[str, str], str]:
    """{(sweep, trial_id): path} of a table's files; hidden and temp files are left out."""
    base = f"{root}/{table}" + (f"/{sweep}" if sweep else "")
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    found = {}
    for info in infos:
        parts = info.path[len(root) + len(table) + 2:].split("/")
        if (info.type == pafs.FileType.File and len(parts) == 2 and info.base_name.endswith(".parquet")
                and not any(p.startswith((".", "_")) for p in parts)):
            found[(parts[0], parts[1][: -len(".parquet")])] = info.path
    return found


def _read_table(pool: ThreadPoolExecutor, fs: pafs.FileSystem, table: str,
                files: dict[tuple[str, str], str], skipped: list[str]) -> pd.DataFrame:
    paths = list(files.values())
    parts = []
    for path, part in zip(paths, pool.map(lambda p: _read_file(fs, table, p), paths)):
        if isinstance(part, pa.Table):
            parts.append(part)
        else:
            skipped.append(f"{path}: {part}")
            warnings.warn(f"skipped store file {path}: {part}", StoreFileWarning, stacklevel=3)
    data = pa.concat_tables(parts) if parts else _READ_SCHEMAS[table].empty_table()
    return data.unify_dictionaries().to_pandas()


def _read_file(fs: pafs.FileSystem, table: str, path: str) -> pa.Table | str:
    """The file's rows, or why it cannot be read (a string).

    A file of another schema version raises instead: mixing versions silently would be wrong.
    """
    try:
        with fs.open_input_file(path) as f:
            parquet = pq.ParquetFile(f, read_dictionary=_DICTIONARY_COLUMNS[table])
            version = (parquet.metadata.metadata or {}).get(METADATA_KEY)
            if version is None:
                return "no layrot schema version in its metadata (not written by layrot)"
            if version != str(SCHEMA_VERSION).encode():
                raise ValueError(_version_message(path, version.decode(errors="replace")))
            data = parquet.read(use_threads=False)      # the pool already reads files in parallel
    except FileNotFoundError:
        return "removed while loading"
    except (OSError, pa.ArrowException) as exc:
        message = str(exc).strip().splitlines()
        return f"not a readable Parquet file ({message[0] if message else type(exc).__name__})"
    return _conform(data, _READ_SCHEMAS[table])


def _version_message(path: str, version: str) -> str:
    if version == FROM_VERSION.decode():
        store = path.rsplit("/", 3)[0]
        return (f"store file {path} has schema version {version}; this layrot reads version {SCHEMA_VERSION}: "
                f"upgrade the store in place with `layrot upgrade-store {store}`")
    return (f"store file {path} has schema version {version}; this layrot reads version {SCHEMA_VERSION} only: "
            "load it with the layrot release that wrote it (the trials table's layrot_version column names it)")


def _conform(data: pa.Table, expected: pa.Schema) -> pa.Table | str:
    """The rows in the expected columns, or which column is missing or of the wrong type."""
    if data.schema.equals(expected):
        return data
    for field in expected:
        index = data.schema.get_field_index(field.name)
        if index < 0:
            return f"column {field.name!r} is missing"
        if data.schema.field(index).type != field.type:
            return f"column {field.name!r} is {data.schema.field(index).type}, expected {field.type}"
    return data.select(expected.names)


def _in_memory_schema(table: str) -> pa.Schema:
    """The table's schema as read: the repeated strings dictionary-encoded."""
    strings = _DICTIONARY_COLUMNS[table]
    return pa.schema([f.with_type(pa.dictionary(pa.int32(), pa.string())) if f.name in strings else f
                      for f in SCHEMAS[table]])


_READ_SCHEMAS = {table: _in_memory_schema(table) for table in SCHEMAS}


def _select(trials: pd.DataFrame, column: str, wanted: str | Iterable[str] | None) -> pd.DataFrame:
    if wanted is None:
        return trials
    names = [wanted] if isinstance(wanted, str) else list(wanted)
    chosen = trials[trials[column].isin(names)]
    if chosen.empty:
        present = ", ".join(sorted(trials[column].dropna().unique()))
        raise ValueError(f"no trials with {column} {names}; {column}s in the store: {present or 'none'}")
    return chosen.reset_index(drop=True)


def _with_derived_columns(trials: pd.DataFrame) -> pd.DataFrame:
    trials = trials.sort_values(["sweep", "trial_id"]).reset_index(drop=True)
    known = [SETTINGS.get(name) for name in trials["setting"]]
    trials["label"] = [s.label if s else name for s, name in zip(known, trials["setting"])]
    trials["family"] = [s.base if s else name for s, name in zip(known, trials["setting"])]
    trials["layca"] = [bool(s and s.layca) for s in known]
    trials["config"] = [json.loads(c) if isinstance(c, str) else {} for c in trials["config_json"]]
    return trials


def describe(results: Results) -> str:
    """One line for progress output: what was loaded."""
    counts = results.trials["status"].value_counts()
    status = ", ".join(f"{counts[s]} {s}" for s in counts.index)
    return (f"{len(results.trials)} trials ({status}) from {results.store}"
            + (f"; {len(results.skipped)} unreadable file(s) skipped" if results.skipped else ""))
