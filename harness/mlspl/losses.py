"""The single-positive losses, as the authors' losses.py computes them.

All act on sigmoid probabilities `preds` with -log(x + 1e-5); the per-entry loss matrix is
summed and divided by N x L (every entry of the batch, observed or not); EPR and ROLE add a
regulariser (mean over the batch of the row sums - k)^2 / L^2. `observed` holds 1 for the
observed positive and 0 elsewhere (for BCE: the full labels). Tensors may carry leading
dimensions (..., N, L): each leading index is an independent problem (one grid point) and the
returned scalar is the sum of their losses, so each problem gets exactly its own gradient.
"""
import torch

LOG_EPS = 1e-5
LS_COEF = 0.1  # AN-LS label smoothing
EXPECTED_POSITIVES = {"coco": 2.9}  # k of EPR / ROLE
LOSSES = ("BCE", "AN", "AN-LS", "WAN", "EPR", "ROLE")


def neg_log(x):
    return -torch.log(x + LOG_EPS)


def _mean_entry(loss_matrix):
    """Sum over the N x L entries / (N x L), then sum over any leading (grid) dimensions."""
    n, l = loss_matrix.shape[-2:]
    return loss_matrix.sum(dim=(-2, -1)).sum() / (n * l)


def expected_positive_penalty(preds, k):
    """(mean over the batch of the predicted positives per row - k)^2 / L^2, summed over leading dims."""
    n_classes = preds.shape[-1]
    return ((preds.sum(-1).mean(-1) - k) ** 2).sum() / n_classes**2


def bce(preds, observed):
    """Observed 1 -> positive, everything else negative (AN; BCE when `observed` is the full labels)."""
    pos = observed == 1
    return _mean_entry(torch.where(pos, neg_log(preds), neg_log(1 - preds)))


def an_ls(preds, observed, coef=LS_COEF):
    """AN with targets smoothed: positives aim at 1 - coef, negatives at coef."""
    pos = observed == 1
    to_one, to_zero = neg_log(preds), neg_log(1 - preds)
    loss = torch.where(pos, (1 - coef) * to_one + coef * to_zero, (1 - coef) * to_zero + coef * to_one)
    return _mean_entry(loss)


def wan(preds, observed):
    """AN with each assumed negative down-weighted by 1 / (L - 1)."""
    pos = observed == 1
    n_classes = preds.shape[-1]
    return _mean_entry(torch.where(pos, neg_log(preds), neg_log(1 - preds) / (n_classes - 1)))


def positives_only(preds, observed):
    return _mean_entry(torch.where(observed == 1, neg_log(preds), torch.zeros_like(preds)))


def epr(preds, observed, k):
    """Observed positives only, plus the expected-positive penalty."""
    return positives_only(preds, observed) + expected_positive_penalty(preds, k)


def role(preds, observed, estimates, k):
    """ROLE: classifier f (`preds`) and label estimates g (`estimates`, sigmoid of the table) teach each other.

    0.5 (pos_f + pos_g) + 0.5 (cross_f + cross_g) + 0.5 (EPR_f + EPR_g), where cross_f is BCE of f
    against detached g (over every entry) and cross_g of g against detached f.
    """
    g_fixed, f_fixed = estimates.detach(), preds.detach()
    cross_f = g_fixed * neg_log(preds) + (1 - g_fixed) * neg_log(1 - preds)
    cross_g = f_fixed * neg_log(estimates) + (1 - f_fixed) * neg_log(1 - estimates)
    positives = positives_only(preds, observed) + positives_only(estimates, observed)
    penalty = expected_positive_penalty(preds, k) + expected_positive_penalty(estimates, k)
    return 0.5 * positives + 0.5 * _mean_entry(cross_f + cross_g) + 0.5 * penalty


def compute_loss(name, preds, observed, estimates=None, k=EXPECTED_POSITIVES["coco"]):
    """Loss `name` (one of LOSSES) of probabilities `preds` against `observed` labels."""
    if name in ("BCE", "AN"):
        return bce(preds, observed)
    if name == "AN-LS":
        return an_ls(preds, observed)
    if name == "WAN":
        return wan(preds, observed)
    if name == "EPR":
        return epr(preds, observed, k)
    if name == "ROLE":
        return role(preds, observed, estimates, k)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
