"""COCO 2014 from images.cocodataset.org: fetch and unpack what is missing, check image counts.

Layout under ROOT (the one the zips unpack to): annotations/instances_{train,val}2014.json,
val2014/*.jpg, train2014/*.jpg. A part is complete when the annotations are unpacked and,
for an image split, every image its instances json lists is present; complete parts are
skipped, so a rerun only does what is left. The zips pass through ROOT/downloads/ and are
deleted once unpacked and checked (keep_zips=True keeps them). Annotations unpacked by hand
are used when both instances files parse as COCO instances files; they are never overwritten.
"""
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path

from harness import progress
from harness.download.errors import disk_full
from harness.download.settings import COCO_URL, base_url, is_offline
from harness.download.url import Published, fetch_url
from harness.download.verify import move_aside
from harness.errors import UserError

logger = logging.getLogger(__name__)

# md5 of each archive as published and widely checked (HARNESS_COCO_URL replaces the host).
COCO_ZIPS = {
    "annotations": ("annotations/annotations_trainval2014.zip", "0a379cfc70b0e71301e0f377548639bd"),
    "val2014": ("zips/val2014.zip", "a3d79f5ed8d289b7a7554ce06a5782b3"),
    "train2014": ("zips/train2014.zip", "0da8c0bd3d6becc4dcb32757491aca88"),
}
ANNOTATIONS = ("instances_train2014.json", "instances_val2014.json")


def fetch_coco(root, splits=("annotations", "val2014"), *, offline=None, keep_zips=False, quiet=False):
    """Make ROOT hold the given parts of COCO 2014; return {part: its folder}.

    splits: any of "annotations", "val2014", "train2014" (an image split brings the
    annotations too, to check its image count). Raises UserError naming what is wrong.
    """
    root = Path(root).expanduser()
    unknown = set(splits) - set(COCO_ZIPS)
    if unknown:
        raise UserError(f"unknown COCO part(s) {', '.join(sorted(unknown))}; choose from {', '.join(COCO_ZIPS)}")
    out = {"annotations": _ensure_annotations(root, offline, keep_zips, quiet)}
    for split in (s for s in COCO_ZIPS if s in splits and s != "annotations"):
        out[split] = _ensure_images(root, split, offline, keep_zips, quiet)
    return out


def _say(quiet, message):
    if not quiet:
        logger.warning(f"coco: {message}")


def _ensure_annotations(root, offline, keep_zips, quiet):
    folder = root / "annotations"
    marker = folder / ".harness-complete"
    paths = [folder / name for name in ANNOTATIONS]
    if marker.exists() and all(p.is_file() for p in paths):
        _say(quiet, f"annotations complete in {folder}, skipping")
        return folder
    present = [p for p in paths if p.is_file()]
    for path in present:  # files unpacked by hand: used if sound, never overwritten
        _check_instances(path)
    if len(present) < len(paths):
        _fetch_and_unpack(root, "annotations", offline, quiet)
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"the annotations archive lacks {', '.join(missing)}; it is not COCO 2014's: "
                            f"delete {root / 'downloads'} and retry")
        _drop_zip(root, "annotations", keep_zips)
    else:
        _say(quiet, f"annotations found in {folder} (placed by hand), checked")
    marker.write_text("unpacked and checked by harness\n")
    return folder


def _check_instances(path):
    """A UserError unless `path` parses as a COCO instances file (images, annotations, categories)."""
    try:
        with open(path) as f:
            data = json.load(f)
        sound = isinstance(data, dict) and all(isinstance(data.get(k), list)
                                               for k in ("images", "annotations", "categories"))
        problem = None if sound else "no images, annotations and categories lists"
    except (OSError, ValueError) as e:
        problem = " ".join(str(e).split())[:160]
    if problem:
        raise UserError(f"{path} is not a COCO instances file ({problem}); it was left as it is: replace it "
                        "with the one from annotations_trainval2014.zip, or delete it to have it downloaded")


def _ensure_images(root, split, offline, keep_zips, quiet):
    folder = root / split
    listed = _listed_images(root, split)
    missing = _missing(folder, listed)
    if not missing:
        _say(quiet, f"{split} complete in {folder} ({len(listed)} images), skipping")
        return folder
    _say(quiet, f"{split}: {len(missing)} of {len(listed)} images missing in {folder}")
    _fetch_and_unpack(root, split, offline, quiet)
    missing = _missing(folder, listed)
    if missing:
        raise UserError(f"{split}: {len(missing)} of the {len(listed)} images listed in "
                        f"instances_{split}.json are still missing after unpacking (e.g. {sorted(missing)[0]}); "
                        f"the archive is incomplete: delete {root / 'downloads'} and retry")
    _say(quiet, f"{split} complete: {len(listed)} images in {folder}")
    _drop_zip(root, split, keep_zips)
    return folder


def _listed_images(root, split):
    path = root / "annotations" / f"instances_{split}.json"
    try:
        with open(path) as f:
            return {image["file_name"] for image in json.load(f)["images"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read the image list of {path} ({type(e).__name__}: {str(e)[:120]}); "
                        f"replace it with the one from annotations_trainval2014.zip, or delete it and "
                        f"{path.parent / '.harness-complete'} to have it downloaded again")


def _missing(folder, listed):
    present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return listed - present


def _zip_path(root, part):
    return root / "downloads" / Path(COCO_ZIPS[part][0]).name


def _fetch_and_unpack(root, part, offline, quiet):
    remote, md5 = COCO_ZIPS[part]
    archive = _zip_path(root, part)
    if is_offline(offline) and not archive.is_file():
        raise UserError(f"offline: COCO {part} is missing in {root} and {archive} is not there; "
                        f"place {Path(remote).name} there by hand, or unset HARNESS_OFFLINE")
    url = f"{base_url('HARNESS_COCO_URL', COCO_URL)}/{remote}"
    archive.parent.mkdir(parents=True, exist_ok=True)
    fetch_url(url, archive, Published(md5=md5), offline=offline, quiet=quiet)
    _say(quiet, f"unpacking {archive.name} into {root}")
    try:
        with zipfile.ZipFile(archive) as z:  # members are annotations/..., val2014/..., train2014/...
            _unpack(z, root, keep_existing=part == "annotations")
    except zipfile.BadZipFile as e:
        moved = move_aside(archive)
        raise UserError(f"{archive.name} is damaged ({e}); moved it to {moved}; run again to download it anew")
    except OSError as e:
        raise disk_full(root, e) or e


def _unpack(z, root, keep_existing):
    """Unpack into root. keep_existing: leave files already there alone, and let each new
    file appear whole (unpacked aside, then renamed), so none is ever half-written."""
    if not keep_existing:
        _extract(z, root, z.namelist())
        return
    members = [m for m in z.namelist() if not m.endswith("/") and not m.startswith("/")
               and ".." not in m.split("/") and not (root / m).exists()]
    with tempfile.TemporaryDirectory(dir=root / "downloads", prefix=".unpacking-") as tmp:
        _extract(z, tmp, members)
        for name in members:
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(tmp) / name, target)


def _extract(z, folder, members):
    """extractall, member by member under a bar (val2014.zip holds 40,504 images: minutes)."""
    for name in progress.bar(len(members), f"unpacking {Path(z.filename or 'zip').name}", unit="file",
                             iterable=members):
        z.extract(name, folder)


def _drop_zip(root, part, keep_zips):
    archive = _zip_path(root, part)
    if not keep_zips and archive.exists():
        archive.unlink()
        archive.with_name(archive.name + ".verified.json").unlink(missing_ok=True)
