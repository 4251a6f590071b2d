"""Checks of what a fresh interpreter imports, for code that loads torch: one interpreter per test
process answers them all. It imports torch once (about 1.3 s of each such interpreter), then forks a
child per check (in_children, also used for checks that start from other libraries); a child sees what
a fresh interpreter would after `import torch`. torch brings neither harness, torchvision nor a data
package (the interpreter refuses to go on if it did), so what a check's code imports is its own.

A test module registers its check at import (collection), so that by the first test every check of
the run is known and one interpreter answers them all."""
import json
import os
import subprocess
import sys
import tempfile

from paths import REPO

_CHECKS = {}  # name: code, run in a child after TORCH_ONLY; it sets `answer` (anything JSON can hold)
_ANSWERS = {}

# A fresh interpreter runs `base`, then forks a child per check: a child sees what a fresh interpreter
# would after `base`, so what a check's code imports is its own.
ONE_CHILD_PER_CHECK = """
import json, os, sys, traceback
{base}
answers = {{}}
for name, code in json.loads(sys.argv[1]).items():
    read, write = os.pipe()
    if os.fork() == 0:
        os.close(read)
        try:
            scope = {{}}
            exec(code, scope)
            out = {{'answer': scope['answer']}}
        except BaseException:
            out = {{'error': traceback.format_exc()}}
        with os.fdopen(write, 'w') as pipe:
            pipe.write(json.dumps(out))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answers[name] = json.loads(pipe.read())
    os.wait()
print(json.dumps(answers), flush=True)
os._exit(0)  # the answers are out: tearing the loaded modules down would cost another half second
"""

TORCH_ONLY = """
import torch
brought = sorted(m for m in sys.modules if m.split('.')[0] in ('harness', 'torchvision', 'pycocotools', 'gdown'))
assert not brought, f'torch brought {brought}: the checks would not see what their code imports'
"""


def in_children(base, checks):
    """{name: {'answer': ...} or {'error': its traceback}}: each check's code (it sets `answer`, anything
    JSON can hold) run in a child of one fresh interpreter that ran `base`, from another folder: the
    checkout found by PYTHONPATH, not the current folder."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as elsewhere:
        done = subprocess.run([sys.executable, "-c", ONE_CHILD_PER_CHECK.format(base=base), json.dumps(checks)],
                              cwd=elsewhere, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def answer_of(out, name):
    """The answer in `out` (one of in_children's), or the check's traceback as the failure."""
    assert "error" not in out, f"check {name!r} failed in the fresh interpreter:\n{out.get('error')}"
    return out["answer"]


def register(name, code):
    """`code` runs in a child of a fresh interpreter that has imported torch only; it sets `answer`."""
    _CHECKS[name] = code
    return name


def answer(name):
    """The answer of the check `name`; the interpreter runs (once) the checks not yet answered."""
    if name not in _ANSWERS:
        _ANSWERS.update(in_children(TORCH_ONLY, {n: c for n, c in _CHECKS.items() if n not in _ANSWERS}))
    return answer_of(_ANSWERS[name], name)
