"""The whole MLSPL job: prepare the authors' label files, get features, train each (loss, mode)
on the paper's grid (`harness reproduce` writes the report after). Complete runs are skipped;
failures are listed."""
import logging
from pathlib import Path

from harness.distributed import pick_device
from harness.errors import UserError, run_each
from harness.mlspl.config import FeatureConfig, TrainConfig
from harness.mlspl.features import extract_features, feature_paths, fetch_features
from harness.mlspl.prepare import prepare
from harness.mlspl.run import model_id, train_and_evaluate
from harness.records import Reproduction, complete_run

logger = logging.getLogger(__name__)

DEFAULT = (("ROLE", "linear"), ("ROLE", "fine-tuned"))
EVERY = tuple((loss, mode) for loss in ("AN", "AN-LS", "WAN", "EPR", "ROLE") for mode in ("linear", "fine-tuned")) \
    + (("AN-LS", "linear-init"), ("ROLE", "linear-init"))  # the authors fixed linear-init's first phase only for these


def _features(data_dir, coco_root, features_dir, device):
    """The authors' features when they can be had, else our own extraction (said aloud)."""
    try:
        feature_paths(features_dir)
        return features_dir
    except UserError:
        pass
    try:
        fetch_features(features_dir)
        return features_dir
    except UserError as e:
        logger.info(f"the authors' features could not be fetched ({e}); extracting our own instead")

    return extract_features(data_dir, coco_root, features_dir, FeatureConfig(device=device))


def every_model_id():
    return [model_id(loss, mode) for loss, mode in EVERY]


def reproduce_mlspl(coco_root, *, models=None, runs_root="runs", device=None, force=False, data_dir="data/mlspl",
                    manifest=None):
    """models: model ids (every_model_id() for all of them); None: ROLE linear and fine-tuned. Its
    Reproduction (the command then writes the report)."""
    jobs = DEFAULT
    if models:
        by_id = {model_id(loss, mode): (loss, mode) for loss, mode in EVERY}
        unknown = [m for m in models if m not in by_id]
        if unknown:
            raise UserError(f"cannot reproduce {', '.join(unknown)}; choose among {', '.join(by_id)}")
        jobs = [by_id[m] for m in models]
    device = pick_device(device)
    prepare(coco_root, data_dir)
    features_dir = Path(data_dir) / "features"
    if any(mode != "fine-tuned" for _, mode in jobs):
        features_dir = _features(data_dir, coco_root, features_dir, device)

    def job(loss, mode):
        mid = model_id(loss, mode)
        if not force and complete_run(runs_root, mid, kind="train"):
            logger.info(f"{mid}: complete run exists; skipped (use --force to run again)")
            return
        finished = train_and_evaluate(TrainConfig(loss, mode, data_dir=data_dir, features_dir=features_dir,
                                                  coco_root=coco_root, runs_root=runs_root, device=device,
                                                  manifest=manifest))
        if finished is not None:  # under torchrun, rank 0 writes and says it
            logger.info(f"{mid}: done -> {finished.run_dir}")

    ids = [model_id(loss, mode) for loss, mode in jobs]
    return Reproduction(ids, run_each([(mid, lambda pair=pair: job(*pair)) for mid, pair in zip(ids, jobs)]), True)
