"""What a run folder's files show against what its record says: the facts `harness verify` prints
and the report judges a record by (harness.report.judge). A record's flags are claims; these are
the facts, one finding each (held, failed, or cannot check, with why):

  files        every array the record names is in the folder, readable (never unpickled), one shape
  digests      each file's sha256 is the one the record took when it wrote the file (schema 2)
  image count  the rows are the whole image set of the record's protocol (val2014: 40,504 'all',
               40,137 'annotated'; MLSPL less the last partial batch its test loader drops), 80
               classes, distinct image ids, and the record's own counts say the same
  labels       0/1, and hashed with the image ids they are the record's dataset fingerprint (the
               labels of its whole split, built from its instances_val2014.json)
  annotations  (given your own COCO) the run's annotation file is yours and its labels are yours
  mAP          recomputed from scores.npy + labels.npy with the record's protocol
  metrics      (verify) every other number, and the bootstrap CI with its recorded seed
  checkpoint   the record's sha256 is the manifest's pin or this machine's lock entry; a checkpoint
               kept in the run folder is hashed too
  smoke flags  what the facts show (part of the split, random weights, --limit, ...) is what the
               record's flags say
  environment  the library versions the record names are those of the environment file it names
  resume, decode cache  the digests of rows merged at a resume and of a decode cache read, where
               the record keeps them

The harness holds no pinned fingerprint of the real val2014 labels (nothing measured it here: no
COCO on the machine that wrote this), so the labels are checked against the record's fingerprint,
and, with your own annotation file (`harness verify --coco-root`), against the real thing.
"""
import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from harness.data.coco import SPLIT_SIZES, labels_sha256
from harness.download.lock import lock_entry
from harness.download.settings import lock_file_for
from harness.errors import UserError
from harness.files import file_digest
from harness.manifest import ModelSpec
from harness.records import Record, environment_file, environment_pins, names_versions
from harness.records.arrays import load_array
from harness.report import recompute

logger = logging.getLogger(__name__)

HELD, FAILED, UNCHECKED = "held", "failed", "cannot check"
N_CLASSES = 80  # COCO's categories
# where a record keeps the sha256 of the rows a resume merged (timings) and the decode cache it read (measurement)
RESUME_DIGEST, CACHE_DIGEST = "partial_rows_sha256", "decode_cache"


@dataclass(frozen=True)
class Finding:
    check: str
    outcome: str  # HELD, FAILED or UNCHECKED
    why: str
    essential: bool = False  # when it cannot be made, the record is unverifiable

    def to_json(self):
        return {"check": self.check, "outcome": self.outcome, "why": self.why, "essential": self.essential}


@dataclass(frozen=True)
class Facts:
    """Every finding of one run, what they show that keeps it from counting, and its recomputed mAP."""
    findings: tuple
    smoke: tuple = ()  # e.g. "4 of the 40,504 images", "random weights"
    point: recompute.PointMap | None = None

    @property
    def failed(self):
        return [f for f in self.findings if f.outcome == FAILED]

    @property
    def unverifiable(self):
        return [f for f in self.findings if f.outcome == UNCHECKED and f.essential]

    @property
    def verdict(self):
        """"failed" (something does not hold), "holds" (everything does) or "unverified" (neither)."""
        if self.failed:
            return "failed"
        return "holds" if all(f.outcome == HELD for f in self.findings) else "unverified"

    def to_json(self):
        return {"verdict": self.verdict, "smoke": list(self.smoke),
                "recomputed_mAP": self.point.mAP if self.point else None,
                "findings": [f.to_json() for f in self.findings]}


@dataclass(frozen=True)
class Annotations:
    """The reviewer's own COCO labels (harness.data.coco.load_labels) and their file's sha256."""
    coco_labels: object
    sha256: str


@dataclass
class _Run:
    record: object
    spec: object
    folder: Path | None
    findings: list = field(default_factory=list)
    smoke: list = field(default_factory=list)
    arrays: dict | None = None
    point: recompute.PointMap | None = None

    def add(self, check, outcome, why, essential=False):
        self.findings.append(Finding(check, outcome, why, essential))


