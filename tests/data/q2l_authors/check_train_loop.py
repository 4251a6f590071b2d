"""`harness q2l train` against the authors' own train() loop, bit for bit (not run in CI: needs their code).

    python tests/data/q2l_authors/check_train_loop.py PATH/TO/query2labels [--write]

PATH is a checkout of SlongLiu/query2labels (checked at 55eb050), with termcolor, addict, yapf, einops and
randaugment importable (e.g. `pip install --target DIR ...` and DIR on PYTHONPATH). Both sides run in this
process, one after the other, under PORTABLE_NUMERICS (set before torch loads: the script re-runs itself):

  harness  fit() of a --smoke config of q2l-r101-448 (a one-block-per-stage ResNet of their R101 family,
           FrozenBatchNorm, conv1 + layer1 frozen, hidden 64 with their --keep_input_proj, 64 px), seed 0,
           on a synthetic COCO (harness.data.smoke.make_smoke), EPOCHS epochs, batch 8.
  theirs   their Qeruy2Label built from their own classes (their BackboneBase around the same torchvision
           ResNet with their FrozenBatchNorm2d, their PositionEmbeddingSine, their build_transformer, their
           GroupWiseLinear) and loaded with the harness's initial weights; their ModelEma, their
           AsymmetricLossOptimized, AdamW and OneCycleLR as their main_worker() makes them; their CoCoDataset
           over the same files; the sampler and loaders as theirs; their main_worker() epoch loop, transcribed
           (set_epoch, EMA re-created at ema_epoch, train(), validate() of both models), calling their train()
           and validate() functions themselves.

Patches to their code, all to run on CPU in one process (listed and checked by `patched_main_mlc`):
  1. `.cuda(non_blocking=True)` removed from images and targets (train() and validate()): CPU tensors.
  2. `torch.cuda.amp.GradScaler` / `autocast` left as they are: with --amp off they do nothing on CPU.
  3. main() is not run: no NCCL init, no cudnn.benchmark. A one-process gloo group stands in for their
     DDP world (train() and validate() ask dist for the world size and rank), and their model is wrapped
     in DistributedDataParallel(broadcast_buffers=False) without device_ids (CPU).
  4. `torch.utils.tensorboard` is replaced by an empty module before their import (tensorboard is not
     installed; train() never writes to it).
  5. `torchvision.models.utils` (gone from today's torchvision) is given back as an alias holding
     torch.hub's load_state_dict_from_url, for their models/resnet.py to import (never called here).
Both sides use the same deterministic transform (Resize, ToTensor, Normalize: their test transform) in
place of cutout + RandAugment, whose draws the harness makes per image from (seed, epoch, row) rather
than per loader worker (tested on their own in the fidelity fixtures). Their code is unseeded: their
global torch, Python and numpy states are set to the harness's (seed 0, rank 0) right before the loop.

Asserts, every epoch: their train loss, val loss, regular and EMA mAP equal the harness's history; at the
end: model, EMA, AdamW state, lr and beta1 bit for bit. With --write, also writes train_loop.json (the
per-epoch figures, the numerics and versions, the images' sha256) and train_loop.npz (SAMPLED: a few of
their trained tensors, model and EMA) for tests/q2l/test_q2l_authors_loop.py. That test cannot ask for
bits (a float32 conv's or matmul's bits move with the CPU model, its vector width and the thread count):
it compares within a bound measured by measure_drift.py.
"""
import argparse
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
PORTABLE_NUMERICS = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                     "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SEED, EPOCHS, BATCH, N_VAL, N_TRAIN = 0, 2, 8, 16, 32
PATCHES = [(".cuda(non_blocking=True)", "", 4)]  # (their text, replacement, how often it must occur)
# Tensors kept for the portable test, (key, slice): the head, the queries, the projection, a transformer
# feed-forward and norm, a backbone convolution (sampled), of the model and of its EMA. Not the attention
# in_proj_bias: its key part has no gradient in exact arithmetic, so AdamW turns rounding noise into +-lr
# steps whose signs follow the summation order.
SAMPLED = [("fc.W", (slice(None),)), ("fc.b", (slice(None),)), ("query_embed.weight", (slice(None),)),
           ("input_proj.weight", (slice(None), slice(None, None, 64))), ("input_proj.bias", (slice(None),)),
           ("transformer.encoder.layers.0.linear1.weight", (slice(None), slice(None, None, 4))),
           ("transformer.decoder.norm.weight", (slice(None),)),
           ("backbone.0.body.layer4.0.conv3.weight", (slice(None, None, 64), slice(None, None, 16)))]


