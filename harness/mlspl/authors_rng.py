"""The random draws of the authors' train.py, replayed from one private torch.Generator.

Their script seeds numpy only; with one line added, `torch.manual_seed(P['seed'])` as the first
line of `initialize_training_run`, every draw of a training run comes from torch's global
generator in this order: the model's initialisation (nn.Linear's default init, the ResNet-50's
when fine-tuning from ImageNet), the label estimator's table (torch.rand(N, C), drawn for every
loss), then per epoch one iterator per loader, train, val, test (every epoch: their loop scores
test each epoch). Each iterator draws its workers' base seed; the train loader's RandomSampler
then draws a seed, and
  "torch>=1.9": permutes with a fresh torch.Generator seeded with it;
  "torch-1.7-1.8" (1.7.0 is the authors' requirements.txt): permutes with the global generator
  itself (RandomSampler passed `self.generator`, None, to randperm), the drawn seed left unused.
(Their torch 1.7.0 was run; the samplers of 1.8.0, 1.9.0 and 1.10.0 were read.)
The harness makes the same draws in the same order from `generator`, so a run of their script
with that line gives the same batches, and in linear mode on CPU the same numbers bit for bit.
"""
from contextlib import contextmanager

import torch

SEMANTICS = ("torch>=1.9", "torch-1.7-1.8")
REPLAYED = "torch.manual_seed(P['seed']) as the first line of initialize_training_run in their train.py"


@contextmanager
def global_draws_from(generator):
    """Code in this block that draws from torch's global CPU generator (module inits, torch.rand)
    draws from `generator` instead; the global generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.set_state(generator.get_state())
        yield
        generator.set_state(torch.default_generator.get_state())


def draw_seed(generator):
    """The int64 draw of a DataLoader iterator's base seed and of RandomSampler's seed."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


def _permutation(n, generator, semantics):
    if semantics not in SEMANTICS:
        raise ValueError(f"unknown DataLoader semantics {semantics!r}; choose one of {', '.join(SEMANTICS)}")
    seed = draw_seed(generator)  # RandomSampler's seed
    source = generator if semantics == "torch-1.7-1.8" else torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=source)


def shuffled_rows(n, generator, semantics="torch>=1.9"):
    """The train iterator's draws and its permutation of range(n), as DataLoader(shuffle=True)."""
    draw_seed(generator)  # the iterator's base seed for its workers
    return _permutation(n, generator, semantics)


def eval_iterators(generator, count=2):
    """The base-seed draws of the val and test iterators (each made once per epoch)."""
    for _ in range(count):
        draw_seed(generator)


class AuthorsShuffle(torch.utils.data.Sampler):
    """RandomSampler as their DataLoader(shuffle=True) ran it, drawing from `generator` (give the
    loader the same generator: its iterator then draws the base seed from it first)."""

    def __init__(self, n, generator, semantics="torch>=1.9"):
        self.n, self.generator, self.semantics = n, generator, semantics

    def __len__(self):
        return self.n

    def __iter__(self):
        yield from _permutation(self.n, self.generator, self.semantics).tolist()


def record(semantics):
    return {"replays": REPLAYED, "dataloader_semantics": semantics, "torch": torch.__version__}
