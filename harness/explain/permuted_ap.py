"""Per-class AP of two runs under paired permutations, from one sorted order per class.

A paired permutation (harness.explain.compare) gives run A' each image's score from A or from B, and B'
the other. Sort each class's 2n scores of A and B once: A' is then a filter of that order (per
image its entry of A when the image is not swapped, else its entry of B) and B' the rest. Every
image sits once in A', so the k-th positive of A' has rank k plus the negatives of A' above it.
Those are counted for many permutations at once: the swap flags of 8 permutations are the 8 bytes
of one uint64, and two sparse products sum them over runs of negatives (at most 255 entries a run,
so no byte overflows): a run's negatives in A' are its entries of A, less those swapped, plus its
entries of B swapped.

`bounds` gives, per permutation, side (A', B') and class, a low and a high value between which
lies the AP that harness.metrics computes by sorting that permuted column (`exact` computes it).
From the ranks, the terms are harness.metrics' own arithmetic on the same numbers:
  q2l    precision k / rank at each positive, its envelope (the running maximum from the last
         positive: between positives precision only falls), times the recall step, summed over
         the positives in order by np.sum, as ap_sorted: low == high, the same bits;
  asl    k / rank at each positive, summed, / (npos + 1e-8);
  mlspl  ap_grouped's term at each positive, (recall before - recall after) x precision, with the
         precision at the end of its step (its run of equal scores); max(0, -sum).
asl and mlspl add their terms in another order (harness.metrics sums an n-long vector, zero
elsewhere, and mlspl one term per step): any order of adding N terms of one sign errs by less
than N 2**-53 of their sum, and each term by 2 2**-53, so low and high are widened by (4n + 16) 2**-53.
Ties. mlspl: a step is its run of equal scores in A', as in its sort. q2l and asl order tied scores
as numpy's unstable argsort leaves them, which no merged order can replay; ties within one label
cannot move their AP (the labels read in rank order are the same). Where A' holds a positive and a
negative of one score, each positive's rank lies between its rank with the tied positives first
(high) and with them last (low), and every step of the arithmetic above is monotone (for asl up to
the widening), so the AP lies between those two.
"""
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from harness import metrics

LANE_BITS = 8
LANES = 64 // LANE_BITS          # permutations per uint64
MAX_RUN = 2 ** LANE_BITS - 1     # negatives summed in one byte
UNIT = 2.0 ** -53                # float64 rounding unit
AT_ONCE = 64                     # permutations per pass over a class's entries (their arrays stay in cache)


@dataclass
class _Class:
    """One class's merged order (2n entries), reduced to what the permutations need."""
    npos: int
    runs_of_a: scipy.sparse.csr_matrix  # runs of negatives x n images: A's entries in each run
    runs_of_b: scipy.sparse.csr_matrix  #   B's
    run_a_sizes: np.ndarray        # A's entries in each run
    run_ends: np.ndarray           # entries up to each run's end, from 0
    pos_image: np.ndarray          # per positive entry, in merged order: its image
    pos_is_a: np.ndarray           #   from A (else from B)
    runs_before: np.ndarray        #   runs of negatives wholly above it
    negatives_before: np.ndarray   #   negative entries (A's and B's) above it
    spans: tuple                   # per group (below): first, end positive entry; first, end run
    group_of_pos: np.ndarray       # per positive entry: its group, or -1


