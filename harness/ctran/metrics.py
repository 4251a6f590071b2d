"""Protocol `ctran`: the authors' utils/evaluate.py:compute_metrics (QData/C-Tran 560cf6f).

mAP: with known labels (any mask entry != -1), per label scikit-learn AP over the images where that
label is unknown, labels with no unknown positive skipped (their custom_mean_avg_precision);
with none known, sklearn macro AP over all labels (a label without positives: AP 0 with today's
scikit-learn, NaN with their 0.24.1). CP/CR/CF1/OP/OR/OF1 at 0.5 over ALL entries, known ones
included (sklearn macro/micro precision and recall, 0 where undefined; CF1 = 2 CP CR / (CP + CR)),
which inflates them with partial labels; top-3 as theirs: scores below each image's third-highest
are dropped, so all scores tied at third place stay. `unknown_only` gives the same F1 family over
the unknown entries alone, beside theirs.
"""
import numpy as np

from harness.errors import UserError
from harness.metrics import ap_grouped, check_inputs

THRESHOLD = 0.5
DESCRIPTION = ("C-Tran compute_metrics: sklearn AP per label over the images where it is unknown "
               "(macro AP when none known); F1 family over all labels at 0.5")


def check_mask(mask, shape):
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise UserError(f"mask has shape {mask.shape} but scores have {shape}; pass the run's masks.npy "
                        f"(one entry per image and label: -1 unknown, 0/1 known)")
    if not np.isin(mask, (-1, 0, 1)).all():
        raise UserError("mask entries must be -1 (unknown), 0 or 1 (known label); pass the run's masks.npy")
    return mask


def sklearn_ap(scores, positives):
    """scikit-learn average_precision_score of one label (tied scores one step); 0 without positives."""
    order = np.argsort(-scores, kind="stable")
    return ap_grouped(scores[order], positives[order], "mlspl") if positives.any() else 0.0


def mean_ap(scores, positives, unknown):
    if unknown.all():  # their known_labels == 0: macro AP over every label
        return float(np.mean([sklearn_ap(scores[:, c], positives[:, c]) for c in range(scores.shape[1])]))
    aps = [sklearn_ap(scores[u, c], positives[u, c]) for c in range(scores.shape[1])
           for u in [unknown[:, c]] if positives[u, c].any()]
    return float(np.mean(aps)) if aps else None


def _ratio(a, b):
    return a / b if b else 0.0  # sklearn's zero_division: 0


def _f1(p, r):
    return 2 * p * r / (p + r) if p + r else None  # theirs divides 0 by 0 here


def f1_family(predicted, positives, counted=None):
    """CP, CR, CF1, OP, OR, OF1 (fractions) as their sklearn calls, over the `counted` entries."""
    counted = np.ones_like(positives) if counted is None else counted
    tp = (predicted & positives & counted).sum(0)
    n_pred, n_true = (predicted & counted).sum(0), (positives & counted).sum(0)
    cp = float(np.mean([_ratio(t, p) for t, p in zip(tp, n_pred)]))
    cr = float(np.mean([_ratio(t, n) for t, n in zip(tp, n_true)]))
    op, orr = _ratio(float(tp.sum()), float(n_pred.sum())), _ratio(float(tp.sum()), float(n_true.sum()))
    return {"CP": cp, "CR": cr, "CF1": _f1(cp, cr), "OP": op, "OR": orr, "OF1": _f1(op, orr)}


def _percent(d):
    return {k: None if v is None else 100 * v for k, v in d.items()}


def compute_ctran_metrics(scores, labels, mask=None):
    """Their numbers (percent) from sigmoid scores, 0/1 labels and the -1/0/1 mask (None: all unknown)."""
    scores, positives = check_inputs(scores, labels)
    unknown = np.ones_like(positives) if mask is None else check_mask(mask, scores.shape) == -1
    predicted = scores >= THRESHOLD
    third = np.sort(scores, axis=1)[:, -3:-2] if scores.shape[1] >= 3 else scores.min(1, keepdims=True)
    known = int((~unknown).sum(1).max())
    return {
        "protocol": "ctran",
        "protocol_description": DESCRIPTION,
        "mAP": None if (m := mean_ap(scores, positives, unknown)) is None else 100 * m,
        "known_labels_per_image": known,
        "n_images": int(scores.shape[0]),
        "n_classes": int(scores.shape[1]),
        "threshold": THRESHOLD,
        **_percent(f1_family(predicted, positives)),
        "top3": _percent(f1_family(predicted & (scores >= third), positives)),
        "unknown_only": _percent(f1_family(predicted, positives, unknown)),
        "notes": ["F1 family over all labels, known ones included, as the authors' code; "
                  "unknown_only: over the unknown labels alone"] if known else [],
    }
