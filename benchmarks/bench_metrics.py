"""Time harness.metrics on COCO-sized scores (40,504 x 80) beside an authors'-style loop, and
`harness compare` at its defaults beside `harness metrics` with its CI.

    .venv/bin/python benchmarks/bench_metrics.py [--n-images 40504] [--n-classes 80] [--n-boot 1000]
                                                 [--n-perm 1000] [--protocols q2l asl mlspl] [--only-compare]

The "authors' style" reference is written here: a Python loop per class and per image, as the
Query2Label voc_mAP is structured, and its bootstrap is timed on a few resamples and extrapolated.
Scores are synthetic (about 2.9 positives per image, like COCO; for compare, two runs on the same
labels: see synthetic_pair; --tied for the case of many ties). Per protocol, compare's
statistics (harness.explain.compare.paired_statistics: per-class AP, paired bootstrap, permutations)
are timed beside compute_metrics with its CI (what `harness metrics` computes), and the
permutation test of before (each permuted column sorted) on a few permutations, extrapolated.
Each is timed --repeat times, in turn, and the least time kept. The last line is the largest
compare/metrics wall-time ratio over the protocols (the line before, the largest CPU-time ratio,
moves less on a shared machine). Run it on an idle machine.
"""
import argparse
import time

import numpy as np

from harness import metrics as M
from harness.explain import compare as C


def synthetic(n_images, n_classes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.random((n_images, n_classes)) < 2.9 / n_classes
    labels[:, 0] = rng.random(n_images) < 0.53  # one frequent class, like "person"
    scores = np.clip(rng.normal(0.2, 0.15, labels.shape) + labels * rng.normal(0.5, 0.2, labels.shape), 0, 1)
    return scores.astype(np.float32), labels.astype(np.uint8)


def synthetic_pair(n_images, n_classes, seed, tied=False):
    """Two runs' scores on synthetic()'s labels, B a noisier copy of A: float32 sigmoids of normal
    logits (as models give: a few float32 ties per class, about 20 classes with a tie of both
    labels; mAP about 80 and 75), or with `tied` synthetic()'s scores, clipped to [0, 1], and those
    plus noise, clipped (ties of both labels at 0 in every class: the hardest case for compare)."""
    scores, labels = synthetic(n_images, n_classes, seed)
    rng = np.random.default_rng(seed + 1)
    if tied:
        return scores, np.clip(scores + rng.normal(0, 0.05, scores.shape), 0, 1).astype(np.float32), labels
    logits = rng.normal(-4.0, 1.5, labels.shape) + (labels > 0) * rng.normal(5.0, 2.0, labels.shape)
    noisier = logits + rng.normal(0, 0.7, labels.shape)
    return tuple((1 / (1 + np.exp(-x))).astype(np.float32) for x in (logits, noisier)) + (labels,)


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


def timed_both(fn):
    """(wall seconds, CPU seconds of this process, result): CPU time moves less on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def metrics_alone(args):
    """compute_metrics, its parts and its bootstrap, beside the authors'-style loop."""
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



def compare_against_metrics(args):
    """Per protocol: compute_metrics with its CI, compare's statistics at their defaults, and the
    former permutation test (every permuted column sorted) on a few permutations; the largest ratio."""
    scores_a, scores_b, labels = synthetic_pair(args.n_images, args.n_classes, args.seed, args.tied)
    checked_a, positives = M.check_inputs(scores_a, labels)
    checked_b, _ = M.check_inputs(scores_b, labels)
    print(f"\ncompare: runs A and B {scores_a.shape[0]} x {scores_a.shape[1]}{' (tied)' if args.tied else ''}, "
          f"{args.n_boot} resamples, {args.n_perm} permutations")
    print(f"{'what':66s} {'wall s':>8s} {'CPU s':>8s}")
    ratios, cpu_ratios = {}, {}
    for protocol in args.protocols:
        runs = []
        for _ in range(args.repeat):  # in turn, so that a spell of load on a shared machine hits both
            runs.append(timed_both(lambda: M.compute_metrics(scores_a, labels, protocol, ci=M.Bootstrap(args.n_boot)))
                        + timed_both(lambda: C.paired_statistics(checked_a, checked_b, positives, protocol,
                                                                 n_boot=args.n_boot, n_perm=args.n_perm)))
        t_metrics, c_metrics, m = min(x[0] for x in runs), min(x[1] for x in runs), runs[0][2]
        t_compare, c_compare, r = min(x[3] for x in runs), min(x[4] for x in runs), runs[0][5]
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for _ in range(args.reference_perms):
            swap = rng.integers(0, 2, len(positives)).astype(bool)[:, None]
            C.mean_ap(np.where(swap, checked_b, checked_a), positives, protocol)
            C.mean_ap(np.where(swap, checked_a, checked_b), positives, protocol)
        before = (time.perf_counter() - start) / args.reference_perms * args.n_perm
        ratios[protocol], cpu_ratios[protocol] = t_compare / t_metrics, c_compare / c_metrics
        print(f"{f'harness metrics {protocol}, with its CI (compute_metrics)':66s} {t_metrics:8.2f} "
              f"{c_metrics:8.2f}   mAP {m['mAP']:.2f} CI [{m['mAP_ci95'][0]:.2f}, {m['mAP_ci95'][1]:.2f}]")
        print(f"{f'harness compare {protocol} (paired_statistics)':66s} {t_compare:8.2f} {c_compare:8.2f}   "
              f"A - B {r['difference']:+.3f} CI [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] "
              f"p {r['p_value']:.4g}")
        print(f"{'  its permutation test before: every column sorted (extrapolated)':66s} {before:8.1f}")
        print(f"{f'  compare/metrics {protocol}, wall and CPU':66s} {ratios[protocol]:8.2f} {cpu_ratios[protocol]:8.2f}")
    worst = max(ratios, key=ratios.get)
    print(f"largest compare/metrics CPU time ratio: {max(cpu_ratios.values()):.2f}")
    print(f"compare/metrics time ratio: {ratios[worst]:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=40504)
    parser.add_argument("--n-classes", type=int, default=80)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--n-perm", type=int, default=1000)
    parser.add_argument("--protocols", nargs="+", choices=M.PROTOCOLS, default=list(M.PROTOCOLS))
    parser.add_argument("--loop-resamples", type=int, default=2, help="resamples timed for the loop bootstrap")
    parser.add_argument("--reference-perms", type=int, default=3, help="permutations timed for the former test")
    parser.add_argument("--repeat", type=int, default=2, help="metrics and compare timed this often, in turn: the least")
    parser.add_argument("--only-compare", action="store_true", help="only compare beside metrics")
    parser.add_argument("--tied", action="store_true", help="compare on clipped scores, ties of both labels in "
                                                             "every class (see synthetic_pair)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.only_compare:
        metrics_alone(args)
    compare_against_metrics(args)



if __name__ == "__main__":
    main()