def check_run(record: Record, spec: ModelSpec | None = None, *, folder: str | Path | None = None, full: bool = False,
              annotations: Annotations | None = None, ci: bool = True) -> Facts:
    """The Facts of one record (a records.Record; its folder is where it was read, or `folder`).
    spec: its manifest entry (None: not in the manifest); full: every metric too, not only the
    point mAP (with the bootstrap CI unless ci=False); annotations: an Annotations to check against."""
    folder = folder or record.folder
    run = _Run(record, spec, Path(folder) if folder else None)
    if record.kind not in ("eval", "train") or not record.files:
        run.add("files", UNCHECKED, f"a {record.kind} record without score files: nothing to recompute", True)
        return Facts(tuple(run.findings))
    if run.folder is None:
        run.add("files", UNCHECKED, "the record was not read from a run folder: no files to check", True)
        return Facts(tuple(run.findings))
    _files(run)
    _digests(run)
    _image_count(run)
    _labels(run)
    if annotations is not None:
        _annotations(run, annotations)
    _map(run)
    if full:
        _metrics(run, ci)
    _checkpoint(run, hash_elsewhere=full)
    _smoke_flags(run)
    _environment(run)
    _resume_and_cache(run)
    point = replace(run.point, per_class=None) if run.point else None  # the sorted arrays are not kept
    return Facts(tuple(run.findings), tuple(dict.fromkeys(run.smoke)), point)


# ---------------------------------------------------------------- the files

def _safe_name(name):
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _load(path):
    """An .npy array, never unpickled; its size checked against its header before it is read."""
    return np.array(load_array(path, Path(path).name, mmap_mode="r"))


def _files(run):
    files, arrays, problems = run.record.files, {}, []
    for key in ("scores", "labels", "image_ids"):
        if key not in files:
            problems.append(f"the record names no {key} file")
    for key, name in files.items():
        if not _safe_name(name):
            problems.append(f"{key} is named {name!r}, a path outside the run folder")
            continue
        try:
            arrays[key] = _load(run.folder / name)
        except UserError as e:
            problems.append(f"{name} is missing" if not (run.folder / name).exists() else
                            f"{name} is not a readable .npy array ({str(e)[:120]})")
    if not problems:
        problems = _shape_problems(arrays)
    if problems:
        run.add("files", FAILED, "; ".join(problems), True)
        return
    n, c = arrays["scores"].shape
    run.arrays = arrays
    run.add("files", HELD, f"{', '.join(files.values())}: readable, {n:,} rows x {c} classes")


def _shape_problems(arrays):
    scores = arrays["scores"]
    if scores.ndim != 2 or not np.issubdtype(scores.dtype, np.floating):
        return [f"scores.npy holds {scores.dtype} {scores.shape}, not images x classes of floats"]
    n = scores.shape[0]
    wanted = {"labels": scores.shape, "image_ids": (n,), "masks": scores.shape}
    problems = [f"{key}.npy holds {arrays[key].shape}, scores.npy {scores.shape}"
                for key in wanted if key in arrays and arrays[key].shape != wanted[key]]
    problems += [f"{key}.npy holds {arrays[key].dtype}, not integers" for key in ("labels", "image_ids", "masks")
                 if key in arrays and not (np.issubdtype(arrays[key].dtype, np.integer) or arrays[key].dtype == bool)]
    return problems


def _digests(run):
    record, files = run.record, run.record.files
    if record.schema < 2 and not record.digests:
        run.add("digests", UNCHECKED, f"a schema {record.schema} record, written before records kept the sha256 of "
                                      f"their files: they cannot be shown to be the ones it was computed from", True)
        return
    problems, held = [], []
    for key, name in files.items():
        expected = record.digests.get(key)
        if expected is None:
            problems.append(f"the record names {name} but holds no sha256 of it")
            continue
        path = run.folder / name if _safe_name(name) else None
        if path is None or not path.is_file():
            problems.append(f"{name} is missing")
            continue
        actual = file_digest(path)
        if actual != expected:
            problems.append(f"{name} has sha256 {actual[:12]}, the record {expected[:12]}: changed after the run")
        else:
            held.append(name)
    if problems:
        run.add("digests", FAILED, "; ".join(problems), True)
    else:
        run.add("digests", HELD, f"{', '.join(held)}: sha256 as recorded")


# ---------------------------------------------------------------- the image set and its labels

