"""MLSPL's images through the shared uint8 loader are the authors' float batches, bit for bit: the
same rows in the same order, the same flips (the draws replayed, one pass after another), the same
generator state after each pass; under several processes each rank's share of a batch too."""
from dataclasses import replace

import pytest
import torch
from torchvision import transforms as T

from harness.data.images import load_rgb
from harness.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_model_input
from harness.distributed import World
from harness.mlspl.authors_rng import AuthorsShuffle
from harness.mlspl.config import TrainConfig
from harness.mlspl.prepare import load_prepared
from harness.mlspl.train import _ImageLoaders

RESOLUTION, BATCH, SEED = 32, 4, 11


def _data(smoke_data):
    """The prepared smoke splits, train cut to its first 12 rows: three batches a pass (both workers get
    some, flipped and unflipped images, a reshuffle that shows) instead of nine, each pass forking its
    workers the same way."""
    data = load_prepared(smoke_data)
    data["train"] = replace(data["train"], images=data["train"].images[:12])
    return data


class AuthorsImages(torch.utils.data.Dataset):
    """Their dataset and transform, as the harness ran it before the shared loader: float batches."""

    def __init__(self, root, images, flip):
        steps = [T.Resize((RESOLUTION, RESOLUTION))] + ([T.RandomHorizontalFlip(0.5)] if flip else [])
        self.transform = T.Compose(steps + [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        self.root, self.images = root, images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, row):
        return self.transform(load_rgb(self.root / self.images[row])), row


def authors_passes(root, data, workers, passes):
    """Per pass: the train batches, then the val batches, from their DataLoaders on one generator."""
    generator = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)  # workers=0: their flips draw from the global generator
    train = AuthorsImages(root, data["train"].images, flip=True)
    val = AuthorsImages(root, data["val"].images, flip=False)
    out = []
    for _ in range(passes):
        loaders = [torch.utils.data.DataLoader(train, BATCH, sampler=AuthorsShuffle(len(train), generator),
                                               drop_last=True, num_workers=workers, generator=generator),
                   torch.utils.data.DataLoader(val, BATCH, drop_last=True, num_workers=workers, generator=generator)]
        out.append([[(x, rows) for x, rows in loader] for loader in loaders])
    return out, generator.get_state()


def shared_passes(root, data, workers, passes, world=None):
    """Per pass: the train batches, then the val batches; and the generator's state after each pass."""
    world = world or World()
    generator = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    config = TrainConfig("AN", "fine-tuned", coco_root=root, resolution=RESOLUTION, workers=workers)
    loaders = _ImageLoaders(data, config, BATCH, generator, world)
    out, states = [], []
    for _ in range(passes):
        out.append([[(to_model_input(u8, "imagenet"), rows) for u8, rows in loader]
                    for loader in (loaders.train(), loaders.evaluation("val"))])
        states.append(generator.get_state())
    return out, states


@pytest.fixture(scope="module")
def one_process_passes(smoke_root, smoke_data):
    """Two passes of the shared loader on one process, per worker count, made once (read only): the
    comparison with the authors' batches reads both, the ranks' test the first as its whole batches
    (a pass's batches and the state after it do not depend on a pass following it)."""
    made = {}

    def passes(workers):
        if workers not in made:
            made[workers] = shared_passes(smoke_root, _data(smoke_data), workers, 2)
        return made[workers]

    return passes


@pytest.mark.parametrize("workers", [0, 2])
def test_shared_loader_batches_equal_the_authors_float_batches(smoke_root, smoke_data, one_process_passes,
                                                               workers):  # noqa: F811
    data = _data(smoke_data)
    theirs, their_state = authors_passes(smoke_root, data, workers, 2)
    ours, our_states = one_process_passes(workers)
    our_state = our_states[-1]
    for their_pass, our_pass in zip(theirs, ours):
        for their_loader, our_loader in zip(their_pass, our_pass):
            assert len(their_loader) == len(our_loader) > 0
            for (x, rows), (y, our_rows) in zip(their_loader, our_loader):
                assert torch.equal(rows, our_rows) and x.dtype == y.dtype == torch.float32
                assert torch.equal(x, y)
    assert torch.equal(their_state, our_state)  # the same number of draws from the run's generator
    assert [r.tolist() for _, r in theirs[0][0]] != [r.tolist() for _, r in theirs[1][0]]  # each pass reshuffles
    plain = AuthorsImages(smoke_root, data["train"].images, flip=False)
    flips = [not torch.equal(x[i], plain[int(row)][0]) for x, rows in ours[0][0] for i, row in enumerate(rows)]
    assert any(flips) and not all(flips)  # the flips are under test


@pytest.mark.parametrize("workers", [0, 2])
def test_each_rank_gets_its_share_of_each_batch_with_the_same_flips(smoke_root, smoke_data, one_process_passes,
                                                                    workers):  # noqa: F811
    data = _data(smoke_data)
    passes, states = one_process_passes(workers)
    whole, state = passes[:1], states[0]  # the first pass
    ranks = [shared_passes(smoke_root, data, workers, 1, World(rank, 2)) for rank in (0, 1)]
    assert all(torch.equal(rank_states[0], state) for _, rank_states in ranks)
    for step, (x, rows) in enumerate(whole[0][0]):  # train: each rank holds a contiguous half of every batch
        assert torch.equal(torch.cat([r[0][0][0][step][0] for r in ranks]), x)
        assert torch.equal(torch.cat([r[0][0][0][step][1] for r in ranks]), rows)
    val = [torch.cat([rows for _, rows in r[0][0][1]]) if r[0][0][1] else torch.empty(0, dtype=torch.int64)
           for r in ranks]  # val: each rank scores a contiguous run of whole batches
    assert torch.equal(torch.cat(val), torch.cat([rows for _, rows in whole[0][1]]))
