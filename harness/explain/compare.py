"""Is run A really better than run B? A paired comparison of two runs on the same images.

Both runs are scored with the same protocol's AP (harness.metrics, ties as the authors' code):
- the mAP difference A - B, with a paired bootstrap 95% interval: each resample draws images with
  replacement and scores BOTH runs on those same images (metrics.resample_counts, the draws of
  `harness eval`'s own CI), percentile interval of the per-resample differences;
- a paired permutation test: in each permutation every image's score rows are swapped between A
  and B with probability 1/2 (the null: the two models are exchangeable on every image);
  p = (1 + #{|d_perm| >= |d|}) / (1 + n_permutations); each class's two columns are sorted once
  (harness.explain.permuted_ap), not once per permutation, with the same p as sorting every permuted column;
- per-class AP differences, sorted;
- the verdict from the interval: "A better" when it lies above 0, "B better" below, else
  "not distinguishable at 95%".
Numpy only (no torch): `harness report` calls it too.
"""
import base64
import dataclasses
import io
import re
from html import escape
from pathlib import Path

import numpy as np

from harness import metrics
from harness.errors import UserError
from harness.explain.permuted_ap import PermutedAP
from harness.records import is_finished, iter_records, read_record, run_folder
from harness.records.arrays import load_run_array

VERDICTS = ("A better", "B better", "not distinguishable at 95%")
SHOWN = 10  # classes listed at each end
SAME = 1e-9  # |d_perm| >= |d| up to rounding: a permutation giving back d itself must count
PERMUTATIONS_AT_ONCE = 128  # scored together (harness.explain.permuted_ap); moves no bit of the result


def load_run(run_dir):
    """{"dir", "record", "scores", "labels", "image_ids"} of a finished eval or train run."""
    run_dir = run_folder(run_dir)  # RUN/record.json names RUN
    record = read_record(run_dir)
    if record.kind not in ("eval", "train"):
        raise UserError(f"{run_dir} is a '{record.kind}' run: it has no scores; pass an evaluation run folder")
    arrays = {name: load_run_array(run_dir, record, name) for name in ("scores", "labels", "image_ids")}
    return {"dir": run_dir, "record": record, **arrays}


def _describe(run):
    d = run["record"].dataset
    return f"{len(run['image_ids'])} images, image set {d.get('image_set', '?')}"


def check_same_images(a, b):
    """One line when the two runs were not scored on the same images with the same labels."""
    fa, fb = (r["record"].dataset.get("fingerprint") for r in (a, b))
    same = (fa == fb if fa and fb else True) and np.array_equal(a["image_ids"], b["image_ids"]) and \
        a["labels"].shape == b["labels"].shape and np.array_equal(a["labels"] > 0, b["labels"] > 0)
    if not same:
        raise UserError(f"{a['dir']} ({_describe(a)}) and {b['dir']} ({_describe(b)}) are not on the same images "
                        f"(dataset fingerprints differ): a paired comparison needs both models scored on one "
                        f"image set; evaluate them on the same images, or pass --common-images to use the "
                        f"images both scored")
    if a["scores"].shape != a["labels"].shape or b["scores"].shape != b["labels"].shape:
        raise UserError(f"scores and labels of {a['dir']} or {b['dir']} differ in shape; the run is damaged")


def restrict_to_common(a, b):
    """Both runs on the images they share, in A's order (e.g. Q2L's 40,504 and ASL's 40,137:
    the 40,137 annotated ones), when they come from one annotation file and agree on those labels."""
    fa, fb = (r["record"].dataset.get("fingerprint") or {} for r in (a, b))
    if fa.get("annotations_sha256") != fb.get("annotations_sha256"):
        raise UserError(f"{a['dir']} and {b['dir']} were scored against different annotation files; "
                        f"--common-images needs both from the same instances json")
    position_b = {int(i): k for k, i in enumerate(b["image_ids"])}
    rows_a = [k for k, i in enumerate(a["image_ids"]) if int(i) in position_b]
    rows_b = [position_b[int(a["image_ids"][k])] for k in rows_a]
    if not rows_a or not np.array_equal(a["labels"][rows_a] > 0, b["labels"][rows_b] > 0):
        raise UserError(f"{a['dir']} and {b['dir']} share no images, or disagree on their labels; "
                        f"evaluate both on the same images")
    note = (f"restricted to the {len(rows_a)} images both runs scored (A {len(a['image_ids'])}, "
            f"B {len(b['image_ids'])}), in A's order")
    pick = [{**r, "scores": r["scores"][rows], "labels": r["labels"][rows], "image_ids": r["image_ids"][rows],
             "record": dataclasses.replace(r["record"], dataset={**r["record"].dataset, "fingerprint": None})}
            for r, rows in ((a, rows_a), (b, rows_b))]
    return pick[0], pick[1], note


