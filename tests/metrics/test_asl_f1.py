"""ASL's F1 family (harness.metrics.asl_f1_family) equals what ASL's own validate.py computes (fixture
made by running their code: tests/fixtures/make_asl_f1.py), and an `asl` run scored with ML-GCN's
family carries it beside."""

import numpy as np
import pytest
from paths import FIXTURES

from harness.metrics import asl_f1_family, compute_metrics

FIXTURE = np.load(FIXTURES / "asl_f1.npz")
CASES = sorted(int(k.split("_")[1]) for k in FIXTURE if k.startswith("f1_"))
KEYS = ("CP", "CR", "CF1", "OP", "OR", "OF1")


@pytest.mark.parametrize("case", CASES)
def test_equal_to_asl_validate(case):
    got = asl_f1_family(FIXTURE[f"scores_{case}"], FIXTURE[f"labels_{case}"] > 0, 0.8)
    theirs = FIXTURE[f"f1_{case}"]
    for key, value in zip(KEYS, theirs):
        assert (got[key] is None and np.isnan(value)) or got[key] == value, key  # bit for bit


def test_threshold_is_strict_in_float32():
    scores = np.array([[0.8, 0.81], [0.8, 0.2]], np.float32)
    truth = np.array([[1, 1], [1, 0]], bool)
    got = asl_f1_family(scores, truth, 0.8)
    assert got["OR"] == pytest.approx(100 / 3)  # the two 0.8 scores are not predicted


def test_asl_protocol_records_both_definitions():
    scores, labels = FIXTURE["scores_0"], FIXTURE["labels_0"]
    m = compute_metrics(scores, labels, "asl", ci=False)
    assert m["f1_asl_validate"]["CF1"] == FIXTURE["f1_0"][2] and m["f1_asl_validate"]["threshold"] == 0.8
    assert "ML-GCN" in m["f1_definition"] and m["threshold"] == 0.5
    assert m["CF1"] != m["f1_asl_validate"]["CF1"]
    assert "f1_asl_validate" not in compute_metrics(scores, labels, "q2l", ci=False)
    primary = compute_metrics(scores, labels, "asl", ci=False, f1="asl", threshold=0.8)  # already ASL's own
    assert primary["CF1"] == FIXTURE["f1_0"][2] and "f1_asl_validate" not in primary