def full_count(record: Record) -> tuple[int | None, str]:
    """(rows a full run of this record's protocol scores, which set that is), or (None, why not)."""
    dataset = record.dataset
    if dataset.get("name") != "coco2014-val":
        return None, f"dataset {dataset.get('name')!r} is not COCO val2014, whose image sets this harness knows"
    image_set = dataset.get("image_set")
    if image_set not in ("all", "annotated"):
        return None, f"image set {image_set!r} is neither 'all' nor 'annotated'"
    n = SPLIT_SIZES["val2014"][image_set == "annotated"]
    what = f"val2014 '{image_set}' set of {n:,} images"
    if record.eval.get("drop_last"):  # MLSPL's test loader drops the last partial batch
        batch = record.eval.get("batch_size")
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            return None, "the record drops the last partial batch but names no batch size"
        n -= n % batch
        what += f" less the last partial batch of {batch} ({n:,})"
    return n, what


def _image_count(run):
    if run.arrays is None:
        run.add("image count", UNCHECKED, "the files could not be read", True)
        return
    record = run.record
    rows, classes = run.arrays["scores"].shape
    claims = {"dataset n_images": record.dataset.get("n_images"), "metrics n_images": record.metrics.get("n_images")}
    wrong = [f"its {name} says {value}" for name, value in claims.items() if value is not None and value != rows]
    ids = run.arrays["image_ids"]
    repeated = len(ids) - len(np.unique(ids))
    if repeated:
        wrong.append(f"{repeated} image ids repeat")
    if wrong:
        run.add("image count", FAILED, f"the files hold {rows:,} images; {'; '.join(wrong)}", True)
        return
    expected, what = full_count(record)
    if expected is None:
        run.add("image count", UNCHECKED, what, True)
        return
    if rows != expected:
        run.smoke.append(f"{rows:,} of the {expected:,} images")
    if classes != N_CLASSES:
        run.smoke.append(f"{classes} classes, not COCO's {N_CLASSES}")
    whole = rows == expected and classes == N_CLASSES
    run.add("image count", HELD, f"{rows:,} images x {classes} classes: " +
            (f"the whole {what}" if whole else f"not the whole {what}, so no reproduction"))


def _labels(run):
    if run.arrays is None:
        run.add("labels", UNCHECKED, "the files could not be read")
        return
    record, labels, ids = run.record, run.arrays["labels"], run.arrays["image_ids"]
    if not np.isin(labels, (0, 1)).all():
        run.add("labels", FAILED, "labels.npy holds values other than 0 and 1")
        return
    fingerprint = record.dataset.get("fingerprint") or {}
    if record.labels.get("used") == "authors' file":
        run.add(*_authors_labels(run))
        return
    if not fingerprint.get("labels_sha256"):
        run.add("labels", UNCHECKED, "the record holds no dataset fingerprint to check the labels against")
    elif fingerprint.get("n_images") != len(ids):
        run.add("labels", UNCHECKED, f"the dataset fingerprint is of the whole split ({fingerprint.get('n_images')} "
                                     f"images), the files hold {len(ids):,}")
    elif labels_sha256(ids, labels) != fingerprint["labels_sha256"]:
        run.add("labels", FAILED, "labels.npy with image_ids.npy is not the record's dataset fingerprint (the "
                                  "labels of its annotation file): labels or image ids were changed")
    else:
        run.add("labels", HELD, f"labels.npy with image_ids.npy is the dataset fingerprint "
                                f"{fingerprint['labels_sha256'][:12]} (annotations {_short(fingerprint)})")


def _short(fingerprint):
    sha = fingerprint.get("annotations_sha256")
    return f"sha256 {sha[:12]}" if isinstance(sha, str) else "unnamed"


def _authors_labels(run):
    """Query2Label's metrics use the authors' label file where it differs from the json: its sha256
    against the manifest's pin or the lock file (labels.npy itself cannot be compared without it)."""
    source = run.record.labels.get("authors_file") or {}
    ref_id, sha = source.get("id"), source.get("sha256")
    spec = run.spec
    ref = (spec.references or {}).get(ref_id) if spec is not None else None
    if ref is None or sha is None:
        return "labels", UNCHECKED, "labels are the authors' file, which this manifest does not name"
    expected, origin = _expected_sha(spec, ref_id, "labels", ref)
    if expected is None:
        return "labels", UNCHECKED, f"labels are the authors' file {ref_id}, unpinned and not locked here"
    if sha != expected:
        return "labels", FAILED, f"labels are an authors' file with sha256 {sha[:12]}, not {ref_id}'s {expected[:12]} " \
                                 f"({origin})"
    return "labels", HELD, f"labels are the authors' file {ref_id}, sha256 {sha[:12]} ({origin})"


