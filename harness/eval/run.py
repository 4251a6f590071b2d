"""Batched inference of one model on COCO val2014, written to a resumable run folder.

Scores are fp32 sigmoid probabilities (fp16 where the authors ran the model fp16-fused), written
into a memory-mapped `scores.partial.npy` as they come; `progress.json` (rewritten atomically after
each batch) says how many rows are done, so an interrupted run resumes losing at most one batch.
When all rows are done the scores become `scores.npy`, the metrics are computed with the model's
protocol and `record.json` is written; only then are the partial scores and the progress file
removed, so a run interrupted while finishing resumes from its saved scores without running the
model again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO, TypeVar, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import DataLoader

from harness import progress, records
from harness.checkpoints import read_config
from harness.data.authors_labels import LabelChoice, choose_labels
from harness.data.cache import DecodeCache, PassImages
from harness.data.coco import CocoLabels, check_images, fingerprint, is_full_split, load_labels
from harness.data.images import UnreadableImages
from harness.data.loader import make_loader
from harness.data.smoke import is_smoke_root
from harness.data.transforms import ResizeToUint8, to_model_input
from harness.distributed import World, partial_name, pick_device, progress_name
from harness.errors import Interrupted, UserError
from harness.eval.batch_size import choose_batch_size
from harness.eval.config import EvalConfig
from harness.eval.numerics import tf32_mode
from harness.eval.shared_pass import Scorer, UnreadableError, ride_together, run_pass
from harness.files import write_atomically
from harness.manifest import ModelSpec
from harness.measure.measurement import SpanMeasurement, nvml_baseline_mib
from harness.measure.throughput import AMP_DTYPES
from harness.metrics import compute_metrics
from harness.models import build_from_arch
from harness.models.backbones.tresnet import batch_norm_used, fuse_bn
from harness.pretrained import build_pretrained
from harness.records import (
    SCORE_FILES,
    SETTINGS,
    FinishedRun,
    Record,
    check_runs_root,
    config_section,
    environment,
    model_section,
    utc_now,
)
from harness.records.arrays import load_array
from harness.records.partial_rows import kept_rows, open_rows, rows_done, save_progress

logger = logging.getLogger(__name__)

PARTIAL, PROGRESS = "scores.partial.npy", "progress.json"
_Results = dict[str, FinishedRun | Exception]  # model id -> its finished run, or what stopped it
T = TypeVar("T")


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    write_atomically(path, json.dumps(data, indent=2))


def _smoke_reasons(weights_info: Mapping[str, Any], coco_labels: CocoLabels, limit: int | None,
                   smoke_root: bool) -> list[str]:
    reasons = []
    if weights_info["random_weights"]:
        reasons.append("random weights")
    if weights_info.get("unverified"):  # weights given by path that cannot be shown to be the release
        reasons.append(weights_info["unverified"])
    if smoke_root:
        reasons.append("smoke subset")
    elif not is_full_split(coco_labels):
        reasons.append(f"not the full COCO {coco_labels.split} ({len(coco_labels)} images)")
    if limit:
        reasons.append(f"--limit {limit}")
    return reasons


@dataclass(frozen=True)
class _Session:
    """One `evaluate_many` call: what it was asked (config) and what that resolved to here."""
    config: EvalConfig
    device: str
    world: World
    numerics: dict     # the GPU flags that change results (TF32, cuDNN)
    single: bool       # one model: its error is raised, not kept as its result
    progress: bool     # rank 0 only under torchrun
    opened: list[_Job]  # the jobs whose run folder is open: an interruption names them


def evaluate(spec: ModelSpec, config: EvalConfig) -> FinishedRun:
    """Evaluate `spec` (a manifest ModelSpec) as `config` (an EvalConfig) asks; its finished run."""
    return cast(FinishedRun, evaluate_many([spec], config)[0])  # one model: its error is raised, not returned


def evaluate_many(specs: Sequence[ModelSpec], config: EvalConfig) -> list[FinishedRun | Exception]:
    """Evaluate several models, one decode of the images per resolution (harness.eval.shared_pass); each
    model gets its own run folder and record. Returns, per spec, its FinishedRun, or (several models
    only) the exception that stopped it: one model's failure does not stop the others."""
    ids = [spec.id for spec in specs]
    if len(set(ids)) < len(ids):
        raise UserError(f"a model is named twice ({', '.join(ids)}); name each once")
    if len(specs) > 1 and config.names_one_model():
        raise UserError("--weights FILE, --config and --resume RUN_DIR name one model's files; evaluate that "
                        "model alone, or use --weights-dir / --weights random / --resume")
    check_runs_root(config.runs_root)
    device = pick_device(config.device)
    if config.amp not in (None, "off") and device != "cuda":
        raise UserError("--amp needs a CUDA GPU; drop --amp to run in fp32 on CPU")
    world = World.from_env(device)
    results = {}
    with tf32_mode(config.tf32) as numerics:
        session = _Session(config, device, world, numerics, single=len(specs) == 1,
                           progress=config.progress and world.main, opened=[])
        try:
            for resolution in dict.fromkeys(spec.eval.resolution for spec in specs):
                results.update(_evaluate_resolution([spec for spec in specs if spec.eval.resolution == resolution],
                                                    session))
        except KeyboardInterrupt:
            raise _interrupted(session, specs) from None
    return [results[spec.id] for spec in specs]


