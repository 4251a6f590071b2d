"""A CLI command on several gloo ranks forked from the test process, each given the environment torchrun
gives its workers (RANK, WORLD_SIZE, MASTER_*): a launch without starting torchrun and loading torch again."""
import multiprocessing
import os
import socket
import sys

import torch

from harness.cli import main


def run_ranks(argv, world=2, timeout=120):
    """Each rank's exit code (None: still running after `timeout` s, then killed; 99: it returned with its
    process group still joined)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def rank_main(rank):
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.set_num_threads(1)
        code = main(argv)
        if torch.distributed.is_initialized():
            code = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    context = multiprocessing.get_context("fork")
    ranks = [context.Process(target=rank_main, args=(rank,)) for rank in range(world)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout)
    codes = [process.exitcode for process in ranks]
    for process in ranks:
        if process.exitcode is None:
            process.kill()
    return codes
