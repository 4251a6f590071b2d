"""Decoding one image as every loader here does (RGB), and saying why one cannot be decoded.

Torch-free, so the commands that only check images (`harness data coco --verify-images`) start fast.
"""
from PIL import Image, UnidentifiedImageError

DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def resize_bilinear(image, size):
    """PIL bilinear resize to size = (width, height) with the bits of every Pillow before 13, which
    the authors' code ran under (Q2L's environment: 8.3.2): the horizontal pass, then the vertical.

    Pillow 13 runs the vertical pass first when an image shrinks more in height than in width
    (python-pillow/Pillow#9549): a 480 x 640 COCO photo resized to 448 x 448 then has about a quarter
    of its values one off. Two one-direction resizes give the old order on every Pillow (checked on
    1,545 shapes and sizes against Pillow 8.3.2, tests/fixtures/make_resize_fixture.py). An image
    already at `size` is returned as a copy, as Pillow's resize returns it."""
    width, height = size
    if image.size == (width, height):
        return image.copy()
    if image.width != width:
        image = image.resize((width, image.height), Image.Resampling.BILINEAR)
    if image.height != height:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return image


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
