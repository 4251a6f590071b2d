"""The harness CLI in a child forked from the test process: a process of its own (its own pid and
memory, killable mid-run, nothing of it left in the test process), started from the test process's
imports instead of a fresh interpreter loading torch and torchvision again (seconds each)."""
import os
import random
import sys
import traceback

import numpy as np
import torch

from harness.cli import main

# torch's generator in a fresh interpreter starts from this seed (c10's default_rng_seed_val)
TORCH_START_SEED = 67280421310721


def _as_a_fresh_interpreter():
    """The random states a fresh interpreter starts with (Python and numpy from the OS, torch's fixed
    seed), not the test process's, and one thread, as OMP_NUM_THREADS=1 gives a started interpreter."""
    random.seed()
    np.random.seed()
    torch.manual_seed(TORCH_START_SEED)
    torch.set_num_threads(1)


def start(argv):
    """Fork a child running `harness *argv`; returns (pid, its stdout as a text stream of lines)."""
    read, write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read)
            sys.stdout = os.fdopen(write, "w", buffering=1)
            _as_a_fresh_interpreter()
            code = main(argv)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    return pid, os.fdopen(read)


def wait(pid, stdout):
    """The child's exit code as subprocess gives it (-N: killed by signal N) once it ends; its stdout."""
    out = stdout.read()
    stdout.close()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


def run(argv):
    """`harness *argv` in a forked child, waited for: (exit code, stdout)."""
    return wait(*start(argv))