def _annotations(run, annotations):
    if run.arrays is None:
        run.add("annotations", UNCHECKED, "the files could not be read")
        return
    theirs = (run.record.dataset.get("fingerprint") or {}).get("annotations_sha256")
    if theirs != annotations.sha256:
        run.add("annotations", FAILED, f"the run's annotation file has sha256 {str(theirs)[:12]}, yours "
                                       f"{annotations.sha256[:12]}")
        return
    coco = annotations.coco_labels
    row_of = {int(i): k for k, i in enumerate(coco.image_ids)}
    ids = run.arrays["image_ids"]
    unknown = [int(i) for i in ids if int(i) not in row_of]
    if unknown:
        run.add("annotations", FAILED, f"{len(unknown)} image ids are not in your annotations (first: {unknown[0]})")
        return
    if run.record.labels.get("used") == "authors' file":
        run.add("annotations", HELD, "the run's annotation file is yours and its image ids are in it (its labels "
                                     "are the authors' file, not compared)")
        return
    rows = np.asarray([row_of[int(i)] for i in ids], dtype=np.int64)
    differ = int((coco.labels[rows] != run.arrays["labels"]).any(1).sum())
    if differ:
        run.add("annotations", FAILED, f"{differ} label rows differ from the labels of your annotation file")
    else:
        run.add("annotations", HELD, f"the run's annotation file is yours; its {len(ids):,} label rows are yours")


# ---------------------------------------------------------------- the numbers

def _map(run):
    record = run.record
    protocol = record.eval.get("protocol") or record.metrics.get("protocol")
    if run.arrays is None:
        run.add("mAP", UNCHECKED, "the files could not be read", True)
        return
    if not recompute.can_recompute(protocol):
        run.add("mAP", UNCHECKED, f"protocol {protocol!r} is not one this harness computes", True)
        return
    if protocol in recompute.CTRAN_PROTOCOLS and "masks" not in run.arrays:
        run.add("mAP", UNCHECKED, "a C-Tran run without masks.npy: its known labels are unknown", True)
        return
    try:
        point = recompute.point_map(run.arrays["scores"], run.arrays["labels"], protocol, run.arrays.get("masks"))
    except UserError as e:
        run.add("mAP", FAILED, f"cannot be computed from the files: {e}", True)
        return
    run.point = point
    recorded = record.metrics.get("mAP")
    said = f"recomputed {_num(point.mAP)} from scores.npy and labels.npy ({protocol})"
    if point.mixed_ties and point.low != point.high:
        said += f"; {point.mixed_ties} mixed tied scores allow {_num(point.low)} to {_num(point.high)}"
    if point.agrees(recorded):
        run.add("mAP", HELD, f"{said}, as recorded")
    else:
        run.add("mAP", FAILED, f"{said}; the record says {_num(recorded)}", True)


def _num(value):
    return "null" if value is None else f"{value:.4f}"


def _metrics(run, ci):
    if run.arrays is None or run.point is None:
        run.add("metrics", UNCHECKED, "the mAP could not be recomputed")
        return
    record = run.record
    protocol = record.eval.get("protocol") or record.metrics.get("protocol")
    try:
        again = recompute.all_metrics(run.arrays["scores"], run.arrays["labels"], record.metrics, protocol,
                                      run.arrays.get("masks"), ci=ci, point=run.point)
    except UserError as e:
        run.add("metrics", FAILED, f"cannot be computed from the files: {e}")
        return
    skip = recompute.ORDER_DEPENDENT if run.point.mixed_ties else ("mAP",)
    skip += () if ci else ("mAP_ci95", "bootstrap")
    wrong = recompute.differences(record.metrics, again, skip)
    if wrong:
        run.add("metrics", FAILED, f"{len(wrong)} numbers differ: {'; '.join(wrong[:4])}"
                                   f"{'; ...' if len(wrong) > 4 else ''}")
    else:
        what = "every recorded number" + ("" if ci or not record.metrics.get("mAP_ci95") else " but the CI")
        run.add("metrics", HELD, f"{what} recomputed" + (" (tie-order dependent ones within their range)"
                                                          if run.point.mixed_ties else ""))


# ---------------------------------------------------------------- where it came from

