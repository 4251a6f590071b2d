"""How far the harness's TResNet is from the authors' (real inplace_abn kernel), with realistic
running statistics. Needs inplace_abn 1.1.0 importable; not run in CI.

    python benchmarks/tresnet_abn_bound.py /path/to/query2labels-checkout [--size 224] [--images 8]

The authors' TResNet-L (`lib/models/tresnet/tresnet_sync.py`, with InPlaceABNSync) is built from
their checkout without importing the rest of their model package. Their one CUDA-only line (the
anti-alias filter's `.cuda().half()`) must be removed in that checkout first (their code casts the
filter to float for fp32 inputs anyway). The harness model gets random weights (batch-norm scales of both signs),
running statistics measured on a batch of random images (not random statistics), and the authors'
model the same state dict.
Printed: max |logit difference| of the harness (plain torch, and with the inplace_abn kernel) against
theirs, for TResNet-L + linear head (the ASL model) and the body's feature map.
"""
import argparse
import os
import sys
import types
from pathlib import Path

import torch
from torch import nn


def authors_tresnet_l(checkout, num_classes):
    lib = Path(checkout) / "lib"
    sys.path.insert(0, str(lib))
    package = types.ModuleType("models")  # their models/__init__ imports every backbone: skip it
    package.__path__ = [str(lib / "models")]
    sys.modules["models"] = package
    from models.tresnet.tresnet_sync import TResnetL

    return TResnetL({"num_classes": num_classes})


def calibrated_harness_model(size, n_images, seed):
    from harness.models.backbones.tresnet import ABN, tresnet_l

    torch.manual_seed(seed)
    model = tresnet_l(num_classes=80)
    for m in model.modules():
        if isinstance(m, ABN):
            nn.init.uniform_(m.weight, 0.2, 1.5)
            m.weight.data *= torch.where(torch.rand_like(m.weight) < 0.1, -1.0, 1.0)  # a few negative scales
            nn.init.normal_(m.bias, 0, 0.1)
            m.momentum = 1.0  # running statistics := the statistics of the calibration batch
    images = torch.rand(n_images, 3, size, size)
    os.environ["HARNESS_TRESNET_BN"] = "torch"
    with torch.no_grad():
        model.train()(images)
    return model.eval()


def run(model, x, plain):
    if plain:
        os.environ["HARNESS_TRESNET_BN"] = "torch"
    else:
        os.environ.pop("HARNESS_TRESNET_BN", None)
    with torch.no_grad():
        return model.body(x.clone()), model(x.clone())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkout")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ours = calibrated_harness_model(args.size, args.images, args.seed)
    theirs = authors_tresnet_l(args.checkout, 80).eval()
    theirs.load_state_dict(ours.state_dict(), strict=False)
    missing = set(theirs.state_dict()) - set(ours.state_dict())
    assert not missing or all(k.endswith("num_batches_tracked") for k in missing), missing
    x = torch.rand(4, 3, args.size, args.size)
    with torch.no_grad():
        their_body, their_logits = theirs.body(x.clone()), theirs(x.clone())
    for name, plain in (("plain torch", True), ("inplace_abn kernel", False)):
        body, logits = run(ours, x, plain)
        print(f"{name:>20}: max |logits - theirs| {(logits - their_logits).abs().max().item():.3g}, "
              f"max |features - theirs| {(body - their_body).abs().max().item():.3g} "
              f"(features up to {their_body.abs().max().item():.3g})")


if __name__ == "__main__":
    main()
