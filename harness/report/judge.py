"""Whether a record counts, from facts, not flags: harness.report.verify checks its files (digests,
image count, labels, the mAP recomputed from its own scores, the checkpoint, its own flags), and
only a record whose facts hold is compared with the paper (tolerance, or the paper value inside
our 95% CI). `harness verify` prints the same findings."""
from harness.manifest import ModelSpec
from harness.records import Record
from harness.report.verify import Facts, check_run, record_reasons

TOLERANCE = {True: 0.1, False: 1.0}  # |ours - paper| in mAP points: released checkpoint, trained here
STATUSES = ("reproduced", "not reproduced", "no paper value", "smoke", "unverifiable", "failed checks", "no run yet")


def facts_of(spec: ModelSpec | None, record: Record, facts: Facts | None = None) -> Facts:
    """The record's Facts: `facts` when the caller has them, else checked now (its folder's files)."""
    return facts if facts is not None else check_run(record, spec)


def smoke_reasons(spec: ModelSpec | None, record: Record, facts: Facts | None = None) -> list[str]:
    """Why a record cannot count: what its fields say (flags, --limit, resolution, image set) and what
    its files show (part of the split, random weights, not the pinned release)."""
    reasons = record_reasons(spec, record)
    return reasons + [r for r in facts_of(spec, record, facts).smoke if not any(r in said for said in reasons)]


def problems(spec: ModelSpec | None, record: Record, facts: Facts | None = None) -> list[str]:
    """Each failed finding, then each essential one that could not be made, as "check: why"."""
    facts = facts_of(spec, record, facts)
    return [f"{f.check}: {f.why}" for f in (facts.failed or facts.unverifiable)]


def status_of(spec: ModelSpec, record: Record | None, facts: Facts | None = None) -> tuple[str, float, str | None]:
    """(status, tolerance, rule): rule says what made it "reproduced" ("tolerance" or "CI")."""
    tolerance = TOLERANCE[bool(spec.released)]
    if record is None:
        return "no run yet", tolerance, None
    facts = facts_of(spec, record, facts)
    if facts.failed:
        return "failed checks", tolerance, None
    if smoke_reasons(spec, record, facts):
        return "smoke", tolerance, None
    if facts.unverifiable:
        return "unverifiable", tolerance, None
    paper, ours = spec.paper_map, record.metrics.get("mAP")  # equal to the recomputed one: the mAP check held
    if paper is None:
        return "no paper value", tolerance, None
    if ours is None:
        return "not reproduced", tolerance, None
    if abs(ours - paper) <= tolerance + 1e-9:
        return "reproduced", tolerance, "tolerance"
    ci = record.metrics.get("mAP_ci95")
    if ci is not None and ci[0] <= paper <= ci[1]:
        return "reproduced", tolerance, "CI"
    return "not reproduced", tolerance, None
