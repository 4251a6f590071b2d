"""Compute a paper's metrics (mAP with a bootstrap 95% CI, per-class AP, CP/CR/CF1/OP/OR/OF1 at 0.5
and top-3, tie counts) from saved scores and labels (.npy, images x classes), exactly as that
paper's code computes mAP. Prints one JSON object (or a short text summary)."""
import json
import os

from harness.ctran.metrics import compute_ctran_metrics
from harness.errors import UserError
from harness.inputs.paths import check_input_file
from harness.metrics import Bootstrap, compute_metrics
from harness.records.arrays import load_array

MAX_CLASS_NAMES_BYTES = 1 << 20  # names of thousands of classes; /dev/zero never ends


def add_arguments(parser):
    parser.add_argument("scores", help="scores.npy: images x classes sigmoid probabilities")
    parser.add_argument("labels", help="labels.npy: images x classes, 1 positive, <= 0 negative")
    parser.add_argument("--protocol", required=True, choices=("q2l", "asl", "mlspl", "ctran"),
                        help="whose mAP: q2l (VOC interpolated), asl (non-interpolated), mlspl (scikit-learn), "
                             "ctran (C-Tran: AP over unknown labels, needs --mask with partial labels)")
    parser.add_argument("--f1", choices=("ml-gcn", "asl"), default="ml-gcn",
                        help="F1 family: ml-gcn (>= threshold, 2 CP CR / (CP + CR)) or asl (their validate.py)")
    parser.add_argument("--threshold", type=float,
                        help="F1 threshold on the sigmoid scores (default 0.5; 0.8 with --f1 asl, ASL's --thre)")
    parser.add_argument("--mask", metavar="MASKS.npy",
                        help="ctran only: images x classes, -1 unknown, 0/1 known label (default: all unknown)")
    parser.add_argument("--format", choices=("json", "text"), default="json",
                        help="json: one object with every metric (default); text: the headline numbers")
    parser.add_argument("--no-ci", action="store_true", help="skip the bootstrap (mAP_ci95 is then null)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--class-names", metavar="FILE",
                        help="class names, one per line or a JSON list (default: column indices)")


def load_class_names(path):
    if path is None:
        return None
    check_input_file(path, "--class-names", "pass a text file, one class name per line, or a JSON list")
    if os.path.getsize(path) > MAX_CLASS_NAMES_BYTES:
        raise UserError(f"--class-names {path} holds {os.path.getsize(path):,} bytes, past the limit of "
                        f"{MAX_CLASS_NAMES_BYTES:,} for a list of class names; pass the class names file")
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        raise UserError(f"cannot read class names from {path} ({e.strerror})")
    except UnicodeDecodeError:
        raise UserError(f"--class-names {path} is not UTF-8 text; pass one class name per line, or a JSON list")
    if text.lstrip().startswith("["):
        try:
            return [str(n) for n in json.loads(text)]
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not a valid JSON list ({e}); or give one name per line")
    return [line.strip() for line in text.splitlines() if line.strip()]


def format_text(m):
    def pct(v):
        return "n/a" if v is None else f"{v:.2f}"

    ci = m["mAP_ci95"]
    lines = [f"protocol {m['protocol']}: {m['protocol_description']}",
             f"images {m['n_images']}, classes {m['n_classes']} (mAP over {m['mAP_classes']})",
             f"mAP {pct(m['mAP'])}" + (f"  95% CI [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "  (no CI)"),
             f"tie-free mAP {pct(m['ties']['mAP_tie_free'])}; {m['ties']['tied_scores_total']} tied scores, "
             f"{m['ties']['classes_with_mixed_ties']} classes with ties across positives and negatives"]
    rows = [(f"all ({m['f1_rule']} {m['threshold']:g})", m), ("top-3", m["top3"])]
    if m.get("f1_asl_validate"):  # ASL validate.py's own definition beside (threshold 0.8, CF1 = mean per-class F1)
        rows.append(("asl 0.8", m["f1_asl_validate"]))
    for name, row in rows:
        lines.append(f"{name:13s} " + "  ".join(f"{k} {pct(row[k])}" for k in ("CP", "CR", "CF1", "OP", "OR", "OF1")))
    lines += [f"note: {n}" for n in m["notes"]]
    return "\n".join(lines)


def format_ctran_text(m):
    def pct(v):
        return "n/a" if v is None else f"{v:.2f}"

    lines = [f"protocol {m['protocol']}: {m['protocol_description']}",
             f"mAP {pct(m['mAP'])} ({m['known_labels_per_image']} known labels per image at most)"]
    for name, row in (("all (>= 0.5)", m), ("top-3", m["top3"]), ("unknown only", m["unknown_only"])):
        lines.append(f"{name:13s} " + "  ".join(f"{k} {pct(row[k])}" for k in ("CP", "CR", "CF1", "OP", "OR", "OF1")))
    return "\n".join(lines)


def print_metrics(metrics, fmt):
    text = format_ctran_text if metrics.get("protocol") == "ctran" else format_text
    print(json.dumps(metrics, indent=2) if fmt == "json" else text(metrics))


def run(args):
    if args.class_names is not None:  # before any array is read
        check_input_file(args.class_names, "--class-names", "pass a text file, one class name per line, or a JSON list")
    if args.n_boot < 1:
        raise UserError("--n-boot must be at least 1 (or use --no-ci)")
    scores = load_array(args.scores, "scores")
    labels = load_array(args.labels, "labels")
    if args.protocol == "ctran" or args.mask:
        return _run_ctran(args, scores, labels)
    threshold = args.threshold if args.threshold is not None else (0.8 if args.f1 == "asl" else 0.5)
    metrics = compute_metrics(scores, labels, args.protocol, ci=not args.no_ci and Bootstrap(args.n_boot, args.seed),
                              class_names=load_class_names(args.class_names), f1=args.f1,
                              threshold=threshold)
    print_metrics(metrics, args.format)


def _run_ctran(args, scores, labels):
    if args.protocol != "ctran":
        raise UserError("--mask is for --protocol ctran only; drop it or use --protocol ctran")
    mask = load_array(args.mask, "mask") if args.mask else None
    print_metrics(compute_ctran_metrics(scores, labels, mask), args.format)
