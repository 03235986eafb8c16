"""Replay pruning policies on a store's stored curves, without training.

The trials of a pool (one sweep, or the whole store) are replayed as if they had run
concurrently, in lock-step: epoch by epoch, every trial still running shows its stored record
to the policy's rule (``sweeps.pruning``), in the store's order (sweep, trial id), and the rule
says whether it stops there. A stopped trial has run its epochs up to that one. The policy's
pick is then the trial with the best final validation accuracy among the trials it let finish,
against the best among all trials; the test accuracies of the two give the regret.

A trial the store holds unfinished (running, errored or pruned) runs only its stored epochs
and can never be picked; a diverged trial ends where it diverged under every policy and is
ranked by its final accuracy like any finished trial.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from analysis.load import Results
from layrot.run import FINISHED, SELECTION_METRIC
from sweeps.pruning import METRIC, POLICIES, ROTATION, ROTATION_SCORE, TIME, Pruning, make_rule

COLUMNS = ["policy", "trials", "epochs_planned", "epochs_run", "saved_frac", "chosen_trial", "chosen_test_acc",
           "best_test_acc", "regret_pts"]
DECISION_COLUMNS = ["policy", "trial_id", "stopped_at_epoch"]


@dataclass
class Pool:
    """The trials replayed together: their rows (store order) and their epoch records."""

    trials: pd.DataFrame
    histories: dict[str, list[dict]] = field(default_factory=dict)   # trial_id -> records, epoch order

    @property
    def max_epochs(self) -> int:
        return int(self.trials["epochs"].max())

    def of_sweep(self, sweep: str) -> Pool:
        """The pool of one sweep's trials, as ``layrot replay --sweep`` replays it."""
        trials = self.trials[self.trials["sweep"] == sweep].reset_index(drop=True)
        return Pool(trials, {tid: self.histories[tid] for tid in trials["trial_id"]})


def pool_of(results: Results) -> Pool:
    """The loaded trials as one pool; their trial ids must tell them apart."""
    trials = results.trials.sort_values(["sweep", "trial_id"]).reset_index(drop=True)
    repeated = trials["trial_id"][trials["trial_id"].duplicated()].tolist()
    if repeated:
        raise ValueError(f"trial ids {repeated[:3]} occur in several sweeps; replay one with --sweep")
    epochs = results.rows_of("epochs", trials)[["trial_id", TIME, METRIC]]
    rotation = results.rows_of("rotation", trials)[["trial_id", TIME, "layer", ROTATION]]
    layers = (rotation.sort_values("layer").groupby(["trial_id", TIME], observed=True)[ROTATION]
              .agg(list).rename(ROTATION).reset_index())
    records = epochs.merge(layers, on=["trial_id", TIME], how="left").sort_values(TIME)
    records["trial_id"] = records["trial_id"].astype(str)
    records[ROTATION] = [v if isinstance(v, list) else [] for v in records[ROTATION]]   # epochs without rows
    histories = {tid: group.drop(columns="trial_id").to_dict("records") for tid, group in records.groupby("trial_id")}
    return Pool(trials, {tid: histories.get(tid, []) for tid in trials["trial_id"]})


def stopping_epochs(pool: Pool, pruning: Pruning, score: str = ROTATION_SCORE) -> dict[str, int]:
    """trial_id -> the last epoch the trial runs under the policy (lock-step replay)."""
    rule = make_rule(pruning, pool.max_epochs, score)
    running = {tid: 0 for tid in pool.trials["trial_id"] if pool.histories[tid]}
    stopped = {tid: 0 for tid in pool.trials["trial_id"] if not pool.histories[tid]}
    for epoch in range(1, pool.max_epochs + 1):
        for tid in list(running):
            history = pool.histories[tid]
            if len(history) < epoch:             # its stored epochs end here
                stopped[tid] = running.pop(tid)
                continue
            running[tid] = epoch
            if rule.decide(tid, history[:epoch]):
                stopped[tid] = running.pop(tid)
    stopped.update(running)
    return {tid: stopped[tid] for tid in pool.trials["trial_id"]}


