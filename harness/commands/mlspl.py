"""Single-positive-label (MLSPL, Cole et al. 2021): prepare the authors' data, get features, train and evaluate."""
import json

from harness.commands import add_runs_argument
from harness.distributed import pick_device
from harness.errors import UserError
from harness.mlspl.config import FeatureConfig, TrainConfig
from harness.mlspl.features import compare_features, extract_features, fetch_features
from harness.mlspl.prepare import prepare
from harness.mlspl.run import train_and_evaluate


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("prepare", help="the authors' formatted label files, single positives (seed 1200)")
    p.add_argument("--coco-root", required=True, help="folder holding annotations/instances_{train,val}2014.json")
    p.add_argument("--out", required=True, help="folder for the formatted_*.npy files")

    p = sub.add_parser("extract-features", help="ResNet-50 (ImageNet V1) features at 448, resumable")
    p.add_argument("--data", required=True, help="folder made by `harness mlspl prepare`")
    p.add_argument("--coco-root", required=True, help="COCO root holding train2014/ and val2014/")
    p.add_argument("--out", required=True, help="folder for {train,val}_features_imagenet_resnet50.npy")
    p.add_argument("--resolution", type=int, default=448, help="input size (default 448, the authors'; another "
                   "is recorded in features_meta.json)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64; the features "
                   "do not depend on it beyond float rounding)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default (auto): cuda when available")
    p.add_argument("--workers", type=int, help="loader workers (default: every usable core)")
    p.add_argument("--random-weights", action="store_true", help="random ResNet-50 (smoke runs only)")
    p.add_argument("--seed", type=int, default=0, help="with --random-weights: the torch seed of the random network "
                                                      "(recorded in features_meta.json)")

    p = sub.add_parser("fetch-features", help="the authors' features from Zenodo record 10162606")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder the two feature files are linked into (the download stays in the cache)")
    p.add_argument("--key", action="append", help="Zenodo file key (repeatable; default: the two feature files)")
    p.add_argument("--cache", help="download cache folder")

    p = sub.add_parser("compare-features", help="cosine similarity of two feature folders on sampled rows")
    p.add_argument("ours", help="a feature folder (e.g. from `harness mlspl extract-features`)")
    p.add_argument("theirs", help="another feature folder (e.g. the authors', from `harness mlspl fetch-features`)")
    p.add_argument("--sample", type=int, default=1000, help="rows compared, drawn evenly (default 1000)")

    p = sub.add_parser("train", help="train one loss and mode over the grid, select on val, score test")
    p.add_argument("--loss", required=True, choices=["BCE", "AN", "AN-LS", "WAN", "EPR", "ROLE"],
                   help="the paper's losses (BCE: full labels, the upper bound)")
    p.add_argument("--mode", required=True, choices=["linear", "fine-tuned", "linear-init"],
                   help="linear: a head on fixed features; fine-tuned: end to end on images; linear-init: a "
                        "linear phase, then fine-tuning from it")
    p.add_argument("--data", required=True, help="folder made by `harness mlspl prepare`")
    p.add_argument("--features", help="feature folder (modes linear and linear-init)")
    p.add_argument("--coco-root", help="COCO root with the images (modes fine-tuned and linear-init)")
    p.add_argument("--grid", choices=["paper"], help="the paper's grid: batch {8,16} x lr {1e-2..1e-5} (default)")
    p.add_argument("--lr", type=float, help="one grid point: this learning rate (with --batch-size)")
    p.add_argument("--batch-size", type=int, help="one grid point: this batch size (with --lr)")
    p.add_argument("--init-lr", type=float,
                   help="linear-init: linear-phase lr (default: the authors' for AN-LS/ROLE; another flags the run smoke)")
    p.add_argument("--init-batch-size", type=int, help="linear-init: linear-phase batch size (with --init-lr)")
    p.add_argument("--epochs", type=int, help="override the paper's epochs (flags the run smoke)")
    p.add_argument("--resolution", type=int, default=448, help="fine-tuning input size (not 448: smoke)")
    p.add_argument("--random-weights", action="store_true", help="random backbone for fine-tuning (smoke)")
    p.add_argument("--seed", type=int, default=1200,
                   help="torch and numpy seed (default: their P['seed'], 1200; recorded). The draws are their "
                        "script's with torch.manual_seed(P['seed']) added")
    p.add_argument("--dataloader-semantics", choices=["torch>=1.9", "torch-1.7-1.8"], default="torch>=1.9",
                   help="which torch's DataLoader(shuffle=True) draws to replay (their requirements.txt: torch 1.7.0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default (auto): cuda when available")
    p.add_argument("--workers", type=int, default=4,
                   help="image loader workers (default 4, the authors' P['num_workers']): each flip is drawn in "
                        "a worker, so their number changes the draws, and 4 replays theirs (unlike `harness eval`, "
                        "whose workers draw nothing and default to every core)")
    add_runs_argument(p)
    p.add_argument("--manifest", metavar="FILE",
                   help="manifest for the record's model entry and paper numbers (default: weights_manifest.yaml)")


def run(args):
    if args.action == "prepare":
        meta = prepare(args.coco_root, args.out)
        print(f"wrote {args.out}: train {meta['counts']['train']}, val {meta['counts']['val']}, "
              f"test {meta['counts']['test']} images")
    elif args.action == "extract-features":
        config = FeatureConfig(resolution=args.resolution, batch_size=args.batch_size, device=pick_device(args.device),
                               workers=args.workers, random_weights=args.random_weights, seed=args.seed)
        out = extract_features(args.data, args.coco_root, args.out, config)
        print(f"features in {out}")
    elif args.action == "fetch-features":
        for path in fetch_features(args.out, args.key, args.cache):
            print(path)
    elif args.action == "compare-features":
        print(json.dumps(compare_features(args.ours, args.theirs, args.sample), indent=1))
    elif args.action == "train":
        finished = train_and_evaluate(train_config(args))
        if finished is None:  # a torchrun rank other than 0: rank 0 writes and prints
            return
        record, sel = finished.record, finished.record.train["selected"]
        print(f"{record.model_id}: test mAP {sel['test_mAP']:.2f} on {record.dataset['n_images']} images "
              f"(batch {sel['batch_size']}, lr {sel['lr']:g}, epoch {sel['best_epoch']}, val mAP "
              f"{sel['val_mAP']:.2f}){' [smoke]' if record.smoke else ''} -> {finished.run_dir}")


def train_config(args):
    """The TrainConfig that `harness mlspl train`'s flags ask for."""
    if (args.lr is None) != (args.batch_size is None):
        raise UserError("give --lr and --batch-size together (one grid point), or neither (--grid paper)")
    if args.grid and args.lr is not None:
        raise UserError("--grid paper and --lr/--batch-size exclude each other; choose one")
    if (args.init_lr is None) != (args.init_batch_size is None):
        raise UserError("give --init-lr and --init-batch-size together")
    return TrainConfig(
        args.loss, args.mode, data_dir=args.data, features_dir=args.features, coco_root=args.coco_root,
        points=((args.batch_size, args.lr),) if args.lr is not None else None,
        init_point=(args.init_lr, args.init_batch_size) if args.init_lr is not None else None,
        epochs=args.epochs, seed=args.seed, resolution=args.resolution, random_weights=args.random_weights,
        semantics=args.dataloader_semantics, device=args.device, workers=args.workers, runs_root=args.runs,
        manifest=args.manifest)
