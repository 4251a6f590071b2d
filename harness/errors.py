"""The exceptions a user meets: a UserError (one line, exit 2) and an interruption that says how
to go on; and running several jobs so that one's failure, whatever it is, never stops the others."""
import logging

logger = logging.getLogger(__name__)


class UserError(ValueError):
    """Bad input from the user. The message names the problem and the fix. A ValueError, so Python
    callers of the harness can catch it as one."""


def run_each(jobs):
    """Run (id, job) pairs in turn; the [(id, why)] of those that failed. One job's failure, a crash
    too, never stops the others nor loses what they wrote."""
    failed = []
    for key, job in jobs:
        try:
            job()
        except UserError as e:
            failed.append((key, str(e)))
            logger.info(f"{key}: FAILED: {e}")
        except Exception as e:  # a crash too: the other models' runs still count
            failed.append((key, f"{type(e).__name__}: {e}"))
            logger.info(f"{key}: FAILED: {type(e).__name__}: {e}")
    return failed


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in a resumable step: what was kept, and how the same command continues it.

    saved: lines naming what was kept and where. resume: the flags that, added to the command as
    it was typed (in place of any it had of the same name), continue the work; () when typing the
    same command again continues it; None when nothing was kept. drop: words of the command to leave
    out (the models of a several-model command that finished).
    """

    def __init__(self, saved: list[str], resume: tuple[str, ...] | None = (), drop: tuple[str, ...] = ()):
        super().__init__("; ".join(saved))
        self.saved, self.resume, self.drop = list(saved), resume, tuple(drop)

    @classmethod
    def in_training(cls, model_id: str, run_dir: object, epochs_done: int) -> "Interrupted":
        """Ctrl-C in a training (C-Tran, Query2Label): the epochs kept in `run_dir` (None: no folder
        was opened yet), counted from 1 as the epoch lines count them, and the --resume that continues."""
        if run_dir is None:
            return cls(["no run folder was opened yet: nothing was kept"], resume=None)
        kept = f"epochs 1-{epochs_done} are" if epochs_done else "no epoch had finished; its settings are"
        return cls([f"{model_id}: {kept} kept in {run_dir}"], resume=("--resume", str(run_dir)))