def protocol_of(a, b, protocol=None):
    if protocol:
        return protocol
    pa, pb = (r["record"].eval.get("protocol") for r in (a, b))
    if pa != pb:
        raise UserError(f"the runs were scored with different protocols ({pa} and {pb}); pass --protocol "
                        f"q2l|asl|mlspl to score both with one")
    if pa is None:
        raise UserError("the records name no protocol; pass --protocol q2l|asl|mlspl")
    metrics._check_protocol(pa)  # e.g. C-Tran's own, or a hand-edited record: one line, not a traceback
    return pa


# ---------------------------------------------------------------- statistics

def class_aps(scores, positives, protocol):
    """Per-class AP (fractions) with the protocol's own order and arithmetic (metrics.per_class_ap's
    `ap`, without its tie statistics)."""
    return np.array([metrics.class_ap(column, y, protocol) for column, y in zip(scores.T, positives.T)])


def mean_ap(scores, positives, protocol):
    return metrics.mean_ap(class_aps(scores, positives, protocol), protocol)


def paired_bootstrap(orders_a, orders_b, n_images, protocol, n_boot=1000, seed=0, bar=None):
    """mAP(A) - mAP(B) on each resample, both runs on the same resampled images (NaN dropped);
    orders as metrics.per_class_ap returns them."""
    counts = metrics.resample_counts(n_images, n_boot, seed)
    on_chunk = bar.update if bar is not None else None
    maps = [metrics.bootstrap_map(orders, counts, protocol, on_chunk=on_chunk) for orders in (orders_a, orders_b)]
    diffs = maps[0] - maps[1]
    return diffs[~np.isnan(diffs)]


def permutation_p(scores_a, scores_b, positives, protocol, n_perm=1000, seed=0, bar=None, observed=None):
    """(observed mAP difference, two-sided paired permutation p-value). Each permutation's classes
    are scored from one sorted order per class (harness.explain.permuted_ap: bounds on each AP, the exact
    bits for q2l without ties of both labels, within (4n + 16) 2**-53 of them for asl and mlspl,
    2e-11 on 40,504 images); a permuted column is sorted only while the bounds cannot tell whether
    |mAP(A') - mAP(B')| reaches |observed|. The count, hence p, is that of sorting every column."""
    if observed is None:
        observed = mean_ap(scores_a, positives, protocol) - mean_ap(scores_b, positives, protocol)
    threshold = abs(observed) - SAME
    permuted = PermutedAP(scores_a, scores_b, positives, protocol)
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, n_perm, PERMUTATIONS_AT_ONCE):
        swaps = np.stack([rng.integers(0, 2, len(positives)).astype(bool)  # one draw per permutation, as ever
                          for _ in range(min(PERMUTATIONS_AT_ONCE, n_perm - start))])
        low, high = permuted.bounds(swaps)
        for p, swap in enumerate(swaps):
            extreme += _reaches(threshold, low[:, p], high[:, p], protocol,
                                lambda side, c: permuted.exact(swap, c, side))
        if bar is not None:
            bar.update(len(swaps))
    return observed, (1 + extreme) / (1 + n_perm)


def _reaches(threshold, low, high, protocol, exact):
    """Whether |mAP(A') - mAP(B')| >= threshold, every class's AP of A' (row 0) and B' (row 1)
    lying between low and high: mean_ap rises with each AP, so the difference lies between its
    values at the bounds. While those straddle the threshold, the widest bound is replaced by
    exact(side, class)."""
    while True:
        d_low = metrics.mean_ap(low[0], protocol) - metrics.mean_ap(high[1], protocol)
        d_high = metrics.mean_ap(high[0], protocol) - metrics.mean_ap(low[1], protocol)
        nearest = 0.0 if d_low <= 0.0 <= d_high else min(abs(d_low), abs(d_high))
        if nearest >= threshold:
            return True
        if max(abs(d_low), abs(d_high)) < threshold:
            return False
        width = np.nan_to_num(high - low, nan=0.0)
        side, c = np.unravel_index(np.argmax(width), width.shape)
        low[side, c] = high[side, c] = exact(side, c)


def _bar(enabled, total, what, unit):
    from tqdm import tqdm  # lazy: `harness report` loads this module, and only these statistics show a bar

    return tqdm(total=total, desc=what, unit=unit, disable=not enabled, dynamic_ncols=True, leave=False)


