"""Run a whole reproduction: get checkpoints, evaluate every model, measure, write tables/.

  harness reproduce q2l --coco-root DIR     the six Query2Label models and the ASL baseline
  harness reproduce mlspl --coco-root DIR   train and evaluate the single-positive models

Complete runs are kept and skipped, an interrupted one is resumed (the same command again); one model
failing does not stop the others.
"""
import argparse

from harness.commands import OldSpelling, add_runs_argument
from harness.errors import Interrupted
from harness.eval.config import EvalConfig
from harness.eval.reproduce import reproduce_q2l
from harness.inputs.paths import check_output_folder
from harness.mlspl.reproduce import every_model_id, reproduce_mlspl
from harness.report import write_all


def add_arguments(parser):
    parser.add_argument("family", choices=["q2l", "mlspl"],
                        help="q2l: the six Query2Label models and the ASL baseline; mlspl: the single-positive models")
    parser.add_argument("--coco-root", required=True, help="COCO 2014 root")
    parser.add_argument("--models", nargs="+", help="only these model ids (default: the whole family)")
    parser.add_argument("--weights-dir", help="folder of checkpoints placed by hand")
    add_runs_argument(parser)
    parser.add_argument("--report-dir", default="tables", metavar="DIR",
                        help="the folder the report is written into (default: tables/)")
    parser.add_argument("--tables", dest="report_dir", action=OldSpelling, new="--report-dir", help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default (auto): cuda when available")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="q2l: every model's batch size (default: each model's own; another is recorded)")
    parser.add_argument("--amp", nargs="?", const="fp16", choices=["fp16", "bf16", "off"],
                        help="default: as each model's config_new.json says, else fp32")
    parser.add_argument("--limit", type=int, help="only the first N images (runs are flagged smoke)")
    parser.add_argument("--force", action="store_true", help="run again even when a complete run exists")
    parser.add_argument("--all", action="store_true", help="mlspl: every loss and mode (default: ROLE linear + fine-tuned)")
    parser.add_argument("--mlspl-data", default="data/mlspl",
                        help="mlspl: where the prepared label files and features go (default: data/mlspl)")
    parser.add_argument("--tf32", choices=["on", "off"], default="off",
                        help="q2l: TF32 on a GPU (default off, the float32 reference; recorded)")
    parser.add_argument("--keep-cache", action="store_true",
                        help="q2l: keep the uint8 cache of resized images (under RUNS/.decode-cache)")
    parser.add_argument("--manifest", metavar="FILE", help="the model manifest (default: weights_manifest.yaml)")


def run(args):
    try:
        return _reproduce(args)
    except Interrupted as e:  # the same command resumes every unfinished run: no flag to add
        raise Interrupted(e.saved, resume=() if e.resume is not None else None) from None


def _reproduce(args):
    check_output_folder(args.report_dir, "--report-dir")  # before hours of evaluation, not after
    if args.family == "q2l":
        config = EvalConfig(coco_root=args.coco_root, weights_dir=args.weights_dir, batch_size=args.batch_size,
                            amp=args.amp, device=args.device, tf32=args.tf32, limit=args.limit, runs_root=args.runs,
                            keep_cache=args.keep_cache, resume="auto")
        done = reproduce_q2l(config, models=args.models, manifest=args.manifest, force=args.force)
    else:
        models = args.models or (every_model_id() if args.all else None)
        done = reproduce_mlspl(args.coco_root, models=models, runs_root=args.runs, device=args.device,
                               force=args.force, data_dir=args.mlspl_data, manifest=args.manifest)
    if done.reports:
        written = write_all(runs_root=args.runs, out_dir=args.report_dir, manifest=args.manifest)
        print(f"\n{len(done.model_ids) - len(done.failed)} of {len(done.model_ids)} models done; "
              f"report: {', '.join(str(p) for p in written)}")
        for mid, why in done.failed:
            print(f"  {mid} failed: {why}")
    return 1 if done.failed else 0
