"""Each model's own evaluation transform: square resize (bilinear, PIL), ToTensor, normalisation.

The loader ships the resize output as it is, uint8 (a quarter of the bytes of float32), and the
rest runs where the model runs: `to_model_input` is ToTensor's `.float().div(255)` and
Normalize's `.sub(mean).div(std)` as the same separate float32 operations, each exactly rounded
on CPU and GPU alike, so it gives the very bits of `eval_transform` (tests/data/test_loader.py).
"""
import numpy as np
import torch

from harness.data.images import resize_bilinear

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SquishResize:
    """The authors' Resize((S, S)) (torchvision, PIL bilinear, no aspect kept) with the bits of the
    Pillow they ran (harness.data.images.resize_bilinear): a PIL image in, a PIL image out."""

    def __init__(self, resolution):
        self.size = (resolution, resolution)

    def __call__(self, image):
        return resize_bilinear(image, self.size)

    def __repr__(self):
        return f"SquishResize({self.size[0]})"


def eval_transform(eval_spec):
    """Resize((S, S)) squish as the authors do, then [0, 1] tensors, then the spec's normalisation
    (the authors' CPU path: the reference that `ResizeToUint8` + `to_model_input` reproduce)."""
    from torchvision import transforms as T  # lazy: a second per process, and TResNet models need none of it

    steps = [SquishResize(eval_spec.resolution), T.ToTensor()]
    if eval_spec.normalize == "imagenet":
        steps.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    # "none": TResNet models take inputs in [0, 1] (the authors' mean 0 / std 1).
    return T.Compose(steps)


class ResizeToUint8:
    """The same PIL resize, kept as a uint8 (3, S, S) tensor: what the loader ships.

    torchvision's Resize((S, S)) + PILToTensor on a PIL image are Pillow's bilinear resize (none when
    the image is already S x S) and the HWC -> CHW bytes; written here with Pillow alone, because
    importing torchvision costs each process about a second (it loads torch._dynamo), and with the
    resize of the Pillow the authors ran (resize_bilinear; tests/data/test_resize.py)."""

    def __init__(self, resolution):
        self.size = (resolution, resolution)

    def __call__(self, image):
        image = resize_bilinear(image, self.size)
        return torch.from_numpy(np.array(image, copy=True)).view(*self.size[::-1], -1).permute(2, 0, 1)


def to_model_input(images, normalize):
    """uint8 (B, 3, S, S) on the model's device -> the float32 input `eval_transform` would give."""
    x = images.float().div(255)
    if normalize == "imagenet":
        mean = torch.as_tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.as_tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        x = x.sub(mean).div(std)
    return x
