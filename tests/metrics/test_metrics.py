"""harness.metrics against straightforward per-class loops written here (and scikit-learn for mlspl)."""
import json

import numpy as np
import pytest

from harness import metrics as M
from harness.cli import main
from harness.errors import UserError

# ---------------------------------------------------------------- reference implementations (loops)

def ref_q2l_ap(scores, positive):
    """VOC all-point AP written out: sort as the Q2L code does, walk the list, interpolate."""
    order = np.argsort(-scores.astype(np.float64))
    tp = fp = 0
    recalls, precisions = [], []
    npos = int(positive.sum())
    if npos == 0:
        return float("nan")
    for i in order:
        tp, fp = tp + bool(positive[i]), fp + (not positive[i])
        recalls.append(tp / npos)
        precisions.append(tp / (tp + fp))
    ap, previous_recall = 0.0, 0.0
    for k in range(len(order)):
        if recalls[k] != previous_recall:
            ap += (recalls[k] - previous_recall) * max(precisions[k:])
            previous_recall = recalls[k]
    return ap


def ref_asl_ap(scores, positive):
    """Precision at each positive, in the ASL order (ascending argsort reversed)."""
    order = scores.argsort()[::-1]
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if positive[i]:
            hits += 1
            total += hits / rank
    return total / (positive.sum() + 1e-8)


def ref_mlspl_ap(scores, positive):
    from sklearn.metrics import average_precision_score  # here: scikit-learn (with scipy.stats) costs ~0.7 s to load

    return average_precision_score(positive, scores) if positive.any() else 0.0


REFERENCE = {"q2l": ref_q2l_ap, "asl": ref_asl_ap, "mlspl": ref_mlspl_ap}


def ref_map(scores, labels, protocol):
    aps = np.array([REFERENCE[protocol](scores[:, c], labels[:, c] > 0) for c in range(scores.shape[1])])
    return 100 * np.nanmean(aps), 100 * aps


def random_problem(n, c, seed, ties=None):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, c)) < 0.15).astype(np.uint8)
    scores = np.clip(rng.random((n, c)) * 0.7 + labels * 0.4 * rng.random((n, c)), 0, 1).astype(np.float32)
    if ties == "rounded":
        scores = np.round(scores, 1).astype(np.float32)
    if ties == "heavy":
        scores = np.round(scores, 1).astype(np.float32)
        scores[rng.random((n, c)) < 0.25] = 1.0
    return scores, labels


@pytest.mark.parametrize("protocol", M.PROTOCOLS)
@pytest.mark.parametrize("ties", [None, "rounded", "heavy"])
def test_ap_matches_reference_loop(protocol, ties):
    scores, labels = random_problem(300, 7, seed=len(protocol) + 10 * (ties is None), ties=ties)
    m = M.compute_metrics(scores, labels, protocol, ci=False)
    ref_mean, ref_aps = ref_map(scores, labels, protocol)
    assert np.allclose(m["per_class_ap"], ref_aps, atol=1e-10, rtol=0)
    assert m["mAP"] == pytest.approx(ref_mean, abs=1e-10)


def test_protocols_differ_on_ties_and_agree_without():
    scores, labels = random_problem(400, 5, seed=3, ties="heavy")
    maps = {p: M.compute_metrics(scores, labels, p, ci=False)["mAP"] for p in M.PROTOCOLS}
    assert len({round(v, 6) for v in maps.values()}) == 3
    scores, labels = random_problem(400, 5, seed=3)
    asl, mlspl = (M.compute_metrics(scores, labels, p, ci=False)["mAP"] for p in ("asl", "mlspl"))
    assert asl == pytest.approx(mlspl, abs=1e-5)  # without ties both are the same step integral


@pytest.mark.parametrize("protocol", ["q2l", "asl"])
def test_tie_free_reference_ignores_tie_order(protocol):
    scores, labels = random_problem(300, 6, seed=5, ties="heavy")
    base = M.compute_metrics(scores, labels, protocol, ci=False)
    perm = np.random.default_rng(0).permutation(len(scores))
    shuffled = M.compute_metrics(scores[perm], labels[perm], protocol, ci=False)
    assert shuffled["ties"]["mAP_tie_free"] == pytest.approx(base["ties"]["mAP_tie_free"], abs=1e-10)
    assert base["ties"]["mAP_tie_free"] != pytest.approx(base["mAP"], abs=1e-6)  # ties do move the number here
    # asl's tie-free AP is the scikit-learn step integral (but for the 1e-8 in the denominator)
    if protocol == "asl":
        sk = np.mean([ref_mlspl_ap(scores[:, c], labels[:, c] > 0) for c in range(6)]) * 100
        assert base["ties"]["mAP_tie_free"] == pytest.approx(sk, rel=1e-6)


