"""compare's statistics from one sorted order per class (harness.explain.permuted_ap) against the former
code, kept here verbatim: it scored every permutation by sorting every permuted column. The
p-value, CI and difference must be the same bits, for every protocol, with ties of both labels,
classes without positives, tiny and moderate inputs, and any permutation count and seed."""
import numpy as np
import pytest
from test_compare import make_run

from harness import metrics
from harness.cli import main
from harness.errors import UserError
from harness.explain import compare
from harness.explain.compare import load_run
from harness.explain.permuted_ap import PermutedAP

PROTOCOLS = metrics.PROTOCOLS


# ---------------------------------------------------------------- the former code (harness/explain/compare.py before)

def former_class_aps(scores, positives, protocol):
    columns = metrics._class_columns(scores, protocol)
    labels = np.ascontiguousarray(positives.T)
    ap = np.empty(columns.shape[0])
    for c, column in enumerate(columns):
        order = metrics.sort_order(column, protocol)
        y = labels[c][order]
        ap[c] = metrics.ap_grouped(column[order], y, protocol) if protocol == "mlspl" else \
            metrics.ap_sorted(y, protocol)
    return ap


def former_mean_ap(scores, positives, protocol):
    return metrics.mean_ap(former_class_aps(scores, positives, protocol), protocol)


def former_statistics(scores_a, scores_b, positives, protocol, n_boot, n_perm, seed):
    """(difference, ci95, p) as paired_bootstrap and permutation_p computed them."""
    counts = metrics.resample_counts(len(positives), n_boot, seed)
    maps = [metrics.bootstrap_map(metrics.per_class_ap(s, positives, protocol)[4], counts, protocol)
            for s in (scores_a, scores_b)]
    diffs = maps[0] - maps[1]
    diffs = diffs[~np.isnan(diffs)]
    ci = [float(v) for v in np.percentile(diffs, [2.5, 97.5])] if len(diffs) else None
    observed = former_mean_ap(scores_a, positives, protocol) - former_mean_ap(scores_b, positives, protocol)
    rng = np.random.default_rng(seed)
    extreme = 0
    for _ in range(n_perm):
        swap = rng.integers(0, 2, len(positives)).astype(bool)[:, None]
        d = (former_mean_ap(np.where(swap, scores_b, scores_a), positives, protocol)
             - former_mean_ap(np.where(swap, scores_a, scores_b), positives, protocol))
        extreme += abs(d) >= abs(observed) - 1e-9
    return observed, ci, (1 + extreme) / (1 + n_perm)


# ---------------------------------------------------------------- data

def scores_pair(n, classes, kind, seed=0):
    """(A, B, positives): `untied` float32 sigmoids; `tied`: a few score levels shared by both labels
    (ties of both labels in every class); `close`: B = A plus little noise, so p is neither 0 nor 1.
    The first image is a positive of the first class; the last class has no positive."""
    rng = np.random.default_rng(seed)
    positives = rng.random((n, classes)) < 0.3
    positives[0, 0], positives[:, -1] = True, False
    if kind == "tied":
        a, b = (np.round((0.4 * positives + rng.random((n, classes))) * 4) / 4 for _ in range(2))
    else:
        logit = rng.normal(0, 1, (n, classes)) + 1.5 * positives
        other = logit + rng.normal(0, 0.3 if kind == "close" else 1.0, logit.shape)
        a, b = (1 / (1 + np.exp(-x)) for x in (logit, other))
    return a.astype(np.float32), b.astype(np.float32), positives


def bits(x):
    return np.asarray(x, dtype=np.float64).view(np.int64)


# ---------------------------------------------------------------- the statistics, bit for bit

CASES = [(1, 2, "untied"), (2, 3, "tied"), (3, 3, "untied"), (5, 4, "tied"), (40, 5, "untied"), (40, 5, "tied"),
         (400, 6, "untied"), (400, 6, "tied"), (300, 4, "close")]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("n, classes, kind", CASES)
def test_statistics_equal_the_former_code(protocol, n, classes, kind):
    a, b, positives = scores_pair(n, classes, kind, seed=n + classes)
    n_perm = 150 if n < 100 else 40  # > compare.PERMUTATIONS_AT_ONCE on the small ones
    got = compare.paired_statistics(a, b, positives, protocol, n_boot=30, n_perm=n_perm, seed=3)
    difference, ci, p = former_statistics(a, b, positives, protocol, 30, n_perm, 3)
    assert bits(got["difference"]) == bits(difference) and got["p_value"] == p
    assert (got["ci95"] is None and ci is None) or bits(got["ci95"]).tolist() == bits(ci).tolist()
    assert got["aps"][0].tobytes() == former_class_aps(a, positives, protocol).tobytes()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("n_perm, seed", [(1, 0), (37, 5), (129, 11), (300, 2)])
