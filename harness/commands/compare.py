"""Paired comparison of two runs on the same images (run folders written by `harness eval`):
mAP difference A - B with a paired bootstrap 95% CI, a paired permutation p-value, the per-class
AP differences (largest each way) and a verdict: A better / B better / not distinguishable at 95%."""
import json
import sys

from harness.errors import UserError
from harness.explain.compare import compare_runs, load_run, plot_png, to_text
from harness.inputs.paths import check_new_file
from harness.records import write_new


def add_arguments(parser):
    parser.add_argument("run_a", metavar="RUN_A", help="a finished run folder (record.json, scores.npy, ...)")
    parser.add_argument("run_b", metavar="RUN_B", help="another run folder, on the same images")
    parser.add_argument("--protocol", choices=("q2l", "asl", "mlspl"),
                        help="whose AP (default: the runs' own; required when they differ)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (1000)")
    parser.add_argument("--n-perm", type=int, default=1000, help="permutations (1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both the resamples and the permutations (0)")
    parser.add_argument("--common-images", action="store_true",
                        help="compare on the images both runs scored (same annotation file and labels), e.g. "
                             "a Q2L run (all 40,504) against an ASL run (the 40,137 annotated)")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or json")
    parser.add_argument("--plot", metavar="FILE.png", help="also save the sorted per-class AP difference chart")


def run(args):
    if args.plot and not args.plot.lower().endswith(".png"):
        raise UserError(f"--plot {args.plot}: name a .png file")
    if args.plot:
        check_new_file(args.plot, "--plot")  # before minutes of resampling, not after
    result = compare_runs(load_run(args.run_a), load_run(args.run_b), protocol=args.protocol, n_boot=args.n_boot,
                          n_perm=args.n_perm, seed=args.seed, common_images=args.common_images,
                          progress=not args.no_progress)
    sys.stdout.write(to_text(result) if args.format == "text" else json.dumps(result, indent=1) + "\n")
    if args.plot:
        try:
            write_new(args.plot, lambda f: f.write(plot_png(result)))
        except FileExistsError:
            raise UserError(f"--plot {args.plot} exists; it is never overwritten: pass another file name")
        print(f"written: {args.plot}", file=sys.stderr)
