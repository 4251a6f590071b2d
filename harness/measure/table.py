"""One row of the cost table from a bench record (plain dicts: no torch, for `harness report`)."""


def _result_at(bench, batch_size):
    for row in bench.get("results", []):
        if row["batch_size"] == batch_size:
            return row
    return None


def _vram_at(bench, batch_size):
    """Peak VRAM (MiB) at this batch size; 'OOM'; None when not run or not measurable (CPU)."""
    row = _result_at(bench, batch_size)
    if row is None:
        return None
    if row["oom"]:
        return "OOM"
    return None if row.get("peak_vram_mib") is None else round(row["peak_vram_mib"])


def _fits(fits):
    if fits.get("inference_max_batch") is None and fits.get("train_max_batch") is None:
        return "; ".join(sorted(set(fits["reasons"].values()))) or None
    return f"{fits['inference_max_batch']}/{fits['train_max_batch']} in {fits['budget_mib'] / 1024:g} GiB"


def cost_row(record):
    """Model, resolution, params, GFLOPs, peak VRAM at batch 1 and 16, images/s (and host RSS,
    J/image) at the largest batch measured, the largest batch within the VRAM budget."""
    bench = record["bench"]
    done = [r for r in bench["results"] if not r["oom"] and r["images_per_s"] is not None]
    best = max(done, key=lambda r: r["batch_size"]) if done else None  # the largest batch measured
    fits = bench["fits"]
    return {
        "model": record["model"]["id"],
        "resolution": bench["resolution"],
        "params (M)": round(bench["params"] / 1e6, 1),
        "GFLOPs": None if bench["gflops"] is None else round(bench["gflops"], 1),
        "device": bench["device"].get("name") or bench["device"]["type"],
        "options": ", ".join(k if v is True else f"{k}={v}" for k, v in bench["options"].items() if v) or "fp32",
        "peak VRAM b1 (MiB)": _vram_at(bench, 1),
        "peak VRAM b16 (MiB)": _vram_at(bench, 16),
        "images/s": None if best is None else round(best["images_per_s"], 1),
        "at batch": None if best is None else best["batch_size"],
        "peak RSS (MiB)": None if best is None or best["peak_rss_mib"] is None else round(best["peak_rss_mib"]),
        "J/image": None if best is None or best["energy_j_per_image"] is None else round(best["energy_j_per_image"], 3),
        "fits (max batch infer/train)": _fits(fits),
    }
