"""Their train transform against their code (fixtures: tests/fixtures/q2l_authors/augment*.json, made by
make_fixtures.py: augment_pillow8.3.json under Pillow 8.3.2, torch 1.9.1 and numpy 1.26 in a scratch
environment, augment.json under today's libraries; the script asserted the same equalities).

Each sample is drawn after random.seed(s); np.random.seed(s): the same random state in, the same
image out. Images are integers and ToTensor / Normalize are single rounded float32 operations, so
bits are compared. A future Pillow that changes one of these operations (as Pillow 13 changed the
resize, see harness/q2l/augment.py) fails these tests: the harness would no longer give their images.
"""
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image
from q2l_authors import Q2L_FIXTURES, make

from harness.q2l import augment
from harness.q2l.randaugment import RandAugment

IMAGES = dict(np.load(Q2L_FIXTURES / "augment_images.npz"))
THEIRS_THEN = json.loads((Q2L_FIXTURES / "augment_pillow8.3.json").read_text())
THEIRS_NOW = json.loads((Q2L_FIXTURES / "augment.json").read_text())
S = make.AUGMENT_SIZE


def outputs(fn, name, seeds):
    """sha256 prefixes of fn's outputs on one image, each after random.seed(s); np.random.seed(s)."""
    return [make.short_sha(make.seeded(s, fn, Image.fromarray(IMAGES[name]))) for s in range(seeds)]


def test_the_fixtures_are_their_pillow_of_then_and_todays():
    assert THEIRS_THEN["pillow"] == "8.3.2" and "cutout_error" not in THEIRS_THEN
    assert "x1 must be greater than or equal to x0" in THEIRS_NOW["cutout_error"]


@pytest.mark.parametrize("name", sorted(THEIRS_THEN["randaugment"]))
def test_randaugment_equals_the_package(name):
    assert THEIRS_NOW["randaugment"][name] == THEIRS_THEN["randaugment"][name]  # Pillow 8.3.2 and today's alike
    assert outputs(RandAugment(), name, make.AUGMENT_SEEDS) == THEIRS_THEN["randaugment"][name]


def test_every_operation_was_applied_in_the_fixture():
    applied = "+".join(THEIRS_THEN["randaugment_applied"]).split("+")
    assert all(applied.count(op) >= 3 for op in RandAugment.get_trans_list())


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_resize_equals_their_pillow(name):
    ours = np.asarray(augment.resize_square(Image.fromarray(IMAGES[name]), S))
    assert make.short_sha(ours) == THEIRS_THEN["resize"][name]


@pytest.mark.parametrize("key", ["as-run/1", "as-run/3", "intended/1", "intended/3"])
def test_cutout_equals_theirs_as_pillow_8_drew_it(key):
    kind, n_holes = key.split("/")
    cut_fact = 0.5 if kind == "intended" else None
    for name, shas in THEIRS_THEN["cutout"][key].items():
        assert outputs(lambda im: augment.cutout(im, int(n_holes), cut_fact=cut_fact), name, make.CUTOUT_SEEDS) == shas
        if kind == "intended":  # ordered corners: today's Pillow draws it too
            assert THEIRS_NOW["cutout"][key][name] == shas


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_resize_cutout_randaugment_equal_their_pipeline(name):
    train = augment.TrainAugment(S)
    ours = outputs(lambda im: train(im).permute(1, 2, 0), name, make.CUTOUT_SEEDS)
    assert ours == THEIRS_THEN["train_uint8"][name]


@pytest.mark.parametrize("normalize", ["imagenet", "none"])
def test_whole_transform_equals_their_get_datasets_transform(normalize):
    transform = augment.train_transform(S, normalize, cutout="off")
    for name, shas in THEIRS_NOW["train_float32"][normalize].items():
        assert outputs(transform, name, make.CUTOUT_SEEDS) == shas


def test_as_run_cutout_is_a_three_by_three_square_and_intended_one_of_cut_fact_times_s():
    black = Image.new("RGB", (448, 448))
    for cut_fact, side in ((None, 3), (0.5, 225)):
        np.random.seed(7)  # centre: row 175, column 196, more than 112 pixels from every edge
        random.seed(7)
        changed = np.asarray(augment.cutout(black.copy(), 1, cut_fact=cut_fact)).any(-1)
        rows, cols = np.nonzero(changed)
        assert changed.sum() == side * side and np.ptp(rows) + 1 == side and np.ptp(cols) + 1 == side


def test_seeded_sample_draws_depend_on_seed_epoch_index_only_and_leave_the_global_state():
    image = Image.fromarray(IMAGES["noise"])
    transform = augment.TrainAugment(S)
    random.seed(1)
    np.random.seed(1)
    before = random.random(), np.random.random()
    random.seed(1)
    np.random.seed(1)
    draws = {}
    for key in [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0), (0, 0, 0)]:
        with augment.seeded_sample_rng(*key):
            draws.setdefault(key, []).append(transform(image))
    assert torch.equal(*draws[(0, 0, 0)])
    assert len({bytes(d[0].numpy()) for d in draws.values()}) == 4
    assert (random.random(), np.random.random()) == before  # as if no sample had been drawn
    with pytest.raises(ValueError, match=">= 0"):
        with augment.seeded_sample_rng(0, -1, 0):
            pass


def test_an_unknown_cutout_is_refused():
    with pytest.raises(ValueError, match="as-run, intended, off"):
        augment.TrainAugment(S, cutout="square")
