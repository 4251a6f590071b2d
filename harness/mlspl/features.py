"""ResNet-50 features for linear training: the authors' files, or our own extraction.

The authors' data/coco/README.md names the files `train_features_imagenet_resnet50.npy` and
`val_features_imagenet_resnet50.npy`: one 2048-d row per row of formatted_{train,val}_images.npy
(their datasets.py indexes them with the same rows), downloadable from Zenodo record 10162606.
Our extraction rebuilds them with torchvision ResNet-50 and the ImageNet V1 weights (the
`pretrained=True` weights of their torchvision 0.8) on Resize((448, 448)) + ImageNet mean/std,
into memory-mapped .npy files written batch by batch and resumable. `compare_features` tells
how close ours are to theirs.
"""
import json
import os
from pathlib import Path

import numpy as np
import torch
from torchvision import transforms
from torchvision.models import ResNet50_Weights

from harness.data.images import load_rgb
from harness.data.loader import make_loader
from harness.data.transforms import ResizeToUint8, to_model_input
from harness.download import features_dir, fetch_mlspl_features, is_offline
from harness.errors import UserError
from harness.mlspl import checks
from harness.mlspl.config import FeatureConfig
from harness.mlspl.prepare import file_sha256
from harness.models.mlspl import FEATURE_DIM, MLSPLResNet50
from harness.progress import bar as progress_bar
from harness.progress import bars_enabled
from harness.records.arrays import load_array
from harness.records.partial_rows import open_rows, rows_done, save_progress

ZENODO_RECORD = "10162606"
FEATURE_FILES = {"train": "train_features_imagenet_resnet50.npy", "val": "val_features_imagenet_resnet50.npy"}
META_FILE = "features_meta.json"
V1_FILE, V1_SHA256_PREFIX = "resnet50-0676ba61.pth", "0676ba61"  # torchvision names files by sha256 prefix


