"""A torch Dataset over a CocoLabels image list, applying a model's transform.

An image that cannot be decoded (truncated, empty, not a JPEG) does not raise inside a loader
worker, where torch would wrap it in a worker traceback: the item carries the reason instead,
and `collate` hands the main process an `UnreadableImages` batch to report in one line.
"""
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def load_rgb(path):
    """Open an image as RGB: COCO holds grayscale and a few CMYK JPEGs."""
    with Image.open(path) as img:
        return img.convert("RGB")


def decode_problem(path):
    """Why `path` cannot be read as the loader reads it (None when it can)."""
    try:
        load_rgb(path)
    except DECODE_ERRORS as e:
        return reason(e)
    return None


def reason(error):
    """A short reason for a decode error, without the path (the message names the file itself)."""
    if isinstance(error, UnidentifiedImageError):
        return "not an image (empty, cut off at the start, or another format)"
    return " ".join(str(error).split())[:120] or type(error).__name__


class UnreadableImages(list):
    """A batch in which some images could not be decoded: [(row, file name, reason), ...]."""


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


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageFiles(Dataset):
    """Yields (image tensor, index) for a list of image files (your own photos, not COCO)."""

    def __init__(self, paths, transform):
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from harness.errors import UserError

        try:
            image = load_rgb(self.paths[i])
        except DECODE_ERRORS as e:
            raise UserError(f"cannot decode image {self.paths[i]} ({reason(e)}); pass JPEG/PNG files that open in "
                            f"an image viewer, or leave this one out") from None
        return self.transform(image), i
