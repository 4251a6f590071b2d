"""Each model's own evaluation transform: square resize (bilinear, PIL), ToTensor, normalisation."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform(eval_spec):
    """Resize((S, S)) squish as the authors do, then [0, 1] tensors, then the spec's normalisation."""
    from torchvision import transforms as T

    steps = [T.Resize((eval_spec.resolution, eval_spec.resolution), interpolation=T.InterpolationMode.BILINEAR), T.ToTensor()]
    if eval_spec.normalize == "imagenet":
        steps.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    # "none": TResNet models take inputs in [0, 1] (the authors' mean 0 / std 1).
    return T.Compose(steps)
