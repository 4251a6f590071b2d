"""The bootstrap's packed sums are exact integers: the gather-and-reduceat path of small sums and the
sparse product of large ones give the same bits."""
import numpy as np
import pytest

from harness import metrics as M


@pytest.mark.parametrize("protocol", M.PROTOCOLS)
def test_small_and_large_sums_give_the_same_bits(protocol, monkeypatch):
    rng = np.random.default_rng(5)
    for n_images, n_boot in [(7, 40), (60, 333), (300, 90)]:
        labels = rng.random((n_images, 6)) < 0.2
        scores = np.round(rng.random((n_images, 6)), 1)  # ties: mlspl's units of several images
        orders = M.per_class_ap(scores, labels, protocol)[4]
        counts = M.resample_counts(n_images, n_boot, 1)
        monkeypatch.setattr(M, "GATHER_BELOW", 0)
        sparse = M.bootstrap_map(orders, counts, protocol)
        monkeypatch.setattr(M, "GATHER_BELOW", np.inf)
        gathered = M.bootstrap_map(orders, counts, protocol)
        assert sparse.tobytes() == gathered.tobytes()
