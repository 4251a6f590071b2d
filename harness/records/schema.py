"""The one record schema (version 2), as lm-eval keeps its results schema: every kind of run
(eval, bench, train) writes and reads its record.json through `Record`.

    schema 2; kind: eval | bench | train; run_id "20261122T010203Z-3f9a"
    model:       {id, family, arch, paper (the manifest's paper dict)}       (model_section)
    checkpoint:  {path, sha256, pinned, random_weights, ...}
    config:      what the run was asked to do (EvalConfig / TrainConfig / BenchConfig, as a dict)
    dataset:     {name, root, image_set: all|annotated, n_images, fingerprint
                  {annotations_sha256, n_images, labels_sha256}, smoke_subset}
    eval:        {protocol, resolution, resize, normalize, batch_size, dtype, amp, device, limit, ...}
    metrics:     exactly what harness.metrics.compute_metrics returns (or the protocol's own)
    labels:      which label source the metrics used (eval)
    timings:     {wall_s, images_per_s, ...}
    measurement: {peak_vram_mib, energy_j_per_image, gpu_util_mean, power_w_mean, torch_max_allocated_mib,
                  torch_max_reserved_mib, peak_rss_mib, reasons: {field: why it is null}, notes, ...}
    distributed: {world_size, backend, ranks} under torchrun (eval)
    bench:       the cost measurement (bench); train: the training (MLSPL); ctran: C-Tran's selection
    environment: harness.records.machine.environment()
    started_at, finished_at (ISO-8601 UTC); smoke: bool; smoke_reasons: [...]
    files:       {scores: scores.npy, labels: labels.npy, image_ids: image_ids.npy, ...}
    digests:     {scores: sha256 of scores.npy, labels: ..., image_ids: ..., masks: ...}: one per file named in
                 `files`, taken when the file was written (records.store.save_arrays)

A section a record does not have reads as {}: readers write `record.measurement.get("peak_vram_mib")`.

Versions: schema 2 added `digests` and must carry one for every file it names (checked when written).
A schema 1 record (written before digests) is still read as it is and keeps its version when written
again: it is not broken, but its files cannot be shown to be the ones it was computed from, so
`harness verify` and the report call it unverifiable (harness.report.verify).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the schema itself imports nothing
    from _typeshed import DataclassInstance

    from harness.manifest import ModelSpec

SCHEMA = 2
READABLE = (1, 2)  # 1: before digests (see the docstring)
KINDS = ("eval", "bench", "train")
REQUIRED = ("schema", "kind", "run_id", "model", "started_at", "finished_at", "smoke")
REQUIRED_BY_KIND = {"eval": ("dataset", "eval", "metrics", "files"), "bench": ("bench",), "train": ()}
SECTIONS = ("model", "checkpoint", "config", "dataset", "eval", "metrics", "labels", "timings", "measurement",
            "distributed", "bench", "train", "ctran", "environment", "files", "digests")
TEXTS = ("run_id", "started_at", "finished_at")
NUMERIC_METRICS = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "top3_CP", "top3_CR", "top3_CF1", "top3_OP",
                   "top3_OR", "top3_OF1")
# fields inside sections that readers use as they are: (section, key) -> the type they must have
FIELDS = {("metrics", "protocol"): "text", ("metrics", "f1_rule"): "text", ("metrics", "threshold"): "a number",
          ("eval", "protocol"): "text", ("eval", "f1"): "text", ("eval", "threshold"): "a number",
          ("timings", "images_per_s"): "a number", ("timings", "wall_s"): "a number",
          ("measurement", "peak_vram_mib"): "a number", ("environment", "gpu"): "an object",
          ("dataset", "fingerprint"): "an object", ("bench", "device"): "an object", ("bench", "options"): "an object",
          ("bench", "fits"): "an object", ("bench", "gflops"): "a number", ("bench", "resolution"): "a number"}
# ...and in each of a bench's results (one per batch size)
RESULT_FIELDS = {"images_per_s": "a number", "peak_vram_mib": "a number", "energy_j_per_image": "a number",
                 "peak_rss_mib": "a number", "memory_check": "an object"}
_IS = {"text": lambda v: isinstance(v, str), "a number": lambda v: _is_number(v), "an object": lambda v: isinstance(v, dict)}
SCORE_FILES = {"scores": "scores.npy", "labels": "labels.npy", "image_ids": "image_ids.npy"}
SHA256_HEX = frozenset("0123456789abcdef")


def _section() -> dict[str, Any]:
    return field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    """One run's record. Sections are dicts (their contents are each producer's, documented above);
    `extra` keeps keys this version does not know, so a record read and written again loses nothing."""
    kind: str
    model: dict
    run_id: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    smoke_reasons: list = field(default_factory=list)
    smoke: bool | None = None  # None: smoke exactly when there is a reason
    checkpoint: dict = _section()
    config: dict = _section()
    dataset: dict = _section()
    eval: dict = _section()
    metrics: dict = _section()
    labels: dict = _section()
    timings: dict = _section()
    measurement: dict = _section()
    distributed: dict = _section()
    bench: dict = _section()
    train: dict = _section()
    ctran: dict = _section()
    environment: dict = _section()
    files: dict = _section()
    digests: dict = _section()
    extra: dict = _section()
    schema: int = SCHEMA  # an older record read and written again keeps its version
    found_in: str = field(default="runs", compare=False)  # where a report found it; never written
    folder: str | None = field(default=None, compare=False)  # the run folder it was read from; never written

    def __post_init__(self) -> None:
        if self.smoke is None:
            object.__setattr__(self, "smoke", bool(self.smoke_reasons))

    @property
    def model_id(self) -> str | None:
        return self.model.get("id")

    def to_json(self) -> dict[str, Any]:
        """The dict written as record.json (checked against the schema first)."""
        data = {"schema": self.schema, "kind": self.kind, "run_id": self.run_id, "model": self.model}
        data.update({name: getattr(self, name) for name in SECTIONS[1:]
                     if getattr(self, name) or name in REQUIRED_BY_KIND.get(self.kind, ())})
        data.update(started_at=self.started_at, finished_at=self.finished_at, smoke=self.smoke,
                    smoke_reasons=list(self.smoke_reasons), **self.extra)
        validate_record(data)
        undigested = [name for key, name in self.files.items() if key not in self.digests]
        if self.schema >= 2 and undigested:  # a builder's bug: never write a record its files cannot be checked by
            raise ValueError(f"record names {', '.join(undigested)} without their sha256 (records.save_arrays "
                             f"returns them)")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        """A Record from a record.json's dict; ValueError naming what is wrong with it."""
        validate_record(data)
        known = {f.name for f in fields(cls)} - {"extra", "found_in", "folder"}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra)


