"""Training loops of the authors' train.py: linear on features and end-to-end fine-tuning.

Shared with their code: Adam (no weight decay, no schedule), the label estimator of ROLE at
10 x the learning rate, every loader dropping its last partial batch (train, val and test
alike), and per run the epoch of best clean-val mAP (strict >) with the test mAP of that epoch.

Random draws: those of their script with torch.manual_seed(seed) added (harness.mlspl.authors_rng):
the same head, label-estimator table and batches as their run with that seed. Scoring as their
eval phase: sigmoid(F.linear) batch by batch in the run's batch size.

Linear training runs several learning rates of one batch size at once: one head per learning
rate, each forward its own F.linear as their nn.Linear, the same draws for all (each point
replays the same seed, so a point trained alone gives the same numbers, bit for bit), one Adam
param group per head. Test scores are computed only at a new best epoch (the test iterator's draw
is made every epoch): the numbers equal their every-epoch evaluation.

Fine-tuning reads images through harness.data.loader: uint8 batches (resize and flip in the
workers, where their draws were made), ToTensor and Normalize on the device (the same bits), a
fresh iterator per pass as theirs. Under torchrun it shares each global batch out (ddp.py).

Each loop saves its whole state after every epoch (`torch.save`, loadable with
weights_only=True) and resumes from it when started again with the same configuration.
"""
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models import resnet50

from harness import progress
from harness.data.loader import make_loader
from harness.data.transforms import to_model_input
from harness.distributed import World
from harness.errors import UserError
from harness.mlspl import ddp
from harness.mlspl.authors_rng import AuthorsShuffle, eval_iterators, global_draws_from, shuffled_rows
from harness.mlspl.features import ImageRows
from harness.mlspl.losses import compute_loss
from harness.models.mlspl import FEATURE_DIM, LabelEstimator, initial_label_logits, logit
from harness.records.curves import TrainingCurves
from harness.records.training_state import check_epoch, read_state, restoring

logger = logging.getLogger(__name__)

GRID_BATCH_SIZES = (8, 16)
GRID_LRS = (1e-2, 1e-3, 1e-4, 1e-5)
EPOCHS = {"linear": 25, "fine-tuned": 10}
LINEAR_INIT = {"AN-LS": (1e-4, 8), "ROLE": (1e-3, 16)}  # (lr, batch size) of the linear phase, their lookup
LR_MULT = 10.0  # the label estimator's learning rate / the classifier's


