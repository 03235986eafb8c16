"""The analysis settings a study announced before its runs (its sweep specs' ``analysis:``),
read back from the store's sweep files, so a report judges a study by the rule it set itself.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import pandas as pd

from analysis.load import Results
from layrot.run import ENDED, analysis_settings
from sweeps.store import read_sweep_files


@dataclass(frozen=True)
class Threshold:
    """The training-accuracy threshold in use and the one the study registered."""

    value: float
    registered: float
    source: str               # where ``registered`` comes from, in words

    @property
    def overridden(self) -> bool:
        return self.value != self.registered

    def banner(self) -> str | None:
        """The warning a report or document must lead with when it departs from the registration."""
        if not self.overridden:
            return None
        return (f"This analysis uses a training-accuracy threshold of {self.value:g}, not the {self.registered:g} "
                f"pre-registered ({self.source}): its verdicts were not fixed before the runs.")


def threshold(store: str, sweeps: list[str], given: float | None = None) -> Threshold:
    """The registered threshold of the loaded sweeps (a sweep without a sweep file, as in stores
    written before them, has the default), and ``given`` if one was asked for. Sweeps that
    registered different thresholds cannot be judged by one: a ValueError says so."""
    files = read_sweep_files(store)
    registered = {s: analysis_settings((files.get(s) or {}).get("analysis"))["min_train_acc"] for s in sweeps}
    values = sorted(set(registered.values()))
    if len(values) > 1:
        listing = ", ".join(f"{s}: {v:g}" for s, v in sorted(registered.items()))
        raise ValueError(f"the sweeps registered different min_train_acc ({listing}); report one with --sweep "
                         "or give --min-train-acc")
    recorded = [s for s in sweeps if (files.get(s) or {}).get("analysis", {}).get("min_train_acc") is not None]
    source = (f"in the sweep file(s) of {', '.join(recorded)}" if recorded
              else "the default: no sweep of this store registered one")
    value = values[0] if given is None else float(analysis_settings({"min_train_acc": given})["min_train_acc"])
    return Threshold(value, values[0], source)


def ended_part(results: Results, by_setting: bool = False) -> tuple[Results, str]:
    """``results`` without the parts whose registered grid has points not yet ended (their
    configurations would enter with seeds missing, so a study's numbers wait for them), and what
    was left out in words ("" when nothing). A part is a sweep, or with ``by_setting`` a setting
    of a sweep: a setting is judged on its own grid (its best rate), while a pruning replay
    needs a sweep's trials as they ran together. E.g. "study-adaptive (40 of 84 trials ended;
    settings in: adam, layca-adam)"."""
    files = read_sweep_files(results.store)
    trials = results.trials
    ended = trials[trials["status"].isin(ENDED)].groupby(["sweep", "setting"]).size()
    keep, running = pd.Series(True, index=trials.index), []
    for sweep in results.sweeps:
        planned = Counter(json.loads(point)["setting"] for point in (files.get(sweep) or {}).get("grid") or [])
        done = {s: min(int(ended.get((sweep, s), 0)), n) for s, n in planned.items()}
        whole = [s for s, n in planned.items() if done[s] == n]
        if len(whole) == len(planned):
            continue
        kept = whole if by_setting else []
        keep &= (trials["sweep"] != sweep) | trials["setting"].isin(kept)
        running.append(f"{sweep} ({sum(done.values())} of {sum(planned.values())} trials ended"
                       + (f"; settings in: {', '.join(kept)})" if kept else ")"))
    return results.of_trials(keep), ", ".join(running)
