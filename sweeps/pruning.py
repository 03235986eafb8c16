"""When to stop a trial early: the pruning policies of a sweep, as plain rules on epoch records.

One definition serves the live sweep and the offline replay: ``sweeps.scheduler`` wraps
:class:`RungRule` as a Ray Tune scheduler, ``analysis.replay`` feeds the same rules the stored
curves. Neither torch nor Ray is imported here.

A rule sees one trial's epoch records at a time (``val_acc``, ``epoch`` and the per-layer
``cosine_distance`` list of ``layrot.run.EPOCH_KEYS``) and answers whether to stop it now.

* ``asha``: :class:`RungRule` scoring the current validation accuracy, which is Tune's
  ``ASHAScheduler`` decision for decision (a test feeds both the same stream).
* ``median``: :class:`MedianRule`, Tune's ``MedianStoppingRule`` (hard stop) likewise.
* ``rotation``: :class:`RungRule` scoring ``ROTATION_SCORE``, chosen by replaying the candidates
  of ``SCORES`` on the committed study (docs/pruning.md gives their numbers).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

POLICIES = ("none", "asha", "median", "rotation")
DEFAULT_GRACE = 1
DEFAULT_ETA = 3
MEDIAN_MIN_SAMPLES = 3             # Tune's MedianStoppingRule default: median of at least 3 others
METRIC = "val_acc"                 # what ASHA and median stopping compare (mode max)
ROTATION = "cosine_distance"       # the per-layer rotation list a rotation score reads
TIME = "epoch"                     # the records' clock, 1..N finished epochs

History = Sequence[Mapping]        # one trial's epoch records so far, the current one last


# ---------------------------------------------------------------------------------------------
# The scheduler setting of a spec file: {type, grace, eta}.


@dataclass(frozen=True)
class Pruning:
    type: str = "none"
    grace: int = DEFAULT_GRACE     # no trial stops before this many epochs; the first rung
    eta: float = DEFAULT_ETA       # rungs at grace * eta^k; a rung keeps the best 1/eta


def parse_pruning(raw: object) -> Pruning:
    """A spec's ``scheduler`` mapping, validated; a one-line ValueError names the bad value."""
    if raw is None:
        return Pruning()
    if not isinstance(raw, Mapping):
        raise ValueError(f"{raw!r} is not a mapping {{type, grace, eta}}")
    kind = raw.get("type")
    if kind not in POLICIES:
        raise ValueError(f"type={kind!r} is not allowed: one of {', '.join(POLICIES)}")
    allowed = {"none": {"type"}, "median": {"type", "grace"}}.get(kind, {"type", "grace", "eta"})
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ValueError(f"{extra} not allowed with type={kind!r}; allowed keys: {', '.join(sorted(allowed))}")
    grace, eta = raw.get("grace", DEFAULT_GRACE), raw.get("eta", DEFAULT_ETA)
    if isinstance(grace, bool) or not isinstance(grace, int) or grace < 1:
        raise ValueError(f"grace={grace!r} is not allowed: an integer >= 1 (epochs)")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta > 1:
        raise ValueError(f"eta={eta!r} is not allowed: a number > 1")
    return Pruning(kind, grace, eta)


def rung_epochs(grace: int, eta: float, max_t: int) -> list[float]:
    """The rungs grace * eta^k up to max_t, as Tune's ASHA counts them."""
    count = int(math.log(max_t / grace) / math.log(eta) + 1)
    return [grace * eta**k for k in range(count)]


# ---------------------------------------------------------------------------------------------
# Scores: higher is better. Each takes the trial's history and the planned epochs.


def _val(history: History, max_t: int) -> float:
    return float(history[-1][METRIC])


def _rotation_min(history: History, max_t: int) -> float:
    """nan for a record without per-layer rotations: such a trial cannot be ranked, and stops."""
    distances = history[-1][ROTATION]
    return float(min(distances)) if len(distances) else math.nan


def _rotation_mean(history: History, max_t: int) -> float:
    distances = history[-1][ROTATION]
    return float(np.mean(distances)) if len(distances) else math.nan


def _rotation_min_extrapolated(history: History, max_t: int) -> float:
    """The least-turned layer's distance continued to max_t along a line in log(epoch) through
    the last two records: a guess at the curve's shape, which the replay judges."""
    now = _rotation_min(history, max_t)
    if len(history) < 2:
        return now
    (t0, d0), t1 = (history[-2][TIME], _rotation_min(history[:-1], max_t)), history[-1][TIME]
    slope = (now - d0) / (math.log(t1) - math.log(t0))
    return now + slope * (math.log(max_t) - math.log(t1))


def _rotation_min_plus_val(history: History, max_t: int) -> float:
    return _rotation_min(history, max_t) + _val(history, max_t)


