"""The single-positive losses, built as the authors' losses.py builds them.

All act on sigmoid probabilities `preds` with -log(x + 1e-5). As in their code, each loss fills
one loss matrix (zeros, then its entries written through boolean masks), every entry is divided
by N x L (all entries of the batch, observed or not) and the matrix is summed; EPR and ROLE add a
regulariser (mean over the batch of the row sums - k)^2 / L^2. The same operations in the same
order give float32 gradients bit-equal to theirs (tests/mlspl/test_mlspl_losses.py, against a fixture
made by their code). `observed` holds 1 for the observed positive and 0 elsewhere (for BCE: the
full labels). `preds` may carry leading dimensions (..., N, L) over one (N, L) `observed`: each
leading index is an independent problem (one grid point), the returned scalar is the sum of their
losses, so each problem gets exactly the gradient it would get alone.
"""
import torch

LOG_EPS = 1e-5
LS_COEF = 0.1  # AN-LS label smoothing
EXPECTED_POSITIVES = {"coco": 2.9}  # k of EPR / ROLE
LOSSES = ("BCE", "AN", "AN-LS", "WAN", "EPR", "ROLE")


def neg_log(x):
    return -torch.log(x + LOG_EPS)


def expected_positive_penalty(preds, k):
    """(mean over the batch of the predicted positives per row - k)^2 / L^2, one per leading index."""
    n_classes = preds.shape[-1]
    return (preds.sum(-1).mean(-1) - k) ** 2 / n_classes**2


def _masks(preds, observed):
    pos, neg = observed == 1, observed == 0
    return pos.expand(preds.shape), neg.expand(preds.shape)


def _observed_positives(preds, pos):
    loss_mtx = torch.zeros_like(preds)
    loss_mtx[pos] = neg_log(preds[pos])
    return loss_mtx


def bce(preds, observed):
    """Observed 1 -> positive, 0 -> negative (AN; BCE when `observed` is the full labels)."""
    pos, neg = _masks(preds, observed)
    loss_mtx = torch.zeros_like(preds)
    loss_mtx[pos] = neg_log(preds[pos])
    loss_mtx[neg] = neg_log(1.0 - preds[neg])
    return loss_mtx, None


def an_ls(preds, observed, coef=LS_COEF):
    """AN with targets smoothed: positives aim at 1 - coef, negatives at coef."""
    pos, neg = _masks(preds, observed)
    loss_mtx = torch.zeros_like(preds)
    loss_mtx[pos] = (1.0 - coef) * neg_log(preds[pos]) + coef * neg_log(1.0 - preds[pos])
    loss_mtx[neg] = (1.0 - coef) * neg_log(1.0 - preds[neg]) + coef * neg_log(preds[neg])
    return loss_mtx, None


def wan(preds, observed):
    """AN with each assumed negative down-weighted by 1 / (L - 1)."""
    pos, neg = _masks(preds, observed)
    loss_mtx = torch.zeros_like(preds)
    loss_mtx[pos] = neg_log(preds[pos])
    loss_mtx[neg] = neg_log(1.0 - preds[neg]) / float(preds.shape[-1] - 1)
    return loss_mtx, None


def epr(preds, observed, k):
    """Observed positives only, plus the expected-positive penalty."""
    pos, _ = _masks(preds, observed)
    return _observed_positives(preds, pos), expected_positive_penalty(preds, k)


def role(preds, observed, estimates, k):
    """ROLE: classifier f (`preds`) and label estimates g (`estimates`, sigmoid of the table) teach each other.

    0.5 (pos_f + pos_g) + 0.5 (cross_f + cross_g) in one matrix, + 0.5 (EPR_f + EPR_g), where
    cross_f is BCE of f against detached g (over every entry) and cross_g of g against detached f.
    """
    pos, _ = _masks(preds, observed)
    pos_f = _observed_positives(preds, pos)
    g_fixed = estimates.detach()
    cross_f = g_fixed * neg_log(preds) + (1.0 - g_fixed) * neg_log(1.0 - preds)
    reg_f = expected_positive_penalty(preds, k)
    pos_g = _observed_positives(estimates, pos)
    f_fixed = preds.detach()
    cross_g = f_fixed * neg_log(estimates) + (1.0 - f_fixed) * neg_log(1.0 - estimates)
    reg_g = expected_positive_penalty(estimates, k)
    reg = 0.5 * (reg_f + reg_g)
    loss_mtx = 0.5 * (pos_f + pos_g)
    loss_mtx += 0.5 * (cross_f + cross_g)
    return loss_mtx, reg


def compute_loss(name, preds, observed, estimates=None, k=EXPECTED_POSITIVES["coco"]):
    """Loss `name` (one of LOSSES) of probabilities `preds` against `observed` labels."""
    if name in ("BCE", "AN"):
        loss_mtx, reg = bce(preds, observed)
    elif name == "AN-LS":
        loss_mtx, reg = an_ls(preds, observed)
    elif name == "WAN":
        loss_mtx, reg = wan(preds, observed)
    elif name == "EPR":
        loss_mtx, reg = epr(preds, observed, k)
    elif name == "ROLE":
        loss_mtx, reg = role(preds, observed, estimates, k)
    else:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    n, n_classes = preds.shape[-2:]
    main = (loss_mtx / (n * n_classes)).sum()
    return main if reg is None else main + reg.sum()
