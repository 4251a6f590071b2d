"""The one exception a user can cause (the CLI prints it as one line and exits 2), and running
several jobs so that one's failure, whatever it is, never stops the others."""
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
