"""Query2Label's training data, as their get_dataset.py and main_mlc.py build it.

- Images: every image of train2014 and val2014 sorted by id (torchvision CocoDetection order), the
  unannotated ones as all-negative rows; labels float64 as their CoCoDataset holds them (so their loss
  is float64), from the authors' committed label files when the manifest lists them (cross-checked
  against the json), else from the json.
- Train loader: DistributedSampler(shuffle, seed 0) over the world (one process: a world of one, as
  theirs always is), a per-process batch of B / W, drop_last; created without a generator, so, as
  theirs, each epoch's iterator takes one draw from the global torch RNG.
- Validation loader: DistributedSampler(shuffle=False): rank r scores rows r, r + W, ... (the list
  padded by repeating its start), and the ranks' scores are concatenated in rank order, as their
  voc_mAP reads the rank files (harness.ranks.distributed_order is the same order).
- `--selection held-out`: a seeded part of train2014 replaces val2014 for selection (recorded).
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from harness.data.authors_labels import choose_labels, choose_train_labels
from harness.data.coco import check_images, load_labels
from harness.data.images import load_rgb
from harness.data.transforms import IMAGENET_MEAN, IMAGENET_STD, SquishResize
from harness.errors import UserError


class LabelledImages(Dataset):
    """Yields (image tensor, float64 label row, row) for rows of a CocoLabels split.

    `transform(image, row, epoch)`: the training transform draws its randomness from (seed, epoch,
    row), so a sample's augmentation does not depend on which loader process made it."""

    def __init__(self, root, coco_labels, labels, transform, rows=None):
        self.folder = Path(root) / coco_labels.split
        self.file_names, self.labels = coco_labels.file_names, labels
        self.transform = transform
        self.rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
        self.epoch = 0

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = int(self.rows[i])
        image = self.transform(load_rgb(self.folder / self.file_names[row]), row, self.epoch)
        return image, torch.from_numpy(self.labels[row]), row


def eval_transform(img_size, orid_norm):
    """Their test transform: Resize((S, S)) with the bits of the Pillow they ran, ToTensor, Normalize
    (mean 0 / std 1 with --orid_norm)."""
    from torchvision import transforms as T  # lazy: a second per process (it loads torch._dynamo)

    mean, std = ((0, 0, 0), (1, 1, 1)) if orid_norm else (IMAGENET_MEAN, IMAGENET_STD)
    steps = T.Compose([SquishResize(img_size), T.ToTensor(), T.Normalize(mean, std)])
    return lambda image, row, epoch: steps(image)


@dataclass(frozen=True)
class TrainingData:
    """train2014 rows to train on, rows to select on (val2014, or held-out train2014), val2014 to test on."""
    root: Path
    train: object  # CocoLabels of train2014 (all images)
    test: object  # CocoLabels of val2014 (all images)
    train_labels: np.ndarray  # float64, the labels training uses
    test_labels: np.ndarray  # float64
    train_rows: np.ndarray
    select_rows: np.ndarray  # rows of `select_split`
    select_split: str  # "val2014" or "train2014"
    label_sources: dict  # what each split's labels came from (recorded)

    @property
    def select(self):
        return (self.test, self.test_labels) if self.select_split == "val2014" else (self.train, self.train_labels)


def split_rows(n, fraction, seed):
    """(train rows, held-out rows), each sorted: a seeded permutation, the last `fraction` held out."""
    perm = np.random.RandomState(seed).permutation(n)
    n_out = int(round(fraction * n))
    return np.sort(perm[: n - n_out]), np.sort(perm[n - n_out:])


def load_training_data(config, spec) -> TrainingData:
    """Labels of both splits, images checked on disk, the selection split; one line if anything is missing."""
    root = Path(config.coco_root)
    train, test = load_labels(root, "train2014", "all"), load_labels(root, "val2014", "all")
    for split in (train, test):
        check_images(root, split)
    trained_on = choose_train_labels(spec, root, train, weights_dir=config.weights_dir)
    tested_on = choose_labels(spec, root, test, weights_dir=config.weights_dir)
    train_labels, test_labels = (c.labels.astype(np.float64) for c in (trained_on, tested_on))
    train_rows, select_rows, split = np.arange(len(train)), np.arange(len(test)), "val2014"
    if config.selection == "held-out":
        train_rows, select_rows = split_rows(len(train), config.holdout, config.seed)
        split = "train2014"
    if len(train_rows) < config.batch_size:
        raise UserError(f"{len(train_rows)} train2014 images to train on, fewer than one batch of "
                        f"{config.batch_size} (their loader drops the last partial batch): pass a smaller --batch-size")
    return TrainingData(root, train, test, train_labels, test_labels, train_rows, select_rows, split,
                        {"train2014": trained_on.record, "val2014": tested_on.record})


def train_loader(dataset, batch_size, world, workers, epoch):
    """Their training loader: DistributedSampler(shuffle, seed 0), per-process batch B / W, drop_last,
    no generator (the iterator draws its base seed from the global torch RNG, as theirs)."""
    sampler = DistributedSampler(dataset, num_replicas=world.size, rank=world.rank, shuffle=True, seed=0)
    sampler.set_epoch(epoch)
    dataset.epoch = epoch
    return DataLoader(dataset, batch_size=batch_size // world.size, sampler=sampler, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), drop_last=True, persistent_workers=False)


def val_loader(dataset, batch_size, world, workers):
    """Their validation loader: DistributedSampler(shuffle=False) (padding repeats), batch B / W."""
    sampler = DistributedSampler(dataset, num_replicas=world.size, rank=world.rank, shuffle=False)
    return DataLoader(dataset, batch_size=batch_size // world.size, sampler=sampler, num_workers=workers,
                      pin_memory=torch.cuda.is_available())
