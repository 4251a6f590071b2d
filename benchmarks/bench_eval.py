"""Where the time of an evaluation goes, measured side by side on this machine.

    .venv/bin/python benchmarks/bench_eval.py [--model mlspl-an-linear] [--n-images 500] [--device cuda]

Makes a COCO-layout folder of photo-like JPEGs (640x480, 480x640, 427x640; quality 85-95), then
times, on the same images and with random weights (speed does not depend on them):
  model       the model alone on pre-made float32 tensors on the device
  e2e         `harness eval` end to end (uint8 loader, normalisation on the device)
  authors     a loop shaped like the authors' q2l_infer.py: Resize + ToTensor + Normalize on the
              CPU, DataLoader(batch 16, 8 workers, pin_memory), float32 to the device, sigmoid
              and .cpu() per batch
  data        the harness data path alone (decode + resize to uint8 batches, nothing else)
and prints e2e/model and e2e/authors. Then the data work of the whole `reproduce q2l` (its
models' resolutions and image sets, from the manifest): decodes per image and CPU seconds per
image, before (each model decodes, resizes and normalises every image on the CPU) and after (one
decode + resize per resolution; normalisation on the device; the other image order read from the
uint8 cache), measured in one process on a sample of the images.
"""
import argparse
import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.data.categories import COCO_CATEGORIES  # noqa: E402
from harness.data.images import load_rgb  # noqa: E402
from harness.data.transforms import ResizeToUint8, eval_transform  # noqa: E402
from harness.manifest import load_manifest  # noqa: E402
from harness.models import build_from_arch  # noqa: E402

SIZES = ((640, 480), (480, 640), (640, 427))


