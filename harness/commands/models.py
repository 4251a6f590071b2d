"""List the models of the manifest: id, family, resolution, paper mAP, and what each needs."""
import json
import math

from tabulate import tabulate

from harness.manifest import FAMILIES, load_manifest


def add_arguments(parser):
    parser.add_argument("--manifest", help="manifest file (default: weights_manifest.yaml of the repository)")
    parser.add_argument("--family", choices=FAMILIES, help="only this family")
    parser.add_argument("--format", choices=["table", "json"], default="table",
                        help="table (default) or json (a list of objects; a missing number is null)")


def rows(specs):
    for spec in specs.values():
        pinned = all(f.sha256 for f in spec.files.values())
        yield {
            "id": spec.id,
            "family": spec.family,
            "resolution": spec.eval.resolution,
            "protocol": spec.eval.protocol,
            "image_set": spec.eval.image_set,
            "precision": spec.eval.precision,
            "paper_mAP": spec.paper_map,
            "weights": ("released, " + ("pinned" if pinned else "unpinned")) if spec.released
            else "trained here: no released weights",
        }


def run(args):
    specs = load_manifest(args.manifest)
    if args.family:
        specs = {k: v for k, v in specs.items() if v.family == args.family}
    table = list(rows(specs))
    if args.format == "json":  # valid JSON always: a NaN or infinite number (a manifest's .nan) is null
        print(json.dumps([{k: _finite(v) for k, v in row.items()} for row in table], indent=2, allow_nan=False))
    else:
        print(tabulate(table, headers="keys", missingval="n/a"))


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value
