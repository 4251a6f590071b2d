"""The model manifest (weights_manifest.yaml): schema, validation and loading.

A bad entry fails on load with the entry and the field named, so a typo never
reaches an evaluation.
"""
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from harness.architectures import MAX_RESOLUTION, arch_problems, keywords
from harness.errors import UserError
from harness.inputs import environment
from harness.inputs.yaml_files import read_yaml as read_yaml  # re-exported: callers and tests read YAML through it
from harness.inputs.yaml_files import read_yaml_file

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
    "seafile_folder": ("server", "share", "folder", "match"),  # a shared folder, the file found by name
}
MLSPL_MODES = ("linear", "fine-tuned", "linear-init")
MLSPL_LOSSES = ("BCE", "AN", "AN-LS", "WAN", "EPR", "ROLE")  # harness.mlspl.losses.LOSSES (a test holds them equal)
SCHEMAS = (1,)  # the manifest layouts this harness reads
TOP_LEVEL = ("schema", "reference_files", "pretrained_backbones", "training_logs", "models")
ENTRY_KEYS = ("family", "description", "arch", "paper", "released", "files", "eval", "train")
EVAL_KEYS = ("resolution", "resize", "normalize", "image_set", "protocol", "batch_size", "amp", "precision", "f1",
             "threshold", "authors_labels")
FILE_KEYS = ("filename", "sha256", "sources", "git_blob")
ROLES = ("checkpoint", "config")  # the files of a model entry
MAX_BATCH = 4096  # a batch of 4096 images at 640 x 640 is 20 GB of input already
# ids name folders (the cache's weights/<id>/, --weights-dir's <id>/): a word, never a path
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
GDRIVE_ID = re.compile(r"[A-Za-z0-9_-]{10,100}")
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f]")  # str.isspace() or below 32, char by char 10x slower
_LOWER_HEX = re.compile(r"[0-9a-f]*")


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


def _closest(name, known):
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


class _Field:
    """Reads one entry's fields, naming the manifest, the entry and the field path in every error."""

    def __init__(self, path, entry):
        self.path, self.entry = path, entry

    def fail(self, name, message):
        raise UserError(f"{self.path}: entry '{self.entry}': field '{name}' {message}")

    def unknown_keys(self, data, known, prefix=""):
        """A key that nothing reads is a typo (`presicion: fp16-fused` would silently run fp32)."""
        for key in data:
            if key not in known:
                self.fail(prefix + str(key), f"is not a field here; {_closest(key, known)}"
                                             f"the fields are {', '.join(known)}")

    def get(self, data, name, kind, *, required=True, choices=None, default=None, prefix="", high=None):
        full = prefix + name
        if name not in data or data[name] is None:
            if required:
                self.fail(full, "is missing")
            return default
        value = data[name]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            self.fail(full, f"must be a positive integer (got {value!r:.60})")
        if kind is int and high is not None and value > high:
            self.fail(full, f"must be at most {high:,} (got {value:,})")
        if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1):
            self.fail(full, f"must be a number between 0 and 1 (got {value!r:.60})")
        if kind not in (int, float) and not isinstance(value, kind):
            self.fail(full, f"must be a {kind.__name__} (got {value!r:.60})")
        if choices is not None and value not in choices:
            self.fail(full, f"must be one of {', '.join(choices)}; {_closest(value, choices)}(got {value!r:.60})")
        return value


def _check_url(f, where, url):
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or _SPACE_OR_CONTROL.search(url):
        f.fail(where, f"must be an http:// or https:// address (got {url!r:.80})")


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
        f.unknown_keys(src, ("type",) + SOURCE_TYPES[kind], prefix=where + ".")
        for key in ("url", "server"):
            if key in src:
                _check_url(f, f"{where}.{key}", src[key])
        for key in ("folder_id", "file_id"):
            if key in src and not GDRIVE_ID.fullmatch(src[key]):
                f.fail(f"{where}.{key}", f"must be a Google Drive id (letters, digits, - and _; got {src[key]!r:.60})")
    return tuple(sources)


