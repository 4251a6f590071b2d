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

Each loop saves its whole state after every epoch (`torch.save`, loadable with
weights_only=True) and resumes from it when started again with the same configuration.
"""
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import UserError
from harness.mlspl.authors_rng import AuthorsShuffle, eval_iterators, global_draws_from, shuffled_rows
from harness.mlspl.losses import EXPECTED_POSITIVES, compute_loss
from harness.models.mlspl import FEATURE_DIM, LabelEstimator, initial_label_logits, logit

GRID_BATCH_SIZES = (8, 16)
GRID_LRS = (1e-2, 1e-3, 1e-4, 1e-5)
EPOCHS = {"linear": 25, "fine-tuned": 10}
LINEAR_INIT = {"AN-LS": (1e-4, 8), "ROLE": (1e-3, 16)}  # (lr, batch size) of the linear phase, their lookup
LR_MULT = 10.0  # the label estimator's learning rate / the classifier's
SEED = 1200  # their P['seed'] (numpy there); torch.manual_seed(SEED) is the line added to their script
DATALOADER_SEMANTICS = "torch>=1.9"  # which torch's DataLoader(shuffle=True) draws are replayed


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


def _load_state(path, config):
    """The saved state if it belongs to this exact configuration, else None."""
    if not path or not Path(path).is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if json.loads(state["config"]) != config:
        raise UserError(f"{path} was saved by another configuration; delete it or use another --out")
    return state


def _random_start(generator, observed, backbone=False):
    """Their model's draws from `generator`: (fine-tuning) torchvision's ResNet-50 init, then the
    head, nn.Linear(2048, C)'s default init, then the label estimator's table, drawn for every loss
    (their MultilabelModel always builds one). Returns the head and the table."""
    with global_draws_from(generator):
        if backbone:  # their resnet50(pretrained=True) initialises before loading: only its draws matter
            from torchvision.models import resnet50
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


def train_linear_group(train, val, test, loss, lrs, batch_size, *, epochs=EPOCHS["linear"], seed=SEED,
                       device="cpu", state_path=None, progress=None, k=EXPECTED_POSITIVES["coco"],
                       semantics=DATALOADER_SEMANTICS):
    """Train one linear head per learning rate on features; return a PointResult per lr.

    train: (features (N, 2048) tensor, observed labels (N, C) tensor); val, test: (features,
    labels as numpy 0/1). Features may live on the device already.
    """
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

    state = _load_state(state_path, config)
    if state is not None:
        with torch.no_grad():
            for p, saved in zip(weights + biases + tables, state["params"]):
                p.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        for r, saved in zip(results, state["results"]):
            _restore_point(r, saved)
        start = state["epoch"] + 1

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
        if progress:
            progress(epoch, [r.history[-1]["val_mAP"] for r in results])
    return results


def _point_state(r):
    return {"summary": json.dumps(r.summary()), "head": r.head, "table": r.table,
            "test_scores": None if r.test_scores is None else torch.from_numpy(r.test_scores)}


def _restore_point(r, saved):
    s = json.loads(saved["summary"])
    r.best_epoch, r.val_map, r.test_map, r.history = s["best_epoch"], s["val_mAP"], s["test_mAP"], s["history"]
    r.head, r.table = saved["head"], saved["table"]
    r.test_scores = None if saved["test_scores"] is None else saved["test_scores"].numpy()


def train_fine_tuned(model, data, loss, lr, batch_size, *, coco_root, epochs=EPOCHS["fine-tuned"], seed=SEED,
                     device="cpu", resolution=448, workers=4, head=None, estimates=None, state_dir=None,
                     max_steps=None, progress=None, k=EXPECTED_POSITIVES["coco"], semantics=DATALOADER_SEMANTICS):
    """Train `model` (MLSPLResNet50 with its starting backbone) end to end on images.

    data: load_prepared's splits; observed labels come from data['train'].labels_obs (the full
    labels for loss BCE). head / estimates: the linear phase's classifier and ROLE label
    estimates (linear-init); None: a fresh head and ROLE's random table, as in their code.
    max_steps limits the steps of each epoch and of each evaluation (tests only).
    """
    from harness.mlspl.features import ImageRows, imagenet_transform

    train = data["train"]
    observed = torch.as_tensor(train.labels if loss == "BCE" else train.labels_obs, dtype=torch.float32)
    config = {"loss": loss, "lr": lr, "batch_size": batch_size, "epochs": epochs, "seed": seed,
              "resolution": resolution, "n": len(observed), "max_steps": max_steps, "semantics": semantics}
    generator = torch.Generator().manual_seed(seed)
    # linear-init hands over a head and estimates: their run then draws nothing before its loaders
    start_head, table = _random_start(generator, observed, backbone=True) if head is None else (head, None)
    with torch.no_grad():
        model.fc.weight.copy_(start_head["weight"])
        model.fc.bias.copy_(start_head["bias"])
    estimator = None
    if loss == "ROLE":
        estimator = LabelEstimator(table if estimates is None else _initial_table(observed, estimates, None)).to(device)
    model = model.to(device)
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    if estimator is not None:
        groups.append({"params": list(estimator.parameters()), "lr": LR_MULT * lr})
    optimizer = torch.optim.Adam(groups, lr=lr, weight_decay=0)
    observed = observed.to(device)

    def loader(split, shuffle):
        # every iterator draws its base seed from `generator`, the train sampler its permutation
        rows = ImageRows(coco_root, data[split].images, imagenet_transform(resolution, flip=split == "train"))
        sampler = AuthorsShuffle(len(rows), generator, semantics) if shuffle else None
        return torch.utils.data.DataLoader(rows, batch_size=batch_size, sampler=sampler, drop_last=True,
                                           num_workers=workers, generator=generator, pin_memory=device == "cuda")

    result = PointResult(batch_size, lr)
    state_path = Path(state_dir) / "state.pt" if state_dir else None
    state = _load_state(state_path, config)
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        if estimator is not None:
            estimator.load_state_dict(state["estimator"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        _restore_point(result, state["result"])
        start = state["epoch"] + 1

    for epoch in range(start, epochs):
        model.train()
        total, steps = 0.0, 0
        for images, rows in loader("train", shuffle=True):
            if max_steps is not None and steps >= max_steps:
                break
            images, rows = images.to(device, non_blocking=True), rows.to(device)
            preds = torch.sigmoid(model(images))
            batch_loss = compute_loss(loss, preds, observed[rows], estimator(rows) if estimator else None, k=k)
            optimizer.zero_grad()
            batch_loss.backward()
            optimizer.step()
            total, steps = total + batch_loss.item(), steps + 1
        val_scores, val_labels = _predict(model, loader("val", False), data["val"].labels, device, max_steps)
        val_map = mlspl_map(val_scores, val_labels)
        result.history.append({"epoch": epoch, "train_loss": total / max(steps, 1), "val_mAP": val_map})
        if val_map > result.val_map:
            result.best_epoch, result.val_map = epoch, val_map
            result.head = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            result.table = estimator.logits.detach().cpu().clone() if estimator is not None else None
            result.test_scores, test_labels = _predict(model, loader("test", False), data["test"].labels, device,
                                                       max_steps)
            result.test_map = mlspl_map(result.test_scores, test_labels)
        else:
            eval_iterators(generator, count=1)  # their test iterator of this epoch
        if state_path:
            _save_state(state_path, {"config": json.dumps(config), "epoch": epoch, "model": model.state_dict(),
                                     "estimator": estimator.state_dict() if estimator is not None else None,
                                     "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                                     "result": _point_state(result)})
        if progress:
            progress(epoch, [val_map])
    return result


def _predict(model, loader, labels, device, max_steps=None):
    """Sigmoid scores of the rows a drop_last loader yields, in order, with their labels."""
    model.eval()
    scores, rows_seen = [], []
    with torch.no_grad():
        for step, (images, rows) in enumerate(loader):
            if max_steps is not None and step >= max_steps:
                break
            scores.append(torch.sigmoid(model(images.to(device))).float().cpu().numpy())
            rows_seen.append(rows.numpy())
    rows_seen = np.concatenate(rows_seen)
    return np.concatenate(scores), labels[rows_seen]