def make_jpegs(root, n, seed=0):
    """COCO layout: smooth shapes, texture and sensor noise, so JPEG decode costs what a photo costs."""
    rng = np.random.default_rng(seed)
    folder = root / "val2014"
    folder.mkdir(parents=True)
    images, annotations = [], []
    for k in range(n):
        w, h = SIZES[k % len(SIZES)]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([128 + 100 * np.sin(xx / rng.uniform(20, 90) + k), 128 + 100 * np.cos(yy / rng.uniform(20, 90)),
                         (xx + yy) * 255 / (w + h)], -1)
        pixels = np.clip(base + rng.normal(0, 18, (h, w, 3)), 0, 255).astype(np.uint8)
        name = f"COCO_val2014_{k + 1:012d}.jpg"
        Image.fromarray(pixels).save(folder / name, quality=int(rng.integers(85, 96)))
        images.append({"id": k + 1, "file_name": name, "width": w, "height": h})
        annotations.append({"id": k + 1, "image_id": k + 1, "category_id": COCO_CATEGORIES[k % 80][0],
                            "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0})
    (root / "annotations").mkdir()
    categories = [{"id": cid, "name": name, "supercategory": sup} for cid, name, sup in COCO_CATEGORIES]
    (root / "annotations" / "instances_val2014.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return sorted(folder.iterdir())


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_model(model, spec, n, device, batch_size):
    x = torch.rand(batch_size, 3, spec.eval.resolution, spec.eval.resolution, device=device)
    with torch.inference_mode():
        model(x)  # warm-up
        sync(device)
        t0, done = time.perf_counter(), 0
        while done < n:
            model(x[:min(batch_size, n - done)])
            done += batch_size
        sync(device)
    return n / (time.perf_counter() - t0)


def time_e2e(spec, root, runs, device, workers, batch_size):
    from harness.eval.config import EvalConfig
    from harness.eval.run import evaluate

    config = EvalConfig(coco_root=str(root), weights="random", runs_root=str(runs), device=device, workers=workers,
                        batch_size=batch_size, progress=False)
    return evaluate(spec, config).record.timings["images_per_s"]


class AuthorsImages(torch.utils.data.Dataset):
    def __init__(self, files, transform):
        self.files, self.transform = files, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return self.transform(Image.open(self.files[i]).convert("RGB")), i


def time_authors(model, spec, files, device, workers, batch_size):
    """Their q2l_infer.py loop: CPU transform, pin_memory DataLoader, float32 to the device, sigmoid + .cpu()."""
    loader = torch.utils.data.DataLoader(AuthorsImages(files, eval_transform(spec.eval)), batch_size=batch_size,
                                         shuffle=False, num_workers=workers, pin_memory=device == "cuda")
    out = []
    with torch.inference_mode():
        t0 = time.perf_counter()
        for images, _ in loader:
            images = images.to(device, non_blocking=True)
            out.append(torch.sigmoid(model(images)).cpu())
    return len(files) / (time.perf_counter() - t0)


def time_data(spec, root, device, workers, batch_size):
    from harness.data.cache import PassImages
    from harness.data.loader import make_loader

    names = sorted(p.name for p in (root / "val2014").iterdir())
    dataset = PassImages(root / "val2014", names, ResizeToUint8(spec.eval.resolution), [(k, k) for k in range(len(names))])
    t0 = time.perf_counter()
    for images, _ in make_loader(dataset, batch_size, device, workers):
        images.to(device, non_blocking=True)
    sync(device)
    return len(names) / (time.perf_counter() - t0)


def reproduce_data_work(files, specs):
    """(decodes per image, CPU s per image) of reproduce q2l's data work, before and after."""
    before_s = after_s = 0.0
    resolutions = {}
    for spec in specs:
        resolutions.setdefault(spec.eval.resolution, []).append(spec.eval.image_set)
    for path in files:
        t0 = time.process_time()
        for spec in specs:  # before: every model decodes, resizes and normalises on the CPU
            eval_transform(spec.eval)(load_rgb(path))
        before_s += time.process_time() - t0
        t0 = time.process_time()
        for resolution, sets in resolutions.items():  # after: one decode + resize per resolution
            pixels = np.ascontiguousarray(ResizeToUint8(resolution)(load_rgb(path)).numpy())
            if len(set(sets)) > 1:  # the models of the other image order: written to the cache, read back
                crc = zlib.crc32(pixels)
                assert zlib.crc32(np.array(pixels)) == crc
        after_s += time.process_time() - t0
    n = len(files)
    return {"decodes_before": len(specs), "decodes_after": len(resolutions),
            "cpu_s_before": before_s / n, "cpu_s_after": after_s / n}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mlspl-an-linear", help="a manifest model id (default: the smallest)")
    p.add_argument("--n-images", type=int, default=500)
    p.add_argument("--reproduce-sample", type=int, default=40, help="images for the reproduce q2l data work")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=None, help="harness loader (default: every usable core)")
    p.add_argument("--authors-workers", type=int, default=8, help="their default: 8")
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args(argv)

    specs = load_manifest()
    spec = specs[args.model]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "coco"
        files = make_jpegs(root, args.n_images)
        torch.manual_seed(0)
        model = build_from_arch(spec.arch).eval().to(args.device)
        figures = {"model_id": spec.id, "device": args.device, "n_images": args.n_images,
                   "batch_size": args.batch_size, "threads": torch.get_num_threads(),
                   "cores": len(os.sched_getaffinity(0))}
        figures["model"] = time_model(model, spec, args.n_images, args.device, args.batch_size)
        figures["e2e"] = time_e2e(spec, root, Path(tmp) / "runs", args.device, args.workers, args.batch_size)
        figures["authors"] = time_authors(model, spec, files, args.device, args.authors_workers, args.batch_size)
        figures["data"] = time_data(spec, root, args.device, args.workers, args.batch_size)
        q2l = [s for s in specs.values() if s.paper.get("csv", "").startswith("q2l_")]  # reproduce q2l's models
        figures["reproduce_q2l"] = reproduce_data_work(files[:args.reproduce_sample], q2l)
    figures["e2e_over_model"] = figures["e2e"] / figures["model"]
    figures["e2e_over_authors"] = figures["e2e"] / figures["authors"]
    r = figures["reproduce_q2l"]
    print(f"{spec.id} on {args.device} ({figures['cores']} cores), {args.n_images} JPEGs, batch {args.batch_size}")
    for key in ("model", "e2e", "authors", "data"):
        print(f"  {key:8s} {figures[key]:9.1f} images/s")
    print(f"  e2e/model {figures['e2e_over_model']:.2f}   e2e/authors {figures['e2e_over_authors']:.2f}")
    print(f"reproduce q2l data work ({len(q2l)} models): decodes per image {r['decodes_before']} -> "
          f"{r['decodes_after']}; CPU s per image {r['cpu_s_before']:.4f} -> {r['cpu_s_after']:.4f} "
          f"({r['cpu_s_before'] / r['cpu_s_after']:.1f}x less)")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
