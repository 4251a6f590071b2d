#!/usr/bin/env bash
# The package as a user installs it (a wheel, not editable), run from outside the repository:
# the manifest, paper tables and environments must come with it. Dependencies come from .venv
# (made by `make install`), so nothing is downloaded.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
commit=$(git -C "$repo" rev-parse HEAD)
trap 'rm -rf "$tmp"' EXIT
"$repo/.venv/bin/pip" wheel -q --no-deps --no-build-isolation -w "$tmp/dist" "$repo"
python3 -m venv "$tmp/venv"
deps=$("$repo/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
site=$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" > "$site/harness-deps.pth"  # appended after the venv's own packages: the wheel's harness wins
"$tmp/venv/bin/pip" install -q --no-deps --no-index "$tmp/dist"/harness-*.whl
cd "$tmp"
"$tmp/venv/bin/python" -c "import harness, sys; assert harness.__file__.startswith('$tmp/venv'), harness.__file__"
"$tmp/venv/bin/harness" models > models.txt
grep -q q2l-r101-448 models.txt
"$tmp/venv/bin/harness" data smoke --out smoke --images 8 --train-images 0 > /dev/null
"$tmp/venv/bin/harness" eval q2l-r101-448 --coco-root smoke --weights random --runs runs --workers 0 --no-progress
# the installed command under torchrun, 2 CPU processes (gloo): the same scores as one process
# (one thread each: on a CPU the thread count changes a convolution's bits)
OMP_NUM_THREADS=1 "$tmp/venv/bin/harness" eval q2l-r101-448 --coco-root smoke --weights random --runs runs-1 --workers 0 --no-progress \
  --batch-size 2 > /dev/null
OMP_NUM_THREADS=1 "$tmp/venv/bin/python" -m torch.distributed.run --standalone --nproc_per_node 2 -m harness eval \
  q2l-r101-448 --coco-root smoke --weights random --runs runs-2 --workers 0 --no-progress --batch-size 2 > /dev/null
BUILT_COMMIT=$commit "$tmp/venv/bin/python" - <<'CHECK'
import json, os, pathlib, numpy as np
[one], [two] = (list(pathlib.Path(f"runs-{n}/q2l-r101-448").iterdir()) for n in (1, 2))
assert json.loads((two / "record.json").read_text())["distributed"]["world_size"] == 2
assert np.array_equal(np.load(one / "scores.npy"), np.load(two / "scores.npy")), "torchrun changed the scores"
# run outside any git checkout: the wheel itself names the commit it was built from (setuptools-scm)
env = json.loads((one / "record.json").read_text())["environment"]
assert env["git_commit"] == os.environ["BUILT_COMMIT"], ("the installed wheel's record names", env["git_commit"])
CHECK
"$tmp/venv/bin/harness" report --runs runs --format markdown > report.md
grep -q "smoke (random weights" report.md
echo "installed wheel: harness models, eval (smoke, and under torchrun) and report ran from $tmp"
