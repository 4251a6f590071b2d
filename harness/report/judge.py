"""Whether a record counts: its smoke reasons (re-checked here, not only trusted) and its status
against the paper (tolerance, or the paper value inside our 95% CI)."""



TOLERANCE = {True: 0.1, False: 1.0}  # |ours - paper| in mAP points: released checkpoint, trained here
STATUSES = ("reproduced", "not reproduced", "no paper value", "smoke", "no run yet")


def smoke_reasons(spec, record):
    """Why a record cannot count: its own smoke reasons, and what the report re-checks itself (a
    record from an older harness, or a pin added after the run, must not slip through)."""
    reasons = list(record.smoke_reasons or (["flagged smoke"] if record.smoke else []))
    checkpoint, ev, dataset = record.checkpoint, record.eval, record.dataset
    derived = [("random weights", checkpoint.get("random_weights")),
               (f"--limit {ev.get('limit')}", ev.get("limit")),
               ("smoke subset", dataset.get("smoke_subset")),
               # the resolution check: the entry's resolution and image set, or no reproduction
               (f"resolution {ev.get('resolution')}, not the paper's {spec.eval.resolution}",
                ev.get("resolution") not in (None, spec.eval.resolution)),
               (f"image set {dataset.get('image_set')}, not the paper's {spec.eval.image_set}",
                dataset.get("image_set") not in (None, spec.eval.image_set))]
    pinned = spec.files["checkpoint"].sha256 if spec.released and "checkpoint" in spec.files else None
    if pinned and checkpoint.get("sha256") and checkpoint["sha256"] != pinned:
        derived.append(("weights are not the pinned release", True))
    reasons += [text for text, applies in derived if applies and not any(text in r for r in reasons)]
    return reasons


def status_of(spec, record):
    """(status, tolerance, rule): rule says what made it "reproduced" ("tolerance" or "CI")."""
    tolerance = TOLERANCE[bool(spec.released)]
    if record is None:
        return "no run yet", tolerance, None
    if smoke_reasons(spec, record):
        return "smoke", tolerance, None
    paper, ours = spec.paper_map, record.metrics.get("mAP")
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
