"""The authors' asymmetric loss (lib/models/aslloss.py, AsymmetricLossOptimized), as a function.

Their criterion already normalises: it returns -sum / B / C * 1000 (B = logits.size(0), the batch
of one GPU; C = the classes), and main_mlc.py's train() backpropagates exactly that value (its
`--loss_dev` multiplier is off by default and in every published command). Their loader yields
float64 labels (cocodataset.py), so the loss is float64: sigmoid and log run in the logits' dtype
(float32: their head's output, also under autocast), the products with the targets, the focusing
weight and the sum in float64. The operations below are theirs, in their order, in-place where
theirs are, so loss and gradient are their bits (tests/q2l/test_q2l_loss.py, fixtures made by their
code).
"""
import contextlib

import torch


def asymmetric_loss(logits: torch.Tensor, targets: torch.Tensor, gamma_neg: float = 2, gamma_pos: float = 0,
                    clip: float = 0.0, eps: float = 1e-5, disable_torch_grad_focal_loss: bool = True,
                    batch_size: int | None = None) -> torch.Tensor:
    """Their AsymmetricLossOptimized(gamma_neg, gamma_pos, clip, eps, disable_torch_grad_focal_loss)
    forward: the value main_mlc.py's train() backpropagates.

    Args:
        logits: (B, C) scores, any float dtype (theirs: float32).
        targets: (B, C) 0/1 labels; pass float64, as their loader does, for their numbers.
        gamma_neg, gamma_pos: focusing exponents of negatives and positives (their --gamma_neg 2 --gamma_pos 0).
        clip: asymmetric probability shift of negatives (their --loss_clip, 0: off).
        eps: lower clamp of the probabilities before the log (their --eps).
        disable_torch_grad_focal_loss: the focusing weight computed without gradient (their --dtgfl).
        batch_size: the B the sum is divided by (default logits.size(0), as theirs); a micro-batch of a
            larger batch passes that batch's B so that the micro-batches' gradients add up to its gradient.

    Example:
        >>> logits = torch.tensor([[3.0, -2.0, 0.0], [-1.0, 4.0, 0.5]])
        >>> targets = torch.tensor([[1, 0, 1], [0, 0, 1]], dtype=torch.float64)
        >>> asymmetric_loss(logits, targets)
        tensor(852.5298, dtype=torch.float64)
    """
    anti_targets = 1 - targets
    xs_pos = torch.sigmoid(logits)
    xs_neg = 1.0 - xs_pos
    if clip is not None and clip > 0:
        xs_neg.add_(clip).clamp_(max=1)
    loss = targets * torch.log(xs_pos.clamp(min=eps))
    loss.add_(anti_targets * torch.log(xs_neg.clamp(min=eps)))
    if gamma_neg > 0 or gamma_pos > 0:
        with torch.no_grad() if disable_torch_grad_focal_loss else contextlib.nullcontext():
            pt = 1 - xs_pos * targets - xs_neg * anti_targets  # 1 - p for a positive, p for a negative
            weight = torch.pow(pt, gamma_pos * targets + gamma_neg * anti_targets)
        loss *= weight
    loss = -loss.sum() / (logits.size(0) if batch_size is None else batch_size)
    return loss / targets.size(1) * 1000
