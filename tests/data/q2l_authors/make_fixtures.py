"""Make the Query2Label training fidelity fixtures by running the authors' code (not run in CI).

    # the randaugment package their get_dataset.py imports, unpacked (not installed)
    pip download randaugment==1.0.2 --no-deps -d /tmp/ra && unzip /tmp/ra/*.whl -d /tmp/ra
    # 1. their code alone under libraries of their time, in a scratch Python 3.9 environment
    python3.9 -m venv /tmp/old && /tmp/old/bin/pip install torch==1.9.1 pillow==8.3.2 "numpy<2"
    PYTHONPATH=/tmp/ra /tmp/old/bin/python tests/data/q2l_authors/make_fixtures.py PATH/TO/query2labels --old
    # 2. their code beside the harness, today's libraries
    PYTHONPATH=.:/tmp/ra python tests/data/q2l_authors/make_fixtures.py PATH/TO/query2labels

PATH is a checkout of SlongLiu/query2labels (read at 55eb050). Their files are imported as they
are, and each piece of the harness is run beside them on the same inputs in this process: the
script asserts bit-equality itself before writing. `--old` runs only their code, under the
libraries of their time (made with torch 1.9.1, Pillow 8.3.2, numpy 1.26.4), and writes the files
named with those versions; the main run then also asserts the harness against them.
Writes beside this script:
  loss.npz   AsymmetricLossOptimized (lib/models/aslloss.py): for each case of `loss_cases()`, its
             logits and float64 targets, and their loss and gradient w.r.t. the logits with and
             without disable_torch_grad_focal_loss (--dtgfl).
  ema.npz    ModelEma (main_mlc.py) on `ema_model()`, for each decay of EMA_DECAYS: the model's state
             before each update (BatchNorm statistics moved by a forward, parameters by a random step,
             num_batches_tracked set to EMA_COUNTS) and their EMA's state after it.
  schedule.json, schedule_torch1.9.json
             their optimizer and OneCycleLR construction (the lines of main_worker, run as they are)
             for each of SCHEDULES, stepped as their train() steps: lr and beta1 before every
             optimizer step and after the last scheduler step (full lists; for a whole 80-epoch run
             sha256 of the float64 values and every 257th value), under today's torch and torch 1.9.1.
  augment_images.npz   the small RGB images the augmentation fixtures start from (`augment_images()`).
  augment_pillow8.3.json (--old, Pillow 8.3.2), augment.json (today's Pillow)
             sha256 (first 16 hex digits) of uint8 outputs of their code, each sample after
             random.seed(s); np.random.seed(s): RandAugment() of the randaugment package 1.0.2 on
             the square images; SLCutoutPIL(n_holes, -1) (--old only: today's Pillow raises, the
             message is kept) and, as "intended", SLCutoutPIL with cut_fact given and the attribute
             its code reads (cutout_factor) set; Pillow's bilinear resize to AUGMENT_SIZE (what
             torchvision's Resize calls); and their train transform up to ToTensor (resize, cutout,
             RandAugment, in get_datasets' order). augment.json also holds their whole train
             transform (get_datasets' lines, today's torchvision, without --cutout, which raises
             there) as sha256 of its float32 output, for ImageNet and --orid_norm normalisation,
             on the inputs whose resize every Pillow computes alike.
main_mlc.py is imported with stand-ins for modules its import needs but these parts never call,
where they are not installed: torch.utils.tensorboard, termcolor, einops, addict, yapf, and
torchvision.models.utils (gone from torchvision; torch.hub's load_state_dict_from_url, which it held).
The randaugment package (1.0.2, on sys.path: pip download randaugment==1.0.2 and unzip the wheel)
names np.int, gone from numpy 1.24: np.int = int is set first, what it was.
"""
import argparse
import hashlib
import importlib.util
import json
import sys
import textwrap
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# name -> the criterion's keyword arguments: main_mlc.py's defaults (the README command's), and
# ASL's defaults with a clip (a shift and clamp of the negatives' probabilities).
LOSS_SETTINGS = {"q2l": dict(gamma_neg=2, gamma_pos=0, clip=0.0, eps=1e-5),
                 "asl_clip": dict(gamma_neg=4, gamma_pos=1, clip=0.05, eps=1e-5)}

