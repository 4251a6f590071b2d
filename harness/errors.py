"""The exceptions a user meets: a UserError (one line, exit 2) and an interruption that says how to go on."""


class UserError(ValueError):
    """Bad input from the user. The message names the problem and the fix. A ValueError, so Python
    callers of the harness can catch it as one."""


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