def _layout(values, is_a, image, y, n, protocol):
    """The _Class of one class: values, is_a, image of the 2n entries, y per image. Its groups, runs
    of equal scores: q2l, asl, those holding both labels; mlspl, those of >= 2 entries holding a positive."""
    label = y[image]
    first = np.argsort(~label, kind="stable")
    order = first[np.argsort(-values[first], kind="stable")]  # high to low; within equal scores positives first
    values, is_a, image, label = values[order], is_a[order], image[order], label[order]
    group = np.concatenate(([0], np.cumsum(values[1:] != values[:-1])))
    size = np.bincount(group)
    positives_in = np.bincount(group, weights=label).astype(np.int64)
    if protocol == "mlspl":
        special = (positives_in > 0) & (size >= 2)  # a step of several entries holding a positive
    else:
        special = (positives_in > 0) & (positives_in < size)  # a tie of both labels
    positive, negative = np.flatnonzero(label), np.flatnonzero(~label)
    # runs of negatives: cut where a positive lies between, around a group, every MAX_RUN entries
    cut = np.ones(len(negative), bool)
    if len(negative):
        g = group[negative]
        cut[1:] = (np.diff(negative) > 1) | ((g[1:] != g[:-1]) & (special[g[1:]] | special[g[:-1]]))
        run_start = np.flatnonzero(cut)
        cut |= (np.arange(len(negative)) - run_start[np.cumsum(cut) - 1]) % MAX_RUN == 0
    starts = np.flatnonzero(cut)
    run_ends = np.append(starts, len(negative))
    run_of = np.cumsum(cut) - 1
    from_a = is_a[negative]

    def runs_of(which):  # runs x images, 1 where the run holds that image's entry of A (or B)
        runs = scipy.sparse.csr_matrix((np.ones(which.sum(), np.uint64), (run_of[which], image[negative][which])),
                                       shape=(len(starts), n))
        runs.sort_indices()  # rising rows read the swap flags more in order
        return runs
    first_entry = negative[starts]
    run_group, pos_group = group[first_entry], group[positive]
    groups = np.flatnonzero(special)
    spans = (np.searchsorted(pos_group, groups), np.searchsorted(pos_group, groups, side="right"),
             np.searchsorted(run_group, groups), np.searchsorted(run_group, groups, side="right"))
    group_of_pos = np.where(special[pos_group], np.searchsorted(groups, pos_group), -1)
    return _Class(npos=int(y.sum()), runs_of_a=runs_of(from_a), runs_of_b=runs_of(~from_a),
                  run_a_sizes=np.bincount(run_of[from_a], minlength=len(starts)).astype(np.int16),
                  run_ends=run_ends, pos_image=image[positive], pos_is_a=is_a[positive],
                  runs_before=np.searchsorted(first_entry, positive),
                  negatives_before=(positive - np.arange(len(positive))).astype(np.int32),
                  spans=spans, group_of_pos=group_of_pos)


