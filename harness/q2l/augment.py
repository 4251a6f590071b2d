"""Their train transform (lib/dataset/get_dataset.py), as their runs computed it.

Resize((S, S)) -> SLCutoutPIL(n_holes, length=-1) (with --cutout) -> RandAugment() -> ToTensor ->
Normalize (ImageNet, or mean 0 / std 1 with --orid_norm). No flip, no crop. `TrainAugment` gives
the uint8 image before ToTensor; `harness.data.transforms.to_model_input` is ToTensor + Normalize
to the bit, as for evaluation.

Three things are not today's libraries' defaults, each checked against their code under the
Pillow of their time (8.3.2; tests/q2l/test_q2l_augment.py):
- Resize: Pillow 13 resizes images reduced more in height than in width vertically first
  (python-pillow/Pillow#9549): a 427 x 640 image resized to 448 x 448 then has 24 % of its values
  one off those of Pillow 8.0-12.0. `resize_square` runs the two passes in their order (width, then
  height), which gives the bits of every Pillow before 13 (11 versions from 8.0.1 to 12.0.0 checked).
- Cutout: `--cut_fact` never reaches SLCutoutPIL, so its length is -1 and its box is inverted:
  [xc + 1, yc + 1, xc - 1, yc - 1]. Pillow up to 9.4 (8.0.1-9.4.0 checked) sorted the corners and
  drew the 3 x 3 square around the centre (clipped at the edges) in a random colour; Pillow 9.5
  and later raise ValueError. `cutout="as-run"` draws what they drew, with the same draws. The
  evident alternatives are recorded deviations: "intended" (their cut_fact path, which would crash
  on `self.cutout_factor`, with cut_fact * S as the length: a (2 * (int(cut_fact * S) // 2) + 1)
  pixel square) and "off".
- RandAugment: the PyPI package their import resolves to, vendored with its `np.int` fixed
  (harness/q2l/randaugment.py).

Their runs were unseeded, so there is no draw of theirs to match: what matches is the function from
random state to image. The harness seeds each sample's draws itself (`seeded_sample_rng`), so the
number of loader workers and resuming change nothing: a deliberate, recorded difference.
"""
import random
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

from harness.data.images import resize_bilinear
from harness.data.transforms import to_model_input
from harness.q2l.randaugment import RandAugment

CUTOUT = {
    "as-run": "their SLCutoutPIL with length -1 as Pillow <= 9.4 drew it: a 3 x 3 square",
    "intended": "deviation: a (2 * (int(cut_fact * S) // 2) + 1)-pixel square, their cut_fact path made to run",
    "off": "no cutout: theirs without --cutout, a deviation where their command has it",
}


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """torchvision's Resize((S, S)) (Pillow bilinear) as Pillow <= 12 computed it: width, then height."""
    return resize_bilinear(image, (size, size))


def cutout(image: Image.Image, n_holes: int, length: int = -1, cut_fact: float | None = None) -> Image.Image:
    """Their SLCutoutPIL(n_holes, length, cut_fact) on an RGB image, drawn in place as Pillow <= 9.4 drew it
    (cut_fact: its path made to run, with `cut_fact` where it reads the missing `self.cutout_factor`).

    Their draws, in their order: per hole np.random.randint twice, then random.randint three times.
    Their code names the width h and the height w: the first draw is a row drawn below the width,
    the second a column drawn below the height (the same thing for a square image)."""
    width, height = image.size
    if cut_fact is not None:
        row_half, col_half = int(cut_fact * width) // 2, int(cut_fact * height) // 2
    else:
        row_half = col_half = length // 2  # -1 for their length -1: the box's corners come inverted
    for _ in range(n_holes):
        y_c = np.random.randint(width)
        x_c = np.random.randint(height)
        rows = sorted(min(max(y, 0), width) for y in (y_c - row_half, y_c + row_half))
        cols = sorted(min(max(x, 0), height) for x in (x_c - col_half, x_c + col_half))
        fill = (random.randint(0, 255), random.randint(0, 255), random.randint(0, 255))
        bottom, right = min(rows[1], height - 1), min(cols[1], width - 1)  # the image's last row and column
        if rows[0] <= bottom and cols[0] <= right:
            image.paste(fill, (cols[0], rows[0], right + 1, bottom + 1))
    return image


class TrainAugment:
    """RGB PIL image -> uint8 (3, S, S) tensor: their Resize, cutout, RandAugment."""

    def __init__(self, resolution: int, cutout: str = "as-run", n_holes: int = 1, cut_fact: float = 0.5):
        if cutout not in CUTOUT:
            raise ValueError(f"cutout must be one of {', '.join(CUTOUT)}, not {cutout!r}")
        self.resolution, self.cutout, self.n_holes = resolution, cutout, n_holes
        self.cut_fact = cut_fact if cutout == "intended" else None
        self.randaugment = RandAugment()

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = resize_square(image, self.resolution)
        if self.cutout != "off":
            image = cutout(image, self.n_holes, cut_fact=self.cut_fact)
        image = self.randaugment(image)
        return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)


def train_transform(resolution: int, normalize: str, **cutout_options):
    """Their whole train transform, PIL image -> float32 (3, S, S) (`normalize`: "imagenet" or "none")."""
    augment = TrainAugment(resolution, **cutout_options)
    return lambda image: to_model_input(augment(image)[None], normalize)[0]


@contextmanager
def seeded_sample_rng(seed: int, epoch: int, index: int):
    """Python's `random` and numpy's global generator seeded from (seed, epoch, index) inside the block,
    restored after it: one sample's augmentation draws, the same in any worker and after a resume."""
    if min(seed, epoch, index) < 0:
        raise ValueError(f"seed, epoch and index must be >= 0, not {seed}, {epoch}, {index}")
    saved = random.getstate(), np.random.get_state()
    random.seed(f"q2l-augment {seed} {epoch} {index}")  # a str seeds through sha512: stable everywhere
    np.random.seed([seed, epoch, index])
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