def average_precision(scores, labels):
    """Per-class AP as sklearn's average_precision_score, all classes at once (0 without positives).

    sklearn steps through distinct scores: tied scores form one threshold, and AP sums
    (recall gain) x precision at the end of each run of ties, in decreasing score order.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels) == 1
    order = np.argsort(-scores, axis=0, kind="stable")
    s, y = np.take_along_axis(scores, order, 0), np.take_along_axis(labels, order, 0).astype(np.float64)
    tp = np.cumsum(y, axis=0)
    rank = np.arange(1, len(s) + 1)[:, None]
    last_of_tie = np.ones_like(s, dtype=bool)
    last_of_tie[:-1] = s[1:] != s[:-1]
    first_of_tie = np.ones_like(last_of_tie)
    first_of_tie[1:] = last_of_tie[:-1]
    start = np.maximum.accumulate(np.where(first_of_tie, rank - 1, 0), axis=0)  # first row of each tie run
    tp_before_run = np.take_along_axis(tp - y, start, 0)
    gain = np.where(last_of_tie, tp - tp_before_run, 0.0)
    npos = tp[-1] if len(s) else np.zeros(scores.shape[1])
    ap = (gain * tp / rank).sum(0) / np.maximum(npos, 1)
    return np.where(npos > 0, ap, 0.0)


def mlspl_map(scores, labels):
    """Their mAP: sklearn average precision per class, 0 for a class without positives, mean x 100."""
    return 100.0 * float(np.mean(average_precision(scores, labels)))


def scored_rows(n, batch_size):
    """How many rows a drop_last loader of this batch size scores."""
    return (n // batch_size) * batch_size


@dataclass
class PointResult:
    """One grid point: its best epoch by clean-val mAP and what was measured there."""
    batch_size: int
    lr: float
    best_epoch: int = -1
    val_map: float = -math.inf
    test_map: float | None = None
    history: list = field(default_factory=list)  # per epoch: train loss, val mAP
    head: dict | None = None  # best classifier state (tensors)
    table: torch.Tensor | None = None  # best label-estimator logits (ROLE)
    test_scores: np.ndarray | None = None  # (scored test rows, C) at the best epoch

    def summary(self):
        return {"batch_size": self.batch_size, "lr": self.lr, "best_epoch": self.best_epoch,
                "val_mAP": self.val_map, "test_mAP": self.test_map, "history": self.history}


def _save_state(path, state):
    tmp = Path(str(path) + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


STATE_FIX = "delete it to train this grid point from its start, or pass another --runs to train elsewhere"


def _load_state(path, config, keys):
    """The saved state if it belongs to this exact configuration, else None; one line for a damaged one."""
    if not path or not Path(path).is_file():
        return None
    state = read_state(path, ("config", "epoch", *keys), STATE_FIX)
    with restoring(path, STATE_FIX):
        saved = json.loads(state["config"])
    if saved != config:
        raise UserError(f"{path} was saved by another configuration; delete it or use another --out")
    check_epoch(path, state["epoch"], STATE_FIX)
    return state


def _copy_saved(param, saved):
    """A saved tensor into its parameter: the same shape (copy_ would broadcast a smaller one)."""
    if not isinstance(saved, torch.Tensor) or saved.shape != param.shape:
        raise ValueError(f"a saved parameter has shape {getattr(saved, 'shape', type(saved).__name__)}, "
                         f"not {tuple(param.shape)}")
    param.copy_(saved)


def _random_start(generator, observed, backbone=False):
    """Their model's draws from `generator`: (fine-tuning) torchvision's ResNet-50 init, then the
    head, nn.Linear(2048, C)'s default init, then the label estimator's table, drawn for every loss
    (their MultilabelModel always builds one). Returns the head and the table."""
    with global_draws_from(generator):
        if backbone:  # their resnet50(pretrained=True) initialises before loading: only its draws matter
            resnet50(weights=None)
        linear = torch.nn.Linear(FEATURE_DIM, observed.shape[1])
    head = {"weight": linear.weight.detach(), "bias": linear.bias.detach()}
    return head, initial_label_logits(observed, generator)


def _initial_table(observed, estimates, generator):
    """ROLE's table: their random start, or (linear-init) the logits of the linear phase's estimates."""
    if estimates is not None:
        return logit(torch.as_tensor(estimates, dtype=torch.float32))
    return initial_label_logits(observed, generator)


def score_batches(x, weight, bias, batch_size):
    """Sigmoid scores of the rows a drop_last loader yields, batch by batch through F.linear (their eval)."""
    n = scored_rows(len(x), batch_size)
    with torch.no_grad():
        return torch.cat([torch.sigmoid(F.linear(x[i:i + batch_size], weight, bias))
                          for i in range(0, n, batch_size)]).cpu().numpy()


def train_linear_group(train, val, test, config, batch_size, lrs, *, state_path=None, on_epoch=None, curves=None):
    """Train one linear head per learning rate on features; return a PointResult per lr.
    curves: (folder, tag): each lr's TensorBoard curves go to folder/tensorboard/<tag>_bs<bs>_lr<lr>.

    train: (features (N, 2048) tensor, observed labels (N, C) tensor); val, test: (features,
    labels as numpy 0/1). Features may live on the device already. config: a TrainConfig (its
    loss, epochs (None: 25), seed, device (None: CPU), semantics and expected_positives).
    """
    loss, seed, semantics, k = config.loss, config.seed, config.semantics, config.expected_positives
    epochs = EPOCHS["linear"] if config.epochs is None else config.epochs
    device = config.device or "cpu"
    lrs = list(lrs)
    n_groups = len(lrs)
    x_train, observed = (t.to(device) for t in train)
    x_val, x_test = val[0].to(device), test[0].to(device)
    n, num_classes = observed.shape
    n_val, n_test = scored_rows(len(x_val), batch_size), scored_rows(len(x_test), batch_size)
    config = {"loss": loss, "lrs": lrs, "batch_size": batch_size, "epochs": epochs, "seed": seed, "n": n,
              "semantics": semantics}
    use_table = loss == "ROLE"

    generator = torch.Generator().manual_seed(seed)
    head0, table0 = _random_start(generator, observed.cpu())
    weights = [torch.nn.Parameter(head0["weight"].clone().to(device)) for _ in lrs]
    biases = [torch.nn.Parameter(head0["bias"].clone().to(device)) for _ in lrs]
    tables = [torch.nn.Parameter(table0.clone().to(device)) for _ in lrs] if use_table else []
    groups = [{"params": [w, b], "lr": lr} for w, b, lr in zip(weights, biases, lrs)]
    groups += [{"params": [t], "lr": LR_MULT * lr} for t, lr in zip(tables, lrs)]
    optimizer = torch.optim.Adam(groups, lr=lrs[0], weight_decay=0)
    results = [PointResult(batch_size, lr) for lr in lrs]
    start = 0

    state = _load_state(state_path, config, ("params", "optimizer", "generator", "results"))
    if state is not None:
        with restoring(state_path, STATE_FIX), torch.no_grad():
            for p, saved in zip(weights + biases + tables, state["params"], strict=True):
                _copy_saved(p, saved)
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            for r, saved in zip(results, state["results"], strict=True):
                _restore_point(r, saved, num_classes)
        start = state["epoch"] + 1
        _say_resumed(state_path, start, epochs)

    writers = [TrainingCurves(curves[0], f"{curves[1]}_bs{batch_size}_lr{lr:g}") for lr in lrs] if curves else []
    for epoch in range(start, epochs):
        order = shuffled_rows(n, generator, semantics).to(device)
        total = torch.zeros((), device=device)
        steps = n // batch_size  # drop_last
        for s in range(steps):
            rows = order[s * batch_size:(s + 1) * batch_size]
            x = x_train[rows]
            logits = torch.stack([F.linear(x, w, b) for w, b in zip(weights, biases)])
            estimates = torch.sigmoid(torch.stack([t[rows] for t in tables])) if use_table else None
            batch_loss = compute_loss(loss, torch.sigmoid(logits), observed[rows], estimates, k=k)
            optimizer.zero_grad()
            batch_loss.backward()
            optimizer.step()
            total += batch_loss.detach()
        diverged = [lr for lr, w, b in zip(lrs, weights, biases) if not (w.isfinite().all() and b.isfinite().all())]
        if diverged or not total.isfinite():
            raise _diverged(epoch, batch_size, diverged or lrs, state_path)
        eval_iterators(generator)  # their val and test iterators of this epoch
        with torch.no_grad():
            for g, r in enumerate(results):
                val_map = mlspl_map(score_batches(x_val, weights[g], biases[g], batch_size), val[1][:n_val])
                r.history.append({"epoch": epoch, "train_loss_mean_over_groups": float(total) / max(steps, 1) / n_groups,
                                  "val_mAP": val_map})
                if val_map > r.val_map:  # strict: the earliest best epoch wins
                    r.best_epoch, r.val_map = epoch, val_map
                    r.head = {"weight": weights[g].detach().cpu().clone(), "bias": biases[g].detach().cpu().clone()}
                    r.table = tables[g].detach().cpu().clone() if use_table else None
                    test_scores = score_batches(x_test, weights[g], biases[g], batch_size)
                    r.test_scores, r.test_map = test_scores, mlspl_map(test_scores, test[1][:n_test])
        if state_path:
            _save_state(state_path, {"config": json.dumps(config), "epoch": epoch,
                                     "params": [p.detach().cpu() for p in weights + biases + tables],
                                     "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                                     "results": [_point_state(r) for r in results]})
        for writer, r, lr in zip(writers, results, lrs):  # the loss is the group's mean, as the history's
            writer.epoch(epoch + 1, train_loss=r.history[-1]["train_loss_mean_over_groups"], learning_rate=lr,
                         val_mAP=r.history[-1]["val_mAP"])
        if on_epoch:
            on_epoch(epoch, [r.history[-1]["val_mAP"] for r in results])
    for writer in writers:
        writer.close()
    return results


def _diverged(epoch, batch_size, lrs, state_path):
    """A loss that turned NaN or infinite: no epoch of it can be selected (their sklearn scoring refuses
    NaN scores too); the state of the epochs before it stays in state_path."""
    kept = f"; the epochs before it stay in {state_path}" if state_path else ""
    return UserError(f"the training loss became non-finite in epoch {epoch + 1} (batch size {batch_size}, lr "
                     f"{', '.join(f'{lr:g}' for lr in lrs)}): stopped, nothing is selected from a diverged "
                     f"training{kept}; try a smaller --lr, or check the features for NaN")


def _point_state(r):
    return {"summary": json.dumps(r.summary()), "head": r.head, "table": r.table,
            "test_scores": None if r.test_scores is None else torch.from_numpy(r.test_scores)}


def _restore_point(r, saved, num_classes):
    s = json.loads(saved["summary"])
    r.best_epoch, r.val_map, r.test_map, r.history = s["best_epoch"], s["val_mAP"], s["test_mAP"], s["history"]
    r.head, r.table = saved["head"], saved["table"]
    scores = saved["test_scores"]
    if scores is not None and (scores.ndim != 2 or scores.shape[1] != num_classes):
        raise ValueError(f"saved test scores of shape {tuple(scores.shape)}, not (rows, {num_classes})")
    r.test_scores = None if scores is None else scores.numpy()


def train_fine_tuned(model, data, config, point, *, start=None, state_dir=None, on_epoch=None, world=None,
                     curves_dir=None):
    """Train `model` (MLSPLResNet50 with its starting backbone) end to end on images.

    data: load_prepared's splits; observed labels come from data['train'].labels_obs (the full
    labels for loss BCE). config: a TrainConfig (its loss, coco_root, epochs (None: 10), seed,
    device, resolution, workers, max_steps, semantics); point: (batch size, lr). start: the
    linear phase's PointResult (linear-init: its classifier and ROLE label estimates); None: a
    fresh head and ROLE's random table, as in their code. max_steps limits the steps of each epoch
    and the batches of each evaluation (tests, smoke). world: harness.distributed.World (torchrun),
    see harness/mlspl/ddp.py; the global batch stays `point`'s batch size. curves_dir: rank 0 writes the
    point's TensorBoard curves into curves_dir/tensorboard/fine_tune_bs<bs>_lr<lr>.
    """
    world = world or World()
    batch_size, lr = point
    loss, device, k = config.loss, config.device or "cpu", config.expected_positives
    epochs = EPOCHS["fine-tuned"] if config.epochs is None else config.epochs
    ddp.check_batch_splits(batch_size, world)
    train = data["train"]
    observed = torch.as_tensor(train.labels if loss == "BCE" else train.labels_obs, dtype=torch.float32)
    saved_config = {"loss": loss, "lr": lr, "batch_size": batch_size, "epochs": epochs, "seed": config.seed,
                    "resolution": config.resolution, "n": len(observed), "max_steps": config.max_steps,
                    "semantics": config.semantics}
    generator = torch.Generator().manual_seed(config.seed)
    # linear-init hands over a head and estimates: their run then draws nothing before its loaders
    start_head, table = _random_start(generator, observed, backbone=True) if start is None else (start.head, None)
    estimates = None if start is None or start.table is None else torch.sigmoid(start.table)
    with torch.no_grad():
        model.fc.weight.copy_(start_head["weight"])
        model.fc.bias.copy_(start_head["bias"])
    estimator = None
    if loss == "ROLE":
        estimator = LabelEstimator(table if estimates is None else _initial_table(observed, estimates, None)).to(device)
    model = ddp.prepare_model(model.to(device), device, world)
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    if estimator is not None:
        groups.append({"params": list(estimator.parameters()), "lr": LR_MULT * lr})
    optimizer = torch.optim.Adam(groups, lr=lr, weight_decay=0)
    observed = observed.to(device)
    images = _ImageLoaders(data, config, batch_size, generator, world)

    result = PointResult(batch_size, lr)
    state_path = Path(state_dir) / "state.pt" if state_dir else None
    state = _load_state(state_path, saved_config, ("model", "estimator", "optimizer", "generator", "result"))
    first = 0
    if state is not None:
        with restoring(state_path, STATE_FIX):
            model.load_state_dict(state["model"])
            if estimator is not None:
                estimator.load_state_dict(state["estimator"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            _restore_point(result, state["result"], observed.shape[1])
        first = state["epoch"] + 1
        if world.main:
            _say_resumed(state_path, first, epochs)

    shown = config.progress and world.main
    curves = TrainingCurves(curves_dir, f"fine_tune_bs{batch_size}_lr{lr:g}") if curves_dir and world.main else None
    per_epoch = scored_rows(len(observed), batch_size) // batch_size
    per_epoch = per_epoch if config.max_steps is None else min(per_epoch, config.max_steps)
    for epoch in range(first, epochs):
        model.train()
        total, steps = 0.0, 0
        bar = progress.bar(per_epoch, f"epoch {epoch + 1}/{epochs} train (bs {batch_size}, lr {lr:g})", unit="batch",
                           enabled=shown, leave=False)
        for batch, rows in images.train():
            if config.max_steps is not None and steps >= config.max_steps:
                break
            x = to_model_input(batch.to(device, non_blocking=True), "imagenet")
            preds, rows = ddp.whole_batch(torch.sigmoid(model(x)), rows.to(device), world)
            batch_loss = compute_loss(loss, preds, observed[rows], estimator(rows) if estimator else None, k=k)
            optimizer.zero_grad()
            batch_loss.backward()
            ddp.sum_gradients(model, world)
            optimizer.step()
            total, steps = total + batch_loss.item(), steps + 1
            bar.update(1)
        bar.close()
        if not math.isfinite(total):
            raise _diverged(epoch, batch_size, [lr], state_path)
        val_scores, val_labels = _predict(model, images.evaluation("val"), data["val"].labels, device, world,
                                          f"epoch {epoch + 1}/{epochs} val", shown)
        val_map = mlspl_map(val_scores, val_labels)
        result.history.append({"epoch": epoch, "train_loss": total / max(steps, 1), "val_mAP": val_map})
        if val_map > result.val_map:
            result.best_epoch, result.val_map = epoch, val_map
            result.head = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            result.table = estimator.logits.detach().cpu().clone() if estimator is not None else None
            result.test_scores, test_labels = _predict(model, images.evaluation("test"), data["test"].labels, device,
                                                       world, f"epoch {epoch + 1}/{epochs} test (new best)", shown)
            result.test_map = mlspl_map(result.test_scores, test_labels)
        else:
            eval_iterators(generator, count=1)  # their test iterator of this epoch
        if state_path and world.main:
            _save_state(state_path, {"config": json.dumps(saved_config), "epoch": epoch, "model": model.state_dict(),
                                     "estimator": estimator.state_dict() if estimator is not None else None,
                                     "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                                     "result": _point_state(result)})
        if curves:
            curves.epoch(epoch + 1, train_loss=result.history[-1]["train_loss"], learning_rate=lr, val_mAP=val_map)
        if on_epoch:
            on_epoch(epoch, [val_map])
    if curves:
        curves.close()
    return result


class _ImageLoaders:
    """The fine-tuning loaders of their script: every iterator draws its workers' base seed from
    `generator`, the train sampler its permutation; uint8 batches from harness.data.loader."""

    def __init__(self, data, config, batch_size, generator, world):
        self.data, self.config, self.batch_size = data, config, batch_size
        self.generator, self.world = generator, world

    def train(self):
        c, world = self.config, self.world
        share = None if world.size == 1 else (world.rank, world.size)
        rows = ImageRows(c.coco_root, self.data["train"].images, c.resolution, flip=True, share=share)
        batches = torch.utils.data.BatchSampler(AuthorsShuffle(len(rows), self.generator, c.semantics),
                                                self.batch_size, drop_last=True)
        return make_loader(rows, None, c.device or "cpu", c.workers, batch_sampler=batches, generator=self.generator)

    def evaluation(self, split):
        """This rank's whole batches of the rows a drop_last loader scores (at most max_steps batches)."""
        c, bs = self.config, self.batch_size
        rows = ImageRows(c.coco_root, self.data[split].images, c.resolution)
        n = scored_rows(len(rows), bs) if c.max_steps is None else min(scored_rows(len(rows), bs), c.max_steps * bs)
        mine = torch.utils.data.Subset(rows, self.world.shard(n, bs))
        return make_loader(mine, bs, c.device or "cpu", c.workers, generator=self.generator)


def _say_resumed(state_path, done, epochs):
    if done >= epochs:
        logger.info(f"already trained: all {epochs} epochs are in {state_path}")
    else:
        logger.info(f"resuming from {state_path}: epochs 1-{done} of {epochs} were trained before it stopped")


def _predict(model, loader, labels, device, world, desc="scoring", shown=False):
    """Sigmoid scores of the rows the loaders of every rank yield, in row order, with their labels."""
    model.eval()
    scores, rows_seen = [], []
    with torch.no_grad():
        bar = progress.bar(len(loader), desc, unit="batch", enabled=shown, leave=False)
        for images, rows in loader:
            x = to_model_input(images.to(device, non_blocking=True), "imagenet")
            scores.append(torch.sigmoid(model(x)).float().cpu().numpy())
            rows_seen.append(rows.numpy())
            bar.update(1)
        bar.close()
    parts = world.gather((scores, rows_seen))  # rank order is row order: each rank scores a contiguous shard
    scores = np.concatenate([s for part, _ in parts for s in part])
    rows_seen = np.concatenate([r for _, part in parts for r in part])
    return scores, labels[rows_seen]
