"""A stopped training run folder copied for one test, and its state.pt edited in place (the C-Tran and
Query2Label refusal tests damage these)."""
import shutil

import torch


def copy_run(stopped, tmp_path):
    """`stopped` (runs/<model>/<run id>) copied under tmp_path/runs/<model>/<run id>."""
    run_dir = tmp_path / "runs" / stopped.parent.name / stopped.name
    shutil.copytree(stopped, run_dir)
    return run_dir


def edit_state(run_dir, change):
    state = torch.load(run_dir / "state.pt", weights_only=True)
    change(state)
    torch.save(state, run_dir / "state.pt")
