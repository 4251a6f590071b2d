"""An in-process `harness eval` of random weights on a small COCO folder, and the read-only scores of
one such run: what the resume tests compare every interrupted-then-resumed run with."""
import numpy as np

from harness.eval.config import EvalConfig
from harness.eval.run import evaluate


def eval_run(spec, coco_root, runs, **settings):
    """The run folder of one eval (random weights, no loader workers, no progress bars)."""
    config = EvalConfig(coco_root=coco_root, weights="random", runs_root=runs, workers=0, progress=False, **settings)
    return evaluate(spec, config).run_dir


def frozen_scores(spec, coco_root, runs, **settings):
    """The scores of one uninterrupted run, read only (a module fixture shares them between tests)."""
    scores = np.load(eval_run(spec, coco_root, runs, **settings) / "scores.npy")
    scores.flags.writeable = False
    return scores
