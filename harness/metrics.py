"""Average precision exactly as each paper's code computes it, the F1 family, and a bootstrap CI.

Per class AP, then the mean over classes, in percent. Labels are 1 (positive), 0 or -1 (negative:
the Query2Label code's rule, > 0 positive); any other value (2, 0.5) is refused, never guessed.
Ties are ordered by the same numpy call each authors' code makes, on the same dtype, so tied
scores give their number, not just a close one:

  q2l    Query2Label `voc_mAP`: order `np.argsort(-s)` on float64 (their scores pass through a
         text file); precision tp / max(tp + fp, eps); VOC all-point interpolation (precision made
         monotone from the right, summed where recall changes). A class without positives is NaN
         in their code: here its AP is null, mAP is the mean over the classes with positives, and
         the class is listed in `classes_without_positives`.
  asl    ASL `mAP`: order `s.argsort()[::-1]` in the scores' own dtype (float32, as their torch
         outputs); precision at each positive, summed / (npos + 1e-8): 0 without positives.
  mlspl  MLSPL: scikit-learn `average_precision_score` (tied scores form one step); AP 0 for a
         class without positives, as their `compute_avg_precision`.

numpy's default sort is not stable, and its order of ties can differ between numpy builds and
CPUs: `ties` therefore gives, per protocol, a tie-free AP (tied scores taken as one threshold
step) and the count of tied scores, so a reader sees when ties could move a number.

F1 family, `ml-gcn` (no code published by the Q2L authors; the ML-GCN definition): predicted positive
when score >= 0.5; CP, CR = per-class precision and recall averaged over the classes with a
positive (a class with nothing predicted has precision 0); CF1 = 2 CP CR / (CP + CR); OP, OR, OF1
pooled over all (image, class) pairs, OP's denominator counting 1 for each class nothing was
predicted for (ML-GCN's `Np[Np == 0] = 1`). `top3`: only each image's 3 highest scores may be
positive, and they must also be >= 0.5 (ML-GCN's `overall_topk`, C-Tran); a tie at the third
place goes to the lower class index.
`asl`: ASL's validate.py (ML-Decoder's validate.py is the same code) at the model's threshold (0.8
for ASL, 0.75 for ML-Decoder): see asl_f1_family. top3 is always ML-GCN's, at 0.5. A run of the `asl`
protocol scored with ML-GCN's family (its paper's table used that one) also carries ASL validate.py's
own at 0.8 as `f1_asl_validate`. `f1_definition` names the definition in words.

Bootstrap: images resampled with replacement (fixed seed), the same protocol on each resample,
95% percentile interval. Each class is sorted once; a resample is a vector of per-image counts,
and its AP is computed from counts summed between the positives (copies of an image sit
together in the sorted order), so 1,000 resamples of 40,504 x 80 take seconds.
"""
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse
from numpy.typing import ArrayLike

from harness.errors import UserError

PROTOCOLS = ("q2l", "asl", "mlspl")
THRESHOLD = 0.5
TOP_K = 3
ASL_EPS = 1e-8
LABEL_VALUES = (-1, 0, 1)  # positive 1; negative 0, or -1 (the "<= 0 negative" rule's only other value)

PROTOCOL_DESCRIPTIONS = {
    "q2l": "Query2Label voc_mAP: VOC all-point interpolated AP, ties ordered by np.argsort(-s) on float64",
    "asl": "ASL mAP: non-interpolated AP (precision at each positive / (npos + 1e-8)), "
           "ties ordered by s.argsort()[::-1]",
    "mlspl": "MLSPL: scikit-learn average_precision_score (tied scores one step), AP 0 without positives",
    "ctran": "C-Tran compute_metrics: sklearn AP per label over the images where it is unknown (macro AP when "
             "none known), F1 family over all labels at 0.5 (harness/ctran/metrics.py)",
}
F1_RULES = {"ml-gcn": "score >= threshold; CF1 = 2 CP CR / (CP + CR) over the classes with a positive "
                       "(ML-GCN)",
            "asl": "score > threshold in the scores' dtype; per-class P, R = 0 without a true positive; "
                   "CF1 = mean of per-class F1 over all classes (ASL / ML-Decoder validate.py)"}