def verdict(ci):
    if ci is None:
        return VERDICTS[2]
    return VERDICTS[0] if ci[0] > 0 else VERDICTS[1] if ci[1] < 0 else VERDICTS[2]


def paired_statistics(scores_a, scores_b, positives, protocol, *, n_boot=1000, n_perm=1000, seed=0,
                      progress=False):
    """{"aps": (per-class AP of A, of B) as fractions, "difference": mAP(A) - mAP(B), "ci95": its
    paired bootstrap interval (None when no resample has a class with a positive), "p_value"}, from
    checked inputs (metrics.check_inputs). progress: a bar on stderr for the bootstrap, one for the
    permutations."""
    if protocol == "q2l" and not positives.any():
        raise UserError("no class has a positive image: Query2Label's mAP is undefined; compare runs on "
                        "labelled images")
    (aps_a, *_, orders_a), (aps_b, *_, orders_b) = (metrics.per_class_ap(s, positives, protocol)
                                                    for s in (scores_a, scores_b))
    aps = [aps_a, aps_b]  # class_aps' values: the same sort and arithmetic
    n = len(positives)
    with _bar(progress, 2 * n_boot, f"paired bootstrap, {n} images", "resample") as bar:
        diffs = paired_bootstrap(orders_a, orders_b, n, protocol, n_boot, seed, bar)
    ci = [float(v) for v in np.percentile(diffs, [2.5, 97.5])] if len(diffs) else None
    observed = metrics.mean_ap(aps[0], protocol) - metrics.mean_ap(aps[1], protocol)
    with _bar(progress, n_perm, f"permutation test, {n} images", "perm") as bar:
        observed, p = permutation_p(scores_a, scores_b, positives, protocol, n_perm, seed, bar, observed)
    return {"aps": aps, "difference": observed, "ci95": ci, "p_value": p}


def compare_runs(a, b, *, protocol=None, n_boot=1000, n_perm=1000, seed=0, common_images=False, progress=False):
    """The whole comparison of two loaded runs (see load_run) as a JSON-serialisable dict.
    progress: bars on stderr (see paired_statistics)."""
    notes = []
    if common_images:
        a, b, note = restrict_to_common(a, b)
        notes.append(note)
    check_same_images(a, b)
    protocol = protocol_of(a, b, protocol)
    if n_boot < 1 or n_perm < 1:
        raise UserError("--n-boot and --n-perm must be at least 1")
    metrics.Bootstrap(n_boot, seed)  # checks the seed as every bootstrap of the harness does
    scores_a, positives = metrics.check_inputs(a["scores"], a["labels"])
    scores_b, _ = metrics.check_inputs(b["scores"], b["labels"])
    metrics.check_repeats("--n-boot", n_boot, len(positives))
    metrics.check_repeats("--n-perm", n_perm, len(positives))
    stats = paired_statistics(scores_a, scores_b, positives, protocol, n_boot=n_boot, n_perm=n_perm, seed=seed,
                              progress=progress)
    ap_a, ap_b = (ap * 100 for ap in stats["aps"])
    observed, ci, p = stats["difference"], stats["ci95"], stats["p_value"]
    names = a["record"].metrics.get("class_names") or [str(c) for c in range(len(ap_a))]
    per_class = sorted(({"class": n, "A": float(x), "B": float(y), "difference": float(x - y)}
                        for n, x, y in zip(names, ap_a, ap_b) if not (np.isnan(x) or np.isnan(y))),
                       key=lambda r: -r["difference"])

    def side(run, ap):
        r = run["record"]
        return {"dir": str(run["dir"]), "model": r.model_id, "run_id": r.run_id,
                "mAP": metrics.mean_ap(ap / 100, protocol), "smoke": r.smoke, "smoke_reasons": r.smoke_reasons}

    return {"A": side(a, ap_a), "B": side(b, ap_b), "protocol": protocol, "n_images": int(len(positives)),
            "difference": float(observed), "ci95": ci, "p_value": float(p), "verdict": verdict(ci),
            "bootstrap": {"n_resamples": n_boot, "seed": seed, "method": "paired: both runs on the same resampled "
                          "images; percentile interval of mAP(A) - mAP(B)"},
            "permutation": {"n_permutations": n_perm, "seed": seed, "method": "each image's scores swapped "
                            "between A and B with probability 1/2; two-sided"},
            "per_class": per_class, "notes": notes}


# ---------------------------------------------------------------- rendering

