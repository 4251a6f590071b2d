"""Evaluating the ASL zoo and ML-Decoder models as their validate.py scripts do: the F1 family at
their threshold, fp16 scores kept as fp16, and the fp16-fused precision (fused fp32 on CPU)."""
import json

import numpy as np
import pytest
import torch
from conftest import tiny_manifest

import harness.eval.run
from harness.cli import main
from harness.metrics import asl_f1_family, compute_metrics

TINY_MLD = {"name": "ml_decoder", "model_name": "tresnet_m", "num_classes": 80, "img_size": 64,
            "layers": [1, 1, 1, 1], "width_factor": 0.25, "decoder_embedding": 32}


def validate_py_f1(scores, labels, thre, batch=7):
    """Their validate.py's counting, step by step in torch: batches, `gt`, per-class lists."""
    tp = fp = fn = 0
    for start in range(0, len(scores), batch):
        output, target = torch.from_numpy(scores[start:start + batch]), torch.from_numpy(labels[start:start + batch])
        pred = output.gt(thre).long()
        tp = tp + (pred + target).eq(2).sum(dim=0)
        fp = fp + (pred - target).eq(1).sum(dim=0)
        fn = fn + (pred - target).eq(-1).sum(dim=0)
    p_c = [float(tp[i].float() / (tp[i] + fp[i]).float()) * 100.0 if tp[i] > 0 else 0.0 for i in range(len(tp))]
    r_c = [float(tp[i].float() / (tp[i] + fn[i]).float()) * 100.0 if tp[i] > 0 else 0.0 for i in range(len(tp))]
    f_c = [2 * p_c[i] * r_c[i] / (p_c[i] + r_c[i]) if tp[i] > 0 else 0.0 for i in range(len(tp))]
    p_o = tp.sum().float() / (tp + fp).sum().float() * 100.0
    r_o = tp.sum().float() / (tp + fn).sum().float() * 100.0
    f_o = 2 * p_o * r_o / (p_o + r_o)
    return {"CP": sum(p_c) / len(p_c), "CR": sum(r_c) / len(r_c), "CF1": sum(f_c) / len(f_c),
            "OP": float(p_o), "OR": float(r_o), "OF1": float(f_o)}


@pytest.mark.parametrize("dtype, thre", [(np.float32, 0.8), (np.float16, 0.75)])
def test_asl_f1_family_equals_their_validate_loop(dtype, thre):
    rng = np.random.default_rng(0)
    scores = rng.random((53, 9)).astype(dtype)
    scores[::5, 0] = dtype(thre)  # exactly at the threshold: not predicted (`gt`, in the scores' dtype)
    scores[1::7, 1] = np.nextafter(dtype(thre), dtype(1))
    labels = (rng.random((53, 9)) < 0.3).astype(np.int64)
    labels[:, 2] = 0  # a class without positives counts as P = R = F1 = 0
    scores[:, 3] = 0.1  # a class never predicted
    assert asl_f1_family(scores, labels > 0, thre) == validate_py_f1(scores, labels, thre)


def test_compute_metrics_uses_the_given_f1_rule_and_keeps_float16_ties():
    rng = np.random.default_rng(1)
    scores = np.round(rng.random((40, 5)), 2).astype(np.float16)  # many ties
    labels = (rng.random((40, 5)) < 0.4).astype(np.int64)
    m = compute_metrics(scores, labels, "asl", ci=False, f1="asl", threshold=0.75)
    assert (m["f1_rule"], m["threshold"]) == ("asl", 0.75)
    assert m["CF1"] == asl_f1_family(scores, labels > 0, 0.75)["CF1"]
    for c in range(5):  # ASL's average_precision on the float16 column itself
        order = scores[:, c].argsort()[::-1]
        hits = labels[order, c] == 1
        pos = np.cumsum(hits)
        expected = np.sum(np.where(hits, pos / np.arange(1, 41), 0)) / (hits.sum() + 1e-8)
        assert m["per_class_ap"][c] == pytest.approx(100 * expected, abs=1e-12)


@pytest.fixture()
def mld_manifest(tmp_path):
    return tiny_manifest(tmp_path, "tiny-mld", TINY_MLD, base="mldecoder-tresnetm-224", resolution=64, batch_size=8)


def _eval(manifest, smoke_root, runs, *extra):
    return main(["eval", "tiny-mld", "--manifest", str(manifest), "--coco-root", str(smoke_root), "--weights", "random",
                 "--out", str(runs), "--workers", "0", "--no-progress", "--device", "cpu", *extra])


def _record(runs):
    (path,) = runs.glob("tiny-mld/*/record.json")
    return json.loads(path.read_text()), np.load(path.parent / "scores.npy")


def test_fp16_fused_model_runs_fused_in_fp32_on_cpu_and_says_so(mld_manifest, smoke_root, tmp_path, capsys):
    assert _eval(mld_manifest, smoke_root, tmp_path / "runs") == 0
    assert "fused model runs in fp32" in capsys.readouterr().err
    record, scores = _record(tmp_path / "runs")
    ev = record["eval"]
    assert (ev["precision"], ev["dtype"], ev["f1"], ev["threshold"]) == ("fp32-fused", "float32", "asl", 0.75)
    assert "CUDA" in ev["precision_source"] and scores.dtype == np.float32
    assert (record["metrics"]["f1_rule"], record["metrics"]["threshold"]) == ("asl", 0.75)


def test_fp16_fused_path_keeps_fp16_scores(mld_manifest, smoke_root, tmp_path, monkeypatch):
    # the CUDA path, forced on CPU (torch runs fp16 convolutions there too)
    monkeypatch.setattr(harness.eval.run, "_choose_precision", lambda spec, amp, device: ("fp16-fused", "test"))
    assert _eval(mld_manifest, smoke_root, tmp_path / "runs", "--limit", "5") == 0
    record, scores = _record(tmp_path / "runs")
    assert (record["eval"]["precision"], record["eval"]["dtype"], scores.dtype) == ("fp16-fused", "float16", np.float16)
    rescored = compute_metrics(scores, np.load(next((tmp_path / "runs").glob("tiny-mld/*/labels.npy"))), "asl",
                               ci=False, f1="asl", threshold=0.75)
    assert rescored["mAP"] == record["metrics"]["mAP"]  # the saved fp16 scores sort as the run's


def test_amp_off_runs_the_plain_fp32_model(mld_manifest, smoke_root, tmp_path):
    assert _eval(mld_manifest, smoke_root, tmp_path / "runs", "--amp", "off", "--limit", "3") == 0
    record, _ = _record(tmp_path / "runs")
    assert record["eval"]["precision"] == "fp32" and "--amp off" in record["eval"]["precision_source"]


def test_the_smallest_released_entry_runs_on_the_smoke_subset(smoke_root, tmp_path):
    model_id = "mldecoder-tresnetm-224"  # full size, random weights, 2 images
    code = main(["eval", model_id, "--coco-root", str(smoke_root), "--weights", "random", "--out", str(tmp_path),
                 "--workers", "0", "--no-progress", "--device", "cpu", "--limit", "2", "--batch-size", "2"])
    (path,) = tmp_path.glob(f"{model_id}/*/record.json")
    record = json.loads(path.read_text())
    assert code == 0 and record["smoke"] and record["eval"]["resolution"] == int(model_id.rsplit("-", 1)[1])
    assert record["metrics"]["threshold"] == 0.75 and record["eval"]["precision"] == "fp32-fused"