def _expected_sha(spec, key, role, weight_file):
    """(sha256 required of a file, where that comes from): the manifest's pin, else this machine's lock."""
    if weight_file.sha256:
        return weight_file.sha256, "pinned in the manifest"
    lock_file = lock_file_for(spec.manifest_path)
    try:
        entry = lock_entry(lock_file, key, role)
    except UserError as e:  # a damaged lock file: nothing to compare with
        logger.warning(f"harness: {e}")
        entry = None
    return (entry["sha256"], f"locked in {lock_file.name}") if entry else (None, None)


def _checkpoint(run, hash_elsewhere=False):
    """hash_elsewhere: also hash a checkpoint that lies at its recorded path outside the run folder
    (a file of hundreds of MB: `harness verify` does, the report does not)."""
    record, spec, checkpoint = run.record, run.spec, run.record.checkpoint
    says_not_release = any("weights" in reason for reason in record.smoke_reasons)
    if checkpoint.get("random_weights"):
        run.smoke.append("random weights")
        run.add("checkpoint", HELD, "random weights: no checkpoint, as the record says")
        return
    sha = checkpoint.get("sha256")
    if not isinstance(sha, str):
        run.smoke.append("no checkpoint sha256")
        run.add("checkpoint", FAILED, "the record names no checkpoint sha256, yet does not say random weights")
        return
    kept = _kept_checkpoint(run, checkpoint.get("path"), hash_elsewhere)
    if kept is not None and file_digest(kept) != sha:
        run.add("checkpoint", FAILED, f"{kept} is not the checkpoint the record names (sha256 {sha[:12]})")
        return
    if spec is None:
        run.add("checkpoint", UNCHECKED, f"model {record.model_id!r} is not in this manifest: no release to compare")
    elif not spec.released or "checkpoint" not in spec.files:
        if kept is not None:
            where = f"{kept.name} in the run folder" if kept.parent == run.folder else str(kept)
            run.add("checkpoint", HELD, f"trained here: {where} is the sha256 {sha[:12]} the record names")
        else:
            run.add("checkpoint", UNCHECKED, "trained here (no release to compare), and the checkpoint is neither "
                                             "in the run folder nor at its recorded path")
    else:
        expected, origin = _expected_sha(spec, spec.id, "checkpoint", spec.files["checkpoint"])
        if expected is None:
            run.add("checkpoint", UNCHECKED, f"the release is unpinned and not in this machine's lock file "
                                             f"(`harness download {spec.id}` locks it after checking it)")
        elif sha == expected:
            run.add("checkpoint", HELD, f"sha256 {sha[:12]} is the release ({origin})")
        else:
            run.smoke.append("weights are not the pinned release")
            outcome = HELD if says_not_release else FAILED
            run.add("checkpoint", outcome, f"sha256 {sha[:12]} is not the release's {expected[:12]} ({origin})" +
                    (", as the record says" if says_not_release else ""))


def _kept_checkpoint(run, path, elsewhere):
    """The checkpoint file when it lies in the run folder (MLSPL's classifier, C-Tran's best weights),
    or (elsewhere=True) at the path the record names."""
    if not isinstance(path, str) or not path:
        return None
    name = Path(path).name
    if _safe_name(name) and Path(path).parent.name == run.record.run_id and (run.folder / name).is_file():
        return run.folder / name
    return Path(path) if elsewhere and Path(path).is_file() else None


def record_reasons(spec: ModelSpec | None, record: Record) -> list[str]:
    """Why a record cannot count, from what its own fields say (flags, --limit, resolution, image set)."""
    reasons = list(record.smoke_reasons or (["flagged smoke"] if record.smoke else []))
    ev, dataset = record.eval, record.dataset
    derived = [("random weights", record.checkpoint.get("random_weights")),
               (f"--limit {ev.get('limit')}", ev.get("limit")),
               ("smoke subset", dataset.get("smoke_subset"))]
    if spec is not None and spec.eval is not None:
        derived += [(f"resolution {ev.get('resolution')}, not the paper's {spec.eval.resolution}",
                     ev.get("resolution") not in (None, spec.eval.resolution)),
                    (f"image set {dataset.get('image_set')}, not the paper's {spec.eval.image_set}",
                     dataset.get("image_set") not in (None, spec.eval.image_set))]
    return reasons + [text for text, applies in derived if applies and not any(text in r for r in reasons)]


