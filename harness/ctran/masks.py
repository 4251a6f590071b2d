"""Which labels are known: their label-mask training draw and their partial-label inference draw.

As the authors' dataloaders/data_utils.py:get_unk_mask_indices (QData/C-Tran 560cf6f). A mask is
the label vector with unknown entries set to -1 (known entries keep their 0/1 label).
- Training (LMT): per sample, num_known = randint(0, int(0.75 L)), then the unknown labels are
  random.sample(range(L), L - num_known). Their `random.seed()` reseeds from the OS for every sample,
  so their masks cannot be reproduced; here the same two calls run on a Random seeded by
  (seed, epoch, dataset index): recorded, and independent of worker count and batch order.
- Inference, protocol `ctran`: random.seed(sha1(np.array(image)).hexdigest()) over the transformed,
  normalised image tensor, then random.sample(range(L), L - known): exactly theirs, so it moves
  with the Pillow/torchvision bits of the transform.
- Inference, protocol `ctran-id`: the same law seeded by the COCO image id instead, which no
  library version can move. Another draw, so another experiment: recorded as its own protocol.
"""
import hashlib
import random

import numpy as np
import torch

KNOWN_PERCENTS = (0, 25, 50, 75)
TRAIN_KNOWN_FRACTION = 0.75
DRAWS = ("ctran", "ctran-id")


def known_count(percent, num_labels=80):
    """Their args.test_known_labels = int(test_known * 0.01 * num_labels): 0, 20, 40, 60 for COCO."""
    return int(percent * 0.01 * num_labels)


def train_unknown_indices(rng, num_labels, use_lmt=True):
    """Their training branch, on `rng` instead of the OS-seeded global random."""
    num_known = rng.randint(0, int(num_labels * TRAIN_KNOWN_FRACTION)) if use_lmt else 0
    return rng.sample(range(num_labels), num_labels - num_known)


def train_rng(seed, epoch, index):
    return random.Random(f"ctran-train:{seed}:{epoch}:{index}")


def image_hash_seed(image):
    """Their seed: sha1 over the bytes of np.array(transformed image tensor) (via .numpy(): same bytes)."""
    return hashlib.sha1(np.array(torch.as_tensor(image).numpy())).hexdigest()


def test_unknown_indices(num_labels, known, *, image=None, image_id=None, draw="ctran"):
    """The labels left unknown at inference; `image` (tensor) for draw ctran, `image_id` for ctran-id."""
    seed = image_hash_seed(image) if draw == "ctran" else f"coco-image:{int(image_id)}"
    return random.Random(seed).sample(range(num_labels), num_labels - int(known))


def apply_mask(labels, unknown_indices):
    """Their mask: labels.clone() with the unknown entries scattered to -1."""
    mask = torch.as_tensor(labels, dtype=torch.float32).clone()
    mask[torch.as_tensor(list(unknown_indices), dtype=torch.long)] = -1
    return mask
