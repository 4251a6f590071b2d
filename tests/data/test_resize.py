"""Every resize of the harness gives the bits of the Pillow the authors ran (8.3.2), whatever Pillow
is installed: held to hashes that Pillow wrote (tests/fixtures/make_resize_fixture.py; uint8 output
of integer arithmetic, the same on every CPU)."""
import functools
import json
import sys

import numpy as np
import pytest
import torch
from paths import FIXTURES
from PIL import Image

from harness.ctran.data import eval_transform as ctran_eval_transform
from harness.data.images import resize_bilinear
from harness.data.transforms import ResizeToUint8, SquishResize
from harness.q2l.augment import resize_square

sys.path.insert(0, str(FIXTURES))
from make_resize_fixture import SHAPES, SIZES, digest  # noqa: E402  (the fixture's own images)
from make_resize_fixture import image as make_image  # noqa: E402

# each seeded image drawn once for all five sizes (drawing one costs about as much as its four resizes;
# resizing reads it, never writes it)
image = functools.lru_cache(maxsize=None)(make_image)

THEIRS = json.loads((FIXTURES / "resize_pillow8.json").read_text())


def test_the_fixture_was_made_under_the_authors_pillow():
    assert THEIRS["pillow"].startswith("8.") and len(THEIRS["hashes"]) == len(SHAPES) * len(SIZES)


@pytest.mark.parametrize("size", SIZES)
def test_every_resize_path_gives_their_bits(size):
    for width, height in SHAPES:
        theirs = THEIRS["hashes"][f"{width}x{height}->{size}"]
        img = image(width, height)
        assert digest(resize_bilinear(img, (size, size))) == theirs, (width, height, size)
        assert digest(SquishResize(size)(img)) == theirs
        assert digest(resize_square(img, size)) == theirs
        shipped = ResizeToUint8(size)(img)
        assert hashlib_of(shipped.permute(1, 2, 0)) == theirs


def hashlib_of(tensor):
    return digest(Image.fromarray(tensor.contiguous().numpy()))


def test_a_portrait_photo_is_where_todays_pillow_may_differ():
    """The case the harness exists for: Pillow 13's own resize of a portrait image is not theirs
    (when the installed Pillow is 13 or later); the harness's is."""
    img = image(480, 640)
    theirs = THEIRS["hashes"]["480x640->448"]
    assert digest(resize_bilinear(img, (448, 448))) == theirs
    if int(Image.__version__.split(".")[0]) >= 13:
        assert digest(img.resize((448, 448), Image.BILINEAR)) != theirs


def test_c_tran_squishes_then_crops_with_the_same_resize():
    img = image(480, 640)
    x = ctran_eval_transform(scale=64, crop=48)(img)
    squished = np.asarray(resize_bilinear(img, (64, 64)), dtype=np.float32) / 255
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    expected = (torch.from_numpy(squished[8:56, 8:56]).permute(2, 0, 1) - torch.tensor(mean).view(3, 1, 1)) \
        / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-6)