def test_permutation_count_and_seed_are_those_of_the_former_code(protocol, n_perm, seed):
    """p is neither 0 nor 1 here, so another count, seed or order of draws gives another p."""
    a, b, positives = scores_pair(60, 4, "close", seed=3)
    got = compare.paired_statistics(a, b, positives, protocol, n_boot=5, n_perm=n_perm, seed=seed)
    assert got["p_value"] == former_statistics(a, b, positives, protocol, 5, n_perm, seed)[2]
    if n_perm == 300:
        assert 0.05 < got["p_value"] < 0.95
        other = compare.paired_statistics(a, b, positives, protocol, n_boot=5, n_perm=n_perm, seed=seed + 1)
        assert other["p_value"] != got["p_value"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_permutations_the_bounds_cannot_decide_are_sorted(protocol, monkeypatch):
    """With every bound made useless, each permutation is decided by sorting columns: same p."""
    a, b, positives = scores_pair(40, 4, "tied", seed=2)
    sorted_columns = []
    exact = PermutedAP.exact
    monkeypatch.setattr(PermutedAP, "_widen", lambda self, low, high: (low - 1.0, high + 1.0))
    monkeypatch.setattr(PermutedAP, "exact", lambda self, *args: sorted_columns.append(args) or exact(self, *args))
    got = compare.paired_statistics(a, b, positives, protocol, n_boot=5, n_perm=30, seed=4)
    assert got["p_value"] == former_statistics(a, b, positives, protocol, 5, 30, 4)[2]
    assert len(sorted_columns) >= 30


# ---------------------------------------------------------------- each class's AP on each side

@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", ["untied", "tied"])
def test_bounds_hold_the_ap_of_each_sorted_permuted_column(protocol, kind):
    """low <= AP <= high for A' and B' of each class, AP as harness.metrics sorts the column;
    q2l: low == high, those bits, unless the column holds a positive and a negative of one score;
    asl, mlspl: within (4n + 16) 2**-53 of it."""
    a, b, positives = scores_pair(200, 5, kind, seed=7)
    rng = np.random.default_rng(0)
    swaps = rng.random((70, len(positives))) < 0.5
    low, high = PermutedAP(a, b, positives, protocol).bounds(swaps)
    for p, swap in enumerate(swaps):
        for side, (x, y) in enumerate(((b, a), (a, b))):
            column_scores = np.where(swap[:, None], x, y)
            ap = former_class_aps(column_scores, positives, protocol)
            for c in range(positives.shape[1]):
                lo, hi, exact = low[side, p, c], high[side, p, c], ap[c]
                if np.isnan(exact):
                    assert np.isnan(lo) and np.isnan(hi)
                    continue
                assert lo <= exact <= hi
                column, y_c = column_scores[:, c], positives[:, c]
                mixed = np.intersect1d(column[y_c], column[~y_c]).size > 0
                if protocol == "q2l" and not mixed:
                    assert bits(lo) == bits(exact) == bits(hi)
                elif protocol != "q2l":
                    assert hi - lo <= 4 * (4 * len(positives) + 16) * 2.0 ** -53 * exact or mixed


def test_bounds_are_exact_bits_for_q2l_without_ties():
    a, b, positives = scores_pair(300, 5, "untied", seed=9)
    swaps = np.random.default_rng(1).random((20, 300)) < 0.5
    low, high = PermutedAP(a, b, positives, "q2l").bounds(swaps)
    assert low.tobytes() == high.tobytes()
    former = np.stack([np.stack([former_class_aps(np.where(s[:, None], x, y), positives, "q2l") for s in swaps])
                       for x, y in ((b, a), (a, b))])
    assert low.tobytes() == former.tobytes()


# ---------------------------------------------------------------- the command

def test_compare_shows_progress_bars_unless_no_progress(tmp_path, capsys):
    a, b, positives = scores_pair(50, 4, "untied")
    run_a = make_run(tmp_path, "a", a, positives.astype(np.uint8))
    run_b = make_run(tmp_path, "b", b, positives.astype(np.uint8))
    assert main(["compare", str(run_a), str(run_b), "--n-boot", "20", "--n-perm", "10"]) == 0
    err = capsys.readouterr().err
    assert "paired bootstrap, 50 images" in err and "permutation test, 50 images" in err
    assert main(["compare", str(run_a), str(run_b), "--n-boot", "20", "--n-perm", "10", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "verdict:" in captured.out


def test_q2l_without_any_positive_is_one_line(tmp_path):
    a, b, positives = scores_pair(20, 3, "untied")
    none = np.zeros_like(positives, dtype=np.uint8)
    run_a, run_b = (load_run(make_run(tmp_path, name, s, none)) for name, s in (("a", a), ("b", b)))
    with pytest.raises(UserError, match="no class has a positive"):
        compare.compare_runs(run_a, run_b, n_boot=5, n_perm=5)