def _interrupted(session: _Session, specs: Sequence[ModelSpec]) -> Interrupted:
    """What an interruption kept (each open run's scored rows) and the flags that continue it."""
    kept = [job for job in session.opened if not records.is_finished(job.run_dir)]
    if not kept:
        return Interrupted(["no run folder was opened yet: nothing was kept"], resume=None)
    saved = [f"{job.spec.id}: {job.done - job.rows.start} of {len(job.rows)} images scored, kept in {job.run_dir}"
             for job in kept]
    if len(specs) == 1:
        return Interrupted(saved, resume=("--resume", str(kept[0].run_dir)))
    unfinished = {job.spec.id for job in kept}
    done = tuple(spec.id for spec in specs if spec.id not in unfinished)
    return Interrupted(saved, resume=("--resume",), drop=done)  # each model's newest unfinished run


def _attempt(results: _Results, key: str, single: bool, work: Callable[..., T]) -> T | None:
    """Run work(); for one model let its error through, for several keep it as that model's result."""
    if single:
        return work()
    try:
        return work()
    except Exception as e:
        _record_failure(results, key, e)
        return None


def _record_failure(results: _Results, key: str, error: Exception) -> None:
    results[key] = error
    if World.declared().main:  # under torchrun, rank 0 says every rank's failures
        logger.warning(f"{key}: FAILED: {_line(error)}")


def _evaluate_resolution(specs: list[ModelSpec], session: _Session) -> _Results:
    """The models of one resolution: those of the most common image order ride one pass; the others
    (and any that do not fit beside them) run in turn over the cache it wrote."""
    results: dict = {}
    baseline_mib = nvml_baseline_mib(session.device)  # before any model reaches the GPU
    jobs = [job for job in (_attempt(results, spec.id, session.single, lambda spec=spec: _prepare(spec, session))
                            for spec in specs) if job is not None]
    if not jobs:
        return results
    sets = [job.spec.eval.image_set for job in jobs]
    master_set = max(dict.fromkeys(sets), key=sets.count)  # ties: the first named
    riders, later = ride_together([job for job in jobs if job.spec.eval.image_set == master_set], session.device)
    later += [job for job in jobs if job.spec.eval.image_set != master_set]
    with contextlib.ExitStack() as stack:
        for job in jobs:
            stack.callback(job.release)
        plan = _DecodePlan(session, riders, later)
        if plan.cache is not None and not session.config.keep_cache:
            stack.callback(plan.cache.delete)
        shared = [job.spec.id for job in jobs] if len(jobs) > 1 else None
        for job in later + (riders if plan.cache is not None and plan.cache.reused else []):
            job.cache = plan.cache  # it reads from the cache: its record says which
        _score_jobs(riders, plan.rider_loader(riders) if riders else [], session, baseline_mib, results, shared, "decoded")
        for job in later:
            _score_jobs([job], plan.later_loader(job), session, baseline_mib, results, shared,
                        "cache" if plan.cache is not None else "decoded")
    return results