def outcome(pool: Pool, stopped_at: dict[str, int], policy: str) -> dict:
    """A policy's row of the table from where it stopped each trial."""
    trials = pool.trials
    finished = trials[trials["status"].isin(FINISHED)]
    ran_all = [stopped_at[t] == n for t, n in zip(finished["trial_id"], finished["epochs_done"])]
    let_finish = finished.loc[pd.Series(ran_all, index=finished.index, dtype=bool)]
    chosen, best = _best(let_finish), _best(finished)
    planned, ran = int(trials["epochs"].sum()), int(sum(stopped_at.values()))
    return {
        "policy": policy, "trials": len(trials), "epochs_planned": planned, "epochs_run": ran,
        "saved_frac": 1 - ran / planned if planned else 0.0,
        "chosen_trial": None if chosen is None else chosen["trial_id"],
        "chosen_test_acc": None if chosen is None else float(chosen["final_test_acc"]),
        "best_test_acc": None if best is None else float(best["final_test_acc"]),
        "regret_pts": None if chosen is None or best is None
        else 100 * (float(best["final_test_acc"]) - float(chosen["final_test_acc"])),
    }


def _best(trials: pd.DataFrame) -> pd.Series | None:
    """The trial with the best final validation accuracy (the first such in store order)."""
    scored = trials[trials[SELECTION_METRIC].notna()]
    return None if scored.empty else scored.loc[scored[SELECTION_METRIC].idxmax()]


def replay(pool: Pool, policies: list[str], grace: int, eta: float,
           score: str = ROTATION_SCORE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table, decisions) of the policies on the pool: one row per policy in COLUMNS, and one
    row per policy and trial in DECISION_COLUMNS."""
    rows, decisions = [], []
    for policy in policies:
        stopped_at = stopping_epochs(pool, _pruning(policy, grace, eta), score)
        rows.append(outcome(pool, stopped_at, policy))
        decisions += [{"policy": policy, "trial_id": t, "stopped_at_epoch": e} for t, e in stopped_at.items()]
    return pd.DataFrame(rows, columns=COLUMNS), pd.DataFrame(decisions, columns=DECISION_COLUMNS)


def _pruning(policy: str, grace: int, eta: float) -> Pruning:
    if policy not in POLICIES:
        raise ValueError(f"policy {policy!r} is not known; allowed: {', '.join(POLICIES)}")
    return Pruning(policy, grace, eta)


def notes(pool: Pool) -> list[str]:
    """What the replay assumed about trials that did not simply complete."""
    trials, out = pool.trials, []
    unfinished = trials[~trials["status"].isin(FINISHED)]
    if len(unfinished):
        counts = ", ".join(f"{n} {s}" for s, n in sorted(unfinished["status"].value_counts().items()))
        out.append(f"{len(unfinished)} trial(s) did not finish in the store ({counts}): each runs only its "
                   "stored epochs and is never chosen")
    diverged = int((trials["status"] == "diverged").sum())
    if diverged:
        out.append(f"{diverged} trial(s) diverged: they end where they diverged under every policy and are "
                   "ranked by their final accuracy")
    return out


GRACES = (1, 2, 3, 5)               # the grid every rung policy is tuned over, the same for each
ETAS = (2, 3, 4)


def tuning_grid(pool: Pool, policies: tuple[str, ...] = ("asha", "median", "rotation"),
                score: str = ROTATION_SCORE) -> pd.DataFrame:
    """Each policy replayed at every (grace, eta) of the grid (median stopping has no eta):
    columns grace, eta and COLUMNS."""
    rows = []
    for policy in policies:
        for grace in GRACES:
            for eta in ETAS[:1] if policy == "median" else ETAS:
                table, _ = replay(pool, [policy], grace, eta, score)
                rows.append({"grace": grace, "eta": None if policy == "median" else eta, **table.iloc[0]})
    return pd.DataFrame(rows, columns=["grace", "eta", *COLUMNS])


def pruning_figure(grid: pd.DataFrame):
    """Saved epochs against regret, one point per policy and setting of a :func:`tuning_grid`
    (a plotly Figure; better is lower right)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for policy, rows in grid.groupby("policy", sort=False):
        labels = [f"{policy} grace={g}" + ("" if pd.isna(e) else f" eta={e:g}") for g, e in zip(rows["grace"], rows["eta"])]
        fig.add_trace(go.Scatter(
            x=100 * rows["saved_frac"], y=rows["regret_pts"], mode="markers", name=policy, text=labels,
            hovertemplate="%{text}<br>saved %{x:.1f}% of epochs<br>regret %{y:.2f} points<extra></extra>"))
    fig.update_layout(title="Pruning replayed on the stored curves: epochs saved against regret",
                      xaxis_title="epochs saved (% of planned)", yaxis_title="regret (test accuracy points)")
    return fig