def test_tie_free_equals_ap_without_ties():
    scores, labels = random_problem(300, 6, seed=6)
    scores = scores + np.arange(scores.size, dtype=np.float64).reshape(scores.shape) * 1e-9  # no ties at all
    for protocol in M.PROTOCOLS:
        m = M.compute_metrics(scores, labels, protocol, ci=False)
        assert m["ties"]["tied_scores_total"] == 0
        assert m["ties"]["mAP_tie_free"] == pytest.approx(m["mAP"], abs=1e-10)


def per_class_ap_one_by_one(scores, positives, protocol):
    """per_class_ap as it was written first: one class at a time with the one-class functions."""
    columns = M._class_columns(scores, protocol)
    out = [np.empty(columns.shape[0]), np.empty(columns.shape[0]), np.zeros(columns.shape[0], int),
           np.zeros(columns.shape[0], int)]
    orders = []
    for c in range(columns.shape[0]):
        order = M.sort_order(columns[c], protocol)
        s, y = columns[c][order], positives[order, c]
        out[1][c] = M.ap_grouped(s, y, protocol)
        out[0][c] = out[1][c] if protocol == "mlspl" else M.ap_sorted(y, protocol)
        out[2][c], out[3][c] = M.tie_counts(s, y)
        orders.append((order, s, y))
    return (*out, orders)


@pytest.mark.parametrize("protocol", M.PROTOCOLS)
def test_all_classes_at_once_is_each_class_alone_to_the_bit(protocol, monkeypatch):
    """per_class_ap takes blocks of classes at once: the same bits as one class at a time, on random,
    rounded (tied) and constant scores, classes with no or only positives, and blocks of several sizes."""
    rng = np.random.default_rng(len(protocol))
    cases = [random_problem(n, c, seed, ties) for n, c, seed, ties in
             ((1, 3, 0, None), (2, 5, 1, "heavy"), (24, 80, 2, "rounded"), (150, 5, 3, None), (300, 9, 4, "heavy"),
              (9000, 3, 5, "rounded"), (20000, 2, 6, None))]
    cases += [random_problem(int(rng.integers(1, 400)), int(rng.integers(1, 12)), seed, ["rounded", "heavy", None][seed % 3])
              for seed in range(10, 20)]
    scores, labels = random_problem(50, 6, 7, "heavy")
    labels[:, 0], labels[:, 1], scores[:, 2] = 0, 1, 0.5  # no positive, all positive, all tied
    cases += [(scores, labels), (scores.astype(np.float64) * 3 - 1, labels)]
    for block in (1, 7, 1 << 20):
        monkeypatch.setattr(M, "_BLOCK_VALUES", block)
        for scores, labels in cases:
            positives = labels > 0
            new, old = M.per_class_ap(scores, positives, protocol), per_class_ap_one_by_one(scores, positives, protocol)
            for a, b in zip(new[:4], old[:4]):
                assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (scores.shape, block)
            for a, b in zip(new[4], old[4]):
                assert all(np.array_equal(u, v) and u.dtype == v.dtype for u, v in zip(a, b))


def test_tie_counts_on_a_known_column():
    s = np.array([0.9, 0.9, 0.5, 0.5, 0.5, 0.1])
    y = np.array([1, 0, 1, 1, 1, 0], bool)
    assert M.tie_counts(s, y) == (5, 2)  # 0.9 pair mixes a positive and a negative; 0.5 run is all positive


def test_edge_cases_per_protocol():
    scores = np.array([[0.9, 0.2, 0.5], [0.8, 0.1, 0.5], [0.3, 0.7, 0.5], [0.1, 0.4, 0.5]], np.float32)
    labels = np.array([[1, 0, 1], [0, 0, 0], [1, 0, 1], [1, 0, -1]])  # class 1 has no positives; -1 negative
    names = ["cat", "dog", "tie"]
    q2l = M.compute_metrics(scores, labels, "q2l", ci=False, class_names=names)
    assert q2l["per_class_ap"][1] is None and q2l["classes_without_positives"] == ["dog"]
    assert q2l["mAP_classes"] == 2
    assert q2l["mAP"] == pytest.approx(np.mean([ref_q2l_ap(scores[:, c], labels[:, c] > 0) for c in (0, 2)]) * 100)
    asl = M.compute_metrics(scores, labels, "asl", ci=False, class_names=names)
    assert asl["per_class_ap"][1] == 0.0 and asl["mAP_classes"] == 3
    mlspl = M.compute_metrics(scores, labels, "mlspl", ci=False)
    assert mlspl["per_class_ap"][1] == 0.0 and mlspl["classes_without_positives"] == [1]
    assert mlspl["per_class_ap"][2] == pytest.approx(50.0)  # all tied: one step at precision 2/4
    assert any("no positives" in n for n in q2l["notes"])
    json.dumps(q2l, allow_nan=False)  # null, never NaN