def state_sha256(state):
    """One sha256 over a state dict: every key and tensor's dtype, shape and bytes, in order."""
    import numpy as np

    h = hashlib.sha256()
    for k, v in state.items():
        a = v.detach().cpu().contiguous()
        h.update(f"{k}:{a.dtype}:{tuple(a.shape)}".encode())
        h.update(np.ascontiguousarray(a.numpy()).tobytes())
    return h.hexdigest()


def sampled(model_state, ema_state, initial):
    """{"model/<key>", "ema/<key>", "initial/<key>": float32 numpy arrays} of the SAMPLED tensors."""
    out = {}
    for part, state in (("model", model_state), ("ema", ema_state), ("initial", initial)):
        for key, index in SAMPLED:
            out[f"{part}/{key}"] = state[key].detach().cpu()[index].numpy().copy()
    return out


def make_data(work):
    from harness.data.smoke import make_smoke

    return make_smoke(Path(work) / "coco", n_val=N_VAL, n_train=N_TRAIN, seed=SEED)


def images_sha256(coco_root):
    """sha256 of every synthetic image as decoded (RGB bytes, by file name): the inputs both sides read."""
    from harness.data.dataset import load_rgb

    h = hashlib.sha256()
    for path in sorted(Path(coco_root).glob("*2014/*.jpg")):
        h.update(path.name.encode())
        h.update(load_rgb(path).tobytes())
    return h.hexdigest()


def harness_config(coco_root, runs_root, lr_scale=1.0, ema_decay=None):
    """The harness side: a --smoke run of q2l-r101-448 with the deterministic transform, on CPU (lr_scale
    and ema_decay change it: measure_drift.py's real changes)."""
    from harness.manifest import get_spec
    from harness.q2l.config import Q2LTrainConfig
    from harness.q2l.recipe import Recipe, load_recipe

    recipe = load_recipe(get_spec("q2l-r101-448"), fetch_files=False)
    if ema_decay is not None:
        recipe = Recipe({**recipe.values, "ema_decay": ema_decay}, recipe.sources)
    return Q2LTrainConfig(model_id="q2l-r101-448", coco_root=str(coco_root), recipe=recipe, epochs=EPOCHS,
                          batch_size=BATCH, lr=recipe["lr"] * lr_scale, seed=SEED, smoke=True, augment="none",
                          backbone_weights="random", device="cpu", workers=0, runs_root=str(runs_root),
                          progress=False)


def run_harness(config):
    """fit(); (initial weights, final state dicts, history) of the harness."""
    import torch

    from harness.q2l import backbones
    from harness.q2l.run import fit

    torch.manual_seed(config.seed)  # the initial weights, as prepare() draws them
    initial = backbones.build_model(config.recipe, smoke=True).state_dict()
    finished = fit(config)
    saved = torch.load(finished.run_dir / "state.pt", map_location="cpu", weights_only=True)
    progress = json.loads(saved["progress"])
    return initial, saved, progress["history"]


def harness_side(**changes):
    """The harness alone on the fixture's data: (images sha256, SAMPLED arrays, per-epoch history)."""
    with tempfile.TemporaryDirectory() as tmp:
        coco = make_data(tmp)
        initial, saved, history = run_harness(harness_config(coco, Path(tmp) / "runs", **changes))
        return images_sha256(coco), sampled(saved["model"], saved["ema"], initial), history