EMA_DECAYS = (0.9997, 0.9)  # their default, and one that moves an integer buffer sooner
# num_batches_tracked before each update: the EMA's int64 count moves only once (1 - decay) * count
# passes 1, and float32 rounding shows from 2**24 on.
EMA_COUNTS = (1, 2, 3334, 3335, 100_000, 2**24 + 1, 2**31 + 7)
# (lr, global batch, steps per epoch, epochs): short runs in full, among them the edges (one step in
# all; a warm-up ending on a whole step), and the README's R101-448 run on one and on two GPUs
# (82,783 train2014 images) as sha256.
SCHEDULES = ((1e-4, 64, 7, 3), (1e-4, 64, 5, 2), (1e-4, 64, 1, 1), (2e-4, 16, 10, 1),
             (1e-4, 64, 1293, 80), (1e-4, 128, 646, 80))
FULL_LIST_UP_TO, SUBSAMPLE = 1000, 257  # steps; longer schedules are kept as sha256 and every 257th value
AUGMENT_SIZE, AUGMENT_SEEDS, CUTOUT_SEEDS = 24, 300, 60
ALIKE_IN_EVERY_PILLOW = ("noise", "gradient", "landscape")  # square or wider: Pillow 13 resizes them as before


def augment_images():
    """name -> uint8 (H, W, 3): square ones (noise, smooth, low-contrast), portrait and landscape ones to
    resize, and tiny ones where a cutout centre often falls on an edge."""
    rng = np.random.default_rng(4)
    grid = np.add.outer(np.arange(24), 2 * np.arange(24))
    images = {"noise": rng.integers(0, 256, (24, 24, 3)), "gradient": np.stack([grid * 3, grid * 5, 255 - grid * 2], -1),
              "dim": rng.integers(60, 140, (24, 24, 3)), "portrait": rng.integers(0, 256, (64, 40, 3)),
              "portrait_small": rng.integers(0, 256, (30, 17, 3)), "landscape": rng.integers(0, 256, (30, 50, 3))}
    for h, w in ((1, 1), (2, 3), (3, 2), (5, 4)):
        images[f"tiny_{h}x{w}"] = rng.integers(0, 256, (h, w, 3))
    return {name: (image % 256).astype(np.uint8) for name, image in images.items()}


