"""The synthetic COCO-format smoke subset: tiny, deterministic, learnable.

Layout as COCO 2014: annotations/instances_{val,train}2014.json and
{val,train}2014/COCO_<split>_<id:012d>.jpg, with the real 80 category ids and names.
Each category draws its own pattern (one of 10 colours x one of 8 shapes), so a model can
learn the labels. Some images have no annotation, one per split is grayscale and one CMYK,
and one annotation per split is a crowd. Results on it never count as a reproduction.
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from harness.data.categories import COCO_CATEGORIES

SIZES = ((640, 480), (480, 640), (640, 427), (500, 375), (375, 500), (640, 360), (612, 612))
COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (0, 0, 128), (128, 64, 0))
SHAPES = ("square", "disc", "triangle", "hstripes", "vstripes", "checker", "ring", "cross")
UNANNOTATED_FRACTION = 0.08


def _draw(draw, shape, colour, x, y, s):
    """Draw one category's pattern in the box (x, y, s, s)."""
    if shape == "square":
        draw.rectangle([x, y, x + s, y + s], fill=colour)
    elif shape == "disc":
        draw.ellipse([x, y, x + s, y + s], fill=colour)
    elif shape == "triangle":
        draw.polygon([(x + s / 2, y), (x, y + s), (x + s, y + s)], fill=colour)
    elif shape in ("hstripes", "vstripes"):
        step = max(s // 6, 2)
        for k in range(0, s, 2 * step):
            box = [x, y + k, x + s, y + k + step] if shape == "hstripes" else [x + k, y, x + k + step, y + s]
            draw.rectangle(box, fill=colour)
    elif shape == "checker":
        step = max(s // 4, 2)
        for i in range(4):
            for j in range(4):
                if (i + j) % 2 == 0:
                    draw.rectangle([x + i * step, y + j * step, x + (i + 1) * step, y + (j + 1) * step], fill=colour)
    elif shape == "ring":
        draw.ellipse([x, y, x + s, y + s], outline=colour, width=max(s // 6, 2))
    elif shape == "cross":
        t = max(s // 5, 2)
        draw.rectangle([x + (s - t) // 2, y, x + (s + t) // 2, y + s], fill=colour)
        draw.rectangle([x, y + (s - t) // 2, x + s, y + (s + t) // 2], fill=colour)


def _image_ids(rng, n, taken):
    """Distinct ids of mixed digit counts, so sorting as strings differs from sorting as numbers."""
    ids = set()
    while len(ids) < n:
        high = 99_999 if rng.rand() < 0.5 else 599_999
        i = int(rng.randint(1, high))
        if i not in taken:
            ids.add(i)
    return sorted(ids)


def _make_split(out, split, n, rng, taken, first_ann_id):
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    ids = _image_ids(rng, n, taken)
    taken.update(ids)
    n_empty = max(1, int(round(n * UNANNOTATED_FRACTION))) if n >= 4 else 0
    empty = set(rng.choice(n, size=n_empty, replace=False).tolist())
    annotated_rows = [r for r in range(n) if r not in empty]
    gray_row, cmyk_row = annotated_rows[:2] if len(annotated_rows) >= 2 else (None, None)
    images, annotations = [], []
    ann_id = first_ann_id
    for row, image_id in enumerate(ids):
        w, h = SIZES[rng.randint(len(SIZES))]
        base = rng.randint(90, 166, size=3)
        noise = rng.randint(-12, 13, size=(h // 8, w // 8, 1))
        blocks = np.clip(base + noise, 0, 255).astype(np.uint8)  # one value per 8 x 8 block, widened below
        pixels = blocks.repeat(8, axis=0).repeat(8, axis=1)
        img = Image.fromarray(np.ascontiguousarray(pixels[:h, :w]), "RGB")
        if pixels.shape[0] < h or pixels.shape[1] < w:
            img = img.resize((w, h))
        draw = ImageDraw.Draw(img)
        n_objects = 0 if row in empty else int(rng.randint(1, 4))
        for k in rng.choice(80, size=n_objects, replace=False):
            cat_id = COCO_CATEGORIES[k][0]
            s = int(rng.randint(min(w, h) // 4, min(w, h) // 2))
            x, y = int(rng.randint(0, w - s)), int(rng.randint(0, h - s))
            _draw(draw, SHAPES[k // 10], COLOURS[k % 10], x, y, s)
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": cat_id,
                "bbox": [float(x), float(y), float(s), float(s)], "area": float(s * s),
                "iscrowd": 1 if ann_id == first_ann_id else 0,
                "segmentation": [[x, y, x + s, y, x + s, y + s, x, y + s]],
            })
            ann_id += 1
        file_name = f"COCO_{split}_{image_id:012d}.jpg"
        if row == gray_row:
            img = img.convert("L")
        elif row == cmyk_row:
            img = img.convert("CMYK")
        img.save(folder / file_name, quality=90)
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h, "license": 1,
                       "date_captured": "2013-11-14 16:28:13", "coco_url": "", "flickr_url": ""})
    order = rng.permutation(len(images))  # COCO's json does not list images by id,
    data = {
        "info": {"description": "harness smoke subset (synthetic, COCO 2014 format)", "version": "1.0", "year": 2014},
        "licenses": [{"id": 1, "name": "synthetic", "url": ""}],
        "images": [images[i] for i in order],
        "annotations": [annotations[i] for i in rng.permutation(len(annotations))],  # nor annotations by image
        "categories": [{"id": c, "name": name, "supercategory": sup} for c, name, sup in COCO_CATEGORIES],
    }
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return ann_id


def make_smoke(out_dir, n_val=48, n_train=96, seed=0):
    """Write the smoke subset under out_dir; the same seed gives byte-identical files."""
    out = Path(out_dir)
    rng = np.random.RandomState(seed)
    taken = set()
    next_ann = _make_split(out, "val2014", n_val, rng, taken, 1)
    if n_train:
        _make_split(out, "train2014", n_train, rng, taken, next_ann)
    (out / "SMOKE").write_text("Synthetic smoke subset made by `harness data smoke`: results on it never count.\n")
    return out


def is_smoke_root(root):
    """A smoke subset carries a SMOKE marker; its annotations say so too."""
    return (Path(root) / "SMOKE").is_file()