def to_text(result):
    a, b = result["A"], result["B"]
    ci, n_perm = result["ci95"], result["permutation"]["n_permutations"]

    def run_line(tag, r):
        smoke = f"  SMOKE ({', '.join(r['smoke_reasons']) or 'flagged'})" if r["smoke"] else ""
        return f"{tag}: {r['model']} {r['run_id']}  mAP {r['mAP']:.2f}{smoke}"

    lines = [run_line("A", a), run_line("B", b),
             f"{result['n_images']} images, same in both runs; protocol {result['protocol']}",
             *(f"note: {n}" for n in result.get("notes", [])),
             f"mAP difference A - B: {result['difference']:+.2f}  paired bootstrap 95% CI "
             + (f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "n/a")
             + f" ({result['bootstrap']['n_resamples']} resamples, seed {result['bootstrap']['seed']})",
             f"paired permutation test: p = {result['p_value']:.4g} ({n_perm} permutations"
             + ("; none as extreme: the smallest p they can give)" if result["p_value"] * (1 + n_perm) < 1.5 else ")"),
             f"verdict: {result['verdict']}"]
    top, bottom = result["per_class"][:SHOWN], result["per_class"][-SHOWN:][::-1]
    lines.append("per-class AP, largest A - B: " + ", ".join(f"{r['class']} {r['difference']:+.2f}" for r in top))
    lines.append("per-class AP, largest B - A: " + ", ".join(f"{r['class']} {r['difference']:+.2f}" for r in bottom))
    return "\n".join(lines) + "\n"


def markdown_text(value):
    """A record's string as markdown text, never markup: no HTML (`<` escaped), no link or image
    (`](` broken), no table cell boundary (`|` escaped) and no line break."""
    text = " ".join(str(value).splitlines()).replace("<", "&lt;")
    return text.replace("|", "\\|").replace("](", "]\\(")


def _fenced(text):
    """A code block its text cannot close: a fence longer than any run of backticks in it."""
    fence = "`" * max(3, 1 + max(map(len, re.findall("`+", text)), default=0))
    return f"{fence}\n{text}{fence}\n"


def to_markdown(result):
    rows = result["per_class"][:SHOWN] + result["per_class"][-SHOWN:]
    table = "\n".join(f"| {markdown_text(r['class'])} | {r['A']:.2f} | {r['B']:.2f} | {r['difference']:+.2f} |"
                      for r in rows)
    return ("## Paired comparison\n\n" + _fenced(to_text(result)) + "\n"
            f"| class (top and bottom {SHOWN}) | AP A | AP B | A - B |\n|---|---|---|---|\n{table}\n")


def plot_png(result):
    """PNG bytes: the per-class AP differences A - B, sorted, one bar per class."""
    import matplotlib  # lazy: plotting loads slowly and only the PNG needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["per_class"]
    values = [r["difference"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.14 * len(rows)), 4))
    ax.bar(range(len(rows)), values, color=["tab:green" if v > 0 else "tab:red" for v in values])
    ax.set_xticks(range(len(rows)), [r["class"] for r in rows], rotation=90, fontsize=6)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(ylabel="AP difference (points)",
           title=f"Per-class AP, {result['A']['model']} - {result['B']['model']} "
                 f"(mAP {result['difference']:+.2f}: {result['verdict']})")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def find_run(runs_root, name):
    """A run folder given as such, else the latest finished run of model `name` under runs_root
    (the latest non-smoke one when there is one, as the report chooses)."""
    if is_finished(name):
        return Path(name)
    found = [(r.smoke, r.finished_at or "", r.run_id, d) for d, r in iter_records(runs_root)
             if r.model_id == name and r.kind in ("eval", "train")]
    if not found:
        raise UserError(f"--compare {name}: no finished run of that model under {runs_root} (nor a run folder of "
                        f"that name); run `harness eval {name}` first, or pass a run folder")
    return max(found, key=lambda f: (not f[0], f[1], f[2]))[3]  # non-smoke first, then the latest


def to_html(result):
    """An HTML section: the summary, the top and bottom classes, and the bar chart inline."""
    rows = result["per_class"][:SHOWN] + result["per_class"][-SHOWN:]
    table = "".join(f"<tr><td>{escape(str(r['class']))}</td><td>{r['A']:.2f}</td><td>{r['B']:.2f}</td>"
                    f"<td>{r['difference']:+.2f}</td></tr>" for r in rows)
    png = base64.b64encode(plot_png(result)).decode()
    return (f"<h2>Paired comparison</h2><pre>{escape(to_text(result))}</pre>"
            f"<table><tr><th>class (top and bottom {SHOWN})</th><th>AP A</th><th>AP B</th><th>A - B</th></tr>"
            f"{table}</table><img alt='per-class AP difference' src='data:image/png;base64,{png}'>")
