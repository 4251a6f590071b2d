"""Fine-tuning on several processes (torchrun): one global batch, shared out, one update.

    torchrun --nproc_per_node 4 -m harness mlspl train --mode fine-tuned ...   # batch 16 stays 16

Every rank replays the same draws (shuffle and flips, harness.mlspl.authors_rng), so every rank
knows each global batch; it reads its contiguous share of it and runs the model on that. The
predictions of the whole batch are gathered on every rank, with only this rank's share carrying
gradient, and every rank computes the loss of the whole batch: their EPR term squares a mean over
the batch, so the loss is not a mean of per-rank losses. Backward then gives each rank the
gradient through its own share; their sum (one all_reduce) is the gradient of one process on the
global batch, up to the order of the float additions (tests/mlspl/test_mlspl_ddp.py). ROLE's label
estimator sees the whole batch on every rank, so its gradient is already the global one. Every
rank takes the same Adam step, so the weights stay equal without a broadcast.

BatchNorm: on GPUs it becomes SyncBatchNorm (statistics of the global batch, as one process);
gloo on CPU has no SyncBatchNorm, so there each process normalises with its share's statistics.
Evaluation is sharded by whole batches and gathered (harness.distributed.World).
"""
import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from harness.errors import UserError


def check_batch_splits(batch_size, world):
    if batch_size % world.size:
        raise UserError(f"batch size {batch_size} does not split evenly over {world.size} processes; "
                        f"start torchrun with --nproc_per_node dividing {batch_size}")


def prepare_model(model, device, world):
    if world.size > 1 and torch.device(device).type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def whole_batch(preds, rows, world):
    """(predictions, rows) of the whole global batch on every rank; only this rank's rows carry gradient."""
    if world.size == 1:
        return preds, rows

    parts = [torch.empty_like(preds) for _ in range(world.size)]
    row_parts = [torch.empty_like(rows) for _ in range(world.size)]
    dist.all_gather(parts, preds.detach())
    dist.all_gather(row_parts, rows)
    parts[world.rank] = preds
    return torch.cat(parts), torch.cat(row_parts)


def sum_gradients(model, world):
    """Each rank's gradient comes from its share of the batch: their sum is the whole batch's."""
    if world.size == 1:
        return

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)  # one call for every parameter: one message, not one per tensor
    for grad, summed in zip(grads, _unflatten_dense_tensors(flat, grads)):
        grad.copy_(summed)
