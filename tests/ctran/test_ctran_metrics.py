"""Protocol ctran against the authors' compute_metrics (fixture made by their code), and the CLI."""
import json

import numpy as np
import pytest
from paths import FIXTURES

from harness.cli import main
from harness.ctran.metrics import compute_ctran_metrics

F = np.load(FIXTURES / "ctran_metrics.npz")
PATHS = {"top3_CP": ("top3", "CP"), "top3_CR": ("top3", "CR"), "top3_OP": ("top3", "OP"), "top3_OR": ("top3", "OR")}


def _get(m, name):
    a, b = PATHS.get(name, (None, name))
    return (m[a] if a else m)[b]


@pytest.mark.parametrize("known", [0, 20, 40, 60])
def test_equal_to_their_compute_metrics(known):
    mask = F[f"mask_{known}"]
    m = compute_ctran_metrics(F["scores"], F["labels"], mask)
    assert m["known_labels_per_image"] >= known
    for name, theirs in zip(F["names"], F[f"theirs_{known}"]):
        assert abs(_get(m, str(name)) - 100 * theirs) < 1e-9, name
    u = m["unknown_only"]
    if known:  # over unknown labels only: a different number from theirs, here lower
        assert u["CP"] != m["CP"]


def test_unknown_only_is_the_plain_f1_of_the_unknown_entries():
    mask, scores, labels = F["mask_40"], F["scores"], F["labels"] > 0
    u = compute_ctran_metrics(scores, labels, mask)["unknown_only"]
    sel = mask == -1
    tp = ((scores >= 0.5) & labels & sel).sum()
    assert u["OP"] == pytest.approx(100 * tp / ((scores >= 0.5) & sel).sum())
    assert u["OR"] == pytest.approx(100 * tp / (labels & sel).sum())


def test_cli_protocol_ctran(tmp_path, capsys):
    np.save(tmp_path / "s.npy", F["scores"])
    np.save(tmp_path / "l.npy", F["labels"])
    np.save(tmp_path / "m.npy", F["mask_40"])
    assert main(["metrics", str(tmp_path / "s.npy"), str(tmp_path / "l.npy"), "--protocol", "ctran",
                 "--mask", str(tmp_path / "m.npy")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mAP"] == pytest.approx(100 * dict(zip(F["names"], F["theirs_40"]))["mAP"], abs=1e-9)
    np.save(tmp_path / "bad.npy", F["mask_40"][:, :5])
    assert main(["metrics", str(tmp_path / "s.npy"), str(tmp_path / "l.npy"), "--protocol", "ctran",
                 "--mask", str(tmp_path / "bad.npy")]) == 2
    assert "mask has shape (300, 5)" in capsys.readouterr().err


