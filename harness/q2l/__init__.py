"""Query2Label training (Liu et al., 2021), rebuilt from the authors' main_mlc.py.

loss.py       their AsymmetricLossOptimized as a function (float64 with their float64 labels)
ema.py        their ModelEma (whole state_dict, integer buffers as theirs), optionally kept on the CPU
schedule.py   their AdamW and OneCycleLR (lr and beta1 per step), their steps per epoch
augment.py    their train transform (resize, cutout and RandAugment as their runs had them), per-sample seeding
randaugment.py  the PyPI randaugment 1.0.2 RandAugment, vendored with np.int fixed (MIT)
memory.py, checkpointing.py, offload.py, micro_batches.py, plan.py   the exact memory techniques, the budget planner

The training (`harness q2l train`):
recipe.py     the authors' values, each with its source (log Command:, config_new.json, README, default)
config.py     Q2LTrainConfig: what a run is asked, built once by the command (deviations recorded)
files.py      the pretrained backbones and training logs of the manifest, fetched and locked as weights
backbones.py  the model as their main_mlc.py builds it: sizes, stochastic depth, frozen parts, pretrained file
data.py       their datasets and loaders (DistributedSampler train and padded validation), the held-out split
train.py      one epoch as their train(), one scoring pass as their validate(), their best and early stop
session.py    what a run checks and builds before its folder exists (world, batch, data, plan, model)
run.py        main_worker(): the seeded epoch loop, DDP, the memory plan applied, state after every epoch
run_folder.py settings.json, state.pt (every state and RNG, after every epoch), best.safetensors
record.py     the selected model's val2014 metrics and the run record; report.py its table
progress.py   the epoch bar
"""
