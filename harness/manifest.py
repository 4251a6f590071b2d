"""The model manifest (weights_manifest.yaml): schema, validation and loading.

A bad entry fails on load with the entry and the field named, so a typo never
reaches an evaluation.
"""
import copy
import difflib
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.errors import UserError

# libyaml's parser where PyYAML has it (about 8x faster; the same safe constructors build the objects)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(text):
    """yaml.safe_load, through libyaml's parser when present; the same text is parsed once (a run
    reads its manifest many times), and each caller gets its own copy."""
    return copy.deepcopy(_parse_yaml(text))


@functools.lru_cache(maxsize=16)
def _parse_yaml(text):
    return yaml.load(text, Loader=_SAFE_LOADER)

REPO_ROOT = Path(__file__).resolve().parent.parent
# The package's data: in a checkout, links to the repository's copies (resolved, so the lock file
# lands beside the repository's manifest); in an installed wheel, the files themselves.
PACKAGE_DATA = Path(__file__).resolve().parent / "_data"
DEFAULT_MANIFEST = (PACKAGE_DATA / "weights_manifest.yaml").resolve()

FAMILIES = ("q2l", "asl", "mldecoder", "mlspl", "ctran")
PROTOCOLS = ("q2l", "asl", "mlspl", "ctran")
IMAGE_SETS = ("all", "annotated")
NORMALIZATIONS = ("imagenet", "none")
RESIZES = ("squish",)
# fp32: as loaded. fp16-fused: batch norm folded into the convolutions, then the whole model and its
# input in fp16 (`.half()`, not autocast), as ML-Decoder's validate.py runs it.
PRECISIONS = ("fp32", "fp16-fused")
F1_RULES = ("ml-gcn", "asl")  # see harness.metrics.f1_family and asl_f1_family
SOURCE_TYPES = {
    "gdrive_folder": ("folder_id", "path"),
    "gdrive_file": ("file_id",),
    "http": ("url",),
    "zenodo": ("record", "key"),
}
MLSPL_MODES = ("linear", "fine-tuned", "linear-init")


@dataclass(frozen=True)
class WeightFile:
    filename: str
    sha256: str | None  # None: unpinned (see weights_manifest.lock.yaml)
    sources: tuple  # of dicts, tried in order
    git_blob: str | None = None  # a file of a git repository: its object id there, checked before the first lock


@dataclass(frozen=True)
class EvalSpec:
    resolution: int
    resize: str
    normalize: str
    image_set: str
    protocol: str
    batch_size: int
    amp: bool = False
    precision: str = "fp32"
    f1: str = "ml-gcn"  # which F1 family definition, at `threshold` on the sigmoid scores
    threshold: float = 0.5
    authors_labels: str | None = None  # a reference_files id: the label file the authors' evaluation read


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str
    description: str
    arch: dict  # {"name": registry name, ...its parameters}
    paper: dict  # {"title", "table", "row", "csv", "metrics": {name: value}}
    released: bool  # False: no released weights, trained here
    files: dict = field(default_factory=dict)  # role ("checkpoint", "config") -> WeightFile
    eval: EvalSpec = None
    train: dict | None = None  # MLSPL: {"loss", "mode"}; C-Tran: {"use_lmt", "known"}; Q2L: {"authors_labels"}
    manifest_path: Path | None = None  # the file it came from (its lock file sits beside it)
    references: dict = field(default_factory=dict)  # reference_files id -> WeightFile, those eval and train name

    @property
    def paper_map(self):
        return self.paper.get("metrics", {}).get("mAP")


class _Field:
    """Reads one entry's fields, naming the entry and the field path in every error."""

    def __init__(self, path, entry):
        self.path, self.entry = path, entry

    def fail(self, name, message):
        raise UserError(f"{self.path}: entry '{self.entry}': field '{name}' {message}")

    def get(self, data, name, kind, *, required=True, choices=None, default=None, prefix=""):
        full = prefix + name
        if name not in data or data[name] is None:
            if required:
                self.fail(full, "is missing")
            return default
        value = data[name]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            self.fail(full, f"must be a positive integer (got {value!r})")
        if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1):
            self.fail(full, f"must be a number between 0 and 1 (got {value!r})")
        if kind not in (int, float) and not isinstance(value, kind):
            self.fail(full, f"must be a {kind.__name__} (got {value!r})")
        if choices is not None and value not in choices:
            self.fail(full, f"must be one of {', '.join(choices)} (got {value!r})")
        return value


def _parse_sources(f, sources, prefix):
    if not isinstance(sources, list) or not sources:
        f.fail(prefix, "must be a non-empty list of sources")
    for i, src in enumerate(sources):
        where = f"{prefix}[{i}]"
        if not isinstance(src, dict):
            f.fail(where, "must be a mapping with a 'type'")
        kind = f.get(src, "type", str, choices=tuple(SOURCE_TYPES), prefix=where + ".")
        for key in SOURCE_TYPES[kind]:
            f.get(src, key, str, prefix=where + ".")
    return tuple(sources)


def _parse_files(f, files):
    out = {}
    for role, spec in files.items():
        prefix = f"files.{role}."
        if not isinstance(spec, dict):
            f.fail(f"files.{role}", "must be a mapping")
        sha = spec.get("sha256")
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
            f.fail(prefix + "sha256", f"must be 64 lowercase hex digits or null (got {sha!r})")
        blob = spec.get("git_blob")
        if blob is not None and (not isinstance(blob, str) or len(blob) != 40
                                 or any(c not in "0123456789abcdef" for c in blob)):
            f.fail(prefix + "git_blob", f"must be 40 lowercase hex digits (a git object id) or absent (got {blob!r})")
        out[role] = WeightFile(
            filename=f.get(spec, "filename", str, prefix=prefix),
            sha256=sha,
            sources=_parse_sources(f, spec.get("sources"), prefix + "sources"),
            git_blob=blob,
        )
    return out