class _DecodePlan:
    """Which images the pass decodes (the riders' rows, then the rows only later models need) and
    the loaders that feed them; a cache when some model runs later, or --keep-cache."""

    def __init__(self, session: _Session, riders: list[_Job], later: list[_Job]) -> None:
        self.session = session
        some = (riders or later)[0]
        self.folder = Path(session.config.coco_root) / some.coco_labels.split
        self.resolution = some.spec.eval.resolution
        master = riders[0].coco_labels if riders else None
        self.start = min((job.done for job in riders), default=0)
        self.stop = max((job.rows.stop for job in riders), default=0)
        self.names = list(master.file_names[self.start:self.stop]) if master else []
        self.position = {name: k for k, name in enumerate(self.names)}
        for job in later:
            for name in job.coco_labels.file_names[job.done:job.rows.stop]:
                self.position.setdefault(name, len(self.names))
                if self.position[name] == len(self.names):
                    self.names.append(name)
        self.cache = None
        if (later or session.config.keep_cache) and self.names:
            self.cache = DecodeCache.open(Path(session.config.runs_root) / ".decode-cache", self.folder, self.names,
                                          self.resolution)
            if self.cache is not None and self.cache.reused:
                logger.info(f"reading the {self.resolution}px images kept in {self.cache.folder} where their crc32 "
                            f"matches (an earlier --keep-cache run made it); the record names it")
            if self.cache is None:
                logger.warning(f"no room on disk for the {self.resolution}px image cache: the models after the first pass "
                            f"decode the images again")

    def _loader(self, items: list[tuple[int, int]], batch_size: int) -> DataLoader[Any]:
        dataset = PassImages(self.folder, self.names, ResizeToUint8(self.resolution), items, self.cache)
        return make_loader(dataset, batch_size, self.session.device, self.session.config.workers)

    def rider_loader(self, riders: list[_Job]) -> DataLoader[Any] | list[Any]:
        """Rows in the riders' order; each batch goes to every rider (each cuts its own batches)."""
        items = [(k, self.start + k) for k in range(self.stop - self.start)]
        return self._loader(items, max(job.batch_size for job in riders)) if items else []

    def later_loader(self, job: _Job) -> DataLoader[Any] | list[Any]:
        names = job.coco_labels.file_names
        items = [(self.position[names[row]], row) for row in range(job.done, job.rows.stop)]
        return self._loader(items, job.batch_size) if items else []


def _score_jobs(jobs: list[_Job], loader: Iterable[Any], session: _Session, baseline_mib: float | None,
                results: _Results, shared: list[str] | None, source: str) -> None:
    """Score `jobs` from one loader, each inside its own measurement, then finish each."""
    if not jobs:
        return
    jobs = [job for job in jobs if job.spec.id not in results]
    with contextlib.ExitStack() as stack:
        started, scorers = utc_now(), []
        for k, job in enumerate(jobs):
            job.to_device()
            job.measurement = stack.enter_context(SpanMeasurement(session.device, baseline_mib=baseline_mib))
            job.t0 = time.perf_counter()
            scorers.append(Scorer(job, session.device, bar_position=k))

        def on_failure(scorer: Scorer, error: Exception) -> None:
            if session.single:
                raise error
            _record_failure(results, scorer.job.spec.id, error)
            scorer.job.release()

        error: Exception | None = None
        try:
            run_pass(scorers, loader, session.device, on_failure)
        except UnreadableError as e:
            job = jobs[0]
            error = UserError(_unreadable_message(e.bad, session.config.coco_root, job.coco_labels,
                                                  job.run_dir if session.single else None))
        except Exception as e:
            if session.world.size == 1:
                raise
            error = e
        _agree(session.world, jobs, results, error)
    for job in jobs:
        if job.spec.id in results:
            continue
        notes = [f"decode shared by {', '.join(shared)} (one pass per resolution); images from the {source} "
                 f"pass; wall time, memory and energy are those of the span this model was scored in"] if shared else []
        finished = _attempt(results, job.spec.id, session.single, lambda job=job, notes=notes: _finish_job(job, started, notes))
        if finished is not None:
            results[job.spec.id] = finished
        job.release()


def _agree(world: World, jobs: list[_Job], results: _Results, error: Exception | None) -> None:
    """Under torchrun, every rank learns which ranks failed: a failure of the whole pass stops every
    rank with the same one line; a model that failed on one rank has failed on all."""
    if world.size == 1:
        if error is not None:
            raise error
        return
    failed = {job.spec.id: _line(results[job.spec.id]) for job in jobs if job.spec.id in results}
    if error is not None:
        failed["*"] = _line(error)
    every = world.gather(failed)
    for rank, theirs in enumerate(every):
        if "*" in theirs:
            raise UserError(f"rank {rank} of {world.size} failed: {theirs['*']}")
    for rank, theirs in enumerate(every):
        for job in jobs:
            if job.spec.id in theirs and job.spec.id not in results:
                _record_failure(results, job.spec.id,
                                UserError(f"rank {rank} of {world.size} failed: {theirs[job.spec.id]}"))
                job.release()


def _line(error: object) -> str:
    return str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"


