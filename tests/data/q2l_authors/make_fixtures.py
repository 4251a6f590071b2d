"""Make the Query2Label training fidelity fixtures by running the authors' code (not run in CI).

    PYTHONPATH=. python tests/data/q2l_authors/make_fixtures.py PATH/TO/query2labels

PATH is a checkout of SlongLiu/query2labels (read at 55eb050). Their files are imported as they
are, and each piece of the harness is run beside them on the same inputs in this process: the
script asserts bit-equality itself before writing. Writes beside this script:
  loss.npz   AsymmetricLossOptimized (lib/models/aslloss.py): for each case of `loss_cases()`, its
             logits and float64 targets, and their loss and gradient w.r.t. the logits with and
             without disable_torch_grad_focal_loss (--dtgfl).
"""
import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# name -> the criterion's keyword arguments: main_mlc.py's defaults (the README command's), and
# ASL's defaults with a clip (a shift and clamp of the negatives' probabilities).
LOSS_SETTINGS = {"q2l": dict(gamma_neg=2, gamma_pos=0, clip=0.0, eps=1e-5),
                 "asl_clip": dict(gamma_neg=4, gamma_pos=1, clip=0.05, eps=1e-5)}


def loss_cases():
    """name -> (logits, float64 targets, settings name): random, saturated and extreme logits, rows of all
    positives and all negatives, float32 logits (their head's dtype) and float64 ones."""
    rng = np.random.default_rng(25)
    cases = {}
    for settings in LOSS_SETTINGS:
        targets = (rng.random((8, 80)) < 0.1).astype(np.float64)
        targets[0], targets[1] = 1, 0  # a row of positives, a row of negatives
        logits = rng.normal(0, 3, (8, 80))
        cases[f"{settings}/normal"] = (logits.astype(np.float32), targets, settings)
        cases[f"{settings}/float64"] = (logits, targets, settings)
        extreme = rng.choice([-1e4, -100.0, -30.0, -12.0, -1e-3, 0.0, 1e-3, 12.0, 30.0, 100.0, 1e4], (8, 80))
        cases[f"{settings}/extreme"] = (extreme.astype(np.float32), targets, settings)
        cases[f"{settings}/extreme_float64"] = (extreme, targets, settings)
    return cases


def their_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_loss(checkout):
    import torch

    from harness.q2l.loss import asymmetric_loss

    aslloss = their_module(checkout / "lib/models/aslloss.py", "their_aslloss")
    out = {}
    for name, (logits, targets, settings) in loss_cases().items():
        out[f"{name}/logits"], out[f"{name}/targets"] = logits, targets
        for dtgfl in (True, False):
            results = []
            for loss_fn in (aslloss.AsymmetricLossOptimized(**LOSS_SETTINGS[settings],
                                                            disable_torch_grad_focal_loss=dtgfl),
                            lambda x, y: asymmetric_loss(x, y, **LOSS_SETTINGS[settings],
                                                         disable_torch_grad_focal_loss=dtgfl)):
                x = torch.tensor(logits, requires_grad=True)
                loss = loss_fn(x, torch.tensor(targets))
                loss.backward()
                results.append((loss.detach().numpy(), x.grad.numpy()))
            (their_loss, their_grad), (loss, grad) = results
            assert their_loss.dtype == np.float64 and their_loss.tobytes() == loss.tobytes(), name
            assert their_grad.tobytes() == grad.tobytes(), name
            out[f"{name}/dtgfl{int(dtgfl)}/loss"], out[f"{name}/dtgfl{int(dtgfl)}/grad"] = their_loss, their_grad
    np.savez_compressed(HERE / "loss.npz", **out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a checkout of SlongLiu/query2labels")
    args = parser.parse_args(argv)
    make_loss(args.checkout.resolve())


if __name__ == "__main__":
    sys.exit(main())
