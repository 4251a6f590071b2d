"""The C-Tran partial-label table: rows = training (LMT or not) x selection, columns = labels known.

Built from run records only (no torch). Each cell: ours / paper mAP for that manifest entry, from the
latest complete non-smoke record with that selection (else the latest smoke one, marked). Both
selections are shown: `test` is the authors' protocol (schedule and checkpoint chosen on val2014, the
test set), `held-out` chooses on part of train2014. Beside: CF1 / OF1 over all labels (theirs, known
labels included) and over the unknown labels only.
"""
KNOWN = (0, 25, 50, 75)
SELECTION_TEXT = {"test": "selected on test (paper protocol)", "held-out": "selected on held-out train2014"}


def _num(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


def _pick(records, status):
    """The latest record that is not smoke, else the latest (newest first: only those newer are judged)."""
    newest_first = sorted(records, key=lambda r: (r.finished_at or "", r.run_id or ""), reverse=True)
    return next((r for r in newest_first if status(r) != "smoke"), newest_first[0] if newest_first else None)


def partial_rows(evals, specs, status):
    """[{training, selection, known: {percent: cell dict}}] for the C-Tran entries of the manifest;
    status(spec, record): the report's judgement of a record (harness.report.judge, from its files)."""
    out = []
    for use_lmt in (True, False):
        entries = {s.train["known"]: s for s in specs.values() if s.family == "ctran" and s.train["use_lmt"] == use_lmt}
        if not entries:
            continue
        for selection in SELECTION_TEXT:
            cells = {}
            for known, spec in entries.items():
                found = [r for r in evals.get(spec.id, []) if r.ctran.get("selection") == selection]
                r = _pick(found, lambda record, spec=spec: status(spec, record))
                judged = status(spec, r) if r else None
                m = r.metrics if r else {}
                cells[known] = {"model": spec.id, "paper_mAP": spec.paper_map, "mAP": m.get("mAP"),
                                "CF1": m.get("CF1"), "OF1": m.get("OF1"),
                                "unknown_CF1": (m.get("unknown_only") or {}).get("CF1"),
                                "unknown_OF1": (m.get("unknown_only") or {}).get("OF1"),
                                "status": judged, "run_id": r.run_id if r else None}
            out.append({"training": "LMT" if use_lmt else "no LMT", "selection": selection, "known": cells})
    return out


def _cell(c):
    if c is None:
        return "-"
    text = f"{_num(c['mAP'], 2)} / {_num(c['paper_mAP'])}"
    return text + (f" ({c['status']})" if c["status"] in ("smoke", "failed checks", "unverifiable") else "")


def _f1(c):
    if c is None or c["mAP"] is None:
        return "n/a"
    return f"{_num(c['CF1'])}/{_num(c['OF1'])} (unknown only {_num(c['unknown_CF1'])}/{_num(c['unknown_OF1'])})"


def tables(rows):
    """[(title, headers, cells, notes)] as harness.report.render._tables expects; [] without C-Tran entries."""
    if not rows:
        return []
    headers = ["training", "selection", *[f"{k}% known: ours / paper" for k in KNOWN], "CF1/OF1 at 50% known"]
    cells = [[r["training"], SELECTION_TEXT[r["selection"]], *[_cell(r["known"].get(k)) for k in KNOWN],
              _f1(r["known"].get(50))] for r in rows]
    notes = ["mAP as their compute_metrics: per label over the images where it is unknown (labels without an "
             "unknown positive skipped); with none known, macro AP over all labels.",
             "Known labels per image (20/40/60 of 80) drawn as theirs, seeded by the sha1 of the transformed "
             "image tensor (protocol ctran); runs with the image-id draw (ctran-id) are another protocol and "
             "are not shown here.",
             "CF1/OF1: theirs over all labels at 0.5 (known labels included, which inflates them), and over the "
             "unknown labels only.",
             "Selected on test: the authors' validation loader is val2014, so their LR schedule and checkpoint "
             "were chosen on the test set; the held-out row chooses on part of train2014 instead.",
             "'-': the paper reports no such setting; smoke runs never count, nor do runs whose files fail "
             "their checks or cannot be checked (`harness verify RUN` says why)."]
    return [("C-Tran, partial labels known at inference", headers, cells, notes)]