ASL_VALIDATE_THRESHOLD = 0.8  # ASL validate.py's --thre
TOP3_RULE = "top-3 scores of each image, and >= 0.5 (ML-GCN overall_topk); ties at 3rd place: lower class index"


# ---------------------------------------------------------------- inputs

def check_inputs(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(scores as an array of their own float dtype, positives as bool), or UserError."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or labels.ndim != 2:
        raise UserError(f"scores and labels must be 2-D (images x classes); got shapes {scores.shape} and "
                        f"{labels.shape}")
    if scores.shape != labels.shape:
        raise UserError(f"scores {scores.shape} and labels {labels.shape} differ in shape; "
                        f"pass the labels of the same images and classes")
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise UserError(f"no images or no classes (shape {scores.shape}); pass a non-empty score matrix")
    if scores.dtype.kind not in "iuf":
        raise UserError(f"scores must be numbers (got dtype {scores.dtype})")
    if labels.dtype.kind not in "biuf":  # complex 1+0j is no label either
        raise UserError(f"labels must be numbers 0/1 (got dtype {labels.dtype})")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    if not np.isfinite(scores).all():
        bad = int((~np.isfinite(scores)).sum())
        raise UserError(f"{bad} scores are NaN or infinite; fix or re-run the evaluation that wrote them")
    if np.issubdtype(labels.dtype, np.floating) and not np.isfinite(labels).all():
        raise UserError("labels contain NaN or infinite values; labels must be 0/1")
    if labels.dtype != bool and not np.isin(labels, LABEL_VALUES).all():  # 2 or 0.5 is no label: never guessed
        odd = np.unique(labels[~np.isin(labels, LABEL_VALUES)])
        raise UserError(f"labels hold {', '.join(f'{v:g}' for v in odd[:5])}{' ...' if len(odd) > 5 else ''}: a "
                        f"label is 1 (positive) or 0 (negative; -1 is read as negative too); "
                        f"pass 0/1 labels")
    return np.ascontiguousarray(scores), np.ascontiguousarray(labels > 0)


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol '{protocol}'; use one of {', '.join(PROTOCOLS)}")


# ---------------------------------------------------------------- one class

def sort_order(column: np.ndarray, protocol: str) -> np.ndarray:
    """Indices that sort one class's scores from high to low, tie order as the authors' code."""
    if protocol == "q2l":
        return np.argsort(-column)  # column is float64: the call voc_mAP makes
    if protocol == "asl":
        return column.argsort()[::-1]  # the call ASL's average_precision makes
    return np.argsort(-column, kind="stable")  # mlspl: ties form one step, any order will do


def _group_ends(sorted_scores: np.ndarray) -> np.ndarray:
    """Exclusive end index of each run of equal scores in a sorted column."""
    change = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]) + 1
    return np.append(change, len(sorted_scores))


def ap_sorted(y: np.ndarray, protocol: str) -> float:
    """AP (fraction) of one class from its labels in ranked order, with the authors' arithmetic."""
    n = len(y)
    tp = np.cumsum(y, dtype=np.float64)
    rank = np.arange(1, n + 1, dtype=np.float64)
    npos = tp[-1]
    if protocol == "asl":
        return np.sum(np.where(y, tp / rank, 0.0)) / (npos + ASL_EPS)
    if npos == 0:
        return np.nan if protocol == "q2l" else 0.0
    if protocol == "q2l":
        precision = tp / np.maximum(rank, np.finfo(np.float64).eps)
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        recall = tp / npos
        step = np.diff(recall, prepend=0.0)
        return np.sum(step[y] * envelope[y])
    raise ValueError("mlspl needs the scores for its tie steps: use ap_grouped")


def class_ap(column: np.ndarray, y: np.ndarray, protocol: str) -> float:
    """AP (fraction) of one class from its scores and labels (bool), sorted as the authors' code
    sorts (q2l on float64, others in the column's dtype)."""
    if protocol == "q2l":
        column = column.astype(np.float64)
    order = sort_order(column, protocol)
    if protocol == "mlspl":
        return ap_grouped(column[order], y[order], protocol)
    return ap_sorted(y[order], protocol)


