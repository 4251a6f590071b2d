"""A torch Dataset over a CocoLabels image list, applying a model's transform."""
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset


def load_rgb(path):
    """Open an image as RGB: COCO holds grayscale and a few CMYK JPEGs."""
    with Image.open(path) as img:
        return img.convert("RGB")


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
        return self.transform(load_rgb(self.folder / self.file_names[row])), row
