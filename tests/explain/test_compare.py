"""`harness compare`: paired bootstrap CI and permutation p against a slow reference; verdicts; refusals."""
import json

import numpy as np
import pytest

from harness import records
from harness.cli import main
from harness.explain.compare import compare_runs, load_run

NAMES = [f"class{c}" for c in range(8)]


def make_run(root, model_id, scores, labels, protocol="q2l", fingerprint="same", image_ids=None, annotations="ann"):
    """A finished run folder as `harness eval` writes it (record.json, scores, labels, image ids)."""
    run_dir = records.new_run_dir(root, model_id)
    image_ids = np.arange(len(scores)) if image_ids is None else image_ids
    records.save_arrays(run_dir, scores.astype(np.float32), labels, image_ids)
    records.write_record(run_dir, {
        "schema": 1, "kind": "eval", "run_id": run_dir.name, "model": {"id": model_id},
        "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:01:00+00:00", "smoke": False,
        "dataset": {"image_set": "all", "n_images": len(scores),
                    "fingerprint": {"annotations_sha256": annotations, "labels_sha256": fingerprint,
                                    "n_images": len(scores)}},
        "eval": {"protocol": protocol}, "metrics": {"class_names": NAMES[:labels.shape[1]]},
        "files": {"scores": "scores.npy", "labels": "labels.npy", "image_ids": "image_ids.npy"}})
    return run_dir


def synthetic(n, classes=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, classes)) < 0.25).astype(np.uint8)
    labels[0] = 1  # every class has a positive
    return rng, labels


# ---------------------------------------------------------------- slow, obviously correct reference

