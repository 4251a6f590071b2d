"""C-Tran's label masks: their training law, their partial-label draw on their transformed tensors."""
import hashlib
import random

import numpy as np
import pytest
import torch
from paths import FIXTURES

from harness.ctran import masks
from harness.ctran.data import eval_transform, train_transform
from harness.data.images import load_rgb

DRAWS = np.load(FIXTURES / "ctran_draws.npz")


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ctran_jpegs")
    data, ends = DRAWS["jpeg_bytes"].tobytes(), DRAWS["jpeg_ends"]
    paths = []
    for i, (a, b) in enumerate(zip(np.r_[0, ends[:-1]], ends)):
        paths.append(folder / f"img{i}.jpg")
        paths[-1].write_bytes(data[a:b])
    return paths


def test_known_counts():
    assert [masks.known_count(p) for p in masks.KNOWN_PERCENTS] == [0, 20, 40, 60]


def test_training_draw_is_theirs_on_the_same_random_state():
    for (seed, epoch, row), theirs in zip(DRAWS["train_keys"], DRAWS["train_unknown"]):
        ours = np.zeros(80, bool)
        ours[masks.train_unknown_indices(masks.train_rng(seed, epoch, row), 80)] = True
        assert (ours == theirs).all()


def test_training_known_counts_are_uniform_on_0_to_60():
    # Pearson's chi-square test against the uniform law (scipy.stats.chisquare's statistic and p-value),
    # from scipy.special: scipy.stats costs ~0.5 s to load, scipy.special ~0.04 s
    from scipy.special import chdtrc

    n = 61 * 300
    counts = np.bincount([80 - len(masks.train_unknown_indices(masks.train_rng(7, 1, i), 80)) for i in range(n)],
                         minlength=61)
    assert len(counts) == 61  # never more than int(0.75 * 80) known
    expected = counts.mean()
    assert chdtrc(len(counts) - 1, ((counts - expected) ** 2 / expected).sum()) > 1e-4  # the p-value
    assert masks.train_unknown_indices(random.Random(0), 80, use_lmt=False) and \
        len(masks.train_unknown_indices(random.Random(0), 80, use_lmt=False)) == 80


def test_training_draw_depends_on_seed_epoch_and_row():
    draw = lambda *key: sorted(masks.train_unknown_indices(masks.train_rng(*key), 80))  # noqa: E731
    assert draw(0, 1, 5) == draw(0, 1, 5)
    assert len({tuple(draw(*k)) for k in [(0, 1, 5), (1, 1, 5), (0, 2, 5), (0, 1, 6)]}) == 4


def test_test_transform_and_known_sets_equal_theirs(jpegs):
    transform = eval_transform()
    for i, path in enumerate(jpegs):
        image = transform(load_rgb(path))
        assert hashlib.sha1(np.array(image.numpy())).hexdigest() == DRAWS["test_sha1"][i], \
            "the test transform's bits differ from theirs (Pillow/torchvision version?): use --draw ctran-id"
        labels = torch.from_numpy(DRAWS["labels"][i])
        for percent in masks.KNOWN_PERCENTS:
            unknown = masks.test_unknown_indices(80, masks.known_count(percent), image=image)
            assert (masks.apply_mask(labels, unknown).numpy() == DRAWS[f"test_masks_{percent}"][i]).all()
            assert (DRAWS[f"test_masks_{percent}"][i] != -1).sum() == masks.known_count(percent)


def test_train_transform_equals_theirs_under_the_same_seeds(jpegs):
    transform = train_transform()
    for i, path in enumerate(jpegs):
        random.seed(100 + i)
        torch.manual_seed(100 + i)
        assert hashlib.sha1(transform(load_rgb(path)).numpy()).hexdigest() == DRAWS["train_sha1"][i]


def test_id_draw_is_another_protocol_and_is_stable():
    a = masks.test_unknown_indices(80, 40, image_id=139, draw="ctran-id")
    assert a == masks.test_unknown_indices(80, 40, image_id=139, draw="ctran-id")
    assert len(a) == 40 and a != masks.test_unknown_indices(80, 40, image_id=285, draw="ctran-id")
