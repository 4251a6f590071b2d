"""`harness export RUN --to mlflow|wandb`: a finished run's record, metrics and training curves into
MLflow or Weights & Biases, each an optional extra (`pip install 'harness[mlflow]'`, `'harness[wandb]'`).

What goes: params = the record's config, eval settings and image set (nested keys dotted); tags = kind, model, smoke and why,
harness version and commit; metrics = the record's numbers (mAP, its CI, the F1 family, wall time,
images/s, peak VRAM), each training curve point by epoch (harness.records.curves); record.json as an
artifact (MLflow) or a saved file (W&B).

Where: MLflow takes a tracking URI (sqlite:///mlflow.db, http://host:5000, file:///path) or a folder,
a local file store. MLflow 3 keeps that store in maintenance and refuses it unless
MLFLOW_ALLOW_FILE_STORE=true: naming a folder asks for it, so it is set for this process (and said).
Default: MLflow's own ($MLFLOW_TRACKING_URI, else its default). W&B runs offline (no account, no
network; `wandb sync` uploads later) into the folder given, default the run folder, unless
WANDB_MODE says otherwise.
"""
import json
import logging
import os
from pathlib import Path

from harness.errors import UserError
from harness.records import read_record
from harness.records.curves import read_curves

logger = logging.getLogger(__name__)

TARGETS = ("mlflow", "wandb")
EXTRAS = {"mlflow": "mlflow (pip install 'harness[mlflow]', or mlflow-skinny)",
          "wandb": "wandb (pip install 'harness[wandb]')"}


def export_run(run_dir, to: str, *, where: str | None = None, experiment: str = "harness") -> str:
    """Export the finished run in `run_dir` to `to` (mlflow | wandb); one line saying where it went."""
    if to not in TARGETS:
        raise UserError(f"--to {to}: choose one of {', '.join(TARGETS)}")
    run_dir = Path(run_dir)
    if not (run_dir / "record.json").is_file():
        raise UserError(f"{run_dir} holds no record.json: pass a finished run folder (runs/<model>/<run id>)")
    record = read_record(run_dir)
    exported = {"run_dir": run_dir, "record": record, "curves": read_curves(run_dir),
                "name": f"{record.model_id} {record.run_id}", "tags": _tags(record),
                "params": flat({"config": record.config, "eval": record.eval,
                                "dataset": {k: record.dataset.get(k) for k in ("image_set", "n_images", "root")}}),
                "metrics": summary(record)}
    return (_to_mlflow if to == "mlflow" else _to_wandb)(exported, where, experiment)


def flat(values: dict, prefix: str = "") -> dict:
    """Nested dicts as dotted keys; lists and None as JSON text, so every value is a scalar."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, name + "."))
        else:
            out[name] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    return out


def summary(record) -> dict:
    """The record's numbers: every numeric metric, the mAP CI's two ends, wall time, images/s, peak VRAM."""
    numbers = {k: v for k, v in record.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    ci = record.metrics.get("mAP_ci95")
    if ci:
        numbers["mAP_ci95_low"], numbers["mAP_ci95_high"] = ci
    for section, key in (("timings", "wall_s"), ("timings", "images_per_s"), ("measurement", "peak_vram_mib")):
        value = getattr(record, section).get(key)
        if value is not None:
            numbers[key] = value
    return {k: float(v) for k, v in numbers.items() if v is not None}


def _tags(record):
    env = record.environment
    return {"kind": record.kind, "model": record.model_id, "run_id": record.run_id or "",
            "smoke": str(record.smoke).lower(), "smoke_reasons": "; ".join(record.smoke_reasons),
            "harness_version": env.get("harness") or "", "git_commit": env.get("git_commit") or ""}


def _import(name):
    try:
        if name == "mlflow":
            import mlflow  # lazy: an optional extra

            return mlflow
        import wandb  # lazy: an optional extra

        return wandb
    except ImportError:
        raise UserError(f"harness export --to {name} needs {EXTRAS[name]}; it is not installed") from None


def _to_mlflow(exported, where, experiment):
    mlflow = _import("mlflow")
    if where and "://" not in where and not where.startswith("sqlite:"):  # a folder: a local file store
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        logger.info(f"MLflow file store in {where} (MLFLOW_ALLOW_FILE_STORE=true set for this export)")
        where = Path(where).resolve().as_uri()
    if where:
        mlflow.set_tracking_uri(where)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=exported["name"], tags=exported["tags"]) as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in exported["params"].items()})
        mlflow.log_metrics(exported["metrics"])
        for tag, points in exported["curves"].items():
            for step, value in points:
                mlflow.log_metric(tag, value, step=step)
        mlflow.log_artifact(str(exported["run_dir"] / "record.json"))
    return f"MLflow run {run.info.run_id} ({exported['name']}) in experiment {experiment} at {mlflow.get_tracking_uri()}"


def _to_wandb(exported, where, experiment):
    wandb = _import("wandb")
    mode = os.environ.get("WANDB_MODE", "offline")
    folder = Path(where or exported["run_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=experiment, name=exported["name"], config=exported["params"], mode=mode,
                     dir=str(folder), tags=[exported["tags"]["kind"], exported["tags"]["model"]]
                     + (["smoke"] if exported["record"].smoke else []), settings=wandb.Settings(silent=True))
    steps = sorted({step for points in exported["curves"].values() for step, _ in points})
    for step in steps:  # one log call per epoch, every curve's value at it
        run.log({tag: value for tag, points in exported["curves"].items() for s, value in points if s == step},
                step=step)
    run.summary.update(exported["metrics"])
    run.save(str(exported["run_dir"] / "record.json"), base_path=str(exported["run_dir"]), policy="now")
    run_folder = run.dir
    run.finish()
    wandb.teardown()  # waits for wandb's service to write the offline run out: the command is done after it
    return f"W&B run {exported['name']} ({mode}) in {Path(run_folder).parent}" + (
        f"; `wandb sync {Path(run_folder).parent}` uploads it" if mode == "offline" else "")
