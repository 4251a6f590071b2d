"""Everything a training needs before its run folder exists, checked in that order: the world and the
batch, autocast, the data, the memory plan (flags or --vram-budget), the model with its initial weights
(seeded) and their pretrained backbone, the datasets with their transforms. Bad input stops here, in one
line, before any folder is created.
"""
import random
from dataclasses import dataclass

import numpy as np
import torch

from harness.checkpoints import sha256_of
from harness.distributed import World, pick_device
from harness.download import fetch
from harness.download.weights import lock_verified
from harness.errors import UserError
from harness.manifest import get_spec
from harness.q2l import augment, backbones, data
from harness.q2l.files import pretrained_backbone
from harness.q2l.memory import MemoryPlan
from harness.q2l.micro_batches import BATCH_STATISTICS, check_micro_batch
from harness.q2l.plan import plan_for_budget
from harness.records import check_runs_root

RANK_SEED_STRIDE = 7919


@dataclass
class Session:
    """One process's view of the run: the config, where it runs, the data, the memory plan, the folder."""
    config: object  # Q2LTrainConfig
    spec: object
    world: World
    device: str
    data: data.TrainingData
    train_set: data.LabelledImages
    select_set: data.LabelledImages
    plan: MemoryPlan
    plan_trials: list  # the budget planner's measurements (empty without --vram-budget)
    run_dir: object = None


def amp_dtype(config, device):
    """The autocast dtype: their fp16 with --amp on a GPU; on CPU nothing unless bf16 is asked."""
    asked = config.amp
    if asked == "auto":
        return torch.float16 if config.recipe["amp"] and torch.device(device).type == "cuda" else None
    if asked == "fp16" and torch.device(device).type != "cuda":
        raise UserError("--amp fp16 needs a GPU (CPU autocast is bf16); pass --amp bf16 or --amp off")
    return {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[asked]


def check_world(config, world):
    if config.batch_size % world.size:
        raise UserError(f"--batch-size {config.batch_size} does not split evenly over {world.size} processes "
                        f"(theirs asserts the same); pass a multiple of {world.size}")
    check_micro_batch(config.recipe["backbone"], config.micro_batch, config.batch_size // world.size)
    if config.seed + RANK_SEED_STRIDE * (world.size - 1) >= 2**32:  # numpy's seed of the last rank's stream
        raise UserError(f"--seed {config.seed} is too large for {world.size} processes: each seeds numpy with seed + "
                        f"{RANK_SEED_STRIDE} x rank, below 2**32; pass a smaller --seed")


def seed_training_stream(seed, rank):
    value = seed + RANK_SEED_STRIDE * rank
    torch.manual_seed(value)
    random.seed(value)
    np.random.seed(value)


def memory_plan(config, world, device):
    """The flags' plan, or with --vram-budget the first plan whose measured peak fits (before any folder)."""
    if config.vram_budget is None:
        return MemoryPlan(config.activation_checkpointing, config.offload_ema, config.offload_optimizer,
                          config.micro_batch), []
    size = backbones.sizes(config.recipe, config.smoke)["img_size"]

    def make_model():
        return backbones.frozen_model(config.recipe, config.smoke)

    return plan_for_budget(config.vram_budget, make_model, config.recipe["backbone"] not in BATCH_STATISTICS,
                           config.batch_size // world.size, size, config.recipe["num_class"], device,
                           amp=amp_dtype(config, device) is not None)


def prepare(config):
    """Everything that can refuse bad input, before any folder exists: (Session, model, backbone info)."""
    spec = get_spec(config.model_id, config.manifest)
    if spec.family != "q2l":
        raise UserError(f"{spec.id} is not a Query2Label model; `harness q2l train` trains q2l-* models")
    device = pick_device(config.device)
    world = World.from_env(device)
    return world.every_rank(lambda: _prepared(config, spec, world, device))  # a refusal stops every rank


def _prepared(config, spec, world, device):
    check_world(config, world)
    check_runs_root(config.runs_root)
    amp_dtype(config, device)
    training_data = data.load_training_data(config, spec)
    plan, trials = memory_plan(config, world, device)
    pretrained = read_backbone_file(config, spec)  # a file of another model: refused before any model
    torch.manual_seed(config.seed)  # the initial weights
    model = backbones.build_model(config.recipe, config.smoke)
    info = initialise_backbone(model, config, pretrained)
    info["frozen"] = backbones.freeze(model)
    size = backbones.sizes(config.recipe, config.smoke)["img_size"]
    train_set = data.LabelledImages(training_data.root, training_data.train, training_data.train_labels,
                                    train_transform(config, size), training_data.train_rows)
    split, labels = training_data.select
    select_set = data.LabelledImages(training_data.root, split, labels,
                                     data.eval_transform(size, config.recipe["orid_norm"]), training_data.select_rows)
    session = Session(config, spec, world, device, training_data, train_set, select_set, plan, trials)
    return session, model, info


def read_backbone_file(config, spec):
    """Their pretrained backbone's file (fetched, verified), or a given one, with its weights checked
    against the backbone's names and shapes: (path, weights, manifest entry or None), or None when the
    backbone starts from random weights."""
    backbone = config.recipe["backbone"]
    if config.smoke or config.backbone_weights == "random":
        return None
    if config.backbone_weights != "pretrained":
        path, entry, source = config.backbone_weights, None, "a pretrained file of this backbone"
    elif not config.recipe["pretrained"] and backbone != "resnet101":  # their R101 is always pretrained
        return None
    else:
        entry = pretrained_backbone(backbone, spec.manifest_path)
        path = fetch(entry.spec, "checkpoint", weights_dir=config.weights_dir, lock=False)
        source = f"{entry.spec.files['checkpoint'].filename} ({entry.description})"
    expected = backbones.expected_weights(backbone, config.recipe["img_size"])
    return path, backbones.read_pretrained(path, backbone, expected, source), entry


def initialise_backbone(model, config, pretrained):
    """Load what read_backbone_file read (a release's sha256 locked once it has loaded), or say why the
    backbone's weights are random."""
    if pretrained is None:
        if config.smoke or config.backbone_weights == "random":
            return {"source": "random (seeded)", "smoke": config.smoke}
        return {"source": "random: the authors' recipe has no --pretrained"}
    path, state, entry = pretrained
    loaded = backbones.load_pretrained(model, config.recipe["backbone"], path, None, state=state)
    if entry is None:
        return {"source": str(path), "sha256": sha256_of(path), "verified": False, **loaded}
    lock_verified(entry.spec, "checkpoint", path)
    return {"source": entry.id, "description": entry.description, "path": str(path), **loaded}


def train_transform(config, size):
    """Their train transform with each image's draws seeded from (seed, epoch, row), or the test transform."""
    norm = config.recipe["orid_norm"]
    if config.augment == "none":
        return data.eval_transform(size, norm)
    r = config.recipe
    if r["cutout"] and r["length"] != -1:
        raise UserError(f"the authors' recipe has --length {r['length']}: only their -1 (the cutout their runs "
                        f"drew) is rebuilt here")
    steps = augment.train_transform(size, "none" if norm else "imagenet", cutout="as-run" if r["cutout"] else "off",
                                    n_holes=r["n_holes"])

    def seeded(image, row, epoch):
        with augment.seeded_sample_rng(config.seed, epoch, row):
            return steps(image)
    return seeded
