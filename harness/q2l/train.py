"""One epoch of Query2Label training and one scoring pass, shaped as their main_mlc.py train() / validate().

Per step, in their order: autocast (fp16 with --amp; nothing on CPU unless bf16 is asked) around the
forward and the loss; zero the gradients; backward through GradScaler (re-created every epoch, as
theirs); scaler.step; scaler.update; the OneCycleLR step and the EMA update every iteration, also
when GradScaler skipped the optimizer step. Scoring: eval mode, no gradient, the same autocast,
sigmoid of the logits; each process scores its part of the padded list and the parts are joined in
rank order, as their voc_mAP reads the rank files. Early stop and "best" follow main_worker().
"""
import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from harness.metrics import mean_ap, per_class_ap
from harness.q2l.loss import asymmetric_loss
from harness.q2l.micro_batches import accumulate

EARLY_STOP_EPOCHS = 8  # theirs: epoch - max(best_epoch, best_regular_epoch) > 8


@dataclass
class Parts:
    """What a training step needs: the model (DDP-wrapped as `net` on several processes), its EMA,
    the optimizer and schedule, the loss settings, where and in which precision it runs."""
    net: torch.nn.Module
    model: torch.nn.Module
    ema: object  # harness.q2l.ema.ModelEma
    optimizer: torch.optim.Optimizer
    scheduler: object
    loss_settings: dict  # asymmetric_loss's keyword arguments (gamma_neg, gamma_pos, clip, eps, dtgfl)
    loss_scale: float | None  # their --loss_dev (None: off)
    device: str
    amp: torch.dtype | None  # autocast dtype, None for float32
    ema_epoch: int
    world: object  # harness.distributed.World
    micro_batch: int | None = None


def autocast(device, dtype):
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype else contextlib.nullcontext()


def criterion(parts, output, target):
    """Their AsymmetricLossOptimized, times --loss_dev when set."""
    loss = asymmetric_loss(output, target, **parts.loss_settings)
    return loss * parts.loss_scale if parts.loss_scale else loss


def train_epoch(parts, loader, epoch, on_batch=None):
    """One pass over `loader`; returns {loss: their batch-weighted mean, images, skipped_steps}."""
    scaler = torch.amp.GradScaler(torch.device(parts.device).type, enabled=parts.amp == torch.float16)
    parts.net.train()
    total, count, skipped = 0.0, 0, 0
    for images, target, _ in loader:
        images = images.to(parts.device, non_blocking=True)
        target = target.to(parts.device, non_blocking=True)
        parts.optimizer.zero_grad()
        loss = _forward_backward(parts, images, target, scaler)
        scale = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(parts.optimizer)
        scaler.update()
        skipped += bool(scale is not None and scaler.get_scale() < scale)  # inf/NaN gradients: step skipped
        parts.scheduler.step()
        if epoch >= parts.ema_epoch:
            parts.ema.update(parts.model)
        total, count = total + loss * len(images), count + len(images)
        if on_batch:
            on_batch(len(images) * parts.world.size)
    return {"loss": total / max(count, 1), "images": count * parts.world.size, "skipped_steps": skipped}


def _forward_backward(parts, images, target, scaler):
    """Forward, loss and backward of one batch (in micro-batches when asked); the loss as a number."""
    if parts.micro_batch is None or parts.micro_batch >= len(images):
        with autocast(parts.device, parts.amp):
            loss = criterion(parts, parts.net(images), target)
        scaler.scale(loss).backward()
        return loss.item()
    loss = accumulate(parts.net, images, target, lambda out, t: criterion(parts, out, t), parts.micro_batch,
                      backward=lambda value: scaler.scale(value).backward(),
                      autocast=lambda: autocast(parts.device, parts.amp))
    return loss.item()


@torch.no_grad()
def score(parts, model, loader):
    """(sigmoid scores float32, rows, loss sum, images) of this process's part, in loader order."""
    model.eval()
    scores, rows, loss_sum, n = [], [], 0.0, 0
    for images, target, row in loader:
        with autocast(parts.device, parts.amp):
            output = model(images.to(parts.device, non_blocking=True))
            loss = criterion(parts, output, target.to(parts.device, non_blocking=True))
            probabilities = torch.sigmoid(output)
        loss_sum, n = loss_sum + loss.item() * len(images), n + len(images)
        scores.append(probabilities.float().cpu())
        rows.append(row)
    return torch.cat(scores).numpy(), torch.cat(rows).numpy(), loss_sum, n


def score_all(parts, model, loader):
    """Every process's part joined in rank order (their rank files read one after another):
    (scores, rows, mean loss); the same on every process."""
    parts_ = parts.world.gather(score(parts, model, loader))
    scores = np.concatenate([p[0] for p in parts_])
    rows = np.concatenate([p[1] for p in parts_])
    loss = sum(p[2] for p in parts_) / max(sum(p[3] for p in parts_), 1)
    return scores, rows, loss


def voc_map(scores, labels):
    """Their voc_mAP (x100) on the rows as given; classes without a positive left out (theirs: NaN)."""
    ap, *_ = per_class_ap(np.asarray(scores), np.asarray(labels) > 0, "q2l")
    return mean_ap(ap, "q2l")


@dataclass
class Selection:
    """main_worker's bookkeeping of the best epoch, kept across epochs (and resumes)."""
    best_mAP: float = 0.0
    best_epoch: int = -1
    best_model: str | None = None  # "regular" or "ema": whose state their checkpoint saved
    best_regular_mAP: float = 0.0
    best_regular_epoch: int = -1
    best_ema_mAP: float = 0.0
    ema_maps: tuple = ()

    def update(self, epoch, regular, ema):
        """Their rules after one validation; returns True when this epoch is the new best."""
        if regular > self.best_regular_mAP:
            self.best_regular_mAP, self.best_regular_epoch = regular, epoch
        if ema > self.best_ema_mAP:
            self.best_ema_mAP = ema
        self.ema_maps = (*self.ema_maps, ema)
        chosen, which = (ema, "ema") if ema > regular else (regular, "regular")
        is_best = chosen > self.best_mAP
        if is_best:
            self.best_epoch, self.best_model = epoch, which
        self.best_mAP = max(chosen, self.best_mAP)
        return is_best

    def early_stop(self, epoch):
        """Their --early-stop: 8 epochs past both bests while the latest EMA mAP is below its best."""
        return (self.best_epoch >= 0 and epoch - max(self.best_epoch, self.best_regular_epoch) > EARLY_STOP_EPOCHS
                and len(self.ema_maps) > 1 and self.ema_maps[-1] < self.best_ema_mAP)


def diverged(*losses):
    return any(math.isnan(x) for x in losses)
