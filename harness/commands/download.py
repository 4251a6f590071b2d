"""Fetch and verify released checkpoints (and the MLSPL features) into the cache.

TARGET is a model id, `all` (every model with released weights), `mlspl-features`
(the MLSPL authors' pre-extracted COCO features, Zenodo record 10162606) or a reference file
(`q2l-val-labels`: the label file Query2Label's evaluation read; fetched with each Q2L model). Files go to
<cache>/weights/<model id>/<filename> and <cache>/features/mlspl/; the cache is --cache,
else $HARNESS_HOME, else ~/.cache/harness. Each file is checked against the sha256 pinned
in the manifest or, if unpinned, the one recorded in weights_manifest.lock.yaml at its
first download. Prints where each file is and its sha256.
"""
import difflib
import sys

from harness.data.authors_labels import reference_spec
from harness.download import fetch, fetch_mlspl_features
from harness.download.lock import lock_entry
from harness.download.settings import lock_file_for
from harness.download.verify import read_record
from harness.errors import UserError
from harness.manifest import load_manifest, resolve_id
from harness.pretrained import build_pretrained

FEATURES = "mlspl-features"


def add_arguments(parser):
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help=f"model id(s), 'all', or '{FEATURES}'")
    parser.add_argument("--cache", metavar="DIR", help="cache root (default: $HARNESS_HOME or ~/.cache/harness)")
    parser.add_argument("--manifest", metavar="FILE", help="manifest (default: the repository's weights_manifest.yaml)")
    parser.add_argument("--weights-dir", metavar="DIR",
                        help="files placed by hand: DIR/<model id>/<file>, DIR/<authors' folder>/<file> or DIR/<file>")
    parser.add_argument("--verify", action="store_true",
                        help="re-hash cached files instead of trusting size and record")
    parser.add_argument("--offline", action="store_true", help="never touch the network (also HARNESS_OFFLINE=1)")
    parser.add_argument("--features", action="store_true", help=f"also fetch the MLSPL features (same as '{FEATURES}')")


def _choose(specs, targets):
    chosen, features = [], False
    for target in targets:
        if target == FEATURES:
            features = True
        elif target == "all":
            chosen += [s for s in specs.values() if s.released]
        elif resolve_id(target, specs):
            chosen.append(specs[resolve_id(target, specs)])
        elif any(target in s.references for s in specs.values()):  # a file the authors' evaluation read

            chosen.append(reference_spec(next(s for s in specs.values() if target in s.references), target))
        else:
            close = difflib.get_close_matches(target.lower(), list(specs), n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UserError(f"unknown target '{target}'; {hint}use a model id (`harness models` lists them), "
                            f"'all' or '{FEATURES}'")
    unique = {s.id: s for s in chosen}
    return list(unique.values()), features


def run(args):
    specs = load_manifest(args.manifest)
    chosen, features = _choose(specs, args.targets)
    features = features or args.features
    if not chosen and not features:
        raise UserError(f"nothing to download; name a model id, 'all' or '{FEATURES}'")
    offline = True if args.offline else None
    if "all" in args.targets:
        n = sum(not s.released for s in specs.values())
        print(f"{n} models are trained here: no released weights (see harness mlspl)")
    failures, count = [], 0
    jobs = []
    for spec in chosen:
        if not spec.released:
            print(f"{spec.id}: trained here: no released weights (see harness mlspl)")
            continue
        jobs += [(spec, role) for role in spec.files if (spec.id, role) not in {(s.id, r) for s, r in jobs}]
        if spec.eval and spec.eval.authors_labels and all(s.id != spec.eval.authors_labels for s, _ in jobs):
            jobs.append((reference_spec(spec, spec.eval.authors_labels), "labels"))  # their evaluation reads it
    for spec, role in jobs:
        wfile = spec.files[role]
        count += 1
        lock_file = lock_file_for(spec.manifest_path)  # as fetch finds it: beside the entry's manifest
        weights = role != "labels"  # a label file is checked by its content and git object id, then locked
        try:
            path = fetch(spec, role, cache_dir=args.cache, weights_dir=args.weights_dir,
                         verify=args.verify, offline=offline, quiet=args.no_progress, lock=not weights)
            if weights and not (wfile.sha256 or lock_entry(lock_file, spec.id, role)):
                _load_to_lock(spec, args)  # a first hash is locked only once the file loads into its model
        except UserError as e:
            failures.append(f"{spec.id} {role}: {e}")
            print(f"{spec.id} {role}: error: {e}", file=sys.stderr)
            continue
        sha = wfile.sha256 or (lock_entry(lock_file, spec.id, role) or {}).get("sha256")
        print(f"{spec.id}  {role}  {path}  sha256 {sha}")
    if features:
        for path in fetch_mlspl_features(args.cache, verify=args.verify, offline=offline, quiet=args.no_progress):
            print(f"{FEATURES}  {path.name}  {path}  sha256 {(read_record(path) or {}).get('sha256')}")
    if failures:
        raise UserError(f"{len(failures)} of {count} files could not be fetched (reasons above); "
                        f"first: {failures[0]}")


def _load_to_lock(spec, args):
    """Read the fetched release safely and strictly into its model; that locks its unpinned hashes."""
    build_pretrained(spec, weights_dir=args.weights_dir, cache_dir=args.cache)