def _swapped(swaps):
    """P x n swap flags -> n x P' uint8 (P' = P rounded up to a multiple of 8). Viewed as uint64, 8
    permutations a word, one a byte: a sum of <= 255 rows never carries into the next byte, in
    either byte order."""
    n_perm, n = swaps.shape
    flags = np.zeros((n, -(-n_perm // LANES) * LANES), np.uint8)
    flags[:, :n_perm] = swaps.T
    return flags


def _running(counts):
    """P x m counts -> P x (m + 1) running sums from 0 (int32)."""
    out = np.zeros((len(counts), counts.shape[1] + 1), np.int32)
    np.cumsum(counts, axis=1, dtype=np.int32, out=out[:, 1:])
    return out


class PermutedAP:
    """Per-class AP of A' and B' for batches of paired permutations (rows of swap flags)."""

    def __init__(self, scores_a, scores_b, positives, protocol):
        metrics._check_protocol(protocol)
        self.scores_a, self.scores_b, self.positives, self.protocol = scores_a, scores_b, positives, protocol
        self.n = n = len(positives)
        self.margin = (4 * n + 16) * UNIT if protocol != "q2l" else 0.0
        image = np.concatenate((np.arange(n), np.arange(n)))
        is_a = np.arange(2 * n) < n
        self.classes = [_layout(np.concatenate((scores_a[:, c], scores_b[:, c])).astype(np.float64), is_a, image,
                                positives[:, c], n, protocol) for c in range(positives.shape[1])]

    def bounds(self, swaps):
        """(low, high), each 2 x permutations x classes, bounding the AP of A' (row 0) and B'
        (row 1) for swap flags permutations x images (see the module's docstring)."""
        n_perm = len(swaps)
        swapped = _swapped(swaps)
        words = swapped.view(np.uint64)
        low, high = np.empty((2, 2, n_perm, len(self.classes)))
        for c, layout in enumerate(self.classes):
            if layout.npos == 0:
                low[:, :, c] = high[:, :, c] = np.nan if self.protocol == "q2l" else 0.0
                continue
            # A' holds a run's entries of A not swapped and of B swapped: sizes - swapped A + swapped B
            swapped_a = (layout.runs_of_a @ words).view(np.uint8)       # runs x permutations
            swapped_b = (layout.runs_of_b @ words).view(np.uint8)
            positives = np.take(swapped, layout.pos_image, axis=0) ^ layout.pos_is_a[:, None]  # 1: in A'
            for start in range(0, n_perm, AT_ONCE):
                part = slice(start, min(start + AT_ONCE, n_perm))
                counts = layout.run_a_sizes - swapped_a[:, part].T + swapped_b[:, part].T
                negatives = _running(counts)                              # A's negatives, running
                chosen = np.ascontiguousarray(positives[:, part].T)
                low[:, part, c], high[:, part, c] = self._ranked(layout, chosen, _running(chosen), negatives)
        return low, high

    def exact(self, swap, c, side):
        """AP of class c of A' (side 0) or B' (side 1) for one permutation, by sorting its column."""
        a, b = self.scores_a[:, c], self.scores_b[:, c]
        column = np.where(swap, b, a) if side == 0 else np.where(swap, a, b)
        return metrics.class_ap(column, self.positives[:, c], self.protocol)

    def _widen(self, low, high):
        return low * (1 - self.margin), high * (1 + self.margin)

    def _ranked(self, layout, chosen, positives_a, negatives):
        """(low, high), each sides x permutations, from the rank of each side's k-th positive."""
        npos, (n_perm, m) = layout.npos, chosen.shape
        in_a = chosen.view(np.int8)
        # in place and without np.where: these arrays are the bulk of the work
        k_a = positives_a[:, 1:]                                   # k of each entry in A'
        rank_a = np.take(negatives, layout.runs_before, axis=1)
        rank_a += k_a                                              # rank of each entry in A'
        index = np.arange(1, m + 1, dtype=np.int32)
        total = index + layout.negatives_before                    # its rank in A' + its rank in B'
        rank = total - rank_a                                      # rank in B' ...
        rank_a *= 2
        rank_a -= total
        rank_a *= in_a
        rank += rank_a                                             # ... or in A': rank in the entry's side
        wide = np.int64 if 2 * npos * n_perm >= 2 ** 31 else np.int32
        slot = (npos - 1 + index) + (2 * npos * np.arange(n_perm, dtype=wide))[:, None]
        slot -= k_a                                                # B': side 1, k = index - k_a ...
        k_a = k_a * 2
        k_a -= npos + index
        k_a *= in_a
        slot += k_a                                                # ... or A': side 0, k = k_a
        ranks = np.empty((n_perm, 2, npos), np.int32)
        ranks.ravel()[slot.ravel()] = rank.ravel()
        precision = np.arange(1, npos + 1) / ranks
        first, end, run_first, run_end = layout.spans
        entries = np.flatnonzero(layout.group_of_pos >= 0)         # positive entries in a group (below)
        g = layout.group_of_pos[entries]
        if self.protocol == "mlspl":
            if len(first):  # a tied step: each of its positives gets the precision at the step's end
                tp_a = positives_a[:, end]
                seen_a = tp_a + negatives[:, run_end]
                tp_b = end - tp_a
                seen_b = tp_b + (layout.run_ends[run_end] - negatives[:, run_end])
                with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 where a side has none of it
                    at_end = np.where(chosen[:, entries], (tp_a / seen_a)[:, g], (tp_b / seen_b)[:, g])
                precision.ravel()[slot[:, entries].ravel()] = at_end.ravel()
            ap = self._ap(precision)
            return self._widen(ap, ap)
        high = self._ap(precision)
        low = high.copy()
        if len(first):  # ties of both labels: their negatives first gives the low bound
            pos_a = positives_a[:, end] - positives_a[:, first]
            neg_a = negatives[:, run_end] - negatives[:, run_first]
            pos_b, neg_b = (end - first) - pos_a, (layout.run_ends[run_end] - layout.run_ends[run_first]) - neg_a
            tied = (((pos_a > 0) & (neg_a > 0)).any(1), ((pos_b > 0) & (neg_b > 0)).any(1))
            behind = np.where(chosen[:, entries], neg_a[:, g], neg_b[:, g])  # negatives tied with that positive
            ranks.ravel()[slot[:, entries].ravel()] += behind.ravel()
            for side in (0, 1):
                rows = np.flatnonzero(tied[side])
                if len(rows):
                    low[side, rows] = self._ap(np.arange(1, npos + 1) / ranks[rows][:, side:side + 1])[0]
        return self._widen(low, high)

    def _ap(self, precision):
        """permutations x sides x k precision at the k-th positive -> sides x permutations AP."""
        npos = precision.shape[2]
        tp = np.arange(1, npos + 1, dtype=np.float64)
        if self.protocol == "asl":
            return (precision.sum(axis=2) / (npos + metrics.ASL_EPS)).T
        if self.protocol == "mlspl":  # ap_grouped's terms: (recall before - recall after) x precision
            recall = np.arange(npos + 1) / float(npos)
            total = ((recall[:-1] - recall[1:]) * precision).sum(axis=2).T
            return np.where(-total > 0.0, -total, 0.0)  # max(0.0, -sum), as ap_grouped
        envelope = np.maximum.accumulate(precision[:, :, ::-1], axis=2)[:, :, ::-1]
        step = tp / npos - (tp - 1) / npos  # np.diff of the recall, at each positive
        return (step * envelope).sum(axis=2).T  # np.sum of each row of npos terms, in order: ap_sorted's bits