def short_sha(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def pil_images():
    from PIL import Image

    saved = np.load(HERE / "augment_images.npz") if (HERE / "augment_images.npz").exists() else None
    images = augment_images()
    if saved is None:
        np.savez_compressed(HERE / "augment_images.npz", **images)
    else:
        assert set(saved.files) == set(images) and all(np.array_equal(saved[k], v) for k, v in images.items())
    return {name: Image.fromarray(image) for name, image in images.items()}


def their_augment_classes(checkout):
    if not hasattr(np, "int"):
        np.int = int  # what the randaugment package names (gone from numpy 1.24)
    sys.path.insert(0, str(checkout / "lib"))
    from randaugment import RandAugment
    from utils.cutout import SLCutoutPIL

    return RandAugment, SLCutoutPIL


def seeded(seed, fn, image):
    import random

    random.seed(seed)
    np.random.seed(seed)
    return np.asarray(fn(image.copy()))


def intended_cutout(SLCutoutPIL, n_holes, cut_fact):
    cutout = SLCutoutPIL(n_holes=n_holes, length=-1, cut_fact=cut_fact)
    cutout.cutout_factor = cut_fact  # the attribute its cut_fact path reads but never sets
    return cutout


def applied_operations(RandAugment, randaugment, image):
    """Per seed, the operations RandAugment applied (the draws do not depend on the image): their
    SubPolicy.__call__ repeated with a note of each operation run, checked to give the same image."""
    import random

    sub_policy = sys.modules[RandAugment.__module__].SubPolicy
    original, applied = sub_policy.__call__, []

    def noting(self, img):
        if random.random() < self.p1:
            applied.append(self._operation1_name)
            img = self.operation1(img, self.magnitude1)
        if random.random() < self.p2:
            applied.append(self._operation2_name)
            img = self.operation2(img, self.magnitude2)
        return img

    per_seed = []
    for s in range(AUGMENT_SEEDS):
        plain = seeded(s, randaugment, image)
        sub_policy.__call__ = noting
        try:
            assert np.array_equal(seeded(s, randaugment, image), plain)
        finally:
            sub_policy.__call__ = original
        per_seed.append("+".join(applied))
        applied.clear()
    counts = {name: sum(ops.split("+").count(name) for ops in per_seed) for name in RandAugment.get_trans_list()}
    assert min(counts.values()) >= 3, counts  # every operation ran, several times
    return per_seed


def their_augment(checkout):
    """sha256 of their augmentation outputs under this process's Pillow (cutout: where it draws)."""
    import PIL
    from PIL import Image

    RandAugment, SLCutoutPIL = their_augment_classes(checkout)
    images = pil_images()
    square = [name for name in images if images[name].size == (AUGMENT_SIZE, AUGMENT_SIZE)]
    out = {"pillow": PIL.__version__, "numpy": np.__version__, "size": AUGMENT_SIZE}
    randaugment = RandAugment()
    out["randaugment"] = {name: [short_sha(seeded(s, randaugment, images[name])) for s in range(AUGMENT_SEEDS)]
                          for name in square}
    out["randaugment_applied"] = applied_operations(RandAugment, randaugment, images[square[0]])
    out["resize"] = {name: short_sha(np.asarray(image.resize((AUGMENT_SIZE,) * 2, Image.BILINEAR)))
                     for name, image in images.items()}
    try:
        seeded(0, SLCutoutPIL(n_holes=1, length=-1), images["noise"])
    except ValueError as e:
        out["cutout_error"] = str(e)
        cutouts = {}
    else:
        cutouts = {f"as-run/{n}": SLCutoutPIL(n_holes=n, length=-1) for n in (1, 3)}
    try:  # their cut_fact path as written
        seeded(0, SLCutoutPIL(n_holes=1, length=-1, cut_fact=0.5), images["noise"])
        raise AssertionError("their cut_fact path ran")
    except AttributeError as e:
        assert "cutout_factor" in str(e)
    cutouts.update({f"intended/{n}": intended_cutout(SLCutoutPIL, n, 0.5) for n in (1, 3)})
    out["cutout"] = {key: {name: [short_sha(seeded(s, cutout, image)) for s in range(CUTOUT_SEEDS)]
                           for name, image in images.items()} for key, cutout in cutouts.items()}
    if "as-run/1" in cutouts:  # their train transform up to ToTensor, in get_datasets' order
        def pipeline(image):
            image = image.resize((AUGMENT_SIZE,) * 2, Image.BILINEAR)
            return randaugment(cutouts["as-run/1"](image))
        out["train_uint8"] = {name: [short_sha(seeded(s, pipeline, image)) for s in range(CUTOUT_SEEDS)]
                              for name, image in images.items()}
    return out


def their_train_transform(checkout, orid_norm, cutout=False):
    """Their get_datasets' lines building the train transform, run as they are."""
    sys.path.insert(0, str(checkout / "lib"))
    get_dataset = importlib.import_module("dataset.get_dataset")
    text = (checkout / "lib/dataset/get_dataset.py").read_text()
    start = text.index("def get_datasets(args):\n") + len("def get_datasets(args):\n")
    code = textwrap.dedent(text[start:text.index("    test_data_transform = ", start)])
    args = argparse.Namespace(img_size=AUGMENT_SIZE, orid_norm=orid_norm, cutout=cutout, n_holes=1, length=-1)
    scope = dict(vars(get_dataset), args=args)
    exec(code, scope)
    return scope["train_data_transform"]


def make_augment(checkout):
    from harness.q2l import augment
    from harness.q2l.randaugment import RandAugment

    theirs = their_augment(checkout)
    images = pil_images()
    theirs["train_float32"] = {}
    for norm, orid_norm in (("imagenet", False), ("none", True)):
        transform, ours = their_train_transform(checkout, orid_norm), augment.train_transform(AUGMENT_SIZE, norm, cutout="off")
        theirs["train_float32"][norm] = {}
        for name in ALIKE_IN_EVERY_PILLOW:
            shas = [short_sha(seeded(s, transform, images[name])) for s in range(CUTOUT_SEEDS)]
            assert shas == [short_sha(seeded(s, ours, images[name])) for s in range(CUTOUT_SEEDS)], (norm, name)
            theirs["train_float32"][norm][name] = shas
    assert "cutout_error" in theirs  # today's Pillow refuses their inverted box
    old_theirs = json.loads(next(HERE.glob("augment_pillow*.json")).read_text())
    for result in (theirs, old_theirs):  # the harness against their code under both Pillows
        ra = RandAugment()
        for name, shas in result["randaugment"].items():
            assert shas == [short_sha(seeded(s, ra, images[name])) for s in range(AUGMENT_SEEDS)], name
        for name in ALIKE_IN_EVERY_PILLOW if result is theirs else images:
            assert result["resize"][name] == short_sha(np.asarray(augment.resize_square(images[name], AUGMENT_SIZE)))
        for key, per_image in result["cutout"].items():
            kind, n_holes = key.split("/")
            cut_fact = 0.5 if kind == "intended" else None
            for name, shas in per_image.items():
                assert shas == [short_sha(seeded(s, lambda im: augment.cutout(im, int(n_holes), cut_fact=cut_fact),
                                                 images[name])) for s in range(CUTOUT_SEEDS)], (key, name)
    train = augment.TrainAugment(AUGMENT_SIZE)
    for name, shas in old_theirs["train_uint8"].items():
        assert shas == [short_sha(seeded(s, train, images[name]).transpose(1, 2, 0)) for s in range(CUTOUT_SEEDS)]
    write_json("augment.json", theirs)


def loss_cases():
    """name -> (logits, float64 targets, settings name): random, saturated and extreme logits, rows of all
    positives and all negatives, float32 logits (their head's dtype) and float64 ones."""
    rng = np.random.default_rng(25)
    cases = {}
    for settings in LOSS_SETTINGS:
        targets = (rng.random((8, 80)) < 0.1).astype(np.float64)
        targets[0], targets[1] = 1, 0  # a row of positives, a row of negatives
        logits = rng.normal(0, 3, (8, 80))
        cases[f"{settings}/normal"] = (logits.astype(np.float32), targets, settings)
        cases[f"{settings}/float64"] = (logits, targets, settings)
        extreme = rng.choice([-1e4, -100.0, -30.0, -12.0, -1e-3, 0.0, 1e-3, 12.0, 30.0, 100.0, 1e4], (8, 80))
        cases[f"{settings}/extreme"] = (extreme.astype(np.float32), targets, settings)
        cases[f"{settings}/extreme_float64"] = (extreme, targets, settings)
    return cases


def their_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_main_mlc(checkout):
    """Their main_mlc.py, imported as it is (stand-ins only for modules missing here, see the docstring)."""
    import torch.hub

    def stand_in(name, **attrs):
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
            sys.modules[name].__dict__.update(attrs)

    stand_in("torch.utils.tensorboard", SummaryWriter=None)
    stand_in("termcolor", colored=None)
    stand_in("einops", rearrange=None)
    stand_in("einops.layers.torch", Rearrange=None)
    stand_in("addict", Dict=dict)
    stand_in("yapf.yapflib.yapf_api", FormatCode=None)
    stand_in("torchvision.models.utils", load_state_dict_from_url=torch.hub.load_state_dict_from_url)
    sys.path.insert(0, str(checkout))
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        return importlib.import_module("main_mlc")
    finally:
        sys.argv = argv


def ema_model():
    """A tiny model with every kind of state entry: weights, biases, BatchNorm's float and int64 buffers."""
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 3))