def test_single_image_and_all_positive():
    for protocol in M.PROTOCOLS:
        m = M.compute_metrics(np.array([[0.7, 0.2]]), np.array([[1, 1]]), protocol, ci=M.Bootstrap(20))
        assert m["mAP"] == pytest.approx(100.0, abs=1e-5)
        assert m["mAP_ci95"][0] == pytest.approx(100.0, abs=1e-5)


# ---------------------------------------------------------------- F1 family

def ref_f1(scores, labels, top_k=None):
    n, c = scores.shape
    pred = np.zeros((n, c), bool)
    for i in range(n):
        allowed = range(c) if top_k is None else sorted(range(c), key=lambda j: (-scores[i, j], j))[:top_k]
        for j in allowed:
            pred[i, j] = scores[i, j] >= 0.5
    pos = labels > 0
    per_p, per_r = [], []
    for j in range(c):
        if pos[:, j].sum() == 0:
            continue
        hit = (pred[:, j] & pos[:, j]).sum()
        per_p.append(hit / pred[:, j].sum() if pred[:, j].sum() else 0.0)
        per_r.append(hit / pos[:, j].sum())
    cp, cr = np.mean(per_p), np.mean(per_r)
    hit = (pred & pos).sum()
    op, orr = hit / np.maximum(pred.sum(0), 1).sum(), hit / pos.sum()  # ML-GCN: Np[Np == 0] = 1
    return {"CP": cp, "CR": cr, "CF1": 2 * cp * cr / (cp + cr), "OP": op, "OR": orr, "OF1": 2 * op * orr / (op + orr)}


def test_f1_family_and_top3_match_reference():
    scores, labels = random_problem(200, 8, seed=9, ties="rounded")  # ties at 3rd place happen
    labels[:, 4] = 0  # a class without positives is left out of CP and CR
    scores[:, 6] = 0.1  # a class never predicted: precision 0
    m = M.compute_metrics(scores, labels, "q2l", ci=False)
    for got, want in ((m, ref_f1(scores, labels)), (m["top3"], ref_f1(scores, labels, top_k=3))):
        for key in ("CP", "CR", "CF1", "OP", "OR", "OF1"):
            assert got[key] == pytest.approx(100 * want[key], abs=1e-9), key
    assert m["top3"]["OR"] < m["OR"]


# ---------------------------------------------------------------- bootstrap

@pytest.mark.parametrize("protocol", M.PROTOCOLS)
@pytest.mark.parametrize("ties", [None, "heavy"])
def test_bootstrap_ap_equals_the_protocol_on_the_resampled_images(protocol, ties):
    """A resample's AP from counts equals the protocol's AP on the resampled images, copies of an
    image kept together in the class order (they are exact ties, so any order of them is equal)."""
    scores, labels = random_problem(120, 4, seed=11, ties=ties)
    positives = labels > 0
    _, _, _, _, orders = M.per_class_ap(scores, positives, protocol)
    counts = M.resample_counts(len(scores), 15, seed=2)
    for order, sorted_scores, y in orders:
        boot = M.bootstrap_class_ap(order, sorted_scores, y, counts, protocol)
        for b in range(len(counts)):
            w = counts[b, order].astype(int)
            ey, es = np.repeat(y, w), np.repeat(sorted_scores, w)
            want = ref_mlspl_ap(es, ey) if protocol == "mlspl" else (
                M.ap_sorted(ey, protocol) if ey.any() or protocol == "asl" else np.nan)
            if protocol != "mlspl":  # independent check of ap_sorted itself on this sequence
                hits = np.cumsum(ey)
                prec = hits / np.arange(1, len(ey) + 1)
                if protocol == "asl":
                    assert want == pytest.approx(prec[ey].sum() / (ey.sum() + 1e-8), abs=1e-12)
            if np.isnan(want):
                assert np.isnan(boot[b])
            else:
                assert boot[b] == pytest.approx(want, abs=1e-12)


def test_resample_counts_are_draws_with_replacement():
    counts = M.resample_counts(500, 40, seed=1)
    assert counts.shape == (40, 500) and (counts.sum(1) == 500).all()
    assert 0.55 < (counts > 0).mean() < 0.71  # about 1 - 1/e of the images appear in a resample
    assert np.array_equal(counts, M.resample_counts(500, 40, seed=1))
    assert not np.array_equal(counts, M.resample_counts(500, 40, seed=2))


