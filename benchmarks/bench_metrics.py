"""Time harness.metrics on COCO-sized scores (40,504 x 80) beside an authors'-style loop.

    .venv/bin/python benchmarks/bench_metrics.py [--n-images 40504] [--n-classes 80] [--n-boot 1000]

The "authors' style" reference is written here: a Python loop per class and per image, as the
Query2Label voc_mAP is structured, and its bootstrap is timed on a few resamples and extrapolated.
Scores are synthetic (about 2.9 positives per image, like COCO). Run it on an idle core.
"""
import argparse
import time

import numpy as np

from harness import metrics as M


def synthetic(n_images, n_classes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.random((n_images, n_classes)) < 2.9 / n_classes
    labels[:, 0] = rng.random(n_images) < 0.53  # one frequent class, like "person"
    scores = np.clip(rng.normal(0.2, 0.15, labels.shape) + labels * rng.normal(0.5, 0.2, labels.shape), 0, 1)
    return scores.astype(np.float32), labels.astype(np.uint8)


def loop_style_map(scores, labels):
    """A per-class, per-image Python loop with VOC interpolation, the shape of voc_mAP."""
    n_images, n_classes = scores.shape
    aps = []
    for c in range(n_classes):
        order = np.argsort(-scores[:, c].astype(np.float64))
        tp, fp = np.zeros(n_images), np.zeros(n_images)
        for i in range(n_images):
            tp[i] = labels[order[i], c] > 0
            fp[i] = labels[order[i], c] <= 0
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall, precision = tp / tp[-1], tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        envelope = np.concatenate(([0.0], precision, [0.0]))
        for i in range(len(envelope) - 1, 0, -1):
            envelope[i - 1] = max(envelope[i - 1], envelope[i])
        edges = np.concatenate(([0.0], recall, [1.0]))
        change = np.where(edges[1:] != edges[:-1])[0]
        aps.append(np.sum((edges[change + 1] - edges[change]) * envelope[change + 1]))
    return 100 * np.mean(aps)


def timed(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=40504)
    parser.add_argument("--n-classes", type=int, default=80)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--loop-resamples", type=int, default=2, help="resamples timed for the loop bootstrap")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scores, labels = synthetic(args.n_images, args.n_classes, args.seed)
    positives = labels > 0
    print(f"scores {scores.shape[0]} x {scores.shape[1]}, numpy {np.__version__}\n")
    print(f"{'what':66s} {'seconds':>10s}")
    for protocol in M.PROTOCOLS:
        t, m = timed(lambda: M.compute_metrics(scores, labels, protocol, ci=False), repeat=3)
        print(f"{'compute_metrics ' + protocol + ' --no-ci (mAP, per-class AP, F1, top-3, ties)':66s} {t:10.3f}")
    t, _ = timed(lambda: M.per_class_ap(scores, positives, "q2l"), repeat=3)
    print(f"{'  of which per-class AP + tie-free AP + tie counts (q2l)':66s} {t:10.3f}")
    t, _ = timed(lambda: (M.f1_family(scores, positives), M.f1_family(scores, positives, top_k=3)), repeat=3)
    print(f"{'  of which F1 family at 0.5 and top-3':66s} {t:10.3f}")
    for protocol in M.PROTOCOLS:
        _, _, _, _, orders = M.per_class_ap(scores, positives, protocol)
        t, maps = timed(lambda: M.bootstrap_map(orders, M.resample_counts(len(scores), args.n_boot), protocol))
        print(f"{f'bootstrap {protocol}, {args.n_boot} resamples':66s} {t:10.3f}   "
              f"CI [{np.percentile(maps, 2.5):.2f}, {np.percentile(maps, 97.5):.2f}]")
    t_loop, loop_map = timed(lambda: loop_style_map(scores, labels))
    ours = M.compute_metrics(scores, labels, "q2l", ci=False)["mAP"]
    print(f"{'loop style (per class, per image) q2l mAP':66s} {t_loop:10.3f}   |diff| {abs(loop_map - ours):.1e}")
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    for _ in range(args.loop_resamples):
        idx = rng.integers(0, len(scores), len(scores))
        loop_style_map(scores[idx], labels[idx])
    per = (time.perf_counter() - start) / args.loop_resamples
    print(f"{f'loop style bootstrap, {args.n_boot} resamples (extrapolated)':66s} {per * args.n_boot:10.1f}")


if __name__ == "__main__":
    main()