def make_loss(checkout):
    import torch

    from harness.q2l.loss import asymmetric_loss

    aslloss = their_module(checkout / "lib/models/aslloss.py", "their_aslloss")
    out = {}
    for name, (logits, targets, settings) in loss_cases().items():
        out[f"{name}/logits"], out[f"{name}/targets"] = logits, targets
        for dtgfl in (True, False):
            results = []
            for loss_fn in (aslloss.AsymmetricLossOptimized(**LOSS_SETTINGS[settings],
                                                            disable_torch_grad_focal_loss=dtgfl),
                            lambda x, y: asymmetric_loss(x, y, **LOSS_SETTINGS[settings],
                                                         disable_torch_grad_focal_loss=dtgfl)):
                x = torch.tensor(logits, requires_grad=True)
                loss = loss_fn(x, torch.tensor(targets))
                loss.backward()
                results.append((loss.detach().numpy(), x.grad.numpy()))
            (their_loss, their_grad), (loss, grad) = results
            assert their_loss.dtype == np.float64 and their_loss.tobytes() == loss.tobytes(), name
            assert their_grad.tobytes() == grad.tobytes(), name
            out[f"{name}/dtgfl{int(dtgfl)}/loss"], out[f"{name}/dtgfl{int(dtgfl)}/grad"] = their_loss, their_grad
    np.savez_compressed(HERE / "loss.npz", **out)


