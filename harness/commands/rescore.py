"""Recompute the metrics of a finished run from its saved scores and labels (no GPU needed), with
its own protocol or another. Prints them and writes rescore-<protocol>.json in the run folder;
record.json is never touched, and an existing rescore file is never replaced."""
import json
import sys

from harness import records
from harness.commands.metrics import print_metrics
from harness.ctran.metrics import compute_ctran_metrics
from harness.errors import UserError
from harness.eval.ranks import as_ranks_wrote, check_ranks
from harness.metrics import Bootstrap, compute_metrics
from harness.records import new_run_id
from harness.records.arrays import load_run_array


def add_arguments(parser):
    parser.add_argument("run_dir", help="a run folder holding record.json, scores.npy and labels.npy")
    parser.add_argument("--protocol", choices=("q2l", "asl", "mlspl", "ctran"),
                        help="default: the protocol the run was evaluated with")
    parser.add_argument("--format", choices=("json", "text"), default="json",
                        help="json: one object with every metric (default); text: the headline numbers")
    parser.add_argument("--no-ci", action="store_true", help="skip the bootstrap")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the CI (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0, as `harness eval`)")
    parser.add_argument("--emulate-ranks", type=int, metavar="W",
                        help="the number Query2Label's q2l_infer.py would have printed on W GPUs "
                             "(DistributedSampler row order and padding)")


def output_path(run_dir, protocol, ranks=None):
    path = run_dir / f"rescore-{protocol}{f'-ranks{ranks}' if ranks else ''}.json"
    if path.exists():  # never replace an earlier result: add the time and a random tag
        path = run_dir / f"rescore-{protocol}-{new_run_id()}.json"
    return path


def run(args):
    if args.emulate_ranks is not None:
        check_ranks(args.emulate_ranks)  # before any file is read
    run_dir = records.run_folder(args.run_dir)  # RUN/record.json names RUN
    record = records.read_record(run_dir)
    if record.kind not in ("eval", "train"):
        raise UserError(f"{run_dir} is a '{record.kind}' run; only evaluation and training runs have scores "
                        "to rescore")
    files = record.files
    scores = load_run_array(run_dir, record, "scores")
    labels = load_run_array(run_dir, record, "labels")
    if "image_ids" in record.files:  # not used here, but a run whose files were changed is not rescored
        load_run_array(run_dir, record, "image_ids", mmap_mode="r")
    recorded = record.metrics
    protocol = args.protocol or record.eval.get("protocol")
    if protocol is None:
        raise UserError(f"{run_dir}/record.json names no protocol; pass --protocol q2l|asl|mlspl")
    ev = record.eval  # the run's own F1 definition and threshold (older records: ML-GCN at 0.5)
    extra = {}
    if protocol.startswith("ctran"):  # C-Tran's AP needs the run's known-label mask (masks.npy)
        mask_file = run_dir / files.get("masks", "masks.npy")
        extra["mask"] = load_run_array(run_dir, record, "masks") if mask_file.exists() else None
    ranks_note = None
    if args.emulate_ranks is not None:
        if extra:
            raise UserError("--emulate-ranks replays Query2Label's multi-GPU script; a C-Tran run has no such "
                            "script: leave it out")

        scores, labels, ranks_note = as_ranks_wrote(scores, labels, args.emulate_ranks)
    if extra:  # C-Tran's own metrics

        metrics = compute_ctran_metrics(scores, labels, extra["mask"])
    else:
        metrics = compute_metrics(scores, labels, protocol, ci=not args.no_ci and Bootstrap(args.n_boot, args.seed),
                                  class_names=recorded.get("class_names"), f1=ev.get("f1", "ml-gcn"),
                                  threshold=ev.get("threshold", 0.5))
    print_metrics(metrics, args.format)
    out = {
        "rescored_at": records.utc_now(),
        "run_id": record.run_id, "model_id": record.model_id, "protocol": protocol,
        "recorded_protocol": record.eval.get("protocol"), "recorded_mAP": recorded.get("mAP"),
        "smoke": record.smoke, "environment": records.environment(), "metrics": metrics,
        "emulated_ranks": args.emulate_ranks, "emulation": ranks_note,
    }
    path = output_path(run_dir, protocol, args.emulate_ranks)
    records.write_new(path, lambda f: f.write((json.dumps(out, indent=2) + "\n").encode()))
    print(f"written: {path}", file=sys.stderr)