def _check_filename(f, where, name):
    """A file name, never a path: it is looked for under --weights-dir and written under the cache."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or len(name) > 255
            or name != name.strip()):
        f.fail(where, f"must be a plain file name (no folders, '..', or absolute path: it stays inside "
                      f"--weights-dir and the cache; got {name!r:.80})")


def _parse_files(f, files, extra_keys=()):
    out = {}
    for role, spec in files.items():
        prefix = f"files.{role}."
        if not isinstance(spec, dict):
            f.fail(f"files.{role}", "must be a mapping")
        f.unknown_keys(spec, FILE_KEYS + tuple(extra_keys), prefix=prefix)
        sha = spec.get("sha256")
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64 or not _LOWER_HEX.fullmatch(sha)):
            f.fail(prefix + "sha256", f"must be 64 lowercase hex digits or null (got {sha!r:.80})")
        blob = spec.get("git_blob")
        if blob is not None and (not isinstance(blob, str) or len(blob) != 40 or not _LOWER_HEX.fullmatch(blob)):
            f.fail(prefix + "git_blob", f"must be 40 lowercase hex digits (a git object id) or absent (got {blob!r:.80})")
        filename = f.get(spec, "filename", str, prefix=prefix)
        _check_filename(f, prefix + "filename", filename)
        out[role] = WeightFile(
            filename=filename,
            sha256=sha,
            sources=_parse_sources(f, spec.get("sources"), prefix + "sources"),
            git_blob=blob,
        )
    return out


def _check_score(f, where, value):
    """A published score: a finite percentage (a NaN would print as invalid JSON, 1000 as a claim)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not 0 <= value <= 100):
        f.fail(where, f"must be a number from 0 to 100 (a percentage as the paper prints it) or null "
                      f"(got {value!r:.60})")


def _parse_paper(f, paper):
    for key in ("title", "table", "row"):
        f.get(paper, key, str, prefix="paper.")
    f.get(paper, "csv", str, required=False, prefix="paper.")
    metrics = f.get(paper, "metrics", dict, prefix="paper.")
    for name, value in metrics.items():
        if value is not None:
            _check_score(f, f"paper.metrics.{name}", value)
    sizes = f.get(paper, "object_size", dict, required=False, default={}, prefix="paper.")
    for name, value in sizes.items():
        if str(name).startswith("AP_") and value is not None:
            _check_score(f, f"paper.object_size.{name}", value)


def _parse_arch(f, arch, resolution):
    f.get(arch, "name", str, prefix="arch.")
    for key, why in arch_problems(arch):
        hint = _closest(key, keywords(arch["name"])) if "not a keyword" in why else ""
        f.fail(f"arch.{key}", f"{why}; {hint}" + (f"its keywords are {', '.join(keywords(arch['name']))}"
                                                  if "not a keyword" in why else "fix it"))
    size = arch.get("img_size")
    if size is not None and size != resolution:
        f.fail("arch.img_size", f"is {size} but eval.resolution is {resolution}: the model is built for one "
                                f"size and fed the other; make them equal")


def _parse_entry(path, resolved, model_id, data, references):
    f = _Field(path, model_id)
    if not isinstance(model_id, str) or not ID_PATTERN.fullmatch(model_id):
        raise UserError(f"{path}: model id {model_id!r:.80} must be a word of letters, digits, '.', '-' and '_' "
                        f"(at most 100, quoted if YAML would read it as a number): it names folders")
    if not isinstance(data, dict):
        f.fail("(entry)", "must be a mapping")
    f.unknown_keys(data, ENTRY_KEYS)
    family = f.get(data, "family", str, choices=FAMILIES)
    arch = f.get(data, "arch", dict)
    paper = f.get(data, "paper", dict)
    _parse_paper(f, paper)
    released = f.get(data, "released", bool)
    files = f.get(data, "files", dict, required=released, default={})
    f.unknown_keys(files, ROLES, prefix="files.")
    if released and "checkpoint" not in files:
        f.fail("files.checkpoint", "is missing (a released model needs its checkpoint file)")
    ev = f.get(data, "eval", dict)
    f.unknown_keys(ev, EVAL_KEYS, prefix="eval.")
    # at least one pixel here (tests' tiny networks run at 24); a known architecture's img_size, which
    # must equal it, is at least MIN_RESOLUTION (harness.architectures)
    resolution = f.get(ev, "resolution", int, prefix="eval.", high=MAX_RESOLUTION)
    _parse_arch(f, arch, resolution)
    spec = EvalSpec(
        resolution=resolution,
        resize=f.get(ev, "resize", str, choices=RESIZES, prefix="eval."),
        normalize=f.get(ev, "normalize", str, choices=NORMALIZATIONS, prefix="eval."),
        image_set=f.get(ev, "image_set", str, choices=IMAGE_SETS, prefix="eval."),
        protocol=f.get(ev, "protocol", str, choices=PROTOCOLS, prefix="eval."),
        batch_size=f.get(ev, "batch_size", int, prefix="eval.", high=MAX_BATCH),
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
        f.unknown_keys(train, ("authors_labels",), prefix="train.")
        reference("train.authors_labels", f.get(train, "authors_labels", str, required=False, prefix="train."))
    if family == "mlspl":
        train = f.get(data, "train", dict)
        f.unknown_keys(train, ("loss", "mode"), prefix="train.")
        f.get(train, "loss", str, choices=MLSPL_LOSSES, prefix="train.")
        f.get(train, "mode", str, choices=MLSPL_MODES, prefix="train.")
    if family == "ctran":  # which training (use_lmt) and which inference setting (known labels, percent)
        train = f.get(data, "train", dict)
        f.unknown_keys(train, ("use_lmt", "known"), prefix="train.")
        f.get(train, "use_lmt", bool, prefix="train.")
        if isinstance(train.get("known"), bool) or train.get("known") not in (0, 25, 50, 75):
            f.fail("train.known", f"must be 0, 25, 50 or 75 (got {train.get('known')!r:.60})")
    if family not in ("q2l", "mlspl", "ctran") and "train" in data:
        f.fail("train", f"is not read for a {family} model (only q2l, mlspl and ctran entries have one); remove it")
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
        manifest_path=resolved,
        references=refs,
    )


