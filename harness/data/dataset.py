"""torch Datasets over a CocoLabels image list or your own files, applying a model's transform.

An image that cannot be decoded (truncated, empty, not a JPEG) does not raise inside a loader
worker, where torch would wrap it in a worker traceback: the item carries the reason instead,
and `collate` hands the main process an `UnreadableImages` batch to report in one line.
"""
from pathlib import Path

from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

from harness.data.images import DECODE_ERRORS, UnreadableImages, load_rgb, reason
from harness.errors import UserError


class CocoImages(Dataset):
    """Yields (image tensor, row index); rows follow the CocoLabels order exactly."""

    def __init__(self, root, coco_labels, transform, indices=None):
        self.folder = Path(root) / coco_labels.split
        self.file_names = coco_labels.file_names
        self.transform = transform
        self.indices = list(range(len(self.file_names))) if indices is None else list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        row = self.indices[i]
        try:
            image = load_rgb(self.folder / self.file_names[row])
        except DECODE_ERRORS as e:
            return UnreadableImages([(row, self.file_names[row], reason(e))])
        return self.transform(image), row


def collate(items):
    """default_collate, unless an item is unreadable: then the batch is those items' reasons."""
    bad = UnreadableImages(x for item in items if isinstance(item, UnreadableImages) for x in item)
    if bad:
        return bad
    return default_collate(items)



class ImageFiles(Dataset):
    """Yields (image tensor, index) for a list of image files (your own photos, not COCO)."""

    def __init__(self, paths, transform):
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            image = load_rgb(self.paths[i])
        except DECODE_ERRORS as e:
            raise UserError(f"cannot decode image {self.paths[i]} ({reason(e)}); pass JPEG/PNG files that open in "
                            f"an image viewer, or leave this one out") from None
        return self.transform(image), i
