"""Query2Label training (Liu et al., 2021), rebuilt from the authors' main_mlc.py.

loss.py       their AsymmetricLossOptimized as a function (float64 with their float64 labels)
ema.py        their ModelEma (whole state_dict, integer buffers as theirs), optionally kept on the CPU
schedule.py   their AdamW and OneCycleLR (lr and beta1 per step), their steps per epoch
augment.py    their train transform (resize, cutout and RandAugment as their runs had them), per-sample seeding
randaugment.py  the PyPI randaugment 1.0.2 RandAugment, vendored with np.int fixed (MIT)
memory.py, checkpointing.py, offload.py, micro_batches.py, plan.py   the exact memory techniques, the budget planner
"""
