"""A C-Tran run record: what it is built from (the checkpoint read, one setting's scored pass, the
training before it) and the one function that builds it."""
from dataclasses import dataclass
from pathlib import Path

from harness.ctran.config import PAPER, PAPER_ARCH, SELECTIONS, CtranTrainConfig
from harness.data.smoke import is_smoke_root
from harness.records import Record, config_section, environment, model_section, utc_now

DRAW_NOTES = {"ctran": "random.seed(sha1(np.array(transformed image)).hexdigest()), theirs",
              "ctran-id": "Random('coco-image:<id>'): another draw than theirs"}


def smoke_reasons(coco_root, arch, scale, crop, epochs=None, limit=None, backbone=None):
    reasons = []
    if is_smoke_root(coco_root):
        reasons.append("smoke subset")
    if arch.get("blocks") != PAPER_ARCH["blocks"] or arch.get("block") != PAPER_ARCH["block"] \
            or arch.get("layers") != PAPER_ARCH["layers"]:
        reasons.append("not the paper's ResNet-101 C-Tran (tiny backbone setting)")
    if (scale, crop) != (PAPER["scale"], PAPER["crop"]):
        reasons.append(f"images {scale}/{crop}, not 640/576")
    if epochs is not None and epochs != PAPER["epochs"]:
        reasons.append(f"{epochs} epochs, not 100")
    if limit:
        reasons.append(f"--limit {limit}")
    if backbone == "random":
        reasons.append("random backbone weights")
    return reasons


def training_reasons(config):
    """Why a training (CtranTrainConfig) is a smoke run; its checkpoints carry them."""
    return smoke_reasons(config.coco_root, config.arch, config.scale, config.crop, config.epochs, config.limit,
                         config.backbone)


@dataclass(frozen=True)
class Checkpoint:
    """The weights file as read: its architecture and our metadata ({} for the authors' file)."""
    path: str
    sha256: str
    arch: dict
    meta: dict

    @property
    def scale(self):
        return self.meta.get("scale", PAPER["scale"])

    @property
    def crop(self):
        return self.meta.get("crop", PAPER["crop"])


@dataclass(frozen=True)
class Trained:
    """What a training hands to its final test pass: its config, folder, settings and state."""
    config: CtranTrainConfig
    run_dir: Path
    settings: dict  # settings.json: the config's run fields, n_train, n_val, processes
    state: dict  # epoch, best_mAP, best_epoch, history, backbone, started_at, wall_s
    test_rows: object  # the val2014 rows the test pass scores


@dataclass(frozen=True)
class Scored:
    """One known-label setting's pass over val2014."""
    spec: object  # the manifest entry of this setting
    percent: int
    known: int
    run_dir: Path
    n_images: int
    fingerprint: dict
    loss: float
    metrics: dict
    measured: dict
    wall_s: float
    digests: dict  # sha256 of each saved array (records.save_arrays)


def record_reasons(config, checkpoint, trained=None):
    """Why a scoring is a smoke run: the training's reasons, the data's and the checkpoint's, once each."""
    reasons = [*(training_reasons(trained.config) if trained else []),
               *smoke_reasons(Path(config.coco_root), checkpoint.arch, checkpoint.scale, checkpoint.crop,
                              limit=config.limit), *checkpoint.meta.get("smoke_reasons", [])]
    return list(dict.fromkeys(reasons))


def build_record(config, checkpoint, scored, trained=None):
    """The Record of one setting (CtranEvalConfig, Checkpoint, Scored); with `trained`, a training's record."""
    root = Path(config.coco_root)
    selection = checkpoint.meta.get("selection") or (trained.config.selection if trained else None)
    return Record(
        kind="train" if trained else "eval", run_id=scored.run_dir.name, model=model_section(scored.spec),
        checkpoint={"path": checkpoint.path, "sha256": checkpoint.sha256, "pinned": False, "random_weights": False,
                    "arch": checkpoint.arch, "epoch": checkpoint.meta.get("epoch")},
        config=config_section(trained.config if trained else config),
        dataset={"name": "coco2014-val", "root": str(root.resolve()), "image_set": "annotated",
                 "n_images": scored.n_images, "fingerprint": scored.fingerprint,  # of the whole annotated split
                 "smoke_subset": is_smoke_root(root)},
        eval={"protocol": config.draw, "known_percent": scored.percent, "known_labels": scored.known,
              "resolution": checkpoint.crop, "scale": checkpoint.scale, "resize": "squish then centre crop",
              "normalize": "imagenet", "batch_size": config.batch_size, "dtype": "float32", "amp": False,
              "device": config.device, "limit": config.limit, "draw": DRAW_NOTES[config.draw]},
        ctran={"selection": selection, "selection_note": SELECTIONS.get(selection), "unknown_loss": scored.loss},
        metrics=scored.metrics,
        timings={"wall_s": scored.wall_s, "images_per_s": scored.measured.get("images_per_s")},
        measurement=scored.measured, environment=environment(),
        started_at=trained.state["started_at"] if trained else utc_now(), finished_at=utc_now(),
        smoke_reasons=record_reasons(config, checkpoint, trained),
        files={"scores": "scores.npy", "labels": "labels.npy", "image_ids": "image_ids.npy", "masks": "masks.npy"},
        digests=scored.digests,
        train=_train_section(trained, checkpoint) if trained else {},
        extra={"train_wall_s": trained.state["wall_s"]} if trained else {})


def _train_section(trained, checkpoint):
    """record["train"]: the run's settings (model id and architecture spelled out) and how it trained."""
    c, s, state = trained.config, trained.settings, trained.state
    settings = {"model_id": c.model_id, **{k: s[k] for k in ("coco_root", "use_lmt", "selection", "epochs",
                                                             "batch_size", "lr", "seed", "scale", "crop")},
                "arch": c.arch, **{k: s[k] for k in ("backbone", "holdout", "limit", "n_train", "n_val", "processes")}}
    return {**settings, "optimizer": "Adam, no weight decay",
            "scheduler": "ReduceLROnPlateau(min, factor 0.1, patience 5) on the validation unknown-label loss",
            "loss": "BCE with logits, summed over unknown labels", "selection_note": SELECTIONS[c.selection],
            "best_epoch": state["best_epoch"], "best_val_mAP": state["best_mAP"], "history": state["history"],
            "backbone_weights": state["backbone"],
            "mask_seeding": "Random('ctran-train:{seed}:{epoch}:{row}') per image; theirs reseeds from the OS per "
                            "image (not reproducible)",
            "checkpoint": {"path": checkpoint.path, "sha256": checkpoint.sha256}}
