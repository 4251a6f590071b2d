"""Decoding one image as every loader here does (RGB), and saying why one cannot be decoded.

Torch-free, so the commands that only check images (`harness data coco --verify-images`) start fast.
"""
from PIL import Image, UnidentifiedImageError

DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


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
