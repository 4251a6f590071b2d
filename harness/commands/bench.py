"""harness bench: not available yet."""
from harness.errors import UserError


def add_arguments(parser):
    parser.add_argument("rest", nargs="*", help="(not available yet)")


def run(args):
    raise UserError("'harness bench' is not available yet in this version")