def ref_ap(scores, y, protocol):
    """One class's AP by hand: walk the ranking, precision at each step (VOC all-point for q2l)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    npos = sum(y)
    if protocol == "q2l" and npos == 0:
        return None
    tp = 0
    precisions, recalls, at_positive = [], [], []
    for rank, i in enumerate(order, 1):
        tp += y[i]
        precisions.append(tp / rank)
        recalls.append(tp / npos if npos else 0)
        if y[i]:
            at_positive.append(tp / rank)
    if protocol == "asl":
        return sum(at_positive) / (npos + 1e-8)
    mrec, mpre = [0.0] + recalls + [1.0], [0.0] + precisions + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])


def ref_map(scores, labels, protocol):
    aps = [ref_ap(list(scores[:, c]), list(labels[:, c]), protocol) for c in range(labels.shape[1])]
    aps = [a for a in aps if a is not None]
    return 100 * sum(aps) / len(aps) if aps else None


def ref_compare(a, b, labels, protocol, n_boot, n_perm, seed):
    n = len(labels)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):  # draw as metrics.resample_counts: one integers() call per resample
        idx = rng.integers(0, n, n)
        ma, mb = ref_map(a[idx], labels[idx], protocol), ref_map(b[idx], labels[idx], protocol)
        if ma is not None and mb is not None:
            diffs.append(ma - mb)
    observed = ref_map(a, labels, protocol) - ref_map(b, labels, protocol)
    rng = np.random.default_rng(seed)
    extreme = 0
    for _ in range(n_perm):
        swap = rng.integers(0, 2, n).astype(bool)
        a2 = np.array([b[i] if swap[i] else a[i] for i in range(n)])
        b2 = np.array([a[i] if swap[i] else b[i] for i in range(n)])
        extreme += abs(ref_map(a2, labels, protocol) - ref_map(b2, labels, protocol)) >= abs(observed) - 1e-9
    return observed, list(np.percentile(diffs, [2.5, 97.5])), (1 + extreme) / (1 + n_perm)


@pytest.mark.parametrize("protocol", ["q2l", "asl"])
def test_ci_and_p_equal_the_slow_reference(tmp_path, protocol):
    rng, labels = synthetic(30, classes=4, seed=1)
    a = labels + rng.normal(0, 0.8, labels.shape)
    b = labels + rng.normal(0, 0.8, labels.shape)
    a, b = 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-b))  # distinct scores: no ties to order
    a, b = a.astype(np.float32), b.astype(np.float32)
    run_a = load_run(make_run(tmp_path, "a", a, labels, protocol))
    run_b = load_run(make_run(tmp_path, "b", b, labels, protocol))
    result = compare_runs(run_a, run_b, n_boot=40, n_perm=25, seed=3)
    observed, ci, p = ref_compare(a.astype(np.float64), b.astype(np.float64), labels, protocol, 40, 25, 3)
    assert result["difference"] == pytest.approx(observed, abs=1e-9)
    assert result["ci95"] == pytest.approx(ci, abs=1e-9)
    assert result["p_value"] == p


def test_an_injected_difference_is_found_and_noise_is_not(tmp_path):
    rng, labels = synthetic(400)
    base = rng.normal(0, 1, labels.shape)
    good = labels * 2.0 + base + rng.normal(0, 0.3, labels.shape)
    weak = labels * 1.0 + base + rng.normal(0, 0.3, labels.shape)
    good_again = labels * 2.0 + base + rng.normal(0, 0.3, labels.shape)  # the same model, other noise
    runs = {name: load_run(make_run(tmp_path, name, 1 / (1 + np.exp(-s)), labels))
            for name, s in (("good", good), ("weak", weak), ("good_again", good_again))}
    found = compare_runs(runs["good"], runs["weak"], n_boot=200, n_perm=100)
    assert found["verdict"] == "A better" and found["ci95"][0] > 0 and found["p_value"] < 0.05
    assert compare_runs(runs["weak"], runs["good"], n_boot=200, n_perm=100)["verdict"] == "B better"
    noise = compare_runs(runs["good"], runs["good_again"], n_boot=200, n_perm=100)
    assert noise["verdict"] == "not distinguishable at 95%"
    assert noise["ci95"][0] < 0 < noise["ci95"][1] and noise["p_value"] > 0.05


def test_per_class_differences_are_sorted_and_name_the_changed_class(tmp_path):
    rng, labels = synthetic(200)
    scores = 1 / (1 + np.exp(-(labels + rng.normal(0, 0.7, labels.shape))))
    better = scores.copy()
    better[:, 5] = 0.5 * labels[:, 5] + 0.25 * scores[:, 5]  # class 5 of A ranks its positives first
    result = compare_runs(load_run(make_run(tmp_path, "a", better, labels)),
                          load_run(make_run(tmp_path, "b", scores, labels)), n_boot=20, n_perm=5)
    diffs = [r["difference"] for r in result["per_class"]]
    assert diffs == sorted(diffs, reverse=True) and result["per_class"][0]["class"] == "class5"
    assert result["per_class"][0]["A"] == pytest.approx(100)
    assert all(r["difference"] == 0 for r in result["per_class"][1:])


def _one_line(capsys, *needles):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert all(n in lines[0] for n in needles), lines[0]


def test_cli_text_plot_and_refusals(tmp_path, capsys):
    rng, labels = synthetic(60)
    scores = rng.random(labels.shape)
    a = make_run(tmp_path, "a", scores, labels)
    b = make_run(tmp_path, "b", rng.random(labels.shape), labels)
    plot = tmp_path / "per_class.png"
    assert main(["compare", str(a), str(b), "--n-boot", "20", "--n-perm", "5", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "paired bootstrap 95% CI" in out and "verdict:" in out and "per-class AP" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert main(["compare", str(a), str(b), "--n-boot", "20", "--n-perm", "5", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["A"]["model"] == "a"

    other_images = make_run(tmp_path, "c", scores, labels, fingerprint="other")
    assert main(["compare", str(a), str(other_images)]) == 2
    _one_line(capsys, "not on the same images")
    shifted = make_run(tmp_path, "d", scores, labels, image_ids=np.arange(len(scores)) + 1)
    assert main(["compare", str(a), str(shifted)]) == 2
    _one_line(capsys, "not on the same images")
    asl = make_run(tmp_path, "e", scores, labels, protocol="asl")
    assert main(["compare", str(a), str(asl)]) == 2
    _one_line(capsys, "different protocols", "--protocol")
    assert main(["compare", str(a), str(tmp_path / "nothing")]) == 2
    _one_line(capsys, "record.json")


@pytest.mark.usefixtures("plots_not_drawn")  # the report's own plots: the compare chart is still drawn
def test_report_compare_section_html_and_chart(tmp_path, capsys, monkeypatch):
    import base64

    from harness.explain import compare

    # the report asks for the chart of one comparison twice (inline in the HTML, and the PNG beside it):
    # drawn for real the first time, the same bytes given the second
    charts = []
    draw = compare.plot_png

    def drawn_once(result):
        if not charts:
            charts.append((result, draw(result)))
        assert result is charts[0][0]
        return charts[0][1]

    monkeypatch.setattr(compare, "plot_png", drawn_once)
    monkeypatch.setattr("harness.commands.report.plot_png", drawn_once)
    rng, labels = synthetic(60)
    runs = tmp_path / "runs"
    make_run(runs, "model-a", labels + rng.normal(0, 0.5, labels.shape), labels)
    make_run(runs, "model-b", rng.random(labels.shape), labels)
    out = tmp_path / "report.html"
    assert main(["report", "--runs", str(runs), "--measured", "none", "--format", "html", "--out", str(out),
                 "--compare", "model-a", "model-b"]) == 0
    html = out.read_text()
    assert "Paired comparison" in html and "verdict: A better" in html
    assert html.count("data:image/png;base64,") == 2  # paper vs ours and the per-class chart (no GPU: no VRAM plot)
    (chart,) = {png for _, png in charts}
    assert chart[:4] == b"\x89PNG" and (tmp_path / "report-compare.png").read_bytes() == chart
    assert f"alt='per-class AP difference' src='data:image/png;base64,{base64.b64encode(chart).decode()}'" in html
    capsys.readouterr()
    assert main(["report", "--runs", str(runs), "--measured", "none", "--compare", "model-a", "nothing"]) == 2
    _one_line(capsys, "--compare nothing", "harness eval nothing")


def test_common_images_compares_on_the_rows_both_runs_scored(tmp_path, capsys):
    rng, labels = synthetic(80)
    scores_a, scores_b = rng.random(labels.shape), rng.random(labels.shape)
    ids = np.arange(80) * 3 + 7
    subset = rng.permutation(np.arange(10, 80))  # B scored 70 of A's images, in another order
    a = make_run(tmp_path, "a", scores_a, labels, image_ids=ids, fingerprint="all")
    b = make_run(tmp_path, "b", scores_b[subset], labels[subset], image_ids=ids[subset], fingerprint="annotated",
                 protocol="asl")
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--protocol", "asl"]) == 2
    _one_line(capsys, "not on the same images", "--common-images")
    both = compare_runs(load_run(a), load_run(b), protocol="asl", common_images=True, n_boot=30, n_perm=10)
    a2 = make_run(tmp_path, "a2", scores_a[10:], labels[10:], image_ids=ids[10:])
    b2 = make_run(tmp_path, "b2", scores_b[10:], labels[10:], image_ids=ids[10:])
    by_hand = compare_runs(load_run(a2), load_run(b2), protocol="asl", n_boot=30, n_perm=10)
    assert both["n_images"] == 70 and "restricted to the 70 images" in both["notes"][0]
    assert (both["difference"], both["ci95"], both["p_value"]) == (by_hand["difference"], by_hand["ci95"],
                                                                    by_hand["p_value"])
    other = make_run(tmp_path, "c", scores_b, labels, image_ids=ids, annotations="another file")
    assert main(["compare", str(a), str(other), "--common-images"]) == 2
    _one_line(capsys, "different annotation files")


@pytest.mark.parametrize("protocol", ["bogus", "ctran"])
def test_a_protocol_compare_does_not_know_is_one_line(tmp_path, capsys, protocol):
    rng, labels = synthetic(40)
    a, b = (make_run(tmp_path, m, rng.random(labels.shape), labels, protocol=protocol) for m in ("a", "b"))
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"unknown protocol '{protocol}'" in err


def test_a_negative_seed_is_one_line(tmp_path, capsys):
    rng, labels = synthetic(40)
    a, b = (make_run(tmp_path, m, rng.random(labels.shape), labels) for m in ("a", "b"))
    assert main(["compare", str(a), str(b), "--seed", "-1", "--n-boot", "10", "--n-perm", "10"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: --seed" in err
