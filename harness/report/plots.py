"""The report's plots as PNG bytes: paper vs ours, peak VRAM vs images/s (left out when no run measured
VRAM: `plots` then says why in `missing`), and each training run's curves."""
import io

from harness.report.rows import BUDGET_MIB, NO_RESULT

SMOKE_COLOUR = "#d97706"  # amber, as the HTML's smoke rows: a warning, not "disabled" grey


def plots(data):
    """{name: PNG bytes}: paper vs ours mAP, and peak VRAM vs images/s."""
    import matplotlib  # lazy: plotting loads slowly and only the HTML report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = {}
    done = [r for r in data["models"] if r["mAP"] is not None and r["paper_mAP"] is not None]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for r in done:
        ci = r["ci95"] or [r["mAP"], r["mAP"]]
        # an estimate outside its own interval (tiny sets) gets no negative bar: the interval is drawn as it is
        ax.errorbar(r["paper_mAP"], r["mAP"], yerr=[[max(r["mAP"] - ci[0], 0)], [max(ci[1] - r["mAP"], 0)]], fmt="o",
                    color=SMOKE_COLOUR if r["status"] == "smoke" else "grey" if r["status"] in NO_RESULT else
                    ("tab:green" if r["status"] == "reproduced" else "tab:red"), capsize=3)
        label = r["model"] + (f" ({r['status']})" if r["status"] in NO_RESULT else "")
        ax.annotate(label, (r["paper_mAP"], r["mAP"]), fontsize=7, xytext=(4, -3), textcoords="offset points")
    values = [v for r in done for v in (r["paper_mAP"], r["mAP"])] or [0, 100]
    low, high = min(values) - 1, max(values) + 1
    ax.plot([low, high], [low, high], "k--", lw=0.8, label="ours = paper")
    ax.set(xlabel="paper mAP", ylabel="our mAP",
           title="Paper vs ours\ngreen reproduced, red not, amber smoke, grey failed checks")
    ax.legend(loc="upper left", fontsize=8)
    images["paper_vs_ours"] = _png(fig)

    points = [(r["peak_vram_mib"], r["images_per_s"], r["model"]) for r in data["models"]
              if r["peak_vram_mib"] and r["images_per_s"]]
    for r in data["cost"]:  # memory and speed at the same (fastest) batch size
        if r["vram_at_best"] and r["images_per_s"]:
            points.append((r["vram_at_best"], r["images_per_s"], f"{r['model']} (bench, batch {r['best_batch']})"))
    if not points:  # no GPU measurement (CPU only): no empty plot
        plt.close("all")
        return images
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for vram, ips, name in points:
        ax.scatter(vram, ips)
        ax.annotate(name, (vram, ips), fontsize=7, xytext=(4, -3), textcoords="offset points")
    ax.axvline(BUDGET_MIB, color="k", ls="--", lw=0.8, label="12 GiB")
    ax.set(xlabel="peak VRAM (MiB)", ylabel="images/s", title="Memory vs speed")
    ax.legend(fontsize=8)
    images["vram_vs_speed"] = _png(fig)
    plt.close("all")
    return images


def _png(fig):
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


# panel -> the scalars drawn in it (TrainingCurves' names, harness/records/curves.py)
CURVE_PANELS = {"loss": ("train_loss", "val_loss"), "val mAP": ("val_mAP", "val_mAP_ema"),
                "learning rate": ("learning_rate",)}


def curve_plots(curves):
    """{"<model> training": PNG bytes}: per training run, loss, val mAP and learning rate by epoch (a
    line per grid point where the run trained several)."""
    import matplotlib  # lazy: plotting loads slowly and only the HTML report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator  # lazy: as above

    images = {}
    for entry in curves:
        fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(10.5, 3.2))
        for ax, (panel, names) in zip(axes, CURVE_PANELS.items()):
            for tag, points in sorted(entry["series"].items()):
                point, _, name = tag.rpartition("/")
                if name in names and points:
                    steps, values = zip(*points)
                    ax.plot(steps, values, marker="o", ms=3, label=" ".join(p for p in (point, name) if p))
            ax.set(xlabel="epoch", title=panel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
            if panel == "learning rate" and ax.lines and all(v > 0 for line in ax.lines for v in line.get_ydata()):
                ax.set_yscale("log")
            if ax.lines:
                ax.legend(fontsize=6)
            else:
                ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="grey")
        smoke = "  SMOKE: not a result" if entry["smoke"] else ""
        fig.suptitle(f"{entry['model']} training, run {entry['run_id']}{smoke}", color="#b45309" if smoke else "black")
        images[f"{entry['model']} training"] = _png(fig)
        plt.close(fig)
    return images