def their_construction(checkout):
    """Their main_worker's lines building AdamW and OneCycleLR, as text (run with exec)."""
    text = (checkout / "main_mlc.py").read_text()
    start = text.index("    args.lr_mult = args.batch_size / 256")
    optimizer = text[start:text.index("    elif args.optim == 'Adam_twd':", start)]
    scheduler = next(line for line in text.splitlines() if "scheduler = lr_scheduler.OneCycleLR(" in line)
    return textwrap.dedent(optimizer) + textwrap.dedent(scheduler) + "\n"


def run_schedule(build, lr, batch_size, steps, epochs):
    """lr and beta1 before each optimizer step of their train() loop, and after the last scheduler step."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer, scheduler, initial_lr = build(model, lr, batch_size, steps, epochs)
    lrs, betas = [], []
    for step in range(steps * epochs + 1):
        group = optimizer.param_groups[0]
        lrs.append(group["lr"])
        betas.append(group["betas"][0])
        if step == steps * epochs:
            break
        optimizer.zero_grad()
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    return {"lr_per_step": lrs, "beta1_per_step": betas, "lr_before_the_schedule": initial_lr}


def schedule_record(values):
    """Short lists as they are; long ones as sha256 of their float64 bytes (compared here, in one place),
    with their length, every SUBSAMPLE-th value and the last three (for the tests on other machines)."""
    if len(values) <= FULL_LIST_UP_TO + 1:
        return values
    return {"count": len(values), "every": SUBSAMPLE, "values": values[::SUBSAMPLE], "last": values[-3:],
            "sha256_float64": hashlib.sha256(np.array(values, dtype=np.float64).tobytes()).hexdigest()}


def make_schedule(checkout, harness_build=None):
    """Their construction on each of SCHEDULES (and the harness's, asserted equal, when given)."""
    import torch
    from torch.optim import lr_scheduler

    code = their_construction(checkout)

    def theirs(model, lr, batch_size, steps, epochs):
        args = argparse.Namespace(lr=lr, batch_size=batch_size, weight_decay=1e-2, optim="AdamW", epochs=epochs)
        scope = {"args": args, "model": types.SimpleNamespace(module=model), "torch": torch,
                 "lr_scheduler": lr_scheduler, "train_loader": range(steps)}
        exec(code.replace("scheduler = ", "initial_lr = optimizer.param_groups[0]['lr']\nscheduler = "), scope)
        return scope["optimizer"], scope["scheduler"], scope["initial_lr"]

    runs = []
    for lr, batch_size, steps, epochs in SCHEDULES:
        run = run_schedule(theirs, lr, batch_size, steps, epochs)
        if harness_build is not None:
            assert run == run_schedule(harness_build, lr, batch_size, steps, epochs), (lr, batch_size, steps, epochs)
        runs.append({"lr": lr, "batch_size": batch_size, "steps_per_epoch": steps, "epochs": epochs,
                     **{key: schedule_record(value) if isinstance(value, list) else value
                        for key, value in run.items()}})
    return {"torch": torch.__version__, "their_lines": code, "runs": runs}


def harness_schedule(model, lr, batch_size, steps, epochs):
    from harness.q2l.schedule import build_optimizer, build_schedule

    optimizer = build_optimizer(model, lr, batch_size, weight_decay=1e-2)
    initial_lr = optimizer.param_groups[0]["lr"]
    return optimizer, build_schedule(optimizer, lr, steps, epochs), initial_lr


def version_suffix(version):
    return ".".join(version.split("+")[0].split(".")[:2])


def write_json(name, data):
    (HERE / name).write_text(json.dumps(data, indent=1) + "\n")


def make_ema(main_mlc):
    import torch

    from harness.q2l.ema import ModelEma

    def entries(state):
        return {key: value.numpy().copy() for key, value in state.items()}

    out = {}
    for decay in EMA_DECAYS:
        torch.manual_seed(0)
        rng = np.random.default_rng(9)
        model = ema_model()
        out.update({f"{decay}/start/{k}": v for k, v in entries(model.state_dict()).items()})
        theirs, ours, offloaded = main_mlc.ModelEma(model, decay), ModelEma(model, decay), ModelEma(model, decay, "cpu")
        for step, count in enumerate(EMA_COUNTS):
            model.train()
            model(torch.tensor(rng.normal(0, 2, (4, 3, 6, 6)), dtype=torch.float32))
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.tensor(rng.normal(0, 0.1, p.shape), dtype=torch.float32))
                model[1].num_batches_tracked.fill_(count)
            out.update({f"{decay}/{step}/model/{k}": v for k, v in entries(model.state_dict()).items()})
            for ema in (theirs, ours, offloaded):
                ema.update(model)
            their_state = entries(theirs.module.state_dict())
            for ema in (ours, offloaded):
                for key, value in ema.module.state_dict().items():
                    assert value.numpy().tobytes() == their_state[key].tobytes(), (decay, step, key)
            out.update({f"{decay}/{step}/ema/{k}": v for k, v in their_state.items()})
        assert their_state["1.num_batches_tracked"] > 0  # the integer buffer moved
    np.savez_compressed(HERE / "ema.npz", **out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a checkout of SlongLiu/query2labels")
    parser.add_argument("--old", action="store_true", help="only their code, under the libraries of their time")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    if args.old:
        schedule = make_schedule(checkout)
        write_json(f"schedule_torch{version_suffix(schedule['torch'])}.json", schedule)
        augment = their_augment(checkout)
        write_json(f"augment_pillow{version_suffix(augment['pillow'])}.json", augment)
        return
    make_loss(checkout)
    make_ema(import_main_mlc(checkout))
    schedule = make_schedule(checkout, harness_schedule)
    for old in HERE.glob("schedule_torch*.json"):
        assert json.loads(old.read_text())["runs"] == schedule["runs"], old.name
    write_json("schedule.json", schedule)
    make_augment(checkout)


if __name__ == "__main__":
    sys.exit(main())
