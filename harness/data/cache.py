"""One decode per image and resolution: the images of a pass, and a uint8 cache of them on disk.

`PassImages` yields (uint8 image, output row) for a list of (position, row) items over a list
of file names. With a `DecodeCache`, a position whose image is already in the cache is read
from it (after its checksum is checked) and a decoded one is written to it, so models that
could not ride the first pass (another image order, or no room on the device beside the
others) read the resized pixels instead of decoding the JPEG again. The cache is a
memory-mapped (N, 3, S, S) uint8 array with a crc32 per image (-1: not written yet); a wrong
checksum means the image is decoded again, never used. Its two arrays are read through the one
safe reader (harness.records.arrays): a cache whose arrays are not the announced uint8 images and
int64 checksums (a pickle, another shape) is made again. A run that read from a cache records which
(`describe`: its key and a digest of its checksums keyed by that key), so a cache edited with
matching checksums cannot pass unseen: its digest differs from the one a fresh decode gives.
"""
import hashlib
import json
import logging
import shutil
import zlib
from pathlib import Path

import numpy as np
import PIL
import torch
from torch.utils.data import Dataset

from harness.data.images import DECODE_ERRORS, UnreadableImages, load_rgb, reason
from harness.errors import UserError
from harness.records.arrays import load_array, read_header

logger = logging.getLogger(__name__)

IMAGES, CHECKSUMS, META = "images.npy", "crc32.npy", "cache.json"
# The resize the cache stores, by version: 2 is resize_bilinear (width then height, the authors'
# Pillow's bits); a cache of version 1 (Pillow's own order, which Pillow 13 changed) is never reused.
RESIZE_VERSION = 2


def cache_key(folder, names, resolution):
    """Changes when an image file, the list, the size, Pillow or the resize it stores changes."""
    h = hashlib.sha256(f"{Path(folder).resolve()}|{resolution}|{PIL.__version__}|resize {RESIZE_VERSION}".encode())
    for name in names:
        st = (Path(folder) / name).stat()
        h.update(f"|{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


class DecodeCache:
    """The cache folder of one resolution and image list; created, or reused when its key matches."""

    def __init__(self, folder, n, resolution, key="", reused=False):
        self.folder, self.n, self.resolution = Path(folder), n, resolution
        self.key, self.reused = key, reused  # reused: made by an earlier run (--keep-cache), not this one
        self._images = self._crc = None

    @classmethod
    def open(cls, root, image_folder, names, resolution):
        """The cache, or None when the disk has no room for it (then images are decoded again)."""
        key = cache_key(image_folder, names, resolution)
        folder = Path(root) / f"{resolution}px-{key}"
        meta = {"key": key, "n": len(names), "resolution": resolution}
        if folder.is_dir() and _read_json(folder / META) == meta:
            problem = cls(folder, len(names), resolution).damage()
            if problem is None:
                return cls(folder, len(names), resolution, key, reused=True)
            logger.warning(f"the decode cache {folder} is damaged ({problem}): making it again")
        cache = cls(folder, len(names), resolution, key)
        need = len(names) * (3 * resolution * resolution + 8)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if shutil.disk_usage(folder.parent).free < need * 1.05 + (1 << 30):
            return None
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        np.lib.format.open_memmap(folder / IMAGES, mode="w+", dtype=np.uint8, shape=(len(names), 3, resolution,
                                                                                       resolution))
        crc = np.lib.format.open_memmap(folder / CHECKSUMS, mode="w+", dtype=np.int64, shape=(len(names),))
        crc[:] = -1
        crc.flush()
        del crc
        (folder / META).write_text(json.dumps(meta))
        return cache

    def _shapes(self):
        s = self.resolution
        return {IMAGES: ((self.n, 3, s, s), np.dtype(np.uint8)), CHECKSUMS: ((self.n,), np.dtype(np.int64))}

    def damage(self):
        """What is wrong with the cache's arrays (None: nothing), from their headers alone."""
        for name, (shape, dtype) in self._shapes().items():
            try:
                found, found_dtype, fortran, _ = read_header(self.folder / name, f"decode cache {name}")
            except UserError as e:
                return str(e)
            if (found, found_dtype, fortran) != (shape, dtype, False):
                return f"{name} holds {found} x {found_dtype}, not {shape} x {dtype}"
        return None

    def _maps(self):
        if self._images is None:  # opened in each process that reads or writes (loader workers too)
            shapes = self._shapes()
            self._images = load_array(self.folder / IMAGES, "decode cache images", shape=shapes[IMAGES][0],
                                      kinds="u", mmap_mode="r+")
            self._crc = load_array(self.folder / CHECKSUMS, "decode cache checksums", shape=shapes[CHECKSUMS][0],
                                   kinds="i", mmap_mode="r+")
        return self._images, self._crc

    def digest(self):
        """blake2b of the checksums of every image, keyed by the cache's key (its image list, sizes,
        resolution, Pillow and resize): which cache, and which pixels in it."""
        crc = load_array(self.folder / CHECKSUMS, "decode cache checksums", shape=(self.n,), kinds="i")
        return hashlib.blake2b(np.ascontiguousarray(crc).tobytes(), key=self.key.encode()[:64], digest_size=32).hexdigest()

    def describe(self):
        """What a record keeps of a cache it read: `harness verify` shows it."""
        return {"folder": self.folder.name, "key": self.key, "resolution": self.resolution, "images": self.n,
                "reused": self.reused, "crc32_blake2b": self.digest(),
                "read": "images whose crc32 matched were read from it instead of decoded"}

    def read(self, position):
        """The cached uint8 image, or None when it is not there or its checksum is wrong."""
        images, crc = self._maps()
        if crc[position] < 0:
            return None
        pixels = np.array(images[position])
        return pixels if zlib.crc32(pixels) == crc[position] else None

    def write(self, position, pixels):
        images, crc = self._maps()
        images[position] = pixels
        crc[position] = zlib.crc32(np.ascontiguousarray(pixels))  # after the pixels: a crash leaves -1

    def __getstate__(self):  # loader workers open their own maps
        return {**self.__dict__, "_images": None, "_crc": None}

    def delete(self):
        self._images = self._crc = None
        shutil.rmtree(self.folder, ignore_errors=True)


class PassImages(Dataset):
    """(uint8 (3, S, S) image, row) for items [(position in `names`, row to report), ...]."""

    def __init__(self, image_folder, names, transform, items, cache=None):
        self.folder, self.names, self.transform = Path(image_folder), names, transform
        self.items, self.cache = list(items), cache

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        position, row = self.items[i]
        if self.cache is not None:
            cached = self.cache.read(position)
            if cached is not None:
                return torch.from_numpy(cached), row
        try:
            image = self.transform(load_rgb(self.folder / self.names[position]))
        except DECODE_ERRORS as e:
            return UnreadableImages([(row, self.names[position], reason(e))])
        if self.cache is not None:
            self.cache.write(position, image.numpy())
        return image, row


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
