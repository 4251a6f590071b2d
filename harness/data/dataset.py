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


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageFiles(Dataset):
    """Yields (image tensor, index) for a list of image files (your own photos, not COCO)."""

    def __init__(self, paths, transform):
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import UnidentifiedImageError

        from harness.errors import UserError

        try:
            image = load_rgb(self.paths[i])
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise UserError(f"cannot decode image {self.paths[i]} ({e}); pass JPEG/PNG files that open in an "
                            f"image viewer, or leave this one out") from None
        return self.transform(image), i