# name -> (score, what it is); the candidates the replay compares
SCORES: dict[str, tuple[Callable[[History, int], float], str]] = {
    "val_acc": (_val, "current validation accuracy (what ASHA ranks by)"),
    "rotation_min": (_rotation_min, "current cosine distance of the least-turned layer"),
    "rotation_mean": (_rotation_mean, "current cosine distance, mean over layers"),
    "rotation_min_extrapolated": (_rotation_min_extrapolated,
                                  "least-turned layer's distance extrapolated to the last epoch (log-linear)"),
    "rotation_min_plus_val": (_rotation_min_plus_val, "least-turned layer's distance + validation accuracy"),
}
# Replayed on the study (docs/pruning.md), ranking by the least-turned layer alone kept the best
# trial at every grid setting but saved the least; adding the validation accuracy kept it as well
# and saved the most. Both terms are about [0, 1] in practice, so they are added unweighted.
ROTATION_SCORE = "rotation_min_plus_val"


def score_of(name: str) -> Callable[[History, int], float]:
    if name not in SCORES:
        raise ValueError(f"score {name!r} is not known; one of {', '.join(SCORES)}")
    return SCORES[name][0]


# ---------------------------------------------------------------------------------------------
# The rules.


class RungRule:
    """Asynchronous successive halving on any score, decision for decision as Tune's ASHA.

    When a trial first reaches a rung, it is stopped if its score is below the (1 - 1/eta)
    quantile of the scores recorded at that rung before it; then its score is recorded. The
    first trials at a rung always go on: halving is asynchronous, no trial waits for others.
    A trial whose score is not finite (a diverged run) stops and is not recorded (Tune's ASHA
    records a nan and lets it go on; a diverged trial of ours ends there anyway).

    ``state()`` / ``from_state`` hold everything a decision depends on, so a resumed sweep
    decides as the interrupted one would have; a stopped trial that reports again (run anew
    after an interruption) is stopped again on reaching the rung that stopped it.
    """

    def __init__(self, score: str, grace: int, eta: float, max_t: int):
        self.score, self.grace, self.eta, self.max_t = score, grace, eta, max_t
        self._score = score_of(score)
        self.rungs: dict[float, dict[str, float]] = {m: {} for m in rung_epochs(grace, eta, max_t)}
        self.stopped: dict[str, float] = {}        # trial -> the rung that stopped it

    def decide(self, trial_id: str, history: History) -> bool:
        """Whether to stop the trial after its latest record."""
        now = history[-1][TIME]
        if trial_id in self.stopped:
            return now >= self.stopped[trial_id]
        for milestone in sorted(self.rungs, reverse=True):
            recorded = self.rungs[milestone]
            if now < milestone or trial_id in recorded:
                continue
            value = self._score(history, self.max_t)
            if not math.isfinite(value):
                self.stopped[trial_id] = milestone
                return True
            stop = bool(recorded) and value < np.nanpercentile(list(recorded.values()), (1 - 1 / self.eta) * 100)
            recorded[trial_id] = value
            if stop and now < self.max_t:
                self.stopped[trial_id] = milestone
                return True
            return False
        return False

    def state(self) -> dict:
        return {"score": self.score, "grace": self.grace, "eta": self.eta, "max_t": self.max_t,
                "rungs": [[m, r] for m, r in self.rungs.items()], "stopped": self.stopped}

    @classmethod
    def from_state(cls, state: Mapping) -> RungRule:
        rule = cls(state["score"], state["grace"], state["eta"], state["max_t"])
        rule.rungs = {float(m) if not float(m).is_integer() else int(m): dict(r) for m, r in state["rungs"]}
        rule.stopped = dict(state["stopped"])
        return rule


class MedianRule:
    """Tune's median stopping rule (hard stop): after ``grace`` epochs, stop a trial whose best
    validation accuracy so far is below the median of the other trials' running means up to
    the same epoch, given at least ``MEDIAN_MIN_SAMPLES`` such trials."""

    def __init__(self, grace: int):
        self.grace = grace
        self._results: dict[str, list[tuple[int, float]]] = {}
        self.stopped: set[str] = set()

    def decide(self, trial_id: str, history: History) -> bool:
        if trial_id in self.stopped:
            return True
        now = history[-1][TIME]
        mine = self._results.setdefault(trial_id, [])
        mine.append((now, float(history[-1][METRIC])))
        if now < self.grace:
            return False
        means = [np.mean([v for t, v in rs if self.grace <= t <= now])
                 for other, rs in self._results.items() if other != trial_id and rs[-1][0] >= now]
        means = [m for m in means if np.isfinite(m)]
        if len(means) < MEDIAN_MIN_SAMPLES:
            return False
        if max(v for _, v in mine) < np.median(means):
            self.stopped.add(trial_id)
            return True
        return False


class KeepAll:
    def decide(self, trial_id: str, history: History) -> bool:
        return False


Rule = RungRule | MedianRule | KeepAll


def make_rule(pruning: Pruning, max_t: int, score: str = ROTATION_SCORE) -> Rule:
    """The rule of a policy; ``score`` is the rotation policy's (the replay tries others)."""
    if pruning.type == "none":
        return KeepAll()
    if pruning.type == "median":
        return MedianRule(pruning.grace)
    return RungRule(METRIC if pruning.type == "asha" else score, pruning.grace, pruning.eta, max_t)
