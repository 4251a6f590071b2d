"""The train and val loaders give each rank the images their main_worker()'s loaders gave it, batch by batch,
under torch 1.9.1 (fixture made by tests/fixtures/q2l_authors/make_sampler_orders.py): integers, so bits."""
import hashlib
import json

import pytest
from paths import FIXTURES
from torch.utils.data import Dataset

from harness.distributed import World
from harness.q2l import data

FIXTURE = json.loads((FIXTURES / "q2l_authors" / "sampler_torch1.9.json").read_text())


class Indices(Dataset):
    def __init__(self, n):
        self.n, self.epoch = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def _as_fixture(value, n):
    return value if n <= 200 else hashlib.sha256(json.dumps(value).encode()).hexdigest()


def test_the_fixture_is_their_era_torch():
    assert FIXTURE["torch"].startswith("1.9.1")


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: f"n{c['n']}-b{c['batch_size']}-w{c['world_size']}")
def test_each_ranks_batches_equal_their_loaders(case):
    n, batch, size = case["n"], case["batch_size"], case["world_size"]
    for epoch, theirs in enumerate(case["train"]):
        ours = [[b.tolist() for b in data.train_loader(Indices(n), batch, World(rank, size), 0, epoch)]
                for rank in range(size)]
        assert _as_fixture(ours, n) == theirs, epoch
    ours = [[b.tolist() for b in data.val_loader(Indices(n), batch, World(rank, size), 0)] for rank in range(size)]
    assert _as_fixture(ours, n) == case["val"]
