"""The one exception a user can cause: the CLI prints it as one line and exits 2."""


class UserError(ValueError):
    """Bad input from the user. The message names the problem and the fix. A ValueError, so Python
    callers of the harness can catch it as one."""
