"""One-line notes from a run record on how its run stands to the authors' code: the labels it was
scored against, deviations from their settings, the F1 definitions, the batch-norm kernel.
The report prints them as footnotes of the model's row."""


def _number(value):
    return "n/a" if value is None else f"{value:.2f}"


def record_notes(record):
    if record is None:
        return []
    notes = []
    check = record.labels.get("check")
    if check:
        text = check["message"]
        if "json_labels_mAP" in record.labels:
            text += f" (mAP {_number(record.metrics.get('mAP'))} with the authors' labels, " \
                    f"{_number(record.labels['json_labels_mAP'])} with the json labels)"
        notes.append(text)
    ev = record.eval
    notes += [f"deviation: {d}" for d in ev.get("deviations") or []]
    if ev.get("batch_norm"):
        notes.append(f"TResNet batch norm: {ev['batch_norm']}")
    asl = record.metrics.get("f1_asl_validate")
    if asl:
        notes.append(f"ASL validate.py's own F1 family (threshold {asl['threshold']:g}, CF1 = mean of per-class F1): "
                     f"CP {_number(asl['CP'])}, CR {_number(asl['CR'])}, CF1 {_number(asl['CF1'])}, "
                     f"OP {_number(asl['OP'])}, OR {_number(asl['OR'])}, OF1 {_number(asl['OF1'])}; the table's "
                     f"CF1 / OF1 are ML-GCN's, as the paper's table")
    return notes