def patched_main_mlc(authors):
    """Their main_mlc.py with the patches above, imported as a module."""
    source = (Path(authors) / "main_mlc.py").read_text()
    for old, new, count in PATCHES:
        assert source.count(old) == count, f"main_mlc.py holds {old!r} {source.count(old)} times, not {count}"
        source = source.replace(old, new)
    import torch.hub

    sys.modules["torch.utils.tensorboard"] = types.SimpleNamespace(SummaryWriter=None)
    sys.modules["torchvision.models.utils"] = types.SimpleNamespace(
        load_state_dict_from_url=torch.hub.load_state_dict_from_url)
    sys.path.insert(0, str(Path(authors) / "lib"))
    sys.path.insert(0, str(authors))
    module = types.ModuleType("main_mlc")
    module.__file__ = str(Path(authors) / "main_mlc.py")
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def their_model(args, initial):
    """Their Qeruy2Label from their classes, the tiny ResNet of the harness's smoke run, initial weights loaded."""
    import torchvision
    from models.backbone import BackboneBase, FrozenBatchNorm2d, Joiner
    from models.position_encoding import build_position_encoding
    from models.query2label import Qeruy2Label
    from models.transformer import build_transformer

    resnet = torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1],
                                       norm_layer=FrozenBatchNorm2d)
    backbone = Joiner(BackboneBase(resnet, True, 2048, {"layer4": "0"}), build_position_encoding(args), args)
    backbone.num_channels = 2048
    model = Qeruy2Label(backbone, build_transformer(args), args.num_class)  # --keep_input_proj: 2048 -> 64
    missing, unexpected = model.load_state_dict(initial, strict=True)
    return model