def _smoke_flags(run):
    record = run.record
    shown = [r for r in [*run.smoke, *record_reasons(run.spec, record)] if r not in record.smoke_reasons]
    if record.smoke:
        run.add("smoke flags", HELD, f"the record says smoke ({'; '.join(record.smoke_reasons) or 'no reason'})")
    elif shown:
        run.add("smoke flags", FAILED, f"the record claims a full run, but: {'; '.join(dict.fromkeys(shown))}")
    else:
        run.add("smoke flags", HELD, "not smoke, and nothing in its files says otherwise")


def _environment(run):
    env = run.record.environment
    named = env.get("matches_environment_file")
    torch, python = env.get("torch"), env.get("python")
    if not named:  # nothing claimed, nothing contradicted
        run.add("environment", HELD, f"the record claims no tested stack (torch {torch}, Python {python} are none of "
                                     f"the environments/ files): nothing to compare")
        return
    path = environment_file(named)
    if path is None:
        run.add("environment", UNCHECKED, f"the record names {named}, which this harness does not have")
        return
    if not names_versions(path, python, torch):
        run.add("environment", FAILED, f"the record says {named}, but its torch {torch} and Python {python} are "
                                       f"not that file's")
        return
    pins = {name: version for name, version in environment_pins(path).items() if env.get(name) is not None}
    differ = [f"{name} {env[name]} (pinned {version})" for name, version in pins.items()
              if not _same_version(env[name], version)]
    same = [name for name, version in pins.items() if _same_version(env[name], version)]
    run.add("environment", HELD, f"torch {torch} and Python {python} as {named}" +
            (f"; other pins differ: {', '.join(differ)}" if differ else f"; {', '.join(same)} as pinned"))


def _same_version(recorded, pinned):
    """2.15.0+cu128 is the pin 2.15.0 (the local build tag aside)."""
    return str(recorded).split("+")[0] == str(pinned).split("+")[0]


def _resume_and_cache(run):
    """A resumed run: the rows it merged (scores.npy's first rows) have the sha256 the resume took of
    them, after checking them against the digest written with them. A run that read a decode cache:
    the record names it (key, keyed digest of its checksums)."""
    record = run.record
    resumed = record.timings.get("resumed_from_row") or 0
    if not isinstance(resumed, int) or isinstance(resumed, bool) or resumed < 0:
        run.add("resume", FAILED, f"the record says it resumed from row {resumed!r}, which is no row number")
    elif resumed > 0:
        run.add(*_merged_rows(run, resumed))
    cache = record.measurement.get(CACHE_DIGEST) or record.eval.get(CACHE_DIGEST)
    from_cache = any("images from the cache" in str(n) for n in record.measurement.get("notes") or [])
    if cache:
        run.add(*_cache_named(cache))
    elif from_cache:
        run.add("decode cache", UNCHECKED, "its images came from a decode cache this record keeps no digest of")


def _merged_rows(run, resumed):
    record = run.record
    digest = record.timings.get(RESUME_DIGEST) or record.eval.get(RESUME_DIGEST)
    if not isinstance(digest, str):
        return "resume", UNCHECKED, f"resumed at row {resumed}: this record keeps no digest of the rows it merged"
    if run.arrays is None:
        return "resume", UNCHECKED, "the files could not be read"
    rows = np.ascontiguousarray(run.arrays["scores"][:resumed])
    actual = hashlib.sha256(rows.tobytes()).hexdigest()
    if actual != digest:
        return "resume", FAILED, (f"the {resumed} rows merged at the resume have sha256 {actual[:12]} in scores.npy, "
                                  f"the record {digest[:12]}: changed after they were merged")
    checked = record.timings.get("partial_rows_checked")
    how = "checked against the digest written with them" if checked else \
        "kept unchecked (their progress file, of an older harness, had no digest)"
    return "resume", HELD if checked else UNCHECKED, f"resumed at row {resumed}: the rows merged have sha256 " \
                                                     f"{digest[:12]} in scores.npy, as recorded; {how}"


def _cache_named(cache):
    digest = cache.get("crc32_blake2b") if isinstance(cache, dict) else None
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        return "decode cache", FAILED, f"the record says a decode cache was read but names it as {str(cache)[:60]}"
    return "decode cache", HELD, (f"read the {cache.get('resolution')}px decode cache {cache.get('key')} "
                                  f"({'made by an earlier run' if cache.get('reused') else 'made by this run'}); "
                                  f"keyed digest of its checksums {digest[:12]}")
