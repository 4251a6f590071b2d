"""A record's metrics recomputed from its own scores.npy and labels.npy, and whether they are the
numbers it says.

The recomputation adds up the same float values the run did, so a point mAP agrees to rounding
(TOLERANCE). Only the order numpy's sort gives tied scores may differ between numpy builds and
CPUs (harness.metrics): where tied scores mix positives and negatives, the recorded mAP must lie
between the mAPs of the two extreme tie orders (positives first, positives last), which no honest
run can leave.
"""
from dataclasses import dataclass, field

import numpy as np

from harness.ctran.metrics import compute_ctran_metrics
from harness.ctran.metrics import mean_ap as ctran_mean_ap
from harness.metrics import PROTOCOLS, Bootstrap, ap_sorted, check_inputs, compute_metrics, mean_ap, per_class_ap

TOLERANCE = 1e-6  # mAP points: summing the same float64 values in another order moves ~1e-13
CTRAN_PROTOCOLS = ("ctran", "ctran-id")
ORDER_DEPENDENT = ("mAP", "per_class_ap", "mAP_ci95", "bootstrap")  # what tie order can move


@dataclass(frozen=True)
class PointMap:
    """The mAP recomputed from the files, and the range tie order allows (low == high without mixed ties)."""
    mAP: float | None
    low: float | None
    high: float | None
    mixed_ties: int  # tied scores in runs holding both a positive and a negative
    per_class: tuple | None = field(default=None, repr=False, compare=False)  # per_class_ap's, for all_metrics

    def agrees(self, recorded: float | None) -> bool:
        """Whether a recorded mAP is this one, to rounding or within what tie order can move."""
        if recorded is None or self.mAP is None:
            return recorded is None and self.mAP is None
        return self.low - TOLERANCE <= recorded <= self.high + TOLERANCE


def can_recompute(protocol: str | None) -> bool:
    return protocol in PROTOCOLS or protocol in CTRAN_PROTOCOLS


def point_map(scores: np.ndarray, labels: np.ndarray, protocol: str, masks: np.ndarray | None = None) -> PointMap:
    """The mAP of `protocol` from the arrays (C-Tran: with its -1/0/1 masks); a UserError for bad arrays."""
    if protocol in CTRAN_PROTOCOLS:  # sklearn-style AP: tied scores form one step, so no order matters
        scores, positives = check_inputs(scores, labels)
        unknown = np.ones_like(positives) if masks is None else np.asarray(masks) == -1
        value = ctran_mean_ap(scores, positives, unknown)
        value = None if value is None else 100 * value
        return PointMap(value, value, value, 0)
    scores, positives = check_inputs(scores, labels)
    ap, ap_tie_free, tied, mixed, orders = per_class_ap(scores, positives, protocol)
    value = mean_ap(ap, protocol)
    per_class = (ap, ap_tie_free, tied, mixed, orders)
    if protocol == "mlspl" or not mixed.any():
        return PointMap(value, value, value, int(mixed.sum()), per_class)
    low, high = ap.copy(), ap.copy()
    for c in np.flatnonzero(mixed):
        _, s, y = orders[c]  # s sorted high to low; reorder each run of ties
        high[c] = ap_sorted(y[np.lexsort((~y, -s))], protocol)  # positives first
        low[c] = ap_sorted(y[np.lexsort((y, -s))], protocol)    # positives last
    return PointMap(value, mean_ap(low, protocol), mean_ap(high, protocol), int(mixed.sum()), per_class)


def all_metrics(scores: np.ndarray, labels: np.ndarray, recorded: dict, protocol: str, masks: np.ndarray | None = None,
                ci: bool = True, point: PointMap | None = None) -> dict:
    """Every metric as the run computed it (its F1 rule, threshold, class names and bootstrap); `point`:
    point_map's result on the same arrays, whose per-class sort it reuses."""
    if protocol in CTRAN_PROTOCOLS:
        return compute_ctran_metrics(scores, labels, masks)
    boot = recorded.get("bootstrap") or {}
    bootstrap = Bootstrap(boot["n_resamples"], boot.get("seed", 0)) if ci and boot.get("n_resamples") else False
    return compute_metrics(scores, labels, protocol, ci=bootstrap, class_names=recorded.get("class_names"),
                           f1=recorded.get("f1_rule", "ml-gcn"), threshold=recorded.get("threshold", 0.5),
                           per_class=point.per_class if point else None)


def differences(recorded, recomputed, skip: tuple = (), path: str = "") -> list[str]:
    """["CF1: recorded 79.3, recomputed 71.2", ...] for every number the record holds that the
    recomputation also gives and that differs by more than TOLERANCE (texts and unknown keys aside)."""
    if isinstance(recorded, dict) and isinstance(recomputed, dict):
        return [d for key, value in recorded.items() if key in recomputed and key not in skip
                for d in differences(value, recomputed[key], (), f"{path}{key}.")]
    if isinstance(recorded, list) and isinstance(recomputed, list):
        if len(recorded) != len(recomputed):
            return [f"{path[:-1]}: {len(recorded)} values recorded, {len(recomputed)} recomputed"]
        return [d for k, (a, b) in enumerate(zip(recorded, recomputed)) for d in differences(a, b, (), f"{path}{k}.")]
    if not (_is_number(recorded) or _is_number(recomputed)):
        return []
    if _is_number(recorded) and _is_number(recomputed):
        return [] if abs(recorded - recomputed) <= TOLERANCE else [_difference(path, recorded, recomputed)]
    if recorded is None or recomputed is None:  # a number on one side, null on the other
        return [_difference(path, recorded, recomputed)]
    return []  # a number against a text or an object: not a metric this check compares


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _difference(path, recorded, recomputed):
    return f"{path[:-1]}: recorded {_text(recorded)}, recomputed {_text(recomputed)}"


def _text(value):
    return "null" if value is None else f"{value:.6g}"