def ap_grouped(sorted_scores: np.ndarray, y: np.ndarray, protocol: str) -> float:
    """AP (fraction) with each run of tied scores as one threshold step: mlspl's AP, and the
    tie-free reference of q2l and asl (it does not depend on how a sort orders ties)."""
    ends = _group_ends(sorted_scores)
    tp = np.cumsum(y, dtype=np.float64)[ends - 1]
    npos = tp[-1]
    if npos == 0:
        return np.nan if protocol == "q2l" else 0.0
    precision = tp / ends
    if protocol == "q2l":
        precision = np.maximum.accumulate(precision[::-1])[::-1]
    if protocol == "asl":
        return np.sum(np.diff(tp, prepend=0.0) * precision) / (npos + ASL_EPS)
    # mlspl (and q2l on its envelope): scikit-learn's sum, -sum(diff(recall) * precision[:-1]),
    # over the curve reversed as precision_recall_curve returns it
    recall = np.append((tp / npos)[::-1], 0.0)
    return max(0.0, -np.sum(np.diff(recall) * precision[::-1]))


def tie_counts(sorted_scores: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """(scores sharing their value with another, of those the ones in a run holding both a
    positive and a negative: only these can move AP)."""
    ends = _group_ends(sorted_scores)
    size = np.diff(ends, prepend=0)
    pos = np.add.reduceat(y.astype(np.int64), ends - size)
    tied = size > 1
    mixed = tied & (pos > 0) & (pos < size)
    return int(size[tied].sum()), int(size[mixed].sum())


# ---------------------------------------------------------------- all classes

def _class_columns(scores: np.ndarray, protocol: str) -> np.ndarray:
    """classes x images array in the dtype each protocol sorts (see sort_order)."""
    if protocol == "q2l":
        return scores.astype(np.float64).T
    return scores.T


def per_class_ap(scores: np.ndarray, positives: np.ndarray, protocol: str) -> tuple:
    """Per-class AP (fractions), tie-free AP, tied and mixed-tie counts, and each class's order.

    The classes are taken a block at a time as classes x images arrays (numpy calls per block, not
    per class); each sort is the same call on the same values, and each float sum is numpy's sum of
    the same 1-D array ap_sorted and ap_grouped make for one class, so every number is theirs to the
    bit (tests/metrics/test_metrics.py compares them on random and tied scores)."""
    columns = _class_columns(scores, protocol)
    n_classes, n_images = columns.shape
    ap, ap_tie_free = np.empty(n_classes), np.empty(n_classes)
    tied, mixed = np.zeros(n_classes, int), np.zeros(n_classes, int)
    orders = []
    block = max(1, _BLOCK_VALUES // n_images)
    for first in range(0, n_classes, block):
        part = slice(first, first + block)
        order, s, y = _sorted_block(np.ascontiguousarray(columns[part]), np.ascontiguousarray(positives.T[part]),
                                    protocol)
        ap[part], ap_tie_free[part], tied[part], mixed[part] = _block_ap(s, y, protocol)
        orders += list(zip(order, s, y))
    return ap, ap_tie_free, tied, mixed, orders


_BLOCK_VALUES = 1 << 16  # scores per block of classes: its arrays stay in the CPU caches (faster than larger)


def _sorted_block(columns: np.ndarray, positives: np.ndarray, protocol: str) -> tuple:
    """(order, sorted scores, labels in that order) of each row (class), as sort_order sorts one."""
    if protocol == "q2l":
        order = np.argsort(-columns, axis=1)
    elif protocol == "asl":
        order = columns.argsort(axis=1)[:, ::-1]
    else:
        order = np.argsort(-columns, axis=1, kind="stable")
    flat = order + np.arange(0, columns.size, columns.shape[1])[:, None]  # a flat take: faster than take_along_axis
    return order, columns.ravel().take(flat), positives.ravel().take(flat)


def _segment_sums(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """np.sum of each consecutive piece of `values` (counts[i] values each): each piece is a 1-D array
    of its own, summed as numpy sums one (pairwise), never as part of a longer sum."""
    ends = np.cumsum(counts).tolist()
    return np.array([values[end - k:end].sum() for end, k in zip(ends, counts.tolist())], dtype=np.float64)


def _block_ap(s: np.ndarray, y: np.ndarray, protocol: str) -> tuple:
    """ap_sorted, ap_grouped and tie_counts of each row of sorted scores `s` and labels `y`."""
    n_rows, n = s.shape
    tp = np.cumsum(y, axis=1).astype(np.float64)  # counts: the same values as a float64 cumsum, sooner
    npos = tp[:, -1]
    none = npos == 0
    is_end = np.ones((n_rows, n), dtype=bool)  # the last score of each run of equal ones ends a group
    np.not_equal(s[:, 1:], s[:, :-1], out=is_end[:, :-1])
    is_tied = np.zeros((n_rows, n), dtype=bool)  # equal to a neighbour
    is_tied[:, 1:] = ~is_end[:, :-1]
    is_tied[:, :-1] |= is_tied[:, 1:]
    tied = is_tied.sum(1)
    flat = np.flatnonzero(is_end)
    counts = is_end.sum(1)
    first = np.cumsum(counts) - counts  # each row's first group in the flat group arrays
    row = np.repeat(np.arange(n_rows), counts)
    ends = flat - row * n + 1
    tp_g = tp.ravel()[flat]
    with np.errstate(invalid="ignore", divide="ignore"):  # rows without positives: set below
        # ap_sorted
        rank = np.arange(1, n + 1, dtype=np.float64)
        if protocol == "asl":
            ap = _segment_sums(np.where(y, tp / rank, 0.0).ravel(), np.full(n_rows, n)) / (npos + ASL_EPS)
        elif protocol == "q2l":
            precision = tp / np.maximum(rank, np.finfo(np.float64).eps)
            envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
            step = np.diff(tp / npos[:, None], axis=1, prepend=0.0)
            ap = np.where(none, np.nan, _segment_sums((step * envelope)[y], y.sum(1)))
        # ap_grouped
        if protocol == "q2l" and not tied.any():  # each score its own group: the envelope above
            precision_g = envelope.ravel()
        elif protocol == "q2l":  # running max from the right within each row (precision >= 0: padding 0 is inert)
            padded = np.zeros((n_rows, n))
            padded.ravel()[flat] = tp_g / ends
            precision_g = np.maximum.accumulate(padded[:, ::-1], axis=1)[:, ::-1].ravel()[flat]
        else:
            precision_g = tp_g / ends
        if protocol == "asl":
            tie_free = _segment_sums((tp_g - _shifted(tp_g, first)) * precision_g, counts) / (npos + ASL_EPS)
        else:  # terms in the order scikit-learn's sum takes them: last group first
            recall = tp_g / npos[row]
            terms = ((_shifted(recall, first) - recall) * precision_g)[::-1].copy()
            total = -_segment_sums(terms, counts[::-1])[::-1]
            tie_free = np.where(total > 0.0, total, 0.0)  # max(0.0, total)
        tie_free = np.where(none, np.nan if protocol == "q2l" else 0.0, tie_free)
    if protocol == "mlspl":
        ap = tie_free
    # tie_counts: a run of ties can move AP when it holds a positive and a negative
    mixed = np.zeros(n_rows, int)
    if tied.any():
        size = ends - _shifted(ends, first)
        pos_end = tp_g.astype(np.int64)
        pos = pos_end - _shifted(pos_end, first)
        is_mixed = (size > 1) & (pos > 0) & (pos < size)
        mixed = np.bincount(row, weights=size * is_mixed, minlength=n_rows).astype(int)
    return ap, tie_free, tied, mixed


def _shifted(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """values moved one place on within each row's piece, 0 at each row's first place (np.diff's prepend=0)."""
    out = np.empty_like(values)
    out[1:] = values[:-1]
    out[first] = 0
    return out


def mean_ap(ap: np.ndarray, protocol: str) -> float | None:
    """Mean in percent, as the authors average (q2l: over classes with positives, see above)."""
    if protocol == "q2l":
        ap = ap[~np.isnan(ap)]
        return float(np.mean(ap * 100)) if len(ap) else None
    return float(100 * np.mean(ap))


def f1_family(scores: np.ndarray, positives: np.ndarray, threshold: float = THRESHOLD,
              top_k: int | None = None) -> dict:
    """CP, CR, CF1, OP, OR, OF1 in percent (None where undefined: no positives at all)."""
    predicted = scores >= threshold
    if top_k is not None and top_k < scores.shape[1]:
        best = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        in_top = np.zeros_like(predicted)
        np.put_along_axis(in_top, best, True, axis=1)
        predicted &= in_top
    correct = (predicted & positives).sum(0)
    n_predicted, n_true = predicted.sum(0), positives.sum(0)
    has = n_true > 0
    if not has.any():
        return dict.fromkeys(("CP", "CR", "CF1", "OP", "OR", "OF1"))
    cp = float(np.mean(correct[has] / np.maximum(n_predicted[has], 1)))
    cr = float(np.mean(correct[has] / n_true[has]))
    op = float(correct.sum() / np.maximum(n_predicted, 1).sum())  # ML-GCN counts 1 per never-predicted class
    orr = float(correct.sum() / n_true.sum())

    def f1(p: float, r: float) -> float:
        return 2 * p * r / (p + r) if p + r else 0.0

    return {"CP": 100 * cp, "CR": 100 * cr, "CF1": 100 * f1(cp, cr),
            "OP": 100 * op, "OR": 100 * orr, "OF1": 100 * f1(op, orr)}


def asl_f1_family(scores: np.ndarray, positives: np.ndarray, threshold: float) -> dict:
    """CP, CR, CF1, OP, OR, OF1 in percent as ASL's validate.py prints them (P_C ... F_O).

    Predicted positive when score > threshold, compared in the scores' own dtype (torch's `gt`
    with a Python number: 0.8 is float32(0.8) for float32 scores). Per class, P and R are 0 when
    the class has no true positive; CP, CR and CF1 (the mean of the per-class F1) are over all
    classes, summed in order as their Python lists; OP, OR, OF1 pooled, in float32 as their
    tensors. None where they divide 0 by 0 (nothing predicted, or no positive at all)."""
    predicted = scores > scores.dtype.type(threshold)
    tp = (predicted & positives).sum(0)
    fp = (predicted & ~positives).sum(0)
    fn = (~predicted & positives).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_c = [float(np.float32(t) / np.float32(t + f)) * 100.0 if t > 0 else 0.0 for t, f in zip(tp, fp)]
        r_c = [float(np.float32(t) / np.float32(t + f)) * 100.0 if t > 0 else 0.0 for t, f in zip(tp, fn)]
        f_c = [2 * p * r / (p + r) if t > 0 else 0.0 for p, r, t in zip(p_c, r_c, tp)]
        p_o = np.float32(tp.sum()) / np.float32((tp + fp).sum()) * np.float32(100.0)
        r_o = np.float32(tp.sum()) / np.float32((tp + fn).sum()) * np.float32(100.0)
        f_o = np.float32(2) * p_o * r_o / (p_o + r_o)
    n = len(tp)

    def plain(v: np.float32) -> float | None:
        return None if np.isnan(v) else float(v)

    return {"CP": sum(p_c) / n, "CR": sum(r_c) / n, "CF1": sum(f_c) / n,
            "OP": plain(p_o), "OR": plain(r_o), "OF1": plain(f_o)}


# ---------------------------------------------------------------- bootstrap

MAX_DRAWS = 10**9  # resamples (or permutations) x images: 2 GiB of counts and minutes of work at most
MAX_REPEATS = 10**6  # resamples or permutations, whatever the image count (each has its own overhead)


def check_repeats(flag: str, n: int, n_images: int) -> None:
    """One line, before any work, when `n` resamples or permutations of `n_images` images (the
    value of `flag`) cost more than the harness does in one go: the figure and the limit."""
    if n > MAX_REPEATS or n * n_images > MAX_DRAWS:
        most = min(MAX_REPEATS, MAX_DRAWS // max(n_images, 1))
        raise UserError(f"{flag} {n:,} on {n_images:,} images is {n * n_images:.3g} image draws, past the limit of "
                        f"{MAX_DRAWS:.0e} draws and {MAX_REPEATS:,} repeats: pass {flag} {most:,} or less")


def resample_counts(n_images: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """resamples x images array: how often each image is drawn (each row sums to n_images)."""
    rng = np.random.default_rng(seed)
    counts = np.empty((n_boot, n_images), dtype=np.uint16)
    for b in range(n_boot):
        counts[b] = np.bincount(rng.integers(0, n_images, n_images), minlength=n_images)
    return counts.astype(np.uint8) if counts.max() <= 255 else counts


GATHER_BELOW = 16_000  # terms (images x packs) below which the sparse product's set-up costs more than the sums


class _Packed:
    """Several resamples' counts in one float64 (lanes of `bits` bits, exact while every sum stays
    below 2**52), so one sparse product sums them all: the bootstrap's main cost."""

    def __init__(self, counts: np.ndarray) -> None:
        n_boot, n_images = counts.shape
        self.bits = max(int(n_images).bit_length(), 1)  # a lane holds any count sum <= n_images
        self.lanes = max(52 // self.bits, 1)
        self.n_boot = n_boot
        n_packs = -(-n_boot // self.lanes)
        self.values = np.zeros((n_images, n_packs))  # images x packs
        for k in range(self.lanes):
            part = counts[k::self.lanes].T
            self.values[:, :part.shape[1]] += part * float(2 ** (self.bits * k))
        self.columns = np.ascontiguousarray(self.values.T)  # packs x images, for small sums
        self.shifts = np.tile(self.bits * np.arange(self.lanes, dtype=np.int64), n_packs)[:, None]  # unpack's

    def unit_sums(self, images: np.ndarray, per_unit: np.ndarray) -> np.ndarray:
        """packs x units: packed counts summed per unit; `images` lists the images of unit 0,
        then unit 1, ..., `per_unit` how many each (a sparse product, no sort needed). Each sum
        is an integer below 2**52, exact in any order: few terms are summed by a gather and
        reduceat instead, the same bits without the sparse matrix's set-up (3x faster there)."""
        if len(images) * len(self.columns) < GATHER_BELOW:
            sums = np.zeros((len(self.columns), len(per_unit)))
            some = per_unit > 0  # reduceat has no empty sum
            if some.any():
                sums[:, some] = np.add.reduceat(self.columns[:, images], (np.cumsum(per_unit) - per_unit)[some], axis=1)
            return sums
        indptr = np.concatenate(([0], np.cumsum(per_unit)))
        select = scipy.sparse.csr_matrix((np.ones(len(images)), images, indptr),
                                         shape=(len(per_unit), len(self.values)))
        return np.ascontiguousarray((select @ self.values).T)

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """packs x units packed sums -> resamples x units integer sums."""
        ints = np.repeat(packed.astype(np.int64), self.lanes, axis=0)  # each pack once a lane: resamples x units
        np.right_shift(ints, self.shifts, out=ints)  # every lane in one step, not one step a lane
        np.bitwise_and(ints, (1 << self.bits) - 1, out=ints)
        return ints[:self.n_boot]


def _harmonic(n: int) -> np.ndarray:
    return np.concatenate(([0.0], np.cumsum(1.0 / np.arange(1, n + 1))))


def bootstrap_class_ap(order: np.ndarray, sorted_scores: np.ndarray, y: np.ndarray, counts: np.ndarray, protocol: str,
                       packed: _Packed | None = None, harmonic: np.ndarray | None = None) -> np.ndarray:
    """AP (fractions) of one class on each resample; counts is resamples x images.

    Copies of a drawn image sit together in the class's sorted order. Units: each positive
    (q2l, asl) or each run of tied scores holding a positive (mlspl). With E = images drawn up to
    a unit's end, P = positives drawn in it and T = positives up to its end, a unit adds
    P * T/E (mlspl), P * max(T/E over this and later units) (q2l), or, for its P copies in a row,
    sum_{m=1..P} (T-P+m)/(E-P+m) = P - (E-T)(H(E) - H(E-P)) (asl); then / npos.
    """
    n_boot = counts.shape[0]
    rows = np.flatnonzero(y)
    if len(rows) == 0:
        return np.full(n_boot, np.nan if protocol == "q2l" else 0.0)
    if protocol == "mlspl":
        ends = _group_ends(sorted_scores)
        unit_ends = ends[np.unique(np.searchsorted(ends, rows, side="right"))]
    else:
        unit_ends = rows + 1
    n_units = len(unit_ends)
    packed = _Packed(counts) if packed is None else packed
    drawn = packed.unit_sums(order[:unit_ends[-1]], np.diff(unit_ends, prepend=0))
    drawn_pos = packed.unit_sums(order[rows], np.bincount(np.searchsorted(unit_ends, rows, side="right"),
                                                          minlength=n_units))
    seen = packed.unpack(np.cumsum(drawn, axis=1))  # resamples x units
    positives = packed.unpack(drawn_pos)
    pos_seen = packed.unpack(np.cumsum(drawn_pos, axis=1))
    npos = pos_seen[:, -1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if protocol == "asl":
            harmonic = _harmonic(counts.shape[1]) if harmonic is None else harmonic
            gain = positives - (seen - pos_seen) * (harmonic[seen] - harmonic[seen - positives])
            return gain.sum(1) / (npos + ASL_EPS)
        # at a unit with no copy drawn T/E never exceeds the last drawn unit's: no mask needed
        precision = pos_seen / np.maximum(seen, 1)
        if protocol == "q2l":  # the envelope: running max from the last unit back
            precision = np.maximum.accumulate(precision[:, ::-1].copy(), axis=1)[:, ::-1]
            return np.where(npos > 0, np.einsum("ij,ij->i", positives, precision) / np.maximum(npos, 1), np.nan)
        return np.einsum("ij,ij->i", positives, precision) / np.maximum(npos, 1)


def bootstrap_map(orders: list, counts: np.ndarray, protocol: str, chunk: int | None = None,
                  on_chunk: Callable[[int], None] | None = None) -> np.ndarray:
    """mAP (percent) of each resample (rows of counts); orders as returned by per_class_ap.
    Resamples are scored `chunk` at a time (each on its own: the chunking moves no bit); by default
    as many as keep a chunk near 200,000 image counts (63 at COCO's 40,504), few chunks on a small set.
    on_chunk(k): called after each chunk with its k resamples (a progress bar)."""
    n_boot, n_images = counts.shape
    chunk = chunk or max(63, 200_000 // max(n_images, 1))
    harmonic = _harmonic(n_images) if protocol == "asl" else None
    maps = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        part = counts[start:start + chunk]
        packed = _Packed(part)
        aps = np.stack([bootstrap_class_ap(o, s, y, part, protocol, packed, harmonic) for o, s, y in orders])
        if protocol == "q2l":  # mean over the classes with a positive in that resample
            none = np.isnan(aps).all(0)
            with np.errstate(invalid="ignore"):
                maps[start:start + chunk] = np.where(none, np.nan, 100 * np.nanmean(np.where(none, 0, aps), axis=0))
        else:
            maps[start:start + chunk] = 100 * aps.mean(0)
        if on_chunk:
            on_chunk(len(part))
    return maps


# ---------------------------------------------------------------- everything

def _plain(values: Any) -> Any:
    """A list of floats with None for NaN (JSON has no NaN)."""
    return [None if np.isnan(v) else float(v) for v in values]


OUTSIDE_CI_NOTE = ("mAP lies outside its bootstrap interval: too few positives per class for the bootstrap "
                   "to be trusted on this image set")


def outside_ci(value: float | None, ci: list | None, tolerance: float = 1e-9) -> bool:
    """True when `value` lies outside the interval `ci` by more than float rounding."""
    if value is None or not ci or None in ci:
        return False
    return value < ci[0] - tolerance or value > ci[1] + tolerance


@dataclass(frozen=True)
class Bootstrap:
    """The mAP confidence interval's bootstrap: this many resamples of the images, this seed."""
    n_resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:  # the flags that set them: --n-boot, --seed
        if self.n_resamples < 1:
            raise UserError(f"--n-boot must be at least 1 (got {self.n_resamples}); pass --no-ci for no interval")
        if self.seed < 0:
            raise UserError(f"--seed must be 0 or more (got {self.seed}): numpy draws from non-negative seeds")


def compute_metrics(scores: ArrayLike, labels: ArrayLike, protocol: str, *, ci: "Bootstrap | bool" = True,
                    class_names: list | None = None, f1: str = "ml-gcn", threshold: float = THRESHOLD,
                    per_class: tuple | None = None) -> dict:
    """Every metric of one run as a JSON-serialisable dict (percentages). `ci`: a Bootstrap, True
    (the default one) or False (no interval); `f1` and `threshold` pick the F1 family's definition
    (F1_RULES) and threshold. C-Tran's protocol, with its known-label mask, is harness/ctran/metrics.py.
    per_class: per_class_ap's result for these scores and labels, where the caller has it already
    (harness verify recomputes the point mAP first): the same numbers, one sort of every class less."""
    ci = Bootstrap() if ci is True else ci
    _check_protocol(protocol)
    if f1 not in F1_RULES:
        raise UserError(f"unknown F1 definition '{f1}'; use one of {', '.join(F1_RULES)}")
    if not 0 < threshold < 1:
        raise UserError(f"threshold {threshold} is not between 0 and 1; pass a probability such as 0.5")
    scores, positives = check_inputs(scores, labels)
    n_images, n_classes = scores.shape
    if ci:
        check_repeats("--n-boot", ci.n_resamples, n_images)
    if class_names is not None and len(class_names) != n_classes:
        raise UserError(f"{len(class_names)} class names for {n_classes} classes; pass one name per column")
    names = list(class_names) if class_names is not None else list(range(n_classes))

    ap, ap_tie_free, tied, mixed, orders = per_class or per_class_ap(scores, positives, protocol)
    n_true = positives.sum(0)
    missing = [names[c] for c in np.flatnonzero(n_true == 0)]
    notes = []
    if missing:
        rule = {"q2l": "their code gives NaN; their AP is null here and mAP is over the other classes",
                "asl": "their code gives AP 0, counted in mAP", "mlspl": "their code gives AP 0, counted in mAP"}
        notes.append(f"{len(missing)} classes have no positives ({', '.join(map(str, missing[:10]))}"
                     f"{', ...' if len(missing) > 10 else ''}): {rule[protocol]}")
    if scores.min() < 0 or scores.max() > 1:
        notes.append("scores outside [0, 1]: the 0.5 threshold of the F1 family assumes sigmoid probabilities")
    if int(mixed.sum()):
        notes.append(f"{int(mixed.sum())} tied scores mix positives and negatives: compare mAP with "
                     f"ties.mAP_tie_free")

    result = {
        "protocol": protocol,
        "protocol_description": PROTOCOL_DESCRIPTIONS[protocol],
        "mAP": mean_ap(ap, protocol),
        "mAP_ci95": None,
        "bootstrap": None,
        "mAP_classes": int(n_classes - (len(missing) if protocol == "q2l" else 0)),
        "per_class_ap": _plain(ap * 100),
        "class_names": list(class_names) if class_names is not None else None,
        "classes_without_positives": missing,
        "n_images": int(n_images),
        "n_classes": int(n_classes),
        "n_positives": int(n_true.sum()),
        "threshold": threshold,
        "f1_rule": f1,
        "f1_definition": F1_RULES[f1],
        **(f1_family(scores, positives, threshold) if f1 == "ml-gcn" else asl_f1_family(scores, positives, threshold)),
        "top3": {**f1_family(scores, positives, top_k=TOP_K), "rule": TOP3_RULE},
        "ties": {
            "mAP_tie_free": mean_ap(ap_tie_free, protocol),
            "per_class_ap_tie_free": _plain(ap_tie_free * 100),
            "max_class_ap_difference": float(np.nanmax(np.abs(ap - ap_tie_free)) * 100)
            if not np.isnan(ap).all() else None,
            "tied_scores_per_class": tied.tolist(),
            "mixed_tied_scores_per_class": mixed.tolist(),
            "tied_scores_total": int(tied.sum()),
            "classes_with_mixed_ties": int((mixed > 0).sum()),
            "sort": {"q2l": "np.argsort(-s), float64", "asl": "s.argsort()[::-1], scores' dtype",
                     "mlspl": "ties form one step"}[protocol],
        },
        "notes": notes,
    }
    if protocol == "asl" and f1 != "asl":  # the table's F1 is ML-GCN's; ASL's validate.py printed its own
        result["f1_asl_validate"] = {**asl_f1_family(scores, positives, ASL_VALIDATE_THRESHOLD),
                                     "threshold": ASL_VALIDATE_THRESHOLD, "definition": F1_RULES["asl"]}
    if ci:
        maps = bootstrap_map(orders, resample_counts(n_images, ci.n_resamples, ci.seed), protocol)
        maps = maps[~np.isnan(maps)]
        if len(maps):
            low, high = np.percentile(maps, [2.5, 97.5])
            result["mAP_ci95"] = [float(low), float(high)]
            if outside_ci(result["mAP"], result["mAP_ci95"]):  # small sets: rare classes vanish from resamples
                notes.append(OUTSIDE_CI_NOTE)
        result["bootstrap"] = {"n_resamples": int(ci.n_resamples), "seed": int(ci.seed), "std": float(np.std(maps)) if len(maps)
                               else None, "method": "percentile; images resampled with replacement, same protocol"}
    return result
