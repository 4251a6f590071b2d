"""Check run folders an author sent, from their own files: the sha256 of every array, the image set and
count, the labels against the record's dataset fingerprint (and your own annotations, with
--coco-root), every metric recomputed from scores.npy and labels.npy, the checkpoint against the
manifest's pin or this machine's lock file, the record's smoke flags against what the files show, and
the library versions against the environment file the record names. Nothing is run, installed or
downloaded. One verdict per run and one line per finding (held, failed, cannot check: with why).

Exit status: 0 when every check of every run held; 1 when a check failed; 3 when none failed but some
could not be made (e.g. a record written before records kept digests); 2 on bad input (a path that is
not a run folder, a record that cannot be read), said in one line before anything is checked."""
import json
import sys
from pathlib import Path

from harness import records
from harness.data.coco import annotation_path, load_labels
from harness.errors import UserError
from harness.files import file_digest
from harness.manifest import load_manifest
from harness.report.judge import status_of
from harness.report.verify import Annotations, check_run

EXIT = {"holds": 0, "failed": 1, "unverified": 3}


def add_arguments(parser):
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders, each holding record.json and its arrays")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text: a verdict per run and a line per finding; json: the same for machines")
    parser.add_argument("--coco-root", metavar="DIR",
                        help="your own COCO 2014: check each run's annotation file and labels against "
                             "DIR/annotations/instances_val2014.json")
    parser.add_argument("--no-ci", action="store_true", help="leave out recomputing the bootstrap CI (seconds a run)")
    parser.add_argument("--manifest", metavar="FILE", help="the model manifest (default: weights_manifest.yaml)")


def _run_folder(path):
    """The record of a run folder, or one line saying what the path is instead."""
    path = Path(path)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is a file"
        raise UserError(f"{path} {what}; pass run folders (each holding record.json), e.g. runs/MODEL/RUN_ID")
    if not (path / records.RECORD).exists() and any(path.glob(f"*/*/{records.RECORD}")):
        raise UserError(f"{path} is a runs folder, not a run folder; pass its runs, e.g. {path}/*/*")
    return records.read_record(path)


def _annotations(coco_root):
    path = annotation_path(coco_root, "val2014")
    if not path.is_file():
        raise UserError(f"--coco-root {coco_root}: no {path}; pass the COCO 2014 root holding annotations/")
    return Annotations(load_labels(coco_root, "val2014", "all"), file_digest(path))


def run(args):
    runs = [(Path(path), _run_folder(path)) for path in args.runs]  # every input checked before any work
    specs = load_manifest(args.manifest)
    annotations = _annotations(args.coco_root) if args.coco_root else None
    results = []
    for folder, record in _progress(runs, args):
        spec = specs.get(record.model_id)
        facts = check_run(record, spec, folder=folder, full=True, annotations=annotations, ci=not args.no_ci)
        status = status_of(spec, record, facts)[0] if spec is not None else None
        results.append({"run": str(folder), "model_id": record.model_id, "run_id": record.run_id,
                        "status": status, **facts.to_json()})
    if args.format == "json":
        print(json.dumps({"generator": "harness verify", "runs": results}, indent=2, allow_nan=False))
    else:
        print("\n\n".join(_text(result) for result in results))
        if len(results) > 1:
            verdicts = [r["verdict"] for r in results]
            print(f"\n{len(results)} runs: " + ", ".join(f"{verdicts.count(v)} {v}" for v in EXIT if v in verdicts))
    verdicts = {r["verdict"] for r in results}
    return EXIT["failed"] if "failed" in verdicts else EXIT["unverified"] if "unverified" in verdicts else 0


def _progress(runs, args):
    if len(runs) < 2 or args.no_progress:
        return runs
    from tqdm import tqdm  # lazy: the report path loads this package without it

    return tqdm(runs, desc="verifying", unit="run", file=sys.stderr, leave=False)


def _text(result):
    standing = f"; status in the report: {result['status']}" if result["status"] else "; not in the manifest"
    smoke = f"; smoke: {'; '.join(result['smoke'])}" if result["smoke"] else ""
    lines = [f"{result['run']}: {result['verdict'].upper()} ({result['model_id']}{standing}{smoke})"]
    lines += [f"  {f['outcome']:<12}  {f['check']}: {f['why']}" for f in result["findings"]]
    return "\n".join(lines)
