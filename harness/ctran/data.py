"""C-Tran's data: COCO labels, the authors' train/test transforms, and images with their label masks.

Their loader (load_data.py, dataloaders/coco80_dataset.py) reads pickles `train.data` and
`val_test.data` (inside their 19 GB data tarball, not fetched here): per image a `file_name` and an
80-dim `objects` vector. The same is built from instances_{train,val}2014.json (categories in
ascending id). Not verifiable without their tarball: the pickles' image count and order; the
annotated images (82,081 / 40,137) are used, and order moves none of their metrics.
"""
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T

from harness.ctran import masks
from harness.data.images import load_rgb
from harness.data.transforms import IMAGENET_MEAN, IMAGENET_STD, SquishResize

SCALE, CROP = 640, 576
TRAIN_CROPS = (640, 576, 512, 384, 320)


def train_transform(scale=SCALE, crop=CROP):
    """Theirs: squish to 640, one of five random crops, squish to 576, flip, ImageNet normalisation.

    RandomChoice draws from Python's global `random`, the crops and flip from torch: the training
    loop seeds both. `scale`/`crop` other than 640/576 are for smoke runs: the crop sizes scale too.
    """
    crops = [max(1, round(c * scale / SCALE)) for c in TRAIN_CROPS]
    return T.Compose([SquishResize(scale), T.RandomChoice([T.RandomCrop(c) for c in crops]),
                      SquishResize(crop), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_transform(scale=SCALE, crop=CROP):
    """Theirs: squish to 640, centre crop 576, ImageNet normalisation (squish: Resize((S, S)) with the
    bits of the Pillow they ran, harness.data.images.resize_bilinear)."""
    return T.Compose([SquishResize(scale), T.CenterCrop(crop), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


@dataclass(frozen=True)
class TrainingDraw:
    """Their label-mask training draw on a Random keyed by (seed, epoch, row); all unknown without LMT."""
    use_lmt: bool = True
    seed: int = 0

    def unknown(self, num_labels, row, epoch, image, image_id):
        return masks.train_unknown_indices(masks.train_rng(self.seed, epoch, row), num_labels, self.use_lmt)


@dataclass(frozen=True)
class TestDraw:
    """`known` labels known per image, by `draw` (`ctran`: their image-hash seed; `ctran-id`)."""
    known: int = 0
    draw: str = "ctran"

    def unknown(self, num_labels, row, epoch, image, image_id):
        return masks.test_unknown_indices(num_labels, self.known, image=image, image_id=image_id, draw=self.draw)


class MaskedImages(Dataset):
    """Yields (image, labels, mask, row) as their Coco80Dataset; mask = labels with unknowns at -1.

    `labels_known` says which labels are known: a TrainingDraw (keyed by the epoch set on the
    dataset) or a TestDraw.
    """

    def __init__(self, root, coco_labels, transform, labels_known, rows=None):
        self.folder = root / coco_labels.split
        self.coco, self.transform, self.labels_known = coco_labels, transform, labels_known
        self.rows = list(range(len(coco_labels))) if rows is None else list(rows)
        self.epoch = 1

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        image = self.transform(load_rgb(self.folder / self.coco.file_names[row]))
        labels = torch.from_numpy(self.coco.labels[row].astype("float32"))
        unknown = self.labels_known.unknown(labels.shape[0], row, self.epoch, image, self.coco.image_ids[row])
        return image, labels, masks.apply_mask(labels, unknown), row