def test_ci_is_deterministic_contains_the_estimate_and_narrows_with_more_images():
    widths = []
    for n in (300, 3000):
        scores, labels = random_problem(n, 5, seed=4)
        m = M.compute_metrics(scores, labels, "q2l", ci=M.Bootstrap(300, seed=7))
        low, high = m["mAP_ci95"]
        assert low < m["mAP"] < high
        assert m["bootstrap"]["n_resamples"] == 300
        assert M.compute_metrics(scores, labels, "q2l", ci=M.Bootstrap(300, seed=7))["mAP_ci95"] == [low, high]
        widths.append(high - low)
    assert widths[1] < widths[0] * 0.6  # about 1/sqrt(10)


def test_bootstrap_map_matches_a_direct_resample_loop():
    scores, labels = random_problem(150, 4, seed=12)
    counts = M.resample_counts(150, 25, seed=3)
    for protocol in M.PROTOCOLS:
        _, _, _, _, orders = M.per_class_ap(scores, labels > 0, protocol)
        fast = M.bootstrap_map(orders, counts, protocol, chunk=7)
        for b in range(25):
            idx = np.repeat(np.arange(150), counts[b])
            aps = [REFERENCE[protocol](scores[idx, c], labels[idx, c] > 0) for c in range(4)]
            assert fast[b] == pytest.approx(100 * np.nanmean(aps), abs=1e-9)  # no ties: order of copies is moot


def test_bootstrap_chunking_moves_no_bit():
    """The default chunk (few chunks on a small set) scores each resample exactly as chunks of 7 or 1."""
    scores, labels = random_problem(150, 6, seed=5)
    scores[:, :2] = np.round(scores[:, :2], 1)  # ties too
    # 16 resamples of 150 images: 6 to a packed float (8-bit lanes), so the default chunk holds 3 packs,
    # the last one part full, chunks of 7 end in a part chunk and chunks of 1 hold one lane
    counts = M.resample_counts(150, 16, seed=9)
    for protocol in M.PROTOCOLS:
        _, _, _, _, orders = M.per_class_ap(scores, labels > 0, protocol)
        default = M.bootstrap_map(orders, counts, protocol)
        for chunk in (1, 7):
            assert np.array_equal(default, M.bootstrap_map(orders, counts, protocol, chunk=chunk), equal_nan=True)


# ---------------------------------------------------------------- inputs and the command

@pytest.mark.parametrize("scores, labels, message", [
    (np.zeros((3, 2)), np.zeros((3, 3)), "differ in shape"),
    (np.array([[np.nan, 0.1]]), np.zeros((1, 2)), "NaN or infinite"),
    (np.array([[np.inf, 0.1]]), np.zeros((1, 2)), "NaN or infinite"),
    (np.zeros(3), np.zeros(3), "2-D"),
    (np.zeros((0, 2)), np.zeros((0, 2)), "no images"),
])
def test_bad_inputs_raise_user_error(scores, labels, message):
    with pytest.raises(UserError, match=message):
        M.compute_metrics(scores, labels, "q2l", ci=False)


def test_bad_protocol_and_names():
    scores, labels = random_problem(10, 3, seed=0)
    with pytest.raises(UserError, match="unknown protocol"):
        M.compute_metrics(scores, labels, "voc", ci=False)
    with pytest.raises(UserError, match="class names"):
        M.compute_metrics(scores, labels, "q2l", ci=False, class_names=["a"])


def test_metrics_command_json_text_and_errors(tmp_path, capsys):
    scores, labels = random_problem(200, 4, seed=8)
    np.save(tmp_path / "s.npy", scores)
    np.save(tmp_path / "l.npy", labels)
    assert main(["metrics", str(tmp_path / "s.npy"), str(tmp_path / "l.npy"), "--protocol", "asl",
                 "--n-boot", "100"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("mAP", "mAP_ci95", "per_class_ap", "CP", "CR", "CF1", "OP", "OR", "OF1", "top3", "n_images",
                "n_classes", "ties"):
        assert key in out
    assert out["mAP"] == pytest.approx(ref_map(scores, labels, "asl")[0], abs=1e-9)
    assert out["n_images"] == 200 and len(out["mAP_ci95"]) == 2

    assert main(["metrics", str(tmp_path / "s.npy"), str(tmp_path / "l.npy"), "--protocol", "q2l", "--no-ci",
                 "--format", "text"]) == 0
    text = capsys.readouterr().out
    assert "mAP" in text and "no CI" in text

    np.save(tmp_path / "short.npy", labels[:10])
    (tmp_path / "junk.npy").write_text("not numpy")
    for argv in ([str(tmp_path / "s.npy"), str(tmp_path / "short.npy")],
                 [str(tmp_path / "s.npy"), str(tmp_path / "junk.npy")],
                 [str(tmp_path / "missing.npy"), str(tmp_path / "l.npy")]):
        assert main(["metrics", *argv, "--protocol", "q2l"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err