def fetch_features(out_dir, keys=None, cache_dir=None):
    """Fetch the authors' COCO features from Zenodo (verified by harness.download) and link them
    into out_dir under the names their code reads. `keys`: file names to link (default: both)."""
    fetch_mlspl_features(cache_dir)
    root = features_dir(cache_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    linked = []
    for name in keys or FEATURE_FILES.values():
        found = sorted(root.rglob(name))  # a file of the record, or inside an archive it unpacked
        if not found:
            raise UserError(f"Zenodo record {ZENODO_RECORD} gave no {name} (looked under {root}); "
                            f"download it by hand from https://zenodo.org/records/{ZENODO_RECORD} into {out}")
        target = out / name
        if not target.exists():
            os.symlink(found[0].resolve(), target)
        linked.append(target)
    return linked


def feature_paths(features_dir):
    paths = {split: Path(features_dir) / name for split, name in FEATURE_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise UserError(f"missing {', '.join(missing)}; get the authors' features with `harness mlspl fetch-features "
                        f"--out {features_dir}`, or extract them with `harness mlspl extract-features --data DATA "
                        f"--coco-root COCO --out {features_dir}`")
    return paths


def feature_meta(features_dir):
    """Our extraction's metadata, or None for files from elsewhere (the authors')."""
    path = Path(features_dir) / META_FILE
    return json.loads(path.read_text()) if path.is_file() else None


class ImageRows:
    """torch Dataset over formatted image paths (relative to the COCO root): (uint8 image, row).

    The authors' transform is Resize((S, S)), RandomHorizontalFlip(0.5) (train only), ToTensor,
    Normalize. The loader ships the resize (and flip) as uint8 and `to_model_input` does ToTensor
    and Normalize on the model's device, the same bits (tests/mlspl/test_mlspl_loader.py). The flip stays
    here, in the worker, so its draw is made where and when theirs was: one per image, in order.

    share: (rank, world size) under several processes: the loader hands every rank the whole
    global batch, and each rank draws every image's flip, as one process would, but reads only its
    contiguous share of the batch.
    """

    def __init__(self, coco_root, images, resolution, flip=False, share=None):

        self.root, self.images, self.share = Path(coco_root), images, share
        self.resize = ResizeToUint8(resolution)
        self.flip = transforms.RandomHorizontalFlip(0.5) if flip else None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, row):
        image = self.resize(load_rgb(self.root / self.images[row]))
        return (self.flip(image) if self.flip else image), row

    def __getitems__(self, rows):
        if self.share is None:
            return [self[row] for row in rows]
        rank, size = self.share
        mine, items = range(rank * len(rows) // size, (rank + 1) * len(rows) // size), []
        for position, row in enumerate(rows):
            if position in mine:
                items.append(self[row])
            elif self.flip:
                torch.rand(1)  # RandomHorizontalFlip's draw for another rank's image
        return items


def load_imagenet_v1(model):
    """Load torchvision's ResNet-50 ImageNet V1 weights into model.backbone; returns {path, sha256}.

    The file is taken from torch's hub cache ($TORCH_HOME/hub/checkpoints/resnet50-0676ba61.pth);
    when absent, torchvision downloads it there (which needs the internet).
    """

    path = Path(torch.hub.get_dir()) / "checkpoints" / V1_FILE
    if not path.is_file() and is_offline():
        raise UserError(f"offline: ImageNet ResNet-50 V1 weights not found at {path}; copy "
                        f"{ResNet50_Weights.IMAGENET1K_V1.url} there, or unset HARNESS_OFFLINE")
    if not path.is_file():
        try:
            ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=bars_enabled())
        except Exception as e:  # no network, proxy, disk: the fix is the same
            raise UserError(f"ImageNet ResNet-50 V1 weights not found at {path} and not downloadable ({e}); "
                            f"copy {ResNet50_Weights.IMAGENET1K_V1.url} there, or pass --random-weights for a smoke run")
    sha = file_sha256(path)
    if not sha.startswith(V1_SHA256_PREFIX):
        raise UserError(f"{path} has sha256 {sha[:12]}..., not torchvision's V1 file; delete it and fetch it again")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # their fc is replaced
    missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    # Invariant, not user input: the sha256 above fixes the file, so its keys are torchvision's ResNet-50.
    assert not unexpected and all(k.startswith("fc.") for k in missing), (missing, unexpected)
    return {"path": str(path), "sha256": sha}


def extract_features(data_dir, coco_root, out_dir, config=None, progress=True):
    """Write {train,val}_features_imagenet_resnet50.npy (float32, rows = formatted rows) into out_dir.

    config: a FeatureConfig (resolution, batch size, device, workers, random weights and their seed).

    Resumable: rows go into `<name>.partial.npy` (memory-mapped) with a progress file after each
    batch; a rerun continues from the last finished batch, and a finished file is kept as is.
    """
    config = config or FeatureConfig()
    resolution, batch_size, device, seed = config.resolution, config.batch_size, config.device, config.seed
    random_weights = config.random_weights
    checks.whole("--resolution", resolution)
    checks.whole("--batch-size", batch_size)
    if config.workers is not None:
        checks.whole("--workers", config.workers, minimum=0)
    checks.seed(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # the same random network for a seed, the global generator untouched
        torch.default_generator.manual_seed(seed)
        model = MLSPLResNet50(linear_only=False)
    weights = {"path": None, "sha256": None} if random_weights else load_imagenet_v1(model)
    settings = {"resolution": resolution, "weights": weights, "random_weights": random_weights,
                "seed": seed if random_weights else None,
                "transform": f"Resize(({resolution}, {resolution})), ToTensor, ImageNet mean/std",
                "data_dir": str(Path(data_dir).resolve())}
    meta_path = out / META_FILE
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if {k: old.get(k) for k in settings} != settings:
            raise UserError(f"{out} holds features made with other settings; choose another --out")
    meta_path.write_text(json.dumps(settings, indent=1) + "\n")
    model = model.eval().to(device)
    for split, name in FEATURE_FILES.items():
        final = out / name
        if final.is_file():
            continue
        images = load_array(Path(data_dir) / f"formatted_{split}_images.npy", f"{split} image names", ndim=1)
        partial, progress_file = out / (name[:-4] + ".partial.npy"), out / (name[:-4] + ".progress.json")
        done = rows_done(progress_file, partial, most=len(images))
        feats = open_rows(partial, (len(images), FEATURE_DIM), fresh=not done)
        dataset = torch.utils.data.Subset(ImageRows(coco_root, images, resolution), range(done, len(images)))
        loader = make_loader(dataset, batch_size, device, config.workers)
        bar = progress_bar(len(images), f"features {split}", initial=done, enabled=progress)
        with torch.inference_mode():
            for batch, rows in loader:
                x = to_model_input(batch.to(device, non_blocking=True), "imagenet")
                feats[rows.numpy()] = model.features(x).float().cpu().numpy()
                feats.flush()
                save_progress(progress_file, int(rows[-1]) + 1)
                bar.update(len(rows))
        bar.close()
        del feats
        os.replace(partial, final)
        progress_file.unlink(missing_ok=True)
    return out


def compare_features(ours_dir, theirs_dir, sample=1000, seed=0):
    """Cosine similarity of our rows with theirs on a random sample of rows, per split."""
    checks.whole("--sample", sample)
    ours, theirs = feature_paths(ours_dir), feature_paths(theirs_dir)
    result = {}
    for split in FEATURE_FILES:
        a, b = (load_array(p, f"{split} features", ndim=2, kinds="f", mmap_mode="r") for p in (ours[split], theirs[split]))
        if a.shape != b.shape:
            raise UserError(f"{split}: our features are {a.shape}, theirs {b.shape}; "
                            f"both must come from the same prepared data")
        rows = np.sort(np.random.default_rng(seed).choice(len(a), size=min(sample, len(a)), replace=False))
        x, y = np.asarray(a[rows], np.float64), np.asarray(b[rows], np.float64)
        cos = (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-12)
        rel = np.linalg.norm(x - y, axis=1) / np.maximum(np.linalg.norm(y, axis=1), 1e-12)
        result[split] = {"rows": len(rows), "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                         "cosine_p01": float(np.percentile(cos, 1)), "cosine_median": float(np.median(cos)),
                         "relative_l2_median": float(np.median(rel))}
    return result