def run_theirs(authors, config, coco_root, work):
    """Their main_worker() loop on the same data; returns their final state dicts and per-epoch figures."""
    import random

    import numpy as np
    import torch
    import torch.distributed as dist
    import torchvision.transforms as T

    main_mlc = patched_main_mlc(authors)
    from dataset.cocodataset import CoCoDataset
    from models.aslloss import AsymmetricLossOptimized
    from utils.metric import voc_mAP

    from harness.q2l.backbones import sizes

    s, r = sizes(config.recipe, smoke=True), config.recipe
    args = argparse.Namespace(**{**r.values, **s, "keep_input_proj": True, "batch_size": BATCH, "lr": config.lr,
                                 "epochs": EPOCHS, "amp": False, "print_freq": 1000, "output": str(work / "theirs"),
                                 "position_embedding": "sine"})
    os.makedirs(args.output, exist_ok=True)
    dist.init_process_group("gloo", init_method=f"file://{work / 'pg'}", rank=0, world_size=1)
    model = their_model(args, run_theirs.initial)
    ema_m = main_mlc.ModelEma(model, args.ema_decay)
    model = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    criterion = AsymmetricLossOptimized(gamma_neg=args.gamma_neg, gamma_pos=args.gamma_pos, clip=args.loss_clip,
                                        disable_torch_grad_focal_loss=args.dtgfl, eps=args.eps)
    args.lr_mult = args.batch_size / 256
    params = [{"params": [p for n, p in model.module.named_parameters() if p.requires_grad]}]
    optimizer = torch.optim.AdamW(params, args.lr_mult * args.lr, betas=(0.9, 0.999), eps=1e-08,
                                  weight_decay=args.weight_decay)
    transform = T.Compose([T.Resize((args.img_size, args.img_size)), T.ToTensor(),
                           T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    root = Path(coco_root)
    train_dataset = CoCoDataset(str(root / "train2014"), str(root / "annotations/instances_train2014.json"),
                                transform, str(work / "theirs/train_labels.npy"))
    val_dataset = CoCoDataset(str(root / "val2014"), str(root / "annotations/instances_val2014.json"),
                              transform, str(work / "theirs/val_labels.npy"))
    train_sampler = torch.utils.data.distributed.DistributedSampler(train_dataset)
    train_loader = torch.utils.data.DataLoader(train_dataset, batch_size=args.batch_size // dist.get_world_size(),
                                               shuffle=False, num_workers=0, sampler=train_sampler, drop_last=True)
    val_sampler = torch.utils.data.distributed.DistributedSampler(val_dataset, shuffle=False)
    val_loader = torch.utils.data.DataLoader(val_dataset, batch_size=args.batch_size // dist.get_world_size(),
                                             shuffle=False, num_workers=0, sampler=val_sampler)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, steps_per_epoch=len(train_loader),
                                                    epochs=args.epochs, pct_start=0.2)
    torch.manual_seed(SEED)  # the harness's training stream (seed + 7919 * rank, rank 0)
    random.seed(SEED)
    np.random.seed(SEED)
    logger = logging.getLogger("theirs")
    history = []
    for epoch in range(0, args.epochs):  # their main_worker() loop, transcribed
        train_sampler.set_epoch(epoch)
        if args.ema_epoch == epoch:
            ema_m = main_mlc.ModelEma(model.module, args.ema_decay)
        loss = main_mlc.train(train_loader, model, ema_m, criterion, optimizer, scheduler, epoch, args, logger)
        figures = {"epoch": epoch, "train_loss": loss}
        for name, m in (("", model), ("_ema", ema_m.module)):
            val_loss, mAP = main_mlc.validate(val_loader, m, criterion, args, logger)
            _, aps = voc_mAP([os.path.join(args.output, "saved_data_tmp.0.txt")], args.num_class, return_each=True)
            finite = aps[np.isfinite(aps)]  # their voc_mAP: NaN for a class without positives
            figures.update({f"val_loss{name}": val_loss, f"mAP{name}": mAP, f"aps{name}": aps.tolist(),
                            f"mAP{name}_finite_classes": float(np.mean(finite))})
        history.append(figures)
    dist.destroy_process_group()
    return model.module.state_dict(), ema_m.module.state_dict(), optimizer, history


def compare(ours, theirs_model, theirs_ema, their_optimizer, their_history, our_history):
    import torch

    assert list(ours["model"]) == list(theirs_model), "the two models' keys differ"
    for k, v in theirs_model.items():
        assert torch.equal(ours["model"][k], v), f"model {k} differs"
    for k, v in theirs_ema.items():
        assert torch.equal(ours["ema"][k], v), f"EMA {k} differs"
    our_opt, their_opt = ours["optimizer"], their_optimizer.state_dict()
    for i, state in their_opt["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(our_opt["state"][i][key]), torch.as_tensor(value)), (i, key)
    for key in ("lr", "betas"):
        assert our_opt["param_groups"][0][key] == their_opt["param_groups"][0][key], key
    for o, t in zip(our_history, their_history, strict=True):
        assert o["train_loss"] == t["train_loss"], (o["epoch"], o["train_loss"], t["train_loss"])
        assert o["val_loss"] == t["val_loss"] and o["val_loss_ema"] == t["val_loss_ema"], o["epoch"]
        for name in ("", "_ema"):  # the harness leaves classes without positives out (their mAP is NaN then)
            assert math.isclose(o[f"mAP{name}"], t[f"mAP{name}_finite_classes"], rel_tol=1e-12), (o["epoch"], name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("authors", help="checkout of SlongLiu/query2labels")
    parser.add_argument("--write", action="store_true", help="write train_loop.json beside this script")
    args = parser.parse_args()
    if any(os.environ.get(k) != v for k, v in PORTABLE_NUMERICS.items()):  # before torch loads
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **PORTABLE_NUMERICS})
    import numpy as np
    import torch

    sys.path.insert(0, str(HERE.parents[2]))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        coco = make_data(work)
        images = images_sha256(coco)
        config = harness_config(coco, work / "runs")
        initial, ours, our_history = run_harness(config)
        run_theirs.initial = initial
        their_model_state, their_ema, their_optimizer, their_history = run_theirs(args.authors, config, coco, work)
        compare(ours, their_model_state, their_ema, their_optimizer, their_history, our_history)
    print(f"bit for bit after {EPOCHS} epochs of {N_TRAIN // BATCH} steps: model, EMA, AdamW state, lr, betas; "
          f"train and val losses, regular and EMA mAP every epoch")
    if args.write:
        out = {"torch": torch.__version__, "numpy": np.__version__, "numerics": PORTABLE_NUMERICS, "seed": SEED,
               "epochs": EPOCHS, "batch_size": BATCH, "n_val": N_VAL, "n_train": N_TRAIN, "images_sha256": images,
               "model_sha256": state_sha256(their_model_state), "ema_sha256": state_sha256(their_ema),
               "sampled": [key for key, _ in SAMPLED],
               "history": [{k: v for k, v in h.items() if not k.startswith("aps")} for h in their_history]}
        for h in out["history"]:
            h.update({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in h.items()})
        (HERE / "train_loop.json").write_text(json.dumps(out, indent=1) + "\n")
        np.savez_compressed(HERE / "train_loop.npz", **sampled(their_model_state, their_ema, initial))
        print(f"wrote {HERE / 'train_loop.json'}, {HERE / 'train_loop.npz'}")


if __name__ == "__main__":
    main()