MANIFEST_FIX = "pass --manifest FILE (or set HARNESS_MANIFEST) naming a weights_manifest.yaml, or run from the repository"


def default_manifest():
    """$HARNESS_MANIFEST, else the weights_manifest.yaml of the folder the command runs in (a clone's
    own, so its lock file lands beside it), else the one this package was installed from."""
    named = environment.manifest()
    if named:
        return named
    here = Path.cwd() / DEFAULT_MANIFEST.name
    return here if here.is_file() else DEFAULT_MANIFEST


def read_manifest_data(path=None):
    """(path, the manifest's top-level mapping), its layout checked: a known schema, known sections."""
    path = Path(path) if path else default_manifest()
    data = read_yaml_file(path, "manifest", MANIFEST_FIX)
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise UserError(f"{path}: expected a top-level 'models:' mapping; {MANIFEST_FIX}")
    for key in data:
        if key not in TOP_LEVEL:
            raise UserError(f"{path}: top-level '{key}' is not a section of a manifest; {_closest(key, TOP_LEVEL)}"
                            f"the sections are {', '.join(TOP_LEVEL)}")
    schema = data.get("schema", 1)
    if isinstance(schema, bool) or schema not in SCHEMAS:
        raise UserError(f"{path}: schema {schema!r:.40} is not one this harness reads (it reads schema "
                        f"{', '.join(map(str, SCHEMAS))}); write `schema: 1`, or update the harness")
    if not data["models"]:
        raise UserError(f"{path}: 'models:' holds no model; add an entry (see the repository's weights_manifest.yaml)")
    return path, data


def load_manifest(path=None):
    """Return {model id: ModelSpec} in file order; raise UserError naming any bad entry."""
    path, data = read_manifest_data(path)
    references = _parse_references(path, data.get("reference_files") or {})
    resolved = path.resolve()  # once, not once an entry (a stat per folder of the path each time)
    specs = {mid: _parse_entry(path, resolved, mid, entry, references) for mid, entry in data["models"].items()}
    _check_names_unambiguous(path, specs)
    return specs


def _check_names_unambiguous(path, specs):
    """A model is found by its id ignoring case: no two ids may differ only in case."""
    named = {}
    for mid in specs:
        other = named.setdefault(mid.lower(), mid)
        if other != mid:
            raise UserError(f"{path}: entries '{other}' and '{mid}' both answer to the name '{mid.lower()}' (ids are "
                            f"matched ignoring case); rename one")


def check_file_section(path, name, data):
    """A section mapping ids to files (reference_files, pretrained_backbones, training_logs): each id
    a word, since it names a folder."""
    if not isinstance(data, dict):
        raise UserError(f"{path}: '{name}' must map ids to files")
    for entry_id in data:
        if not isinstance(entry_id, str) or not ID_PATTERN.fullmatch(entry_id):
            raise UserError(f"{path}: {name} id {entry_id!r:.80} must be a word of letters, digits, '.', '-' and '_': "
                            f"it names a folder")


def _parse_references(path, data):
    """reference_files: {id: {filename, sha256, sources, git_blob}}: files of the authors' repositories
    that their evaluation or training read (not weights), fetched and verified as weights are."""
    check_file_section(path, "reference_files", data)
    return {ref: _parse_files(_Field(path, ref), {"file": spec})["file"] for ref, spec in data.items()}



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
    if not name:
        return None
    for mid, spec in specs.items():
        folder = str(spec.arch.get("release_folder") or "")
        if name.lower() == mid.lower() or (folder and name.lower() == folder.lower()):
            return mid
    return None