@dataclass(eq=False)
class _Job:
    """One model's run: built, its run folder opened and locked, its rows (a shard under torchrun);
    what its scoring measures is filled in as it goes."""
    session: _Session
    spec: ModelSpec
    coco_labels: CocoLabels
    model: torch.nn.Module | None
    weights_info: dict
    settings: dict
    run_dir: Path
    done: int  # the first row not yet scored
    held: Any  # the run folder's lock (released with the job)
    rows: range
    device: str
    amp: str | Literal[False]  # fp16 | bf16, or False: no autocast
    amp_dtype: torch.dtype | None
    amp_source: str
    batch_size: int
    batch_size_source: str
    deviations: list
    precision: str
    precision_source: str
    labels: LabelChoice
    world: World
    scores: Any = None  # this rank's rows: a memory map while scoring, all rows once saved
    measurement: Any = None  # the SpanMeasurement of the span it is scored in
    batch_norm: str | None = None
    t0: float = 0.0
    wall_s: float = 0.0
    started: str | None = None
    distributed: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)
    cache: Any = None  # the DecodeCache its images were read from, if any
    rows_hash: Any = None  # sha256 of the rows scored so far, in order: written with each count of rows done
    kept: dict | None = None  # the rows a resume kept: their sha256, and whether it was checked

    @property
    def half(self) -> bool:
        return self.precision == "fp16-fused"

    def to_device(self) -> None:
        assert self.model is not None, "a released job has no model"
        self.model = self.model.to(self.device)
        self.batch_norm = batch_norm_used(self.model, self.device)
        n, c = self.settings["n_images"], self.coco_labels.labels.shape[1]
        if (self.run_dir / "scores.npy").exists():  # an earlier session scored every row, then was stopped while finishing
            self.scores = _load_saved_scores(self.run_dir, n, c)
            self.done = self.rows.stop
        else:  # this rank's rows only
            self.scores = open_rows(self.run_dir / partial_name(self.world), (len(self.rows), c),
                                    dtype=np.float16 if self.half else np.float32, fresh=self.done == self.rows.start)

    def progress_bar(self, position: int) -> Any:
        return _progress_bar(len(self.rows), self.done - self.rows.start, self.spec.id, self.session.progress, position)

    def score_batch(self, rows: NDArray[np.int64], images: torch.Tensor) -> None:
        x = to_model_input(images, self.spec.eval.normalize)  # on the device, this model's normalisation
        x = x.half() if self.half else x  # fp16-fused: fp16 inputs, as ML-Decoder's validate.py
        assert self.model is not None, "a released job has no model"
        with torch.autocast(device_type=self.device, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = self.model(x)
            logits = logits if self.half else logits.float()
        if not bool(torch.isfinite(logits).all()):  # one sync per batch; .cpu() below syncs anyway
            raise UserError(_non_finite_message(self.spec.id, "fp16 (fp16-fused)" if self.half else self.amp,
                                                rows.tolist(), self.coco_labels.image_ids))
        self.scores[rows - self.rows.start] = torch.sigmoid(logits).cpu().numpy()  # sigmoid in the logits' dtype, as the authors
        self.scores.flush()
        self.done = int(rows[-1]) + 1
        self.rows_hash.update(np.ascontiguousarray(self.scores[rows - self.rows.start]).tobytes())
        save_progress(self.run_dir / progress_name(self.world), self.done, self.rows_hash.hexdigest())
        self.measurement.count(len(rows))

    def release(self) -> None:
        """Free the model (its device memory goes with it) and the run's lock."""
        self.model = None
        self.held.close()
        if self.device == "cuda":
            torch.cuda.empty_cache()


def _prepare(spec: ModelSpec, session: _Session) -> _Job:
    """Check the inputs, build the model (on the CPU until its turn) and open or resume its run."""
    config, device, world = session.config, session.device, session.world
    with progress.step(f"{spec.id}: reading the val2014 labels (image set {spec.eval.image_set}) and checking "
                       f"the images"):
        coco_labels = load_labels(config.coco_root, "val2014", spec.eval.image_set)
        check_images(config.coco_root, coco_labels)
    n_total = min(config.limit, len(coco_labels)) if config.limit else len(coco_labels)
    label_choice = choose_labels(spec, config.coco_root, coco_labels, weights_dir=config.weights_dir)

    what = f"random weights, seed {config.seed}" if config.weights == "random" else "loading its checkpoint"
    with progress.step(f"{spec.id}: building the model ({what})"):
        model, weights_info = _build_model(spec, config, "cpu")
    precision, precision_source = _choose_precision(spec, config.amp, device)
    model = _for_precision(model, precision)
    amp, amp_source = _choose_amp(spec, config.amp, weights_info.get("config"), device)
    batch_size, batch_source, deviations = choose_batch_size(spec, config.batch_size, weights_info.get("config"))
    settings = {
        "model_id": spec.id, "weights_sha256": weights_info["sha256"], "random_weights": weights_info["random_weights"],
        "coco_root": str(Path(config.coco_root).resolve()), "image_set": spec.eval.image_set, "n_images": n_total,
        "batch_size": batch_size, "amp": amp or False, "resolution": spec.eval.resolution,
        "seed": weights_info.get("seed"),
        **({"precision": precision} if precision != "fp32" else {}),  # older runs stay resumable
    }
    if device == "cuda":  # TF32 changes GPU results only: a resume must keep it
        settings["tf32"] = session.numerics["tf32"]
    if world.size > 1:  # the shards are whole batches of this many ranks: a resume needs the same
        settings["world_size"] = world.size
    rows = world.shard(n_total, batch_size)
    held: TextIO | _NoLock  # rank 0's lock on the run folder, or the other ranks' stand-in
    n_classes = coco_labels.labels.shape[1]
    if world.size == 1:
        run_dir, done, held, (rows_hash, kept) = _open_run(config.runs_root, spec.id, config.resume, settings, world,
                                                           rows, n_classes)
    else:
        run_dir, done, held, (rows_hash, kept) = _open_run_together(session, spec, settings, rows, n_classes)
    job = _Job(session=session, spec=spec, coco_labels=coco_labels, model=model, weights_info=weights_info,
               settings=settings, run_dir=run_dir, done=done, held=held, rows=rows, device=device, amp=amp,
               rows_hash=rows_hash, kept=kept,
               amp_dtype=AMP_DTYPES.get(amp) if amp else None, amp_source=amp_source,
               batch_size=batch_size, batch_size_source=batch_source, deviations=deviations,
               precision=precision, precision_source=precision_source, labels=label_choice, world=world)
    session.opened.append(job)
    if world.main:
        batches = -(-(rows.stop - done) // batch_size)
        logger.info(f"{spec.id}: {rows.stop - done} images to score in {batches} batch(es) of {batch_size} "
                    f"on {device}; run folder {run_dir}")
    return job


def _open_run_together(session: _Session, spec: ModelSpec, settings: dict[str, Any], rows: range,
                       n_classes: int) -> tuple[Path, int, TextIO | _NoLock, tuple[Any, dict[str, Any] | None]]:
    """Rank 0 opens (and locks) the run folder; every rank learns it, or the one line why not."""
    world, opened, problem = session.world, None, None
    if world.main:
        try:
            opened = _open_run(session.config.runs_root, spec.id, session.config.resume, settings, world, rows,
                               n_classes)
        except UserError as e:
            problem = str(e)
    run_dir, problem = world.broadcast((str(opened[0]) if opened else None, problem))
    if problem:
        raise UserError(problem)
    if world.main:
        assert opened is not None  # rank 0 opened it, or raised its problem above
        return opened
    done, kept = _resume_point(Path(run_dir), rows, world, settings["batch_size"], n_classes)
    return Path(run_dir), done, _NoLock(), kept


class _NoLock:
    """The other ranks' stand-in for rank 0's lock on the run folder."""

    def close(self) -> None:
        pass


def _finish_job(job: _Job, started: str, notes: list[str]) -> FinishedRun:
    """The scored job's FinishedRun (metrics and record), as a run of its own finishes; under torchrun
    rank 0 writes the record and the other ranks return their run folder only."""
    n_total = job.settings["n_images"]
    if job.done != job.rows.stop:  # the loader ended early: a bug, never a result
        raise RuntimeError(f"{job.run_dir}: {job.done} of {n_total} rows scored; resume it with --resume {job.run_dir}")
    job.wall_s, job.started, job.distributed = time.perf_counter() - job.t0, started, {}
    measured = job.measurement.result()
    if job.world.size > 1:
        ranks = job.world.gather({**job.world.describe(job.device), "rows": [job.rows.start, job.rows.stop],
                                  "measurement": measured})
        if not job.world.main:  # rank 0 writes the record
            job.scores = None
            return FinishedRun(job.run_dir, None)
        job.distributed = {"world_size": job.world.size, "backend": job.world.backend, "ranks": ranks}
        measured = _merge_measurements(ranks, n_total)
    measured["notes"] += notes
    if job.measurement.n_images == 0:
        measured["notes"].append("every row was scored by an earlier session that was stopped before its "
                                 "record was written; its speed and memory were not kept")
    job.measured = measured
    final_scores = _all_scores(job)
    job.scores = None  # closes the memory map of the partial file
    return FinishedRun(job.run_dir, _finish(job, final_scores))


def _all_scores(job: _Job) -> np.ndarray:
    """Every row's scores: this process's, or (rank 0 under torchrun) each rank's part in row order."""
    if job.world.size == 1 or len(job.scores) == job.settings["n_images"]:
        return np.array(job.scores)
    parts = [load_array(job.run_dir / partial_name(World(k, job.world.size)), "partial rows", ndim=2, mmap_mode="r")
             for k in range(job.world.size)]
    return np.concatenate(parts)


def _merge_measurements(ranks: list[dict[str, Any]], n_total: int) -> dict[str, Any]:
    """Rank 0's measurement, with every rank's figures, the peak per device and the total energy."""
    measured = dict(ranks[0]["measurement"])
    wall = max(r["measurement"]["wall_s"] for r in ranks)
    counted = sum(r["measurement"]["n_images"] for r in ranks)
    energy = [r["measurement"].get("energy_j_per_image") for r in ranks]
    measured.update(n_images=counted, wall_s=wall, images_per_s=counted / wall if counted and wall > 0 else None)
    measured["peak_vram_mib"] = max((r["measurement"].get("peak_vram_mib") or 0 for r in ranks), default=None) or None
    measured["total_energy_j"] = (sum(e * r["measurement"]["n_images"] for e, r in zip(energy, ranks))
                                  if all(e is not None for e in energy) else None)
    measured["per_rank"] = [{"rank": r["rank"], "host": r["host"], "device": r.get("gpu") or r["device"],
                             "uuid": r.get("uuid"), **{k: r["measurement"].get(k) for k in (
                                 "n_images", "wall_s", "images_per_s", "peak_vram_mib", "energy_j_per_image")}}
                            for r in ranks]
    measured["notes"] = measured.get("notes", []) + [f"{len(ranks)} ranks (torchrun): peak_vram_mib is the largest "
                                                     f"of the devices; per_rank has each"]
    return measured


def _unreadable_message(bad: UnreadableImages, coco_root: str, coco_labels: CocoLabels, run_dir: Path | None) -> str:
    """One line: which images, why, how to get them again, and that the run resumes."""
    folder = Path(coco_root) / coco_labels.split
    named = "; ".join(f"{folder / name} (COCO id {int(coco_labels.image_ids[row])}): {why}"
                      for row, name, why in bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    return (f"{len(bad)} image(s) cannot be decoded: {named}; delete them and run `harness data coco --root "
            f"{coco_root} --download` to get them again (`--verify-images` checks every file), then continue "
            f"with `--resume{f' {run_dir}' if run_dir else ''}`")


def _non_finite_message(model_id: str, amp: str | Literal[False], rows: list[int], image_ids: NDArray[np.int64]) -> str:
    """One line: which model, which images, and what to do (the batch is not saved)."""
    where = f"rows {rows[0]}-{rows[-1]}, COCO image ids {int(image_ids[rows[0]])}-{int(image_ids[rows[-1]])}"
    if amp:
        fix = (f"{amp} probably overflowed: run again with `--amp off` (fp32; a new run, since precision is "
               f"part of this run's settings)")
    else:
        fix = (f"it ran in fp32, so the checkpoint may be broken: check it against the manifest "
               f"(`harness download {model_id}`) or pass the released file")
    return f"{model_id} returned NaN or inf scores for the batch of {where}; {fix}"


def _finish(job: _Job, scores: np.ndarray) -> Record:
    """Saved arrays, metrics, record; the partial scores go only once the record is written."""
    spec, run_dir = job.spec, job.run_dir
    labels = job.labels.labels[:len(scores)]  # the authors' label file where it differs from the json
    unscored = np.flatnonzero(~np.isfinite(scores).all(axis=1))
    if len(unscored):  # never saved: a later resume would meet them as "saved scores"
        raise UserError(f"{run_dir}: row(s) {', '.join(map(str, unscored[:5]))} hold no scores (NaN) although every "
                        f"row was counted done: {PROGRESS} or {PARTIAL} was changed; delete both (and any "
                        f"scores.npy) to score the images again")
    digests = records.save_arrays(run_dir, scores, labels, job.coco_labels.image_ids[:len(scores)], keep_equal=True)
    metrics = compute_metrics(scores, labels, spec.eval.protocol, class_names=job.coco_labels.category_names,
                              f1=spec.eval.f1, threshold=spec.eval.threshold)
    record = _eval_record(job, scores, metrics, digests)
    records.write_record(run_dir, record)
    ranks: list[str | Path] = [*run_dir.glob("scores.rank*-of-*.partial.npy"), *run_dir.glob("progress.rank*-of-*.json")]
    for leftover in (PARTIAL, PROGRESS, *ranks, ".in-progress"):  # the lock file goes too: the record now refuses a resume
        (run_dir / leftover).unlink(missing_ok=True)
    return record


def _eval_record(job: _Job, scores: np.ndarray, metrics: dict[str, Any], digests: dict[str, str]) -> Record:
    spec, config = job.spec, job.session.config
    smoke_root = is_smoke_root(config.coco_root)
    return Record(
        kind="eval", run_id=job.run_dir.name, model=model_section(spec), checkpoint=job.weights_info,
        config=config_section(config),
        dataset={"name": "coco2014-val", "root": str(Path(config.coco_root).resolve()),
                 "image_set": spec.eval.image_set, "n_images": len(scores),
                 "fingerprint": fingerprint(job.coco_labels), "smoke_subset": smoke_root},
        eval={**asdict(spec.eval), "batch_size": job.batch_size, "batch_size_source": job.batch_size_source,
              "deviations": job.deviations, "dtype": str(scores.dtype), "amp": job.amp or False,
              "amp_source": job.amp_source, "precision": job.precision, "precision_source": job.precision_source,
              "device": job.device, "limit": config.limit, **({"batch_norm": job.batch_norm} if job.batch_norm else {}),
              "numerics": job.session.numerics},
        metrics=metrics, labels=job.labels.summary(scores, spec.eval.protocol),
        timings={"wall_s": job.wall_s, "images_per_s": job.measured.get("images_per_s"),
                 "resumed_from_row": job.settings.get("resumed_from_row", 0),
                 **({"partial_rows_sha256": job.kept["rows_sha256"], "partial_rows_checked": job.kept["checked"]}
                    if job.kept and job.world.size == 1 else {})},
        measurement={**job.measured, **({"decode_cache": job.cache.describe()} if job.cache else {})},
        distributed=job.distributed, environment=environment(),
        started_at=json.loads((job.run_dir / SETTINGS).read_text()).get("started_at", job.started),
        finished_at=utc_now(), smoke_reasons=_smoke_reasons(job.weights_info, job.coco_labels, config.limit, smoke_root),
        files=dict(SCORE_FILES), digests=digests)


def _load_saved_scores(run_dir: Path, n: int, c: int) -> np.ndarray:
    scores = load_array(run_dir / "scores.npy", "saved scores", kinds="f")
    if scores.shape != (n, c):
        raise UserError(f"{run_dir / 'scores.npy'} holds {scores.shape}, not ({n}, {c}); start a new run")
    return scores


def _choose_amp(spec: ModelSpec, asked: str | None, config_path: str | None, device: str) -> tuple[str | Literal[False], str]:
    """(amp, why): the user's --amp wins; else the authors' config (their inference script ran under
    autocast exactly when its `amp` was set), else the manifest. CPU runs fp32 and says so."""
    if asked is not None:
        return (False if asked == "off" else asked), "--amp"
    if config_path and read_config(config_path).get("amp") is True:
        if device == "cuda":
            return "fp16", "config_new.json amp=true (the authors' inference ran under fp16 autocast)"
        logger.warning(f"{spec.id}: config_new.json asks for AMP (CUDA fp16 autocast); running fp32 on CPU instead")
        return False, "config_new.json amp=true, but CUDA autocast is impossible on CPU: ran fp32"
    if spec.eval.amp:
        return ("fp16" if device == "cuda" else False), "manifest eval.amp"
    return False, "fp32 (manifest)"


def _choose_precision(spec: ModelSpec, asked_amp: str | None, device: str) -> tuple[str, str]:
    """(precision, why): the manifest's. fp16-fused (ML-Decoder's validate.py: batch norm folded, then
    `.half()`) is a CUDA path: on CPU the fused model runs in fp32 (`fp32-fused`, said and recorded);
    `--amp` asks for the plain model under autocast (or in fp32 with `--amp off`) instead."""
    if spec.eval.precision == "fp32":
        return "fp32", "manifest"
    if asked_amp is not None:
        return "fp32", f"--amp {asked_amp} given: the unfused model, not the authors' fp16-fused run"
    if device != "cuda":
        logger.warning(f"{spec.id}: its authors ran it fp16-fused on a GPU; on CPU the fused model runs in fp32")
        return "fp32-fused", "fp16-fused needs CUDA: on CPU the batch-norm-fused model ran in fp32"
    return "fp16-fused", "manifest eval.precision (as the authors' validate.py)"


def _for_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    if precision == "fp32":
        return model
    model = fuse_bn(model)
    return model.half() if precision == "fp16-fused" else model


def _build_model(spec: ModelSpec, config: EvalConfig, device: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    if config.weights == "random":  # seeded, so a smoke run is repeatable and a resume continues the same model
        info = {"path": None, "sha256": None, "pinned": False, "random_weights": True, "seed": config.seed}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = build_from_arch(spec.arch)
        return model.eval().to(device), info
    model, info = build_pretrained(spec, config.weights, config.checkpoint_config, weights_dir=config.weights_dir,
                                   trust=config.trust_checkpoint)
    return model.eval().to(device), info


def _open_run(runs_root: str | Path, model_id: str, resume: str | None, settings: dict[str, Any], world: World,
              rows: range, n_classes: int) -> tuple[Path, int, TextIO, tuple[Any, dict[str, Any] | None]]:
    """(run folder, its count of finished rows, its held lock, (running sha256 of the kept rows, what
    was kept)): a new folder, or the one to resume (`resume` "auto": the newest unfinished run of
    these very settings, else a new folder)."""
    if resume == "auto":
        resume = next((str(p) for p in reversed(records.unfinished_runs(runs_root, model_id))
                       if _same_settings(p, settings)), None)
    if resume:
        interrupted = records.unfinished_runs(runs_root, model_id)
        run_dir = (interrupted[-1] if interrupted else None) if resume == "latest" else Path(resume)
        if run_dir is None:
            raise UserError(f"nothing to resume for {model_id} under {runs_root}; run without --resume")
        if not (run_dir / SETTINGS).is_file():
            raise UserError(f"--resume {run_dir} is not a run folder (no {SETTINGS} in it); pass the run folder an "
                            f"interrupted eval named, or --resume alone for {model_id}'s newest")
        held = records.hold_run(run_dir)  # before reading its state: another process may be changing it
        if records.is_finished(run_dir):
            held.close()
            raise UserError(f"{run_dir} is already complete; run without --resume for a new run")
        try:
            records.refuse_changed_settings(run_dir, records.read_settings(run_dir / SETTINGS), settings)
        except UserError:
            held.close()
            raise
        try:
            done, kept = _resume_point(run_dir, rows, world, settings["batch_size"], n_classes)
        except UserError:
            held.close()
            raise
        settings["resumed_from_row"] = done
        logger.info(f"{model_id}: resuming {run_dir}: {done - rows.start} of {len(rows)} images were scored "
                    f"before it stopped" + ("; writing its record" if done == rows.stop else ""))
        return run_dir, done, held, kept
    run_dir = records.new_run_dir(runs_root, model_id)
    held = records.hold_run(run_dir)
    _write_json_atomic(run_dir / SETTINGS, {**settings, "started_at": utc_now()})
    return run_dir, rows.start, held, (hashlib.sha256(), None)


def _same_settings(run_dir: Path, settings: Mapping[str, Any]) -> bool:
    try:
        saved = records.read_settings(run_dir / SETTINGS)
    except UserError:  # a damaged folder is not resumed by itself
        return False
    return all(saved.get(k) == v for k, v in settings.items())


def _resume_point(run_dir: Path, rows: range, world: World, batch_size: int,
                  n_classes: int) -> tuple[int, tuple[Any, dict[str, Any] | None]]:
    """(first row to score, (running sha256 of the rows kept, what was kept)): the progress file's
    count, its rows checked against the digest written with them, back to a batch boundary."""
    done = _rows_done(run_dir, rows, world)
    if (run_dir / "scores.npy").exists():  # every row scored: scores.npy is checked when it is read
        return done, (None, None)
    done, rows_hash, kept = kept_rows(run_dir / progress_name(world), run_dir / partial_name(world), done, rows.start,
                                      rows.stop, batch_size, (len(rows), n_classes))
    return done, (rows_hash, kept)


def _rows_done(run_dir: Path, rows: range, world: World) -> int:
    """The first of `rows` (this rank's) not yet scored, as its progress file says; rows count as
    finished only while their scores exist."""
    if (run_dir / "scores.npy").exists():  # every row was scored, then the finish was interrupted
        return rows.stop
    return rows_done(run_dir / progress_name(world), run_dir / partial_name(world), default=rows.start,
                     most=rows.stop)


def _progress_bar(total: int, done: int, name: str, enabled: bool, position: int = 0) -> Any:
    return progress.bar(total, name, initial=done, enabled=enabled, position=position)