def model_section(spec: ModelSpec) -> dict[str, Any]:
    """The record's model section for a manifest entry."""
    return {"id": spec.id, "family": spec.family, "arch": spec.arch, "paper": spec.paper}


def config_section(config: DataclassInstance) -> dict[str, Any]:
    """The record's config section for a run's config dataclass: every field, paths as text."""
    return {k: str(v) if isinstance(v, PurePath) else v for k, v in asdict(config).items()}


def validate_record(record: object) -> None:
    """Raise ValueError naming what a record lacks or has of the wrong type."""
    if not isinstance(record, dict):
        raise ValueError("a record must be a dict")
    missing = [k for k in REQUIRED if k not in record]
    if record.get("kind") not in KINDS:
        raise ValueError(f"record kind must be one of {KINDS} (got {record.get('kind')!r})")
    missing += [k for k in REQUIRED_BY_KIND[record["kind"]] if k not in record]
    if missing:
        raise ValueError(f"record lacks {', '.join(missing)}")
    if record["schema"] not in READABLE or isinstance(record["schema"], bool):
        raise ValueError(f"record schema {record['schema']!r}; this harness reads schemas "
                         f"{', '.join(map(str, READABLE))} (writes {SCHEMA})")
    if not isinstance(record["model"], dict) or "id" not in record["model"]:
        raise ValueError("record model must be a dict with an 'id'")
    problem = _type_problem(record)
    if problem:
        raise ValueError(problem)


def _is_number(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _type_problem(record: dict[str, Any]) -> str | None:
    """What in a record has the wrong type for the code that reads it (a damaged or hand-edited file)."""
    for key in SECTIONS:
        if record.get(key) is not None and not isinstance(record[key], dict):
            return f"'{key}' must be an object, not {type(record[key]).__name__}"
    for (section, key), kind in FIELDS.items():
        value = (record.get(section) or {}).get(key)
        if value is not None and not _IS[kind](value):
            return f"{section} '{key}' must be {kind}, not {type(value).__name__}"
    results = (record.get("bench") or {}).get("results")
    for result in results if isinstance(results, list) else []:
        for key, kind in RESULT_FIELDS.items():
            value = result.get(key) if isinstance(result, dict) else None
            if value is not None and not _IS[kind](value):
                return f"bench results '{key}' must be {kind}, not {type(value).__name__}"
    for key, value in (record.get("files") or {}).items():
        if not isinstance(value, str):
            return f"files '{key}' must be a file name, not {type(value).__name__}"
    for key, value in (record.get("digests") or {}).items():
        if not (isinstance(value, str) and len(value) == 64 and set(value) <= SHA256_HEX):
            return f"digests '{key}' must be a sha256 (64 lowercase hex digits)"
    for key in TEXTS:
        if not isinstance(record.get(key), (str, type(None))):
            return f"'{key}' must be text"
    reasons = record.get("smoke_reasons") or []
    if not isinstance(record["smoke"], bool) or not isinstance(reasons, list) or \
            not all(isinstance(r, str) for r in reasons):
        return "'smoke' must be true/false and 'smoke_reasons' a list of text"
    for key, value in (record.get("metrics") or {}).items():
        if key.endswith("_ci95"):
            if value is not None and not (isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))):
                return f"metrics '{key}' must be a pair of numbers"
        elif key in NUMERIC_METRICS and not _is_number(value):
            return f"metrics '{key}' must be a number, not {type(value).__name__}"
    return None