def _parse_entry(path, model_id, data, references=None):
    f = _Field(path.name, model_id)
    if not isinstance(data, dict):
        f.fail("(entry)", "must be a mapping")
    family = f.get(data, "family", str, choices=FAMILIES)
    arch = f.get(data, "arch", dict)
    f.get(arch, "name", str, prefix="arch.")
    paper = f.get(data, "paper", dict)
    for key in ("title", "table", "row"):
        f.get(paper, key, str, prefix="paper.")
    metrics = f.get(paper, "metrics", dict, prefix="paper.")
    for name, value in metrics.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            f.fail(f"paper.metrics.{name}", f"must be a number or null (got {value!r})")
    released = f.get(data, "released", bool)
    files = f.get(data, "files", dict, required=released, default={})
    if released and "checkpoint" not in files:
        f.fail("files.checkpoint", "is missing (a released model needs its checkpoint file)")
    ev = f.get(data, "eval", dict)
    spec = EvalSpec(
        resolution=f.get(ev, "resolution", int, prefix="eval."),
        resize=f.get(ev, "resize", str, choices=RESIZES, prefix="eval."),
        normalize=f.get(ev, "normalize", str, choices=NORMALIZATIONS, prefix="eval."),
        image_set=f.get(ev, "image_set", str, choices=IMAGE_SETS, prefix="eval."),
        protocol=f.get(ev, "protocol", str, choices=PROTOCOLS, prefix="eval."),
        batch_size=f.get(ev, "batch_size", int, prefix="eval."),
        amp=f.get(ev, "amp", bool, required=False, default=False, prefix="eval."),
        precision=f.get(ev, "precision", str, required=False, default="fp32", choices=PRECISIONS, prefix="eval."),
        f1=f.get(ev, "f1", str, required=False, default="ml-gcn", choices=F1_RULES, prefix="eval."),
        threshold=float(f.get(ev, "threshold", float, required=False, default=0.5, prefix="eval.")),
        authors_labels=f.get(ev, "authors_labels", str, required=False, prefix="eval."),
    )
    refs = {}

    def reference(name, ref_id):  # a reference file the entry names: it must exist
        if ref_id is not None:
            if ref_id not in (references or {}):
                f.fail(name, f"names '{ref_id}', which is not under reference_files")
            refs[ref_id] = references[ref_id]

    reference("eval.authors_labels", spec.authors_labels)
    train = None
    if family == "q2l" and "train" in data:  # the label file their training read
        train = f.get(data, "train", dict)
        reference("train.authors_labels", f.get(train, "authors_labels", str, required=False, prefix="train."))
    if family == "mlspl":
        train = f.get(data, "train", dict)
        f.get(train, "loss", str, prefix="train.")
        f.get(train, "mode", str, choices=MLSPL_MODES, prefix="train.")
    if family == "ctran":  # which training (use_lmt) and which inference setting (known labels, percent)
        train = f.get(data, "train", dict)
        f.get(train, "use_lmt", bool, prefix="train.")
        if train.get("known") not in (0, 25, 50, 75):
            f.fail("train.known", f"must be 0, 25, 50 or 75 (got {train.get('known')!r})")
    return ModelSpec(
        id=model_id,
        family=family,
        description=f.get(data, "description", str, required=False, default=""),
        arch=dict(arch),
        paper=dict(paper),
        released=released,
        files=_parse_files(f, files),
        eval=spec,
        train=train,
        manifest_path=path.resolve(),
        references=refs,
    )


def default_manifest():
    """$HARNESS_MANIFEST, else the weights_manifest.yaml of the folder the command runs in (a clone's
    own, so its lock file lands beside it), else the one this package was installed from."""
    if os.environ.get("HARNESS_MANIFEST"):
        return Path(os.environ["HARNESS_MANIFEST"])
    here = Path.cwd() / DEFAULT_MANIFEST.name
    return here if here.is_file() else DEFAULT_MANIFEST


def load_manifest(path=None):
    """Return {model id: ModelSpec} in file order; raise UserError naming any bad entry."""
    path = Path(path) if path else default_manifest()
    try:
        data = read_yaml(path.read_text())
    except FileNotFoundError:
        raise UserError(f"manifest not found: {path} (pass --manifest FILE or run from the repository)")
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]}); fix the file")
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise UserError(f"{path}: expected a top-level 'models:' mapping")
    references = _parse_references(path, data.get("reference_files") or {})
    return {mid: _parse_entry(path, mid, entry, references) for mid, entry in data["models"].items()}


def _parse_references(path, data):
    """reference_files: {id: {filename, sha256, sources, git_blob}}: files of the authors' repositories
    that their evaluation or training read (not weights), fetched and verified as weights are."""
    if not isinstance(data, dict):
        raise UserError(f"{path}: 'reference_files' must map ids to files")
    return {ref: _parse_files(_Field(path.name, ref), {"file": spec})["file"] for ref, spec in data.items()}


def get_spec(model_id, path=None):
    """The entry of `model_id`, also found by the authors' own folder name (`Q2L-R101-448`), any case."""
    specs = load_manifest(path)
    found = resolve_id(model_id, specs)
    if found is None:
        close = difflib.get_close_matches(model_id.lower(), list(specs), n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(f"unknown model '{model_id}'; {hint}`harness models` lists the known ones")
    return specs[found]


def resolve_id(name, specs):
    """The manifest id that `name` means: itself, or an id or release folder equal to it ignoring case."""
    if name in specs:
        return name
    for mid, spec in specs.items():
        if name.lower() in (mid.lower(), str(spec.arch.get("release_folder", "")).lower()):
            return mid
    return None
