"""The "Query2Label trained here" table: one row per model and selection protocol, from train records only.

Each row: the latest complete non-smoke training record (else the latest smoke one, marked). Ours
regular / EMA are the best mAP each model reached on the selection images over the epochs; "selected" is
val2014 mAP of the model their rule kept (the higher of the two, at its epoch). Selection `test` is the
authors' protocol (the epoch chosen on val2014, the test set), flagged as such.
"""
SELECTION_TEXT = {"test": "selected on test (authors' protocol)", "held-out": "selected on held-out train2014"}


def _num(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


def trained_rows(records, specs):
    """[row dict] for the q2l train records: {model id: [Record]}."""
    rows = []
    for model_id, found in records.items():
        for selection in SELECTION_TEXT:
            mine = [r for r in found if r.train.get("selection") == selection]
            done = [r for r in mine if not r.smoke]
            r = max(done or mine, key=lambda x: (x.finished_at or "", x.run_id or ""), default=None)
            if r is None:
                continue
            t = r.train
            rows.append({"model": model_id, "paper_mAP": specs[model_id].paper_map, "selection": selection,
                         "regular_mAP": t.get("best_regular_mAP"), "ema_mAP": t.get("best_ema_mAP"),
                         "selected_mAP": r.metrics.get("mAP"), "selected_model": t.get("best_model"),
                         "best_epoch": t.get("best_epoch"), "epochs_run": t.get("epochs_run"),
                         "stopped": t.get("stopped"), "gpu_hours": t.get("gpu_hours"),
                         "peak_vram_mib": r.measurement.get("peak_vram_mib"),
                         "techniques": t.get("memory_techniques") or [], "deviations": t.get("deviations") or [],
                         "world_size": t.get("world_size"), "smoke": r.smoke, "run_id": r.run_id})
    return rows


def tables(rows):
    """[(title, headers, cells, notes)] as harness.report.render._tables expects; [] without rows."""
    if not rows:
        return []
    headers = ["model", "paper mAP", "ours regular / EMA", "selected", "epoch", "early stop", "GPU hours",
               "peak VRAM (MiB)", "memory techniques", "selection protocol"]
    cells = [[r["model"], _num(r["paper_mAP"], 1), f"{_num(r['regular_mAP'])} / {_num(r['ema_mAP'])}",
              f"{_num(r['selected_mAP'])} ({r['selected_model']})" + (" (smoke)" if r["smoke"] else ""),
              f"{r['best_epoch']} of {r['epochs_run']}", "yes" if (r["stopped"] or "").startswith("early") else "no",
              _num(r["gpu_hours"], 1), _num(r["peak_vram_mib"], 0), ", ".join(r["techniques"]) or "none",
              SELECTION_TEXT[r["selection"]]] for r in rows]
    notes = ["Ours regular / EMA: the best val mAP of the trained model and of its EMA over the epochs, on the "
             "selection images; selected: val2014 mAP of the model their rule kept (the higher of the two).",
             "Selected on test: their validation loader is val2014, so the best epoch and the early stop were "
             "chosen on the test set; the held-out row chooses on part of train2014 and scores val2014 once.",
             "Epochs numbered from 0, as their logs print them; early stop: their rule (8 epochs past both bests "
             "while the EMA mAP is below its best).",
             "Memory techniques keep the maths (checkpointing and offloads bit for bit; micro-batches to float "
             "summation order); GPU hours: wall time x processes; smoke runs never count."]
    dev = [f"{r['model']} ({r['run_id']}): " + "; ".join(r["deviations"]) for r in rows if r["deviations"]]
    notes += [f"Deviations from the authors' recipe: {d}." for d in dev]
    return [("Query2Label trained here", headers, cells, notes)]
